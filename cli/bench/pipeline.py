"""`img2img bench pipeline`: images through the whole local path (upload → S3 event → result)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from img2img.config.settings import Settings


def command(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bench.pipeline import BenchConfig, run_bench

    if args.images < 1 or args.batch_size < 1:
        print("--images and --batch-size must be at least 1", file=sys.stderr)
        return 2
    cfg = BenchConfig(
        images=args.images,
        batch_size=args.batch_size,
        backend=args.backend,
        worker="img2img-warm" if args.worker == "warm" else "process",
        generate_ms=args.generate_ms,
        upscale_ms=args.upscale_ms,
        load_s=args.load_s,
        timeout_s=args.timeout,
        steps=args.steps,
        upscale_steps=args.upscale_steps,
        image_share=args.image_share,
    )
    if args.worker == "process" and args.compare:
        print("--compare already runs the process worker; use --worker warm", file=sys.stderr)
        return 2
    from img2img.errors import InvalidParameters
    from img2img.models.compiled.sizes import parse_batches

    try:
        sizes = parse_batches(args.device_batch, "--device-batch")
    except InvalidParameters as exc:
        print(exc, file=sys.stderr)
        return 2
    if sizes[-1] > 64:
        print("--device-batch sizes must be within 1..64", file=sys.stderr)
        return 2
    run_bench(
        settings,
        cfg,
        args.compare,
        settings.local.state_dir / "bench",
        args.json,
        args.keep,
        device_batches=sizes,
    )
    return 0


def add_command(bench_sub: Any) -> None:
    pipe = bench_sub.add_parser("pipeline", help="images through the whole local path")
    pipe.add_argument("--images", type=int, default=32)
    pipe.add_argument("--batch-size", type=int, default=8)
    pipe.add_argument("--backend", choices=["simulated", "eager"], default="simulated")
    pipe.add_argument("--worker", choices=["warm", "process"], default="warm")
    pipe.add_argument(
        "--compare",
        action="store_true",
        help="also run the stock process worker, one run per image",
    )
    pipe.add_argument(
        "--generate-ms",
        type=float,
        default=2020.0,
        help="simulated stage-1 device time per call (SD 1.5 512², Inf2)",
    )
    pipe.add_argument(
        "--upscale-ms", type=float, default=2020.0, help="simulated stage-2 device time per call"
    )
    pipe.add_argument(
        "--load-s", type=float, default=20.0, help="simulated model load time per process"
    )
    pipe.add_argument(
        "--device-batch",
        default="4",
        help="most images per device call; a list (1,4) runs the warm worker once per size",
    )
    pipe.add_argument(
        "--image-share",
        type=float,
        default=0.35,
        help="simulated: what each further image adds to a call, as a share of a one-image call",
    )
    pipe.add_argument("--steps", type=int, default=10, help="eager: stage-1 steps")
    pipe.add_argument("--upscale-steps", type=int, default=5, help="eager: stage-2 steps")
    pipe.add_argument("--timeout", type=float, default=3600.0)
    pipe.add_argument("--keep", action="store_true", help="leave the bench stack running")
    pipe.add_argument("--json", action="store_true")
    pipe.set_defaults(func=command)

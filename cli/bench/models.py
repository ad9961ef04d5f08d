"""`img2img bench models`: latency per call and per image of each stage on each backend."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.common import say
from img2img.config.settings import Settings


def command(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    from infra.bench.models import ModelBenchConfig, neuron_available, run_models_bench

    torch.set_num_threads(settings.stages.torch_threads)
    backends = ["eager", "torchscript"] + (["neuron"] if neuron_available() else [])
    if args.backend != "all":
        backends = [args.backend]
    if args.device != "cpu" and "torchscript" in backends:
        print(
            "the torchscript backend is benchmarked on cpu only; use --backend eager or "
            "--backend neuron with --device",
            file=sys.stderr,
        )
        return 2
    side = args.height or (64 if args.size == "tiny" else 512)
    cfg = ModelBenchConfig(
        stages=["generate", "upscale"] if args.stage == "all" else [args.stage],
        backends=backends,
        size=args.size,
        height=side,
        width=args.width or side,
        batch=args.batch,
        steps=args.steps,
        strength=args.strength,
        upscale_steps=args.upscale_steps,
        guidance=args.guidance,
        calls=args.calls,
        device=args.device,
        dtype=args.dtype,
    )
    say(f"bench models: {cfg}")
    run_models_bench(cfg, say, args.json)
    return 0


def add_command(bench_sub: Any) -> None:
    models = bench_sub.add_parser("models", help="stage latency per backend")
    models.add_argument("--stage", choices=["generate", "upscale", "all"], default="all")
    models.add_argument(
        "--backend", choices=["eager", "torchscript", "neuron", "all"], default="all"
    )
    models.add_argument("--size", choices=["tiny", "sd15", "sd21"], default="tiny")
    models.add_argument("--height", type=int, default=None, help="default 64 tiny, 512 real")
    models.add_argument("--width", type=int, default=None, help="default: --height")
    models.add_argument("--batch", type=int, default=1)
    models.add_argument("--steps", type=int, default=30, help="img2img steps")
    models.add_argument("--strength", type=float, default=0.75)
    models.add_argument("--upscale-steps", type=int, default=20)
    models.add_argument("--guidance", type=float, default=7.5)
    models.add_argument("--calls", type=int, default=3, help="timed calls after one warm-up")
    models.add_argument("--device", default="cpu", help="cpu or cuda (eager)")
    models.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=command)

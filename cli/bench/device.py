"""`img2img bench device`: what device batches buy, per stage and per slot."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.common import say
from img2img.config.settings import Settings


def command(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    from img2img.errors import InvalidParameters
    from img2img.models.compiled.sizes import parse_batches
    from infra.bench.device import DeviceBenchConfig, pick_device, print_lines, run_device_bench

    try:
        batches = parse_batches(args.batches, "--batches")
    except InvalidParameters as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.images < 1:
        print("--images must be at least 1", file=sys.stderr)
        return 2
    device = pick_device(args.device)
    if device == "cpu" and args.dtype != "float32":
        print(f"--dtype {args.dtype} needs a GPU; this run is on the CPU", file=sys.stderr)
        return 2
    torch.set_num_threads(settings.stages.torch_threads)
    side = args.side or (64 if args.size == "tiny" else 512)
    cfg = DeviceBenchConfig(
        size=args.size,
        side=side,
        batches=batches,
        images=args.images,
        steps=args.steps,
        strength=args.strength,
        upscale_steps=args.upscale_steps,
        guidance=args.guidance,
        device=device,
        dtype=args.dtype,
    )
    say(f"bench device: {cfg}")
    lines = run_device_bench(cfg, say)
    if args.json:
        print_lines(lines)
    return 0


def add_command(bench_sub: Any) -> None:
    device = bench_sub.add_parser(
        "device", help="both stages at device batch sizes, pipeline against bare diffusers"
    )
    device.add_argument("--size", choices=["tiny", "sd15", "sd21"], default="tiny")
    device.add_argument("--side", type=int, default=None, help="default 64 tiny, 512 real")
    device.add_argument("--batches", default="1,2,4,8", help="device batch sizes")
    device.add_argument("--images", type=int, default=32, help="images in each run")
    device.add_argument("--steps", type=int, default=30, help="img2img steps")
    device.add_argument("--strength", type=float, default=0.75)
    device.add_argument("--upscale-steps", type=int, default=20)
    device.add_argument("--guidance", type=float, default=7.5)
    device.add_argument("--device", default="auto", help="auto (a GPU if any), cpu, cuda")
    device.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    device.add_argument("--json", action="store_true")
    device.set_defaults(func=command)

"""`img2img bench soak`: a steady upload rate for a long time, and every process's memory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli.common import say
from img2img.config.settings import Settings


def command(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bench.soak import SoakConfig, run_soak

    if not 0 < args.rate <= 50:
        print("--rate must be within (0, 50] uploads/s", file=sys.stderr)
        return 2
    if args.minutes <= 0 or args.sample_s <= 0 or args.warmup_min < 0:
        print("--minutes and --sample-s must be above 0, --warmup-min at least 0", file=sys.stderr)
        return 2
    if args.warmup_min >= args.minutes:
        print(
            "--warmup-min must be shorter than --minutes (nothing would be fitted)", file=sys.stderr
        )
        return 2
    cfg = SoakConfig(
        rate=args.rate,
        minutes=args.minutes,
        warmup_s=args.warmup_min * 60,
        sample_s=args.sample_s,
        backend=args.backend,
        topology=args.topology,
        workers=args.workers,
    )
    chart = args.chart or settings.local.state_dir / "bench-soak" / "soak.png"
    summary = run_soak(settings, cfg, chart, args.keep, sys.stdout, say)
    return 1 if summary["lost"] or summary["duplicated"] else 0


def add_command(bench_sub: Any) -> None:
    soak = bench_sub.add_parser(
        "soak", help="a steady rate for a long time: every process's memory growth per hour"
    )
    soak.add_argument("--rate", type=float, default=0.5, help="uploads a second (open loop)")
    soak.add_argument("--minutes", type=float, default=60.0, help="how long uploads arrive")
    soak.add_argument(
        "--warmup-min",
        type=float,
        default=3.0,
        help="minutes left out of the fit (models, caches and pools warming)",
    )
    soak.add_argument("--sample-s", type=float, default=30.0, help="seconds between samples")
    soak.add_argument("--backend", choices=["eager", "simulated"], default="eager")
    soak.add_argument("--topology", choices=["single", "split"], default="single")
    soak.add_argument("--workers", type=int, default=1, help="workers at the start")
    soak.add_argument(
        "--chart", type=Path, default=None, help="PNG of RSS over time (default: in the state)"
    )
    soak.add_argument("--keep", action="store_true", help="leave the soak stack running")
    soak.set_defaults(func=command)

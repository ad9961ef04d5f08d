"""`img2img bench lanes`: an interactive tenant beside a bulk burst, and two tenants' bursts
in one lane, on the local stack (the issue's goals, one JSON line a phase)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from img2img.config.settings import Settings


def command(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bench.lanes import LanesConfig, run_lanes

    if (
        min(args.hosts, args.slots, args.bulk, args.fair, args.idle, args.steps) < 1
        or args.every_s <= 0
        or args.upload_rate <= 0
    ):
        print(
            "--hosts, --slots, --bulk, --fair, --idle and --steps must be at least 1, "
            "--every-s and --upload-rate above 0",
            file=sys.stderr,
        )
        return 2
    cfg = LanesConfig(
        lanes=not args.no_lanes,
        hosts=args.hosts,
        slots=args.slots,
        bulk=args.bulk,
        fair=args.fair,
        fair_offset_s=args.fair_offset_s,
        every_s=args.every_s,
        idle=args.idle,
        generate_ms=args.generate_ms,
        upscale_ms=args.upscale_ms,
        steps=args.steps,
        upload_rate=args.upload_rate,
        rows=args.rows,
        database=args.database,
    )
    lines = run_lanes(settings, cfg, args.keep, sys.stdout, sys.stderr, args.chart)
    lost = sum(int(line.get("lost") or 0) + int(line.get("bulk_lost") or 0) for line in lines)
    return 1 if lost else 0


def add_command(bench_sub: Any) -> None:
    lanes = bench_sub.add_parser(
        "lanes",
        help="an interactive tenant beside a bulk burst, two tenants' bursts in one lane, "
        "and the cost attributed to tenants, on the local stack",
    )
    lanes.add_argument("--no-lanes", action="store_true", help="lanes and tenants off")
    lanes.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="postgres",
        help="the Prefect server's database (PostgreSQL is what AWS runs)",
    )
    lanes.add_argument("--hosts", type=int, default=2, help="warm hosts (a fixed pool)")
    lanes.add_argument("--slots", type=int, default=1, help="slots per host")
    lanes.add_argument("--bulk", type=int, default=2000, help="tenant A's bulk burst")
    lanes.add_argument("--fair", type=int, default=1000, help="tenants C's and D's bursts, each")
    lanes.add_argument(
        "--fair-offset-s", type=float, default=30.0, help="D's burst this long after C's"
    )
    lanes.add_argument(
        "--every-s", type=float, default=2.0, help="tenant B's interactive uploads, apart"
    )
    lanes.add_argument("--idle", type=int, default=15, help="B's uploads on the idle pool")
    lanes.add_argument(
        "--generate-ms",
        type=float,
        default=400.0,
        help="simulated stage-1 call (one image): the published 2.02 s ÷ 5",
    )
    lanes.add_argument(
        "--upscale-ms",
        type=float,
        default=200.0,
        help="simulated stage-2 call (one image): the published 1.0 s ÷ 5",
    )
    lanes.add_argument(
        "--steps",
        type=int,
        default=50,
        help="denoising steps a simulated call is cut into (a bulk call hands the device to "
        "an interactive one between two, lanes on)",
    )
    lanes.add_argument(
        "--upload-rate",
        type=float,
        default=5.0,
        help="bursts uploaded at this many a second: above the device's pace (2 hosts at "
        "0.6 s an image: 3.3/s), so a backlog builds, and within what this machine's S3 "
        "endpoint and dispatcher take in beside the rest of the stack",
    )
    lanes.add_argument("--rows", type=Path, default=None, help="write every upload's row here")
    lanes.add_argument("--chart", type=Path, default=None, help="write the chart (PNG) here")
    lanes.add_argument("--keep", action="store_true", help="leave the stack running")
    lanes.set_defaults(func=command)

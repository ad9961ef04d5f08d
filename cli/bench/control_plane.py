"""`img2img bench control-plane`: the orchestration alone, at stepped arrival rates."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Literal

from img2img.config.settings import Settings


def command(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bench.control_plane import ControlPlaneConfig, run_control_plane

    try:
        rates = tuple(float(r) for r in args.rates.split(","))
    except ValueError:
        print(f"--rates must be numbers separated by commas, got {args.rates!r}", file=sys.stderr)
        return 2
    if not rates or min(rates) <= 0:
        print("--rates must all be above 0 images/s", file=sys.stderr)
        return 2
    if args.idle_s <= 0:
        print("--idle-s must be above 0", file=sys.stderr)
        return 2
    if not 0 <= args.device_ms <= 1000:
        print("--device-ms must be within 0..1000", file=sys.stderr)
        return 2
    databases: list[Literal["sqlite", "postgres"]] = (
        ["sqlite", "postgres"] if args.database == "all" else [args.database]
    )
    if args.ha:
        if args.database == "sqlite":
            print("--ha runs the server as a cluster on PostgreSQL, not SQLite", file=sys.stderr)
            return 2
        databases = ["postgres"]
    # Adaptive batches (the default) run beside fixed ones, same steps, one invocation.
    batchings = ([True] if args.adaptive else []) + ([False] if args.fixed else [])
    if not batchings:
        print("--no-adaptive and --no-fixed leave nothing to run", file=sys.stderr)
        return 2
    for database in databases:
        for adaptive in batchings:
            cfg = ControlPlaneConfig(
                database=database,
                hosts=args.hosts,
                slots=args.slots,
                dispatchers=args.dispatchers,
                device_ms=args.device_ms,
                rates=rates,
                step_s=args.step_s,
                drain_s=args.drain_s,
                batch_size=args.batch_size,
                max_queue_wait_s=args.max_queue_wait_s,
                views=args.views,
                adaptive=adaptive,
                max_batch=args.max_batch,
                idle_s=args.idle_s,
                ha=args.ha,
                api_replicas=args.api_replicas,
            )
            run_control_plane(settings, cfg, args.keep, sys.stdout, sys.stderr)
    return 0


def add_command(bench_sub: Any) -> None:
    control = bench_sub.add_parser(
        "control-plane",
        help="the orchestration alone at stepped arrival rates: API requests, server CPU and "
        "database growth per image, and the ceiling",
    )
    control.add_argument("--database", choices=["sqlite", "postgres", "all"], default="all")
    control.add_argument("--hosts", type=int, choices=range(1, 9), default=2, metavar="H")
    control.add_argument("--slots", type=int, choices=range(1, 9), default=1, metavar="S")
    control.add_argument("--dispatchers", type=int, choices=range(1, 9), default=1, metavar="R")
    control.add_argument(
        "--device-ms", type=float, default=5.0, help="simulated device time per stage call"
    )
    control.add_argument(
        "--rates", default="0.5,1,2,4,8,16", help="arrival rate of each step, images/s"
    )
    control.add_argument("--step-s", type=float, default=60.0, help="seconds of arrivals per step")
    control.add_argument(
        "--drain-s", type=float, default=180.0, help="longest wait for a step's outcomes"
    )
    control.add_argument(
        "--batch-size", type=int, default=8, help="the fixed batch, and the adaptive base"
    )
    control.add_argument(
        "--adaptive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the run with batches sized from the backlog (up to --max-batch), beside the "
        "fixed one unless --no-fixed; --no-adaptive: the fixed run only",
    )
    control.add_argument(
        "--fixed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the run with fixed batches of --batch-size (--no-fixed: adaptive only)",
    )
    control.add_argument("--max-batch", type=int, default=512, help="the adaptive ceiling")
    control.add_argument(
        "--max-queue-wait-s", type=float, default=30.0, help="stop when p95 queue wait passes it"
    )
    control.add_argument(
        "--views",
        choices=["default", "all", "lean"],
        default="default",
        help="what each batch records on the server: the settings' defaults, everything "
        "(task runs, artifacts, progress, chart, per-image events), or the least",
    )
    control.add_argument(
        "--idle-s",
        type=float,
        default=15.0,
        help="the idle phase first (no uploads): cores busy and API requests a minute",
    )
    control.add_argument(
        "--ha",
        action="store_true",
        help="the server as a cluster (as `local up --ha`: API replicas behind HAProxy, the "
        "background services apart, Redis, PostgreSQL), CPU per part",
    )
    control.add_argument(
        "--api-replicas",
        type=int,
        choices=range(1, 9),
        default=2,
        metavar="N",
        help="API replicas of the cluster (--ha)",
    )
    control.add_argument("--keep", action="store_true", help="leave the bench stack running")
    control.set_defaults(func=command)

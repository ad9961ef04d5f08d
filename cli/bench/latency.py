"""`img2img bench latency`: lone uploads, then a steady rate, hop by hop."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from img2img.config.settings import Settings


def command(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bench.latency import LatencyConfig, run_latency

    if args.lone < 1 or args.gap_s < 0 or args.rate < 0 or args.steady_s <= 0:
        print(
            "--lone must be at least 1, --gap-s and --rate at least 0, --steady-s above 0",
            file=sys.stderr,
        )
        return 2
    if args.poll_s <= 0:
        print("--poll-s must be above 0", file=sys.stderr)
        return 2
    if args.hosts < 1 or args.slots < 1:
        print("--hosts and --slots must be at least 1", file=sys.stderr)
        return 2
    topologies = ["single", "split"] if args.topology == "both" else [args.topology]
    lost = 0
    for topology in topologies:
        cfg = LatencyConfig(
            topology=topology,  # type: ignore[arg-type]
            poll_s=args.poll_s,
            lone=args.lone,
            gap_s=args.gap_s,
            rate=args.rate,
            steady_s=args.steady_s,
            generate_ms=args.generate_ms,
            upscale_ms=args.upscale_ms,
            database=args.database,
            hosts=args.hosts,
            slots=args.slots,
        )
        lines = run_latency(settings, cfg, args.keep, sys.stdout, sys.stderr)
        lost += sum(int(line["lost"]) for line in lines)
    return 1 if lost else 0


def add_command(bench_sub: Any) -> None:
    latency = bench_sub.add_parser(
        "latency",
        help="lone uploads then a steady rate on a warm pool: each hop's p50/p95 and the "
        "time outside the models",
    )
    latency.add_argument("--topology", choices=["single", "split", "both"], default="single")
    latency.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="the Prefect server's database (PostgreSQL is what AWS runs)",
    )
    latency.add_argument(
        "--poll-s",
        type=float,
        default=10.0,
        help="the workers' PREFECT_WORKER_QUERY_SECONDS (Prefect's default: 10)",
    )
    latency.add_argument("--lone", type=int, default=20, help="lone uploads, one at a time")
    latency.add_argument("--gap-s", type=float, default=2.0, help="pause between lone uploads")
    latency.add_argument(
        "--rate", type=float, default=2.0, help="steady phase, images/s (0: no steady phase)"
    )
    latency.add_argument("--steady-s", type=float, default=60.0, help="steady phase, seconds")
    latency.add_argument(
        "--generate-ms", type=float, default=50.0, help="simulated stage-1 call time"
    )
    latency.add_argument("--upscale-ms", type=float, default=50.0, help="simulated stage-2 call")
    latency.add_argument(
        "--hosts", type=int, default=1, help="warm hosts per pool (the control-plane bench: 2)"
    )
    latency.add_argument("--slots", type=int, default=1, help="slots per host")
    latency.add_argument("--keep", action="store_true", help="leave the bench stack running")
    latency.set_defaults(func=command)

"""`img2img bench capacity`: what the Prefect side needs for a number of images a day."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from img2img.config.settings import Settings


def command(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bench.capacity import Dispatch, fit_costs, markdown, plan_row

    try:
        steps = [json.loads(line) for line in args.figures.read_text().splitlines() if line]
        days = [float(d) for d in args.images_per_day.split(",")]
    except (OSError, ValueError) as exc:
        print(f"could not read the figures: {exc}", file=sys.stderr)
        return 2
    chosen = [s for s in steps if args.batching in (None, s.get("batching"))]
    try:
        costs = fit_costs(chosen)
    except ValueError as exc:
        print(f"{args.figures}: {exc}", file=sys.stderr)
        return 2
    d = settings.dispatch
    dispatch = Dispatch(
        base_batch=d.base_batch,
        max_batch=d.max_batch,
        max_wait_s=d.max_wait_s if args.max_wait_s is None else args.max_wait_s,
        max_run_s=d.max_run_s if args.max_run_s is None else args.max_run_s,
        image_s=args.image_s,
        dispatchers=args.dispatchers,
        runs_per_slot=settings.worker.runs_per_slot,
    )
    keep = settings.retention
    rows = [plan_row(n, costs, dispatch, keep.runs_days, keep.events_days) for n in days]
    if args.json:
        print(
            json.dumps(
                {"costs": dataclasses.asdict(costs), "dispatch": dataclasses.asdict(dispatch)}
            )
        )
        for row in rows:
            print(json.dumps(row))
    else:
        print(markdown(rows, f"{args.image_s:g} s/image, runs ≤ {dispatch.max_run_s:g} s"))
    return 0


def add_command(bench_sub: Any) -> None:
    capacity = bench_sub.add_parser(
        "capacity",
        help="the control plane for N images a day, from control-plane benchmark JSON lines",
    )
    capacity.add_argument(
        "--figures", type=Path, required=True, help="JSON lines of `bench control-plane`"
    )
    capacity.add_argument(
        "--images-per-day", default="1e6,1e7,1e8", help="the days to plan, comma separated"
    )
    capacity.add_argument(
        "--image-s",
        type=float,
        default=0.01,
        help="seconds an image adds to a run on its slot (sets the batch through "
        "IMG2IMG_DISPATCH__MAX_RUN_S); the bench's simulated device: 0.01",
    )
    capacity.add_argument("--dispatchers", type=int, default=2, help="dispatcher replicas")
    capacity.add_argument(
        "--max-run-s", type=float, default=None, help="IMG2IMG_DISPATCH__MAX_RUN_S to plan with"
    )
    capacity.add_argument(
        "--max-wait-s", type=float, default=None, help="IMG2IMG_DISPATCH__MAX_WAIT_S to plan with"
    )
    capacity.add_argument(
        "--batching", choices=["adaptive", "fixed"], default=None, help="only these steps"
    )
    capacity.add_argument("--json", action="store_true")
    capacity.set_defaults(func=command)

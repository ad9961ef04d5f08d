"""`img2img bench scaling`: request traces through the scaling policy and the peers users
would pick instead."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cli.common import say
from img2img.config.settings import Settings
from infra.bench import scaling_table as table


def command(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bench.scaling_compare import POLICIES, Bench, ahead, compare, with_forecast
    from infra.bench.scaling_sim import LANE_TRACES, TRACES, HostStart

    if args.artifact and not os.environ.get("PREFECT_API_URL"):
        print(
            "--artifact publishes to the Prefect API in PREFECT_API_URL, which is not set "
            '(for the local stack: eval "$(img2img local env)")',
            file=sys.stderr,
        )
        return 2
    names = list(TRACES) if args.trace == "all" else [args.trace]
    policies = list(POLICIES) if args.policy == "all" else [args.policy]
    starts = HostStart(
        boot_s=args.boot_s,
        artifact_gb=args.artifact_gb,
        s3_gb_per_s=args.s3_gb_per_s,
        load_s=args.load_s,
        warmup_s=args.warmup_s,
        warm_pool=args.warm_pool,
        resume_s=args.resume_s,
    )
    policy = settings.scaling.model_validate(
        {
            **settings.scaling.model_dump(),
            "max_hosts": args.max_hosts,
            "slots_per_host": args.slots_per_host,
            "expected_run_s": args.service_s,
            # The policy counts on the start times the simulated hosts have.
            "host_start_s": starts.cold_s,
            "warm_start_s": starts.warm_s,
            **({"target_utilization": args.target} if args.target is not None else {}),
            **({"drain_target_s": args.drain_target_s} if args.drain_target_s else {}),
            **({"idle_to_zero_s": args.idle_to_zero_s} if args.idle_to_zero_s is not None else {}),
        }
    )
    if args.topology == "split":
        return _bench_split(args, policy, starts, names)
    if args.trace in LANE_TRACES:
        return _bench_lanes(args, policy, starts)
    forecast = None
    if args.forecast:
        from pydantic import ValidationError

        forecast = settings.scaling.forecast.model_copy(
            update={"target_utilization": args.forecast_target}
        )
        try:  # refused before the bench runs, not in the middle of it
            with_forecast(policy, forecast)
        except ValidationError as exc:
            print(f"--forecast: {exc.errors()[0]['msg']}", file=sys.stderr)
            return 2
    bench = Bench(
        service_s=args.service_s,
        starts=starts,
        slots_per_host=args.slots_per_host,
        price_per_hour=args.price_per_hour,
        seed=args.seed,
        sample_s=60.0 if args.charts else 0.0,
        forecast=forecast,
    )
    parts = starts.parts()
    pool = f", warm pool {args.warm_pool} (resume {parts['warm_s']} s)" if args.warm_pool else ""
    print(
        f"simulated: {args.service_s} s per image, {args.slots_per_host} slots per host, "
        f"hosts start in {parts['cold_s']} s (boot {parts['boot_s']} + fetch "
        f"{parts['fetch_s']} + load {parts['load_s']} + warm-up {parts['warmup_s']}){pool}, "
        f"${args.price_per_hour}/host-hour; img2img: target utilisation "
        f"{policy.target_utilization}, decisions every {policy.interval_s} s",
        file=sys.stderr,
    )
    all_rows: list[dict[str, Any]] = []
    pictures: dict[str, bytes] = {}
    print(table.HEADER, file=sys.stderr)
    for name in names:
        charted: dict[str, Any] = {}
        rows = compare(
            TRACES[name],
            policies,
            policy,
            bench,
            grid=args.grid,
            on_result=charted.__setitem__,
        )
        for row in rows:
            print(table.row_line(row), file=sys.stderr)
            if args.json:
                print(json.dumps(row), flush=True)
        if "img2img" in policies and len(policies) > 1:
            say(table.verdict_line(name, ahead(rows)))
        all_rows += rows
        if args.charts:
            from infra.bench.scaling_charts import trace_chart, trace_png

            path = trace_chart(TRACES[name], charted, args.charts)
            say(f"chart: {path}")
            if args.artifact:
                pictures[name] = trace_png(TRACES[name], charted, dpi=60)
    if args.artifact:
        from prefect.client.orchestration import get_client

        from infra.bench.scaling_charts import ARTIFACT_KEY, bench_markdown, publish

        summary = (
            f"{args.service_s} s per image, {args.slots_per_host} slots per host, hosts "
            f"start in {parts['cold_s']} s{pool}, ${args.price_per_hour}/host-hour."
        )
        with get_client(sync_client=True) as client:
            publish(client, bench_markdown(all_rows, pictures, summary), "Scaling bench")
        say(f"artifact: {ARTIFACT_KEY} (Artifacts page of the Prefect UI)")
    return 0


def _bench_lanes(args: argparse.Namespace, policy: Any, starts: Any) -> int:
    """A two-lane trace in one line and with lanes (this project's policy only)."""
    from infra.bench.scaling_compare import Bench, compare_lanes
    from infra.bench.scaling_sim import LANE_TRACES

    trace = LANE_TRACES[args.trace]
    cap = args.lower_lanes_max_hosts or policy.lower_lanes_max_hosts or 10
    capped = policy.model_copy(update={"lower_lanes_max_hosts": cap})
    bench = Bench(
        service_s=args.service_s,
        starts=starts,
        slots_per_host=args.slots_per_host,
        price_per_hour=args.price_per_hour,
        seed=args.seed,
    )
    say(f"{trace.name}: {trace.description}")
    print(table.LANES_HEADER, file=sys.stderr)
    for row in compare_lanes(trace, capped, bench):
        print(table.lanes_line(row), file=sys.stderr)
        if args.json:
            print(json.dumps(row), flush=True)
    return 0


def _bench_split(args: argparse.Namespace, policy: Any, starts: Any, names: list[str]) -> int:
    """`bench scaling --topology split`: the single pool against a pool per stage, on the
    same arrivals, this project's policy on every pool."""
    from infra.bench.scaling_sim import TRACES
    from infra.bench.scaling_split import SplitBench, compare_split

    try:
        stage_s = tuple(float(s) for s in args.stage_s.split(","))
        slots = tuple(int(s) for s in args.split_slots.split(","))
    except ValueError:
        print("--stage-s and --split-slots take two numbers each, e.g. 2.02,1.0", file=sys.stderr)
        return 2
    if len(stage_s) != 2 or len(slots) != 2 or min(stage_s) <= 0 or min(slots) < 1:
        print("--stage-s and --split-slots take two positive numbers each", file=sys.stderr)
        return 2
    bench = SplitBench.from_stages(
        (stage_s[0], stage_s[1]),
        args.slots_per_host,
        (slots[0], slots[1]),
        starts,
        args.handoff_s,
        args.price_per_hour,
        seed=args.seed,
    )
    print(
        f"simulated: stage 1 {stage_s[0]} s, stage 2 {stage_s[1]} s per image; single pool "
        f"{args.slots_per_host} slots per host, starts in {bench.single.starts.cold_s:.0f} s; "
        f"split pools {slots[0]} and {slots[1]} slots per host, start in "
        f"{bench.generate.starts.cold_s:.0f} s and {bench.upscale.starts.cold_s:.0f} s; "
        f"hand-off {args.handoff_s} s",
        file=sys.stderr,
    )
    print(table.SPLIT_HEADER, file=sys.stderr)
    for name in names:
        out = compare_split(TRACES[name], policy, bench)
        print(table.split_line(name, out), file=sys.stderr)
        if args.json:
            print(json.dumps(out), flush=True)
    return 0


def add_command(bench_sub: Any) -> None:
    scaling = bench_sub.add_parser("scaling", help="simulate request traces through the policy")
    scaling.add_argument(
        "--trace",
        choices=["steady", "spike", "diurnal", "lyrebird", "all", "lanes"],
        default="all",
        help="a one-line trace, all of them, or lanes: an interactive lane and a bulk "
        "catalogue, served in one line and with lanes",
    )
    scaling.add_argument(
        "--lower-lanes-max-hosts",
        type=int,
        default=None,
        help="with --trace lanes: the hosts bulk alone may keep (default: the scaling "
        "setting, else 10)",
    )
    scaling.add_argument(
        "--service-s",
        type=float,
        default=4.04,
        help="device seconds per image (SD 1.5 img2img + x4 upscale, Inf2)",
    )
    scaling.add_argument(
        "--slots-per-host",
        type=int,
        default=12,
        help="slots per host (inf2.48xlarge: 24 NeuronCores, 2 per slot)",
    )
    # A host's start, in parts (infra/bench/scaling_sim.py, HostStart): 90 s in all.
    scaling.add_argument("--boot-s", type=float, default=40.0, help="launch to user data done")
    scaling.add_argument(
        "--artifact-gb", type=float, default=8.0, help="compiled parts to fetch (both stages)"
    )
    scaling.add_argument("--s3-gb-per-s", type=float, default=0.5, help="S3 → host throughput")
    scaling.add_argument("--load-s", type=float, default=24.0, help="Neuron load, both stages")
    scaling.add_argument("--warmup-s", type=float, default=10.0, help="warm-up calls")
    scaling.add_argument(
        "--warm-pool",
        type=int,
        default=0,
        help="EC2 Auto Scaling warm pool: stopped hosts with the artifacts on disk",
    )
    scaling.add_argument(
        "--resume-s", type=float, default=20.0, help="a stopped warm-pool host to running"
    )
    scaling.add_argument("--max-hosts", type=int, default=400)
    scaling.add_argument(
        "--target",
        type=float,
        default=None,
        help="target utilisation (default: the scaling setting, 0.75)",
    )
    scaling.add_argument(
        "--drain-target-s",
        type=float,
        default=None,
        help="time to clear a backlog (default: the scaling setting, 120 s)",
    )
    scaling.add_argument(
        "--idle-to-zero-s",
        type=float,
        default=None,
        help="idle time before scaling to zero (default: the scaling setting, 120 s)",
    )
    scaling.add_argument(
        "--policy",
        choices=["img2img", "keda", "sagemaker", "ray", "all"],
        default="img2img",
        help="this project's policy, a peer at its documented defaults, or all of them",
    )
    scaling.add_argument(
        "--grid",
        action="store_true",
        help="also run each peer over a small grid of its settings and report its best",
    )
    scaling.add_argument(
        "--price-per-hour",
        type=float,
        default=12.9813,
        help="on-demand $ per host-hour (inf2.48xlarge, us-east-1)",
    )
    scaling.add_argument(
        "--charts", type=Path, default=None, help="write one PNG chart per trace into DIR"
    )
    scaling.add_argument(
        "--forecast",
        action="store_true",
        help="also run this project's policy with its daily forecast (history: the same "
        "trace on each of the past days)",
    )
    scaling.add_argument(
        "--forecast-target",
        type=float,
        default=0.9,
        help="the reactive part's target while the forecast is trusted",
    )
    scaling.add_argument(
        "--artifact",
        action="store_true",
        help="also publish the table and charts (with --charts) as the markdown artifact "
        "img2img-scaling-bench on the Prefect API in PREFECT_API_URL (the local stack's: "
        "see `img2img local env`)",
    )
    scaling.add_argument(
        "--topology",
        choices=["single", "split"],
        default="single",
        help="split: the single pool (both stages per slot) against a pool per stage, "
        "this project's policy on each (--stage-s, --split-slots, --handoff-s)",
    )
    scaling.add_argument(
        "--stage-s",
        default="2.02,1.0",
        help="split: device seconds per image of stage 1 and stage 2 (the single pool's "
        "slot takes their sum)",
    )
    scaling.add_argument(
        "--split-slots",
        default="24,12",
        help="split: slots per host of the stage-1 and the stage-2 pool (inf2.48xlarge: "
        "SD 1.5 alone on one NeuronCore, the x4 upscaler alone on two; both on one slot "
        "take two, --slots-per-host)",
    )
    scaling.add_argument(
        "--handoff-s",
        type=float,
        default=0.32,
        help="split: stage-1 output written → stage-2 start (Lyrebird measured 321 ms)",
    )
    scaling.add_argument("--seed", type=int, default=7)
    scaling.add_argument("--json", action="store_true")
    scaling.set_defaults(func=command)

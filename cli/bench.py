"""Command group: `img2img bench pipeline | models | device | scaling | control-plane |
capacity | soak`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

from cli.common import say
from img2img.config.settings import Settings


def cmd_bench_pipeline(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bench.pipeline import BenchConfig, run_bench

    if args.images < 1 or args.batch_size < 1:
        print("--images and --batch-size must be at least 1", file=sys.stderr)
        return 2
    cfg = BenchConfig(
        images=args.images,
        batch_size=args.batch_size,
        backend=args.backend,
        worker="img2img-warm" if args.worker == "warm" else "process",
        img2img_ms=args.stage1_ms,
        upscale_ms=args.stage2_ms,
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


def cmd_bench_scaling(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bench.scaling_compare import POLICIES, Bench, ahead, compare, with_forecast
    from infra.bench.scaling_sim import TRACES, HostStart

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
    header = (
        f"{'trace':<10}{'policy':<11}{'setting':<9}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}"
        f"{'host-h':>9}{'ratio':>7}{'cost $':>9}{'events':>8}{'idle':>6}{'max':>6}{'cold s':>8}"
    )
    print(header, file=sys.stderr)
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
            cold = row["cold_start_to_first_result_s"]
            print(
                f"{row['trace']:<10}{row['policy']:<11}{row['setting']:<9}"
                f"{row['p50_wait_s']:>8.1f}{row['p95_wait_s']:>8.1f}{row['p99_wait_s']:>8.1f}"
                f"{row['host_hours']:>9.2f}{row['host_hours_ratio']:>7.2f}"
                f"{row['cost_usd']:>9.2f}{row['scale_events']:>8}{row['idle_launches']:>6}"
                f"{row['max_hosts']:>6}{cold if cold is not None else float('nan'):>8.1f}",
                file=sys.stderr,
            )
            if args.json:
                print(json.dumps(row), flush=True)
        if "img2img" in policies and len(policies) > 1:
            verdict = ahead(rows)
            behind = [k for k, v in verdict.items() if not v]
            say(
                f"{name}: img2img ahead of {sum(verdict.values())} of {len(verdict)} "
                f"({'behind: ' + ', '.join(behind) if behind else 'all'})"
            )
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
        f"{bench.stage1.starts.cold_s:.0f} s and {bench.stage2.starts.cold_s:.0f} s; "
        f"hand-off {args.handoff_s} s",
        file=sys.stderr,
    )
    header = (
        f"{'trace':<10}{'single h':>10}{'p95 s':>8}{'stage1 h':>10}{'stage2 h':>10}"
        f"{'split h':>9}{'p95 s':>8}{'ratio':>7}{'default':>9}  split setting"
    )
    print(header, file=sys.stderr)
    for name in names:
        out = compare_split(TRACES[name], policy, bench)
        best = out["split"]
        first, second = best["pools"]
        setting = best["settings"]
        print(
            f"{name:<10}{out['single_host_hours']:>10.2f}{out['single_p95_wait_s']:>8.1f}"
            f"{first['host_hours']:>10.2f}{second['host_hours']:>10.2f}"
            f"{best['split_host_hours']:>9.2f}{best['split_p95_wait_s']:>8.1f}"
            f"{out['split_over_single']:>7.3f}{out['split_default_over_single']:>9.3f}  "
            f"target {setting['target_utilization']}, drain {setting['drain_target_s']:.0f} s",
            file=sys.stderr,
        )
        if args.json:
            print(json.dumps(out), flush=True)
    return 0


def cmd_bench_control_plane(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bench.control_plane import ControlPlaneConfig, run_control_plane

    try:
        rates = tuple(float(r) for r in args.rates.split(","))
    except ValueError:
        print(f"--rates must be numbers separated by commas, got {args.rates!r}", file=sys.stderr)
        return 2
    if not rates or min(rates) <= 0:
        print("--rates must all be above 0 images/s", file=sys.stderr)
        return 2
    if not 0 <= args.device_ms <= 1000:
        print("--device-ms must be within 0..1000", file=sys.stderr)
        return 2
    databases: list[Literal["sqlite", "postgres"]] = (
        ["sqlite", "postgres"] if args.database == "all" else [args.database]
    )
    # Adaptive batches (the default) run beside fixed ones, same steps, one invocation.
    batchings = [True, False] if args.adaptive else [False]
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
            )
            run_control_plane(settings, cfg, args.keep, sys.stdout, sys.stderr)
    return 0


def cmd_bench_soak(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_bench_capacity(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_bench_models(args: argparse.Namespace, settings: Settings) -> int:
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
        stages=["img2img", "upscale"] if args.stage == "all" else [args.stage],
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


def cmd_bench_device(args: argparse.Namespace, settings: Settings) -> int:
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


def add_commands(sub: Any) -> None:
    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
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
        "--stage1-ms",
        type=float,
        default=2020.0,
        help="simulated stage-1 device time per call (SD 1.5 512², Inf2)",
    )
    pipe.add_argument(
        "--stage2-ms", type=float, default=2020.0, help="simulated stage-2 device time per call"
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
    pipe.set_defaults(func=cmd_bench_pipeline)

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
    soak.set_defaults(func=cmd_bench_soak)

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
        help="run with batches sized from the backlog (up to --max-batch) beside the fixed "
        "run; --no-adaptive: the fixed run only",
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
    control.add_argument("--keep", action="store_true", help="leave the bench stack running")
    control.set_defaults(func=cmd_bench_control_plane)

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
    capacity.set_defaults(func=cmd_bench_capacity)

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
    device.set_defaults(func=cmd_bench_device)

    models = bench_sub.add_parser("models", help="stage latency per backend")
    models.add_argument("--stage", choices=["img2img", "upscale", "all"], default="all")
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
    models.set_defaults(func=cmd_bench_models)

    scaling = bench_sub.add_parser("scaling", help="simulate request traces through the policy")
    scaling.add_argument(
        "--trace", choices=["steady", "spike", "diurnal", "lyrebird", "all"], default="all"
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
        help="split: stage-1 output written → stage-2 start (the seed's p1_p2: 321 ms)",
    )
    scaling.add_argument("--seed", type=int, default=7)
    scaling.add_argument("--json", action="store_true")
    scaling.set_defaults(func=cmd_bench_scaling)

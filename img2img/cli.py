"""The `img2img` command line: local stack, dispatcher, demo, compile, benchmarks."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from typing import Any

from img2img.cli_recovery import add_commands as add_recovery_commands
from img2img.settings import Settings, load_settings

NOISE_NOTICE = (
    "note: the stages use tiny random-weight models (no model hub here), so results are "
    "noise. Set IMG2IMG_STAGES__IMG2IMG_MODEL and IMG2IMG_STAGES__UPSCALE_MODEL to diffusers "
    "checkpoints (folders or s3:// URIs) for real images."
)


def _say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def cmd_local(args: argparse.Namespace, settings: Settings) -> int:
    from infra.local_stack import LocalStack, describe

    if args.workers is not None:
        settings.local.workers = args.workers
    if args.action == "supervise":
        from img2img.cli_recovery import cmd_supervise

        return cmd_supervise(settings)
    stack = LocalStack(settings)
    if args.action == "up":
        stack.up(_say)
        _say(f"Prefect UI: http://{settings.local.host}:{settings.local.prefect_port}")
        _say(f"state, logs and PIDs: {stack.state}")
    elif args.action == "down":
        stack.down(_say)
    elif args.action == "env":
        # For running flows or the CLI by hand against the local stack: eval "$(img2img local env)"
        env = stack.child_env()
        for key in sorted(env):
            if key.startswith(("IMG2IMG_", "AWS_")) or key == "PREFECT_API_URL":
                print(f"export {key}={shlex.quote(env[key])}")
    else:
        print(describe(stack.status()))
    return 0


def cmd_dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from prefect.client.orchestration import get_client

    from deployments.dispatcher import Dispatcher
    from img2img.aws import clients_from_settings

    if args.max_batch is not None:
        settings.dispatch.max_batch = args.max_batch
    if args.max_wait is not None:
        settings.dispatch.max_wait_s = args.max_wait
    clients = clients_from_settings(settings.aws)
    with get_client(sync_client=True) as client:
        dispatcher = Dispatcher(clients.sqs, client, settings.storage, settings.dispatch)
        dispatcher.install_signal_handlers()
        stats = dispatcher.run()
    logging.getLogger("img2img.dispatcher").info("stopped: %s", stats)
    return 0


def cmd_autoscale(args: argparse.Namespace, settings: Settings) -> int:
    from prefect.client.orchestration import get_client

    from deployments.autoscaler import build_autoscaler

    with get_client(sync_client=True) as client:
        scaler = build_autoscaler(settings, client)
        if args.once:
            decision = scaler.step()
            print(
                json.dumps(
                    {
                        "desired": decision.desired,
                        "reason": decision.reason,
                        "demand": decision.demand,
                    }
                )
            )
            return 0
        scaler.install_signal_handlers()
        scaler.run()
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from img2img import demo
    from img2img.aws import clients_from_settings
    from infra.local_stack import LOCAL_AWS_KEY, LocalStack

    if args.backend is not None:
        # Children (dispatcher, autoscaler, workers) read their settings from the environment.
        os.environ["IMG2IMG_STAGES__BACKEND"] = args.backend
        settings.stages.backend = args.backend
    stack = LocalStack(settings)
    _say(f"bringing the local stack up on the {settings.stages.backend} backend (idempotent)")
    stack.up(_say)
    _say(NOISE_NOTICE)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", LOCAL_AWS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", LOCAL_AWS_KEY)
    aws = settings.aws.model_copy(
        update={"endpoint_url": settings.local.moto_url, "express_session_auth": False}
    )
    s3 = clients_from_settings(aws).s3
    refs = demo.upload_samples(
        s3, settings.storage.uploads_bucket, args.images, args.steps, args.upscale_steps
    )
    _say(
        f"uploaded {len(refs)} images to s3://{settings.storage.uploads_bucket}/"
        f"{refs[0].key.rsplit('/', 1)[0]}/ ; waiting for results (timeout {args.timeout} s)"
    )
    outcomes = demo.wait_for_outcomes(s3, settings.storage.results_bucket, refs, args.timeout)
    completed = [o for o in outcomes if o.status == "completed"]
    failed = [o for o in outcomes if o.status == "failed"]
    pending = [o for o in outcomes if o.status == "pending"]
    ui = f"http://{settings.local.host}:{settings.local.prefect_port}"
    print(demo.stage_table(outcomes), file=sys.stderr)
    for o in failed:
        _say(f"FAILED {o.ref.uri}: {o.doc.get('stage')}: {o.doc.get('reason')}")
    for o in pending:
        _say(f"TIMED OUT {o.ref.uri}: no result or failure record within {args.timeout} s")
    _say(f"{len(completed)} completed, {len(failed)} failed, {len(pending)} timed out")
    _say(f"runs: {ui}/runs   timing artifacts: {ui}/artifacts/key/img2img-stage-timings")
    _say("the stack keeps running for the UI; stop it with: img2img local down")
    flow_runs = sorted({str(o.doc["flow_run_id"]) for o in outcomes if o.doc.get("flow_run_id")})
    summary: dict[str, Any] = {
        "submitted": len(refs),
        "completed": len(completed),
        "failed": len(failed) + len(pending),
        "stage_p50_ms": demo.stage_p50(outcomes),
        "results": [o.doc["result"] for o in completed],
        "flow_runs": flow_runs,
        "ui": f"{ui}/artifacts/key/img2img-stage-timings",
    }
    if args.json:
        print(json.dumps(summary))
    return 0 if len(completed) == len(refs) else 1


def cmd_bench_pipeline(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bench_pipeline import BenchConfig, run_bench

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
    )
    if args.worker == "process" and args.compare:
        print("--compare already runs the process worker; use --worker warm", file=sys.stderr)
        return 2
    run_bench(settings, cfg, args.compare, settings.local.state_dir / "bench", args.json, args.keep)
    return 0


def cmd_bench_scaling(args: argparse.Namespace, settings: Settings) -> int:
    from img2img.scaling_sim import TRACES, simulate

    names = list(TRACES) if args.trace == "all" else [args.trace]
    policy = settings.scaling.model_copy(
        update={
            "max_hosts": args.max_hosts,
            "slots_per_host": args.slots_per_host,
            "expected_run_s": args.service_s,
            **({"target_utilization": args.target} if args.target is not None else {}),
            **({"drain_target_s": args.drain_target_s} if args.drain_target_s else {}),
            **({"idle_to_zero_s": args.idle_to_zero_s} if args.idle_to_zero_s is not None else {}),
        }
    )
    print(
        f"simulated: {args.service_s} s per image, {args.slots_per_host} slots per host, "
        f"hosts start in {args.host_start_s} s, target utilisation "
        f"{policy.target_utilization}, decisions every {policy.interval_s} s",
        file=sys.stderr,
    )
    header = (
        f"{'trace':<10}{'requests':>10}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}"
        f"{'host-h':>9}{'min h':>8}{'ratio':>7}{'events':>8}{'max':>6}{'cold s':>8}"
    )
    print(header, file=sys.stderr)
    rows = []
    for name in names:
        row = simulate(
            TRACES[name], policy, args.service_s, args.host_start_s, seed=args.seed
        ).summary(args.host_start_s, args.slots_per_host)
        rows.append(row)
        print(
            f"{row['trace']:<10}{row['requests']:>10}{row['p50_wait_s']:>8.1f}"
            f"{row['p95_wait_s']:>8.1f}{row['p99_wait_s']:>8.1f}{row['host_hours']:>9.2f}"
            f"{row['min_host_hours']:>8.2f}{row['host_hours_ratio']:>7.2f}"
            f"{row['scale_events']:>8}{row['max_hosts']:>6}"
            f"{row['cold_start_to_first_result_s']:>8.1f}",
            file=sys.stderr,
        )
    if args.json:
        keys = (
            "trace",
            "p95_wait_s",
            "host_start_s",
            "host_hours",
            "min_host_hours",
            "scale_events",
            "cold_start_to_first_result_s",
        )
        for row in rows:
            print(
                json.dumps(
                    {k: row[k] for k in keys}
                    | {
                        "p50_wait_s": row["p50_wait_s"],
                        "p99_wait_s": row["p99_wait_s"],
                        "target_utilization": policy.target_utilization,
                    }
                )
            )
    return 0


def cmd_compile(args: argparse.Namespace, settings: Settings) -> int:
    from img2img.aws import clients_from_settings
    from img2img.compiled.compile import CompileRequest, compile_stage
    from img2img.errors import Img2ImgError

    needs_s3 = any(v.startswith("s3://") for v in (args.model, args.out))
    s3 = clients_from_settings(settings.aws).s3 if needs_s3 else None
    request = CompileRequest(
        stage=args.stage,
        model=args.model,
        height=args.height,
        width=args.width,
        batch=args.batch,
        backend=args.backend,
        out=args.out,
        guidance=not args.no_guidance,
        cores=args.cores,
        dtype=args.dtype,
    )
    try:
        manifest = compile_stage(request, s3, progress=_say)
    except Img2ImgError as exc:
        print(f"img2img compile: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(manifest.to_json().replace("\n", " "))
    return 0


def cmd_bench_models(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    from infra.bench_models import ModelBenchConfig, neuron_available, run_models_bench

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
    _say(f"bench models: {cfg}")
    run_models_bench(cfg, _say, args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="img2img", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    local = sub.add_parser("local", help="the embedded local stack")
    local.add_argument("action", choices=["up", "down", "status", "env", "supervise"])
    local.add_argument("--workers", type=int, default=None, help="pipeline workers to start")
    local.set_defaults(func=cmd_local)

    dispatch = sub.add_parser("dispatch", help="run the S3-event dispatcher (long-running)")
    dispatch.add_argument("--max-batch", type=int, default=None, help="most images per run")
    dispatch.add_argument("--max-wait", type=float, default=None, help="batching window, s")
    dispatch.set_defaults(func=cmd_dispatch)

    autoscale = sub.add_parser("autoscale", help="run the autoscaler (long-running)")
    autoscale.add_argument("--once", action="store_true", help="one decision, then exit")
    autoscale.set_defaults(func=cmd_autoscale)

    add_recovery_commands(sub)

    demo = sub.add_parser("demo", help="run sample images through the local stack")
    demo.add_argument("--images", type=int, default=8, help="how many sample images")
    demo.add_argument("--json", action="store_true", help="print a JSON summary last")
    demo.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    demo.add_argument("--steps", type=int, default=10, help="stage-1 steps (metadata)")
    demo.add_argument("--upscale-steps", type=int, default=5, help="stage-2 steps (metadata)")
    demo.add_argument(
        "--backend",
        choices=["eager", "torchscript", "simulated"],
        default=None,
        help="stage backend (default: stages.backend); torchscript compiles the tiny models "
        "once into the model cache and runs the Neuron code path on CPU",
    )
    demo.set_defaults(func=cmd_demo)
    comp = sub.add_parser("compile", help="compile a stage to static-shape artifacts")
    comp.add_argument("--stage", choices=["img2img", "upscale"], required=True)
    comp.add_argument(
        "--model",
        required=True,
        help="diffusers folder, s3:// URI, 'tiny' or 'random:sd15|sd21' (random weights)",
    )
    comp.add_argument("--height", type=int, required=True, help="stage input height")
    comp.add_argument("--width", type=int, required=True, help="stage input width")
    comp.add_argument("--batch", type=int, default=1, help="images per call")
    comp.add_argument("--backend", choices=["neuron", "torchscript"], required=True)
    comp.add_argument("--out", required=True, help="new folder or s3:// prefix")
    comp.add_argument(
        "--no-guidance", action="store_true", help="compile for guidance_scale <= 1 (no CFG)"
    )
    comp.add_argument(
        "--cores",
        type=int,
        default=None,
        help="NeuronCores the UNet batch splits over (default 2 for neuron, 1 for torchscript)",
    )
    comp.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    comp.add_argument("--json", action="store_true", help="print the manifest")
    comp.set_defaults(func=cmd_compile)

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
    pipe.add_argument("--steps", type=int, default=10, help="eager: stage-1 steps")
    pipe.add_argument("--upscale-steps", type=int, default=5, help="eager: stage-2 steps")
    pipe.add_argument("--timeout", type=float, default=3600.0)
    pipe.add_argument("--keep", action="store_true", help="leave the bench stack running")
    pipe.add_argument("--json", action="store_true")
    pipe.set_defaults(func=cmd_bench_pipeline)

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
    scaling.add_argument(
        "--host-start-s",
        type=float,
        default=90.0,
        help="launch to first request: boot + model load",
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
    scaling.add_argument("--seed", type=int, default=7)
    scaling.add_argument("--json", action="store_true")
    scaling.set_defaults(func=cmd_bench_scaling)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "demo" and args.images < 1:
        print(f"--images must be at least 1, got {args.images}", file=sys.stderr)
        return 2
    settings = load_settings()
    result: int = args.func(args, settings)
    return result


if __name__ == "__main__":
    sys.exit(main())

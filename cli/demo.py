"""Command group: `img2img demo`, sample uploads through the local stack."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cli.common import NOISE_NOTICE, say
from img2img.config.settings import Settings


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from img2img.aws.clients import clients_from_settings
    from infra.local import demo
    from infra.local.audit import audit
    from infra.local.resources import APP_QUEUE, local_topic_arn
    from infra.local.stack import LOCAL_AWS_KEY, LocalStack

    if args.backend is not None:
        # Children (dispatcher, autoscaler, workers) read their settings from the environment.
        os.environ["IMG2IMG_STAGES__BACKEND"] = args.backend
        settings.stages.backend = args.backend
    if args.topology is not None:
        os.environ["IMG2IMG_TOPOLOGY"] = args.topology
        settings.topology = args.topology
    stack = LocalStack(settings)
    say(
        f"bringing the local stack up on the {settings.stages.backend} backend, "
        f"{settings.topology} topology (idempotent)"
    )
    stack.up(say)
    say(NOISE_NOTICE)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", LOCAL_AWS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", LOCAL_AWS_KEY)
    aws = settings.aws.model_copy(
        update={"endpoint_url": settings.local.moto_url, "express_session_auth": False}
    )
    clients = clients_from_settings(aws)
    s3 = clients.s3
    # The local stack's processes announce to the local topic unless told otherwise.
    local_topic = local_topic_arn(aws.region)
    messages_on = os.environ.get("IMG2IMG_NOTIFY__TOPIC_ARN", local_topic) == local_topic
    refs = demo.upload_samples(
        s3, settings.storage.uploads_bucket, args.images, args.steps, args.upscale_steps
    )
    say(
        f"uploaded {len(refs)} images to s3://{settings.storage.uploads_bucket}/"
        f"{refs[0].key.rsplit('/', 1)[0]}/ ; waiting for results (timeout {args.timeout} s)"
    )
    if messages_on:
        queue = clients.sqs.get_queue_url(QueueName=APP_QUEUE)["QueueUrl"]
        say(f"waiting on the completion messages, as an app would (SQS queue {APP_QUEUE})")
        outcomes = demo.wait_for_notifications(clients.sqs, queue, refs, args.timeout)
    else:
        say("completion messages are off here: waiting by polling the results bucket")
        outcomes = demo.wait_for_outcomes(s3, settings.storage.results_bucket, refs, args.timeout)
    # The exactly-once audit of what the stack produced for these uploads (messages: the
    # ones received while waiting; with messages off, none is expected).
    report = audit(
        s3,
        settings.storage.results_bucket,
        refs,
        messages=[m for o in outcomes for m in o.received] if messages_on else None,
        stage_bucket=settings.storage.stage_bucket,
    )
    for problem in report.problems:
        say(f"AUDIT {problem}")
    counts = report.counts()
    completed = [o for o in outcomes if o.status == "completed"]
    failed = [o for o in outcomes if o.status == "failed"]
    pending = [o for o in outcomes if o.status == "pending"]
    ui = f"http://{settings.local.host}:{settings.local.prefect_port}"
    print(demo.stage_table(outcomes), file=sys.stderr)
    for o in failed:
        stage, reason = o.failure
        say(f"FAILED {o.ref.uri}: {stage}: {reason}")
    for o in pending:
        say(f"TIMED OUT {o.ref.uri}: no result or failure record within {args.timeout} s")
    say(f"{len(completed)} completed, {len(failed)} failed, {len(pending)} timed out")
    say(f"runs: {ui}/runs   timing artifacts: {ui}/artifacts/key/img2img-stage-timings")
    say("the stack keeps running for the UI; stop it with: img2img local down")
    flow_runs = sorted(
        {
            str(o.doc[k])
            for o in outcomes
            for k in ("generate_flow_run_id", "flow_run_id")
            if o.doc.get(k)
        }
    )
    summary: dict[str, Any] = {
        "topology": settings.topology,
        "submitted": len(refs),
        "completed": len(completed),
        "failed": len(failed) + len(pending),
        "notified": sum(1 for o in outcomes if o.messages),
        "duplicate_messages": sum(max(o.messages - 1, 0) for o in outcomes),
        "lost": counts["lost"],
        "duplicated": counts["duplicated"],
        "audit": {k: v for k, v in counts.items() if k not in ("uploads", "lost", "duplicated")},
        "stage_p50_ms": demo.stage_p50(outcomes),
        # The most images one device call held, per stage (see docs/architecture/device-batches.md).
        "device_batch_max": {
            stage: max((o.doc.get("device_batch", {}).get(stage, 0) for o in completed), default=0)
            for stage in ("generate", "upscale")
        },
        "results": [o.result_uri for o in completed],
        "flow_runs": flow_runs,
        "ui": f"{ui}/artifacts/key/img2img-stage-timings",
    }
    if args.json:
        print(json.dumps(summary))
    return 0 if len(completed) == len(refs) and report.clean else 1


def add_commands(sub: Any) -> None:
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
    demo.add_argument(
        "--topology",
        choices=["single", "split"],
        default=None,
        help="one pool for both stages, or a pool per stage (default: IMG2IMG_TOPOLOGY, else "
        "what the running stack uses, else single)",
    )
    demo.set_defaults(func=cmd_demo)

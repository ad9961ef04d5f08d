"""`img2img bench latency`: where a lone upload's time goes outside the models, hop by hop.

A stack of its own (state folder `bench-latency`, ports next to the demo stack's): the
Prefect server, moto, one warm host per pool of the topology on the simulated device, the
dispatcher; no autoscaler (the hosts are warm and fixed). The worker's poll is Prefect's
default (10 s) unless told otherwise, so nothing is gained by polling faster; the monitor
settings are the product's defaults (no task runs, WARNING logs), not the local stack's
views. Two phases:

- `lone`: uploads one at a time, each after the previous one's completion message (and a
  gap), on a warm idle pool;
- `steady`: uploads at a fixed rate, open loop, for a while.

Each image's hops come from its completion message (the run's own `timings_ms`, whose
queue wait is split into intake, batching, claim and run start) and from the bench's clock
(the upload's PUT, the message's arrival). One JSON line per phase: p50/p95 of each hop,
the total, the device time and the non-inference time (total − the image's own device
time: stage 1 + stage 2).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TextIO

from img2img.config.settings import Settings
from img2img.delivery.notify import upload_of
from img2img.intake.events import ObjectRef
from img2img.observe.timing import percentile
from infra.bench.control_plane import Outcomes, fixed_hosts_env, upload_at, views
from infra.bench.pipeline import wait_for_log
from infra.local.demo import upload_sample
from infra.local.env import local_clients, stack_beside
from infra.local.resources import APP_QUEUE
from infra.local.stack import LocalStack

# The hops of one image, in order, each from two instants (or the run's own timings).
HOPS = (
    "intake",  # S3 event → received by the dispatcher
    "batching",  # → its flow run created
    "claim",  # → claimed by a worker (its Pending state)
    "run_start",  # → the flow's first line
    "to_device",  # → its first device call (outcome check, copy, download, preprocess)
    "device",  # → its last device call ends (both stages, the wait between them)
    "handoff",  # split topology: stage 1's outputs written → the stage-2 run's first line
    "to_result",  # → its result written (post-process, upload, result document)
    "message",  # → its completion message read by the app
)
Phase = Literal["lone", "steady"]


@dataclass(frozen=True)
class LatencyConfig:
    topology: Literal["single", "split"]
    poll_s: float
    lone: int
    gap_s: float
    rate: float  # images/s in the steady phase; 0: no steady phase
    steady_s: float
    generate_ms: float
    upscale_ms: float
    timeout_s: float = 120.0
    # The Prefect server's database: SQLite (one writer at a time) or PostgreSQL (as on AWS).
    database: Literal["sqlite", "postgres"] = "sqlite"
    # Warm hosts per pool and slots per host (the control-plane bench runs 2 x 1).
    hosts: int = 1
    slots: int = 1


def image_hops(message: dict[str, Any], put_at: float, read_at: float) -> dict[str, float]:
    """Milliseconds of each hop of one image, from its completion message, when the bench
    PUT it and when the bench read the message (epoch seconds)."""
    t = message.get("timings_ms") or {}
    hops = {h: float(t[h]) for h in ("intake", "batching", "claim", "run_start") if h in t}
    hops["to_device"] = sum(float(t.get(k, 0.0)) for k in ("check", "copy", "download"))
    hops["to_device"] += float(t.get("preprocess", 0.0))
    device = float(t.get("generate", 0.0)) + float(t.get("upscale", 0.0))
    hops["device"] = device + float(t.get("device_wait", 0.0))
    if "handoff" in t:
        hops["handoff"] = float(t["handoff"])
    hops["to_result"] = float(t.get("postprocess", 0.0)) + float(t.get("upload", 0.0))
    finished = message.get("finished_at")
    if finished:
        hops["message"] = max((read_at - datetime.fromisoformat(finished).timestamp()) * 1000, 0)
    total = (read_at - put_at) * 1000.0
    hops["total"] = total
    hops["device_own"] = device
    hops["non_inference"] = total - device
    hops["other_wait"] = float(t.get("other_wait", 0.0))
    return hops


def summarize(
    phase: Phase, cfg: LatencyConfig, rows: list[dict[str, float]], uploads: int
) -> dict[str, Any]:
    """The phase's JSON line: p50 and p95 of every hop over its images."""
    out: dict[str, Any] = {
        "bench": "latency",
        "phase": phase,
        "topology": cfg.topology,
        "database": cfg.database,
        "poll_s": cfg.poll_s,
        "hosts": cfg.hosts,
        "slots": cfg.slots,
        "device_ms_per_call": [cfg.generate_ms, cfg.upscale_ms],
        "uploads": uploads,
        "outcomes": len(rows),
        "lost": uploads - len(rows),
    }
    if phase == "steady":
        out["rate_images_per_s"] = cfg.rate
    for hop in (*HOPS, "other_wait", "total", "device_own", "non_inference"):
        values = [r[hop] for r in rows if hop in r]
        if values:
            name = "device" if hop == "device_own" else hop
            key = f"{name}_ms" if hop != "device" else "device_and_wait_ms"
            out[f"{key}_p50"] = round(percentile(values, 50))
            out[f"{key}_p95"] = round(percentile(values, 95))
    return out


def arrivals(
    outcomes: Outcomes, refs: list[ObjectRef], timeout_s: float
) -> list[tuple[dict[str, Any], float]]:
    """The (completion message, arrival time) of each of `refs` that arrived in time."""
    docs = outcomes.wait(refs, time.monotonic() + timeout_s)
    return [(doc, outcomes.arrived[upload_of(doc).identity]) for doc in docs]


def bench_settings(base: Settings, cfg: LatencyConfig) -> Settings:
    local = stack_beside(
        base.local,
        base.local.state_dir / "bench-latency",
        30,
        database=cfg.database,
        workers=cfg.hosts,
        dispatchers=1,
        autoscaler=False,
        worker_type="img2img-warm",
    )
    worker = base.worker.model_copy(update={"slots": cfg.slots})
    return base.model_copy(update={"local": local, "topology": cfg.topology, "worker": worker})


def stack_env(cfg: LatencyConfig) -> dict[str, str]:
    return {
        "PREFECT_WORKER_QUERY_SECONDS": str(cfg.poll_s),
        "IMG2IMG_STAGES__BACKEND": "simulated",
        "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": str(cfg.generate_ms),
        "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": str(cfg.upscale_ms),
        "IMG2IMG_STAGES__SIMULATED__LOAD_S": "0.5",
        **fixed_hosts_env(cfg.hosts, cfg.slots),
        **{f"IMG2IMG_MONITOR__{k}": v for k, v in views()["default"].items()},
    }


def run_latency(
    base: Settings, cfg: LatencyConfig, keep: bool, out: TextIO, err: TextIO
) -> list[dict[str, Any]]:
    settings = bench_settings(base, cfg)

    def say(message: str) -> None:
        print(f"  {message}", file=err, flush=True)

    env = stack_env(cfg)
    # The stack's children read the poll from the environment it was started in.
    previous = os.environ.get("PREFECT_WORKER_QUERY_SECONDS")
    os.environ["PREFECT_WORKER_QUERY_SECONDS"] = str(cfg.poll_s)
    stack = LocalStack(settings, extra_env=env)
    say(
        f"latency bench, {cfg.topology} topology on {cfg.database}, worker poll {cfg.poll_s} s, "
        "simulated device "
        f"{cfg.generate_ms}/{cfg.upscale_ms} ms per call"
    )
    lines: list[dict[str, Any]] = []
    messages: Outcomes | None = None
    try:
        stack.down(say)
        stack.up(say)
        for role in stack.roles:
            for i in range(cfg.hosts):
                log = stack.log_path(f"{role.worker_prefix}-{i}")
                wait_for_log(log, ": ready (pid", cfg.slots, 180.0)
        clients = local_clients(settings)
        queue = clients.sqs.get_queue_url(QueueName=APP_QUEUE)["QueueUrl"]
        messages = Outcomes(clients.sqs, queue).start()
        bucket = settings.storage.uploads_bucket
        tag = time.strftime("%Y%m%d-%H%M%S")
        say("warm-up: 2 uploads")
        for i in range(2):
            ref = upload_sample(clients.s3, bucket, f"bench/{tag}/warm {i}.png", i, 2, 2)
            arrivals(messages, [ref], cfg.timeout_s)
        say(f"lone: {cfg.lone} uploads, one at a time, {cfg.gap_s} s apart")
        rows: list[dict[str, float]] = []
        for i in range(cfg.lone):
            time.sleep(cfg.gap_s)
            put_at = time.time()
            ref = upload_sample(clients.s3, bucket, f"bench/{tag}/lone {i:03d}.png", i, 2, 2)
            rows += [image_hops(body, put_at, at) for body, at in arrivals(messages, [ref], 120)]
        lines.append(summarize("lone", cfg, rows, cfg.lone))
        print(json.dumps(lines[-1]), file=out, flush=True)
        if cfg.rate > 0:
            say(f"steady: {cfg.rate} images/s for {cfg.steady_s:.0f} s")
            started = time.time()
            refs = upload_at(clients.s3, bucket, cfg.rate, cfg.steady_s, f"{tag}/steady")
            sent = {r.identity: started + i / cfg.rate for i, r in enumerate(refs)}
            arrived = arrivals(messages, refs, cfg.timeout_s + cfg.steady_s)
            steady = [image_hops(body, sent[upload_of(body).identity], at) for body, at in arrived]
            lines.append(summarize("steady", cfg, steady, len(refs)))
            print(json.dumps(lines[-1]), file=out, flush=True)
    finally:
        if messages is not None:
            messages.stop()
        if not keep:
            stack.down(say)
        if previous is None:
            os.environ.pop("PREFECT_WORKER_QUERY_SECONDS", None)
        else:
            os.environ["PREFECT_WORKER_QUERY_SECONDS"] = previous
    return lines

"""`img2img bench lanes`: lanes and tenants on the local stack, against the issue's goals.

A stack of its own (state folder `bench-lanes`, ports next to the demo stack's): the Prefect
server, moto, the dispatcher and the autoscaler holding a fixed pool of warm hosts (min =
max hosts, so its fleet view and /metrics run), each on the simulated device at call times
shaped like the published ones (stage 1 twice stage 2), scaled down so that the device, not
this machine's CPU, is the bound. One image a device call, so "one bulk call" is one
image's call of a stage. Phases, one JSON line each:

- `idle`: tenant B's lone interactive uploads, one every `every_s`, on the idle pool;
- `burst`: tenant A uploads `bulk` images into the bulk lane at once while B goes on: B's
  total p95 against its idle p95 plus one bulk call of each stage (B enters the device once
  per stage, and at each waits at most for the bulk call already on it), and the device's
  duty cycle while A's burst runs;
- `fair`: tenants C and D upload `fair` images each into the bulk lane, D `fair_offset_s`
  after C: their completion rates while both have work waiting;
- `cost`: the host cost the tenants were attributed by the fleet view (its /metrics),
  against what the pool's hosts cost by the bench's clock, and each tenant's share against
  its share of device time by the bench's own count (the completion messages).

With `lanes` off (lanes and tenants both off: what a stack without them does), the same
phases run for comparison; the goals are for lanes on.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from img2img.config.settings import Settings
from img2img.delivery.notify import upload_of
from img2img.dev.samples import sample_metadata, sample_png
from img2img.intake.events import ObjectRef
from img2img.observe.timing import percentile
from infra.bench.control_plane import Outcomes, fixed_hosts_env, views
from infra.local.env import local_clients, stack_beside
from infra.local.resources import APP_QUEUE
from infra.local.stack import LocalStack


@dataclass(frozen=True)
class LanesConfig:
    lanes: bool = True
    hosts: int = 2
    slots: int = 1
    bulk: int = 2000  # tenant A's burst
    fair: int = 1000  # each of tenants C and D
    fair_offset_s: float = 30.0
    every_s: float = 2.0  # tenant B's interactive uploads
    idle: int = 15  # B's uploads on the idle pool
    generate_ms: float = 400.0
    upscale_ms: float = 200.0
    # Denoising steps a call is cut into (the published call is 50 steps): with lanes on,
    # a bulk call hands the device to an interactive one between two of them.
    steps: int = 50
    price_per_hour: float = 12.9813  # inf2.48xlarge on demand, us-east-1
    timeout_s: float = 1800.0
    # Bursts are uploaded at this pace: faster than the device drains them (a backlog
    # builds), slower than this machine's S3 endpoint and dispatcher take them in.
    upload_rate: float = 5.0
    # The Prefect server's database: PostgreSQL, as on AWS (SQLite's one writer at a time
    # stalls run starts by seconds under this load).
    database: Literal["sqlite", "postgres"] = "postgres"
    rows: Path | None = None  # every upload's row, as JSON lines


@dataclass(frozen=True)
class Done:
    """One upload's outcome as the bench saw it."""

    tenant: str
    lane: str | None
    put_at: float  # epoch seconds the bench uploaded it
    read_at: float  # when the bench read its completion message
    outcome: str
    total_ms: float
    device_ms: float  # its own device time (both stages)
    device_wait_ms: float  # behind other images on the device
    hops: dict[str, float] = field(default_factory=dict)  # the run's own timings

    @property
    def finished(self) -> float:
        return self.read_at


def done_of(doc: dict[str, Any], tenant: str, put_at: float, read_at: float) -> Done:
    """The bench's row for one completion message."""
    t = doc.get("timings_ms") or {}
    return Done(
        tenant=tenant,
        lane=doc.get("lane"),
        put_at=put_at,
        read_at=read_at,
        outcome=str(doc.get("outcome")),
        total_ms=(read_at - put_at) * 1000.0,
        device_ms=float(t.get("generate", 0.0)) + float(t.get("upscale", 0.0)),
        device_wait_ms=float(t.get("device_wait", 0.0)),
        hops={k: float(t[k]) for k in HOPS if k in t},
    )


# The parts of an upload's time its completion message names, each reported at p95.
HOPS = ("intake", "batching", "claim", "run_start", "device_wait", "other_wait")


def latency_line(phase: str, rows: list[Done], uploads: int) -> dict[str, Any]:
    """p50/p95 of B's totals and device waits, and what was lost."""
    totals = [r.total_ms for r in rows]
    waits = [r.device_wait_ms for r in rows]
    return {
        "uploads": uploads,
        "outcomes": len(rows),
        "lost": uploads - len(rows),
        "failures": sum(1 for r in rows if r.outcome != "result"),
        "total_ms_p50": round(percentile(totals, 50)) if rows else None,
        "total_ms_p95": round(percentile(totals, 95)) if rows else None,
        "device_wait_ms_p95": round(percentile(waits, 95)) if rows else None,
        "device_wait_ms_max": round(max(waits)) if rows else None,
        "p95_ms": {
            hop: round(percentile([r.hops[hop] for r in rows if hop in r.hops], 95))
            for hop in HOPS
            if any(hop in r.hops for r in rows)
        },
    }


def duty_cycle(rows: list[Done], start: float, end: float, slots: int) -> float:
    """Device time of the images finished in [start, end] ÷ the slots' time in it."""
    busy = sum(r.device_ms for r in rows if start <= r.finished <= end) / 1000.0
    span = (end - start) * slots
    return busy / span if span > 0 else 0.0


def overlap_rates(first: list[Done], second: list[Done]) -> dict[str, Any]:
    """Two tenants' completion rates while both had work waiting: from the later one's
    first upload to the earlier of their last completions."""
    if not first or not second:
        return {"overlap_s": 0.0}
    start = max(min(r.put_at for r in first), min(r.put_at for r in second))
    end = min(max(r.finished for r in first), max(r.finished for r in second))
    span = end - start
    if span <= 0:
        return {"overlap_s": 0.0}
    rates = [sum(1 for r in rows if start <= r.finished <= end) / span for rows in (first, second)]
    return {
        "overlap_s": round(span, 1),
        "rates_per_s": [round(v, 3) for v in rates],
        "rate_ratio": round(min(rates) / max(rates), 3) if max(rates) > 0 else None,
    }


@dataclass
class Uploads:
    """What the bench uploaded: (ref, tenant, put time) by identity."""

    s3: Any
    bucket: str
    tag: str
    lanes: bool
    sent: dict[str, tuple[str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, tenant: str, lane: str, index: int) -> ObjectRef:
        metadata = sample_metadata(index, 2, 2)
        if self.lanes:
            metadata = {**metadata, "lane": lane, "tenant": tenant}
        key = f"{tenant}/{self.tag}/{lane} {index:05d}.png"
        at = time.time()
        response = self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=sample_png(index),
            ContentType="image/png",
            Metadata=metadata,
        )
        ref = ObjectRef(
            bucket=self.bucket,
            key=key,
            etag=response["ETag"].strip('"'),
            version_id=response.get("VersionId"),
        )
        with self._lock:
            self.sent[ref.identity] = (tenant, at)
        return ref

    def many(self, tenant: str, lane: str, count: int, rate: float) -> list[ObjectRef]:
        """`count` uploads at `rate` a second (two at a time: one PUT waits for its event)."""
        start = time.monotonic()

        def paced(i: int) -> ObjectRef:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            return self.put(tenant, lane, i)

        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(pool.map(paced, range(count)))


class Interactive:
    """Tenant B: one interactive upload every `every_s` in a thread until stopped."""

    def __init__(self, uploads: Uploads, every_s: float, first: int) -> None:
        """`first`: the index of its first upload (each upload a new image and key: the
        same bytes under the same key would be the same upload, already done)."""
        self.uploads, self.every_s = uploads, every_s
        self.refs: list[ObjectRef] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._index = first

    def start(self) -> Interactive:
        self._thread.start()
        return self

    def stop(self) -> list[ObjectRef]:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.refs

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refs.append(self.uploads.put("b", "interactive", self._index))
            self._index += 1
            self._stop.wait(self.every_s)


def bench_settings(base: Settings, cfg: LanesConfig) -> Settings:
    local = stack_beside(
        base.local,
        base.local.state_dir / "bench-lanes",
        40,
        database=cfg.database,
        workers=0,
        dispatchers=1,
        autoscaler=True,
        worker_type="img2img-warm",
    )
    return base.model_copy(update={"local": local})


def stack_env(cfg: LanesConfig) -> dict[str, str]:
    on = "true" if cfg.lanes else "false"
    return {
        "IMG2IMG_LANES__ENABLED": on,
        "IMG2IMG_TENANTS__ENABLED": on,
        "IMG2IMG_TENANTS__FROM_KEY": "true",
        "IMG2IMG_STAGES__BACKEND": "simulated",
        "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": str(cfg.generate_ms),
        "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": str(cfg.upscale_ms),
        "IMG2IMG_STAGES__SIMULATED__STEPS": str(cfg.steps),
        "IMG2IMG_STAGES__SIMULATED__LOAD_S": "0.5",
        "IMG2IMG_STAGES__DEVICE_BATCH": "1",
        **fixed_hosts_env(cfg.hosts, cfg.slots),
        "IMG2IMG_SCALING__MIN_HOSTS": str(cfg.hosts),
        "IMG2IMG_MONITOR__HOURLY_PRICE_USD": str(cfg.price_per_hour),
        # The fleet window covers the whole bench: its attributed cost is the bench's.
        "IMG2IMG_MONITOR__FLEET_WINDOW_S": "7200",
        "IMG2IMG_MONITOR__FLEET_INTERVAL_S": "5",
        **{f"IMG2IMG_MONITOR__{k}": v for k, v in views()["default"].items()},
    }


def _rows(outcomes: Outcomes, uploads: Uploads, refs: list[ObjectRef], until: float) -> list[Done]:
    docs = outcomes.wait(refs, until)
    rows = []
    for doc in docs:
        identity = upload_of(doc).identity
        tenant, at = uploads.sent[identity]
        rows.append(done_of(doc, tenant, at, outcomes.arrived[identity]))
    return rows


def run_lanes(
    base: Settings,
    cfg: LanesConfig,
    keep: bool,
    out: TextIO,
    err: TextIO,
    chart: Path | None = None,
) -> list[dict[str, Any]]:
    settings = bench_settings(base, cfg)

    def say(message: str) -> None:
        print(f"  {message}", file=err, flush=True)

    def emit(line: dict[str, Any]) -> None:
        line = {"bench": "lanes", "lanes": cfg.lanes, "database": cfg.database, **line}
        lines.append(line)
        print(json.dumps(line), file=out, flush=True)

    stack = LocalStack(settings, extra_env=stack_env(cfg))
    say(
        f"lanes bench on {cfg.database}, lanes {'on' if cfg.lanes else 'off'}: {cfg.hosts} "
        "warm host(s) x "
        f"{cfg.slots} slot(s), simulated device {cfg.generate_ms}/{cfg.upscale_ms} ms a call "
        "of one image"
    )
    lines: list[dict[str, Any]] = []
    messages: Outcomes | None = None
    try:
        stack.down(say)
        stack.up(say)
        clients = local_clients(settings)
        queue = clients.sqs.get_queue_url(QueueName=APP_QUEUE)["QueueUrl"]
        messages = Outcomes(clients.sqs, queue).start()
        uploads = Uploads(
            clients.s3, settings.storage.uploads_bucket, time.strftime("%H%M%S"), cfg.lanes
        )
        pool_since = time.time()
        say(f"warm-up: {2 * cfg.hosts} uploads (the pool of {cfg.hosts} warm hosts comes up)")
        warm = [uploads.put("b", "interactive", i) for i in range(2 * cfg.hosts)]
        _rows(messages, uploads, warm, time.monotonic() + 300)
        _phases(cfg, uploads, messages, say, emit, chart)
        _cost(cfg, settings, uploads, messages, pool_since, emit, say)
    finally:
        if messages is not None:
            messages.stop()
        if not keep:
            stack.down(say)
    return lines


def _phases(
    cfg: LanesConfig,
    uploads: Uploads,
    messages: Outcomes,
    say: Callable[[str], None],
    emit: Callable[[dict[str, Any]], None],
    chart: Path | None,
) -> None:
    say(f"idle: tenant B uploads {cfg.idle} interactive images, one every {cfg.every_s} s")
    b = Interactive(uploads, cfg.every_s, first=100_000).start()
    time.sleep(cfg.idle * cfg.every_s)
    idle_refs = b.stop()
    idle = _rows(messages, uploads, idle_refs, time.monotonic() + 120)
    idle_line = {"phase": "idle", "tenant": "b", **latency_line("idle", idle, len(idle_refs))}
    emit(idle_line)

    say(f"burst: tenant A uploads {cfg.bulk} bulk images at once; B goes on")
    b = Interactive(uploads, cfg.every_s, first=200_000).start()
    burst_at = time.time()
    bulk_refs = uploads.many("a", "bulk", cfg.bulk, cfg.upload_rate)
    bulk = _rows(messages, uploads, bulk_refs, time.monotonic() + cfg.timeout_s)
    b_refs = b.stop()
    during = _rows(messages, uploads, b_refs, time.monotonic() + 120)
    end = max((r.finished for r in bulk), default=time.time())
    start = min((r.finished for r in bulk), default=end)
    # B enters the device once a stage: the goal's bound is one bulk call a stage; with
    # turns between diffusion steps (lanes on), one bulk step a stage.
    idle_p95 = idle_line["total_ms_p95"] or 0
    bound = idle_p95 + cfg.generate_ms + cfg.upscale_ms
    step_bound = idle_p95 + (cfg.generate_ms + cfg.upscale_ms) / cfg.steps
    line = latency_line("burst", during, len(b_refs))
    emit(
        {
            "phase": "burst",
            "tenant": "b",
            **line,
            "bulk_uploads": len(bulk_refs),
            "bulk_outcomes": len(bulk),
            "bulk_lost": len(bulk_refs) - len(bulk),
            "burst_s": round(end - burst_at, 1),
            "b_idle_total_ms_p95": idle_line["total_ms_p95"],
            "bound_ms": round(bound),
            "b_within_bound": line["total_ms_p95"] is not None and line["total_ms_p95"] <= bound,
            "step_bound_ms": round(step_bound),
            "b_within_step_bound": line["total_ms_p95"] is not None
            and line["total_ms_p95"] <= step_bound,
            "bulk_call_ms": [cfg.generate_ms, cfg.upscale_ms],
            "steps_per_call": cfg.steps,
            "duty_cycle": round(duty_cycle([*bulk, *during], start, end, cfg.hosts * cfg.slots), 3),
        }
    )

    say(
        f"fair: tenants C and D upload {cfg.fair} bulk images each, D {cfg.fair_offset_s:.0f} s "
        "after C"
    )
    c_refs: list[ObjectRef] = []
    sender = threading.Thread(
        target=lambda: c_refs.extend(uploads.many("c", "bulk", cfg.fair, cfg.upload_rate)),
        daemon=True,
    )
    sender.start()
    time.sleep(cfg.fair_offset_s)
    d_refs = uploads.many("d", "bulk", cfg.fair, cfg.upload_rate)
    sender.join(timeout=cfg.timeout_s)
    c = _rows(messages, uploads, c_refs, time.monotonic() + cfg.timeout_s)
    d = _rows(messages, uploads, d_refs, time.monotonic() + cfg.timeout_s)
    fair = overlap_rates(c, d)
    ratio = fair.get("rate_ratio")
    emit(
        {
            "phase": "fair",
            "tenants": ["c", "d"],
            "uploads": [len(c_refs), len(d_refs)],
            "outcomes": [len(c), len(d)],
            "lost": len(c_refs) + len(d_refs) - len(c) - len(d),
            **fair,
            "within_10_percent": ratio is not None and ratio >= 0.9,
        }
    )
    if cfg.rows is not None:
        with cfg.rows.open("w") as f:
            for name, rows in (("idle", idle), ("burst", [*bulk, *during]), ("fair", [*c, *d])):
                for r in rows:
                    f.write(json.dumps({"phase": name, **r.__dict__}) + "\n")
    if chart is not None:
        from infra.bench.lanes_chart import lanes_png

        chart.parent.mkdir(parents=True, exist_ok=True)
        chart.write_bytes(lanes_png(bulk, during, burst_at, c, d, cfg.lanes))
        say(f"chart: {chart}")


def _cost(
    cfg: LanesConfig,
    settings: Settings,
    uploads: Uploads,
    messages: Outcomes,
    pool_since: float,
    emit: Callable[[dict[str, Any]], None],
    say: Callable[[str], None],
) -> None:
    """The fleet view's attributed cost (its /metrics, after its next refresh) against the
    hosts' cost by the bench's clock, and each tenant's share against its device time."""
    import urllib.request

    from img2img.observe.scrape import parse

    if not cfg.lanes:
        return
    say("cost: waiting for the fleet view's next refresh")
    time.sleep(12)
    with urllib.request.urlopen(
        settings.local.metrics_url,
        timeout=10,
        # the local stack's loopback metrics URL (bandit B310)
    ) as response:  # nosec B310
        scraped = parse(response.read().decode())
    now = time.time()
    host_cost = cfg.hosts * (now - pool_since) / 3600.0 * cfg.price_per_hour
    attributed = {name: figures.get("cost_usd", 0.0) for name, figures in scraped.tenants.items()}
    device: dict[str, float] = {}
    for identity, doc in list(messages.docs.items()):
        tenant = uploads.sent.get(identity, ("?", 0.0))[0]
        t = doc.get("timings_ms") or {}
        device[tenant] = device.get(tenant, 0.0) + float(t.get("generate", 0.0))
        device[tenant] += float(t.get("upscale", 0.0))
    total_device = sum(device.values()) or 1.0
    total = sum(attributed.values())
    deviation = (
        {
            name: round(attributed.get(name, 0.0) / total - share / total_device, 4)
            for name, share in device.items()
        }
        if total
        else {}
    )
    emit(
        {
            "phase": "cost",
            "host_cost_usd": round(host_cost, 4),
            "attributed_usd": round(total, 4),
            "attributed_over_host_cost": round(total / host_cost, 3) if host_cost else None,
            "within_5_percent": bool(host_cost) and abs(total / host_cost - 1) <= 0.05,
            "by_tenant_usd": {k: round(v, 4) for k, v in sorted(attributed.items())},
            "share_minus_device_share": deviation,
        }
    )

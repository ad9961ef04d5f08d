"""`img2img bench control-plane`: the orchestration alone, at stepped arrival rates.

A stack of its own (state folder `bench-control`, ports next to the demo stack's): the
Prefect server on SQLite or PostgreSQL, moto, H warm-worker hosts with S slots each on the
simulated device (a few ms per call, no model), R dispatcher replicas and the recovery
service; no autoscaler (the hosts are fixed). Each step uploads images at a fixed rate for
`step_s` seconds, waits for every outcome, and measures over that window what the control
plane spent: API requests (the server's own access log), CPU seconds of each process group
(from /proc, children included), database growth in bytes and rows. It prints one JSON line
per step and stops at the first step that does not keep up.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from img2img.config.monitor import MonitorSettings
from img2img.config.settings import Settings
from img2img.delivery.notify import upload_of
from img2img.intake.events import ObjectRef
from infra.bench.control_figures import (
    EVENT_TABLES,
    GROWING_TABLES,
    StepInput,
    count_requests,
    name_bound,
    server_cpu_s,
    step_figures,
    stop_reason,
    without_health_checks,
)
from infra.bench.pipeline import wait_for_log
from infra.local.demo import upload_sample
from infra.local.env import dispatcher_name, local_clients, stack_beside
from infra.local.postgres import DATABASE, psql
from infra.local.resources import APP_QUEUE
from infra.local.stack import LB, REPLICA, SERVICES, LocalStack

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BATCH_LINE = re.compile(r"flow run \S+ for (\d+) objects")


@dataclass(frozen=True)
class ControlPlaneConfig:
    database: Literal["sqlite", "postgres"]  # a cluster (ha): postgres
    hosts: int
    slots: int
    dispatchers: int
    device_ms: float
    rates: tuple[float, ...]  # images/s, one step each
    step_s: float
    drain_s: float
    batch_size: int
    max_queue_wait_s: float
    views: Literal["default", "all", "lean"] = "default"
    adaptive: bool = False  # batches sized from the backlog, from batch_size up to max_batch
    max_batch: int = 512
    load_s: float = 1.0
    warmup_images: int = 16
    idle_s: float = 15.0  # the idle phase before the warm-up: cores and requests a minute
    ha: bool = False  # the server as a cluster (PostgreSQL only)
    api_replicas: int = 2


# What each batch records on the server (MonitorSettings), by the bench's --views: the
# settings' defaults (what a production pool runs; the bench's stack is a local stack, whose
# own views it undoes), everything on (what the local stack shows and more), or the least
# (the batch event and the flow run's own states only).
VIEW_FIELDS = ("task_runs", "run_artifacts", "run_progress", "run_chart", "image_events")


def views() -> dict[str, dict[str, str]]:
    """The monitor settings of each --views, as the stack's environment takes them."""
    defaults = MonitorSettings()
    default = {f.upper(): str(getattr(defaults, f)).lower() for f in VIEW_FIELDS}
    default["API_LOG_LEVEL"] = defaults.api_log_level
    return {
        "default": default,
        "all": {**{f.upper(): "true" for f in VIEW_FIELDS}, "API_LOG_LEVEL": "INFO"},
        "lean": {**{f.upper(): "false" for f in VIEW_FIELDS}, "API_LOG_LEVEL": "WARNING"},
    }


def server_shape(cfg: ControlPlaneConfig) -> dict[str, Any]:
    """How the JSON lines name the server: one process, or a cluster of N replicas."""
    return {"server": "cluster", "api_replicas": cfg.api_replicas} if cfg.ha else {"server": "one"}


def bench_settings(base: Settings, cfg: ControlPlaneConfig) -> Settings:
    """The benchmark's stack: its own state folder and ports, fixed hosts, no autoscaler."""
    local = stack_beside(
        base.local,
        base.local.state_dir / "bench-control",
        20,
        database=cfg.database,
        workers=cfg.hosts,
        dispatchers=cfg.dispatchers,
        autoscaler=False,
        worker_type="img2img-warm",
        ha=cfg.ha,
        api_replicas=cfg.api_replicas,
    )
    worker = base.worker.model_copy(update={"slots": cfg.slots})
    return base.model_copy(update={"local": local, "worker": worker})


def fixed_hosts_env(hosts: int, slots: int) -> dict[str, str]:
    """A bench stack's fixed hosts × slots, as its children read them: the dispatchers
    spread a backlog over the runs those hosts hold."""
    return {
        "IMG2IMG_SCALING__MAX_HOSTS": str(hosts),
        "IMG2IMG_SCALING__SLOTS_PER_HOST": str(slots),
        "IMG2IMG_WORKER__SLOTS": str(slots),
    }


def stack_env(cfg: ControlPlaneConfig) -> dict[str, str]:
    return {
        "IMG2IMG_STAGES__BACKEND": "simulated",
        "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": str(cfg.device_ms),
        "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": str(cfg.device_ms),
        "IMG2IMG_STAGES__SIMULATED__LOAD_S": str(cfg.load_s),
        "IMG2IMG_DISPATCH__MAX_BATCH": str(cfg.max_batch if cfg.adaptive else cfg.batch_size),
        "IMG2IMG_DISPATCH__BASE_BATCH": str(cfg.batch_size),
        "IMG2IMG_DISPATCH__ADAPTIVE": "true" if cfg.adaptive else "false",
        **fixed_hosts_env(cfg.hosts, cfg.slots),
        # The server writes uvicorn's access log (one line per request): the request count.
        "PREFECT_SERVER_LOGGING_LEVEL": "INFO",
        **{f"IMG2IMG_MONITOR__{k}": v for k, v in views()[cfg.views].items()},
    }


# -- what the processes spent ------------------------------------------------------------------


def _proc_tree() -> tuple[dict[int, float], dict[int, list[int]]]:
    """(pid → CPU seconds of the process and of its waited-for children, pid → children)."""
    cpu: dict[int, float] = {}
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] is the state; ppid, then utime, stime, cutime, cstime at 11..14.
        pid = int(entry.name)
        cpu[pid] = sum(int(f) for f in fields[11:15]) / CLOCK_TICKS
        children.setdefault(int(fields[1]), []).append(pid)
    return cpu, children


def tree_cpu_s(root: int, cpu: dict[int, float], children: dict[int, list[int]]) -> float:
    """CPU seconds of a process and every live descendant (ended children are in their
    parent's waited-for time)."""
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in cpu:
            total += cpu[pid]
            todo += children.get(pid, [])
    return total


def group_of(service: str) -> str:
    """The CPU group of a stack's service: the cluster's parts each apart (`prefect-api-0`
    → `prefect_api_0`, the services process, Redis, the balancer)."""
    if service == "prefect-server" or service.startswith(REPLICA) or service == SERVICES:
        return service.replace("-", "_")
    if service == LB:
        return "balancer"
    if service == "redis":
        return "redis"
    if service == "postgres":
        return "database"
    if service.startswith("worker"):
        return "workers"
    if service.startswith("dispatcher"):
        return "dispatchers"
    if service == "moto":
        return "moto"
    return "control"


def cpu_by_group(stack: LocalStack) -> dict[str, float]:
    cpu, children = _proc_tree()
    groups: dict[str, float] = {}
    for service in stack.services():
        pid = stack.pid_of(service)
        if pid is not None:
            group = group_of(service.name)
            groups[group] = groups.get(group, 0.0) + tree_cpu_s(pid, cpu, children)
    times = os.times()
    groups["bench"] = times.user + times.system
    return groups


def machine_busy_s() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


# -- what the database holds -------------------------------------------------------------------


def _count_sql(table: str) -> str:
    """`table`'s row count (the names are this module's constants, never input)."""
    return f'SELECT count(*) FROM "{table}"'  # nosec B608


def database_figures(stack: LocalStack) -> tuple[int, int | None, dict[str, int]]:
    """(size in bytes, of which the events' tables (None: SQLite, not told apart), rows
    per growing table) of the Prefect database."""
    if stack.uses_postgres():
        cluster = stack.postgres()
        counts = ", ".join(f"({_count_sql(t)})" for t in GROWING_TABLES)
        events = " + ".join(f"pg_total_relation_size('{t}')" for t in EVENT_TABLES)
        out = psql(
            cluster, DATABASE, f"SELECT pg_database_size('{DATABASE}'), {events}, {counts}"
        ).strip()
        values = [int(v) for v in out.split("|")]
        return values[0], values[1], dict(zip(GROWING_TABLES, values[2:], strict=True))
    path = stack.state / "prefect" / "prefect.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        rows = {t: db.execute(_count_sql(t)).fetchone()[0] for t in GROWING_TABLES}
    return int(pages * size), None, rows


@dataclass
class Mark:
    at: float
    cpu: dict[str, float]
    machine: float
    db_bytes: int
    event_bytes: int | None
    rows: dict[str, int]
    log_offsets: dict[str, int]  # where each API process's access log ends


def api_logs(stack: LocalStack) -> list[str]:
    """The services whose logs hold the API's access log: the server, or each replica."""
    if not stack.uses_ha():
        return ["prefect-server"]
    return [f"{REPLICA}-{i}" for i in range(stack.settings.local.api_replicas)]


def mark(stack: LocalStack) -> Mark:
    size, events, rows = database_figures(stack)
    offsets = {}
    for name in api_logs(stack):
        log = stack.log_path(name)
        offsets[name] = log.stat().st_size if log.exists() else 0
    return Mark(
        at=time.monotonic(),
        cpu=cpu_by_group(stack),
        machine=machine_busy_s(),
        db_bytes=size,
        event_bytes=events,
        rows=rows,
        log_offsets=offsets,
    )


def api_log_since(stack: LocalStack, before: Mark, after: Mark) -> dict[str, list[str]]:
    """Each API process's log lines between two marks (a replica the supervisor restarted
    in between has a log that starts over: read from its start)."""
    lines = {}
    for name, end in after.log_offsets.items():
        path = stack.log_path(name)
        offset = before.log_offsets.get(name, 0)
        if offset > end:
            offset = 0
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read(max(end - offset, 0)).decode(errors="replace")
        lines[name] = text.splitlines()
    return lines


# -- arrivals and outcomes ---------------------------------------------------------------------


class Outcomes:
    """Reads the completion messages (as an app would) in a thread, for every upload, with
    when each arrived (epoch seconds, `arrived`)."""

    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self.sqs, self.queue_url = sqs, queue_url
        self.docs: dict[str, dict[str, Any]] = {}
        self.arrived: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Outcomes:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = got.get("Messages", [])
            now = time.time()
            for message in messages:
                body = json.loads(message["Body"])
                identity = upload_of(body).identity
                with self._lock:
                    self.docs[identity] = body
                    self.arrived.setdefault(identity, now)
            if messages:
                self.sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )

    def wait(self, refs: list[ObjectRef], deadline: float) -> list[dict[str, Any]]:
        while time.monotonic() < deadline:
            with self._lock:
                found = [self.docs[r.identity] for r in refs if r.identity in self.docs]
            if len(found) == len(refs):
                return found
            time.sleep(0.2)
        with self._lock:
            return [self.docs[r.identity] for r in refs if r.identity in self.docs]


def upload_at(s3: Any, bucket: str, rate: float, seconds: float, tag: str) -> list[ObjectRef]:
    """Upload images at `rate` a second for `seconds` (open loop: on schedule, not waiting
    for the pipeline); returns them in upload order."""
    count = max(int(rate * seconds), 1)
    start = time.monotonic()
    refs = []
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        refs.append(upload_sample(s3, bucket, f"bench/{tag}/img {i:05d}.png", i, 2, 2))
    return refs


# -- the benchmark -----------------------------------------------------------------------------


def run_control_plane(
    base: Settings, cfg: ControlPlaneConfig, keep: bool, out: TextIO, err: TextIO
) -> list[dict[str, Any]]:
    settings = bench_settings(base, cfg)

    def say(message: str) -> None:
        print(f"  {message}", file=err, flush=True)

    stack = LocalStack(settings, extra_env=stack_env(cfg))
    say(
        f"control-plane bench on {cfg.database}"
        f"{f', a cluster of {cfg.api_replicas} API replicas' if cfg.ha else ''}: "
        f"{cfg.hosts} host(s) x {cfg.slots} slot(s), "
        f"{cfg.dispatchers} dispatcher(s), simulated device {cfg.device_ms} ms/call, batch "
        f"{cfg.batch_size}"
        f"{f' adaptive up to {cfg.max_batch}' if cfg.adaptive else ' fixed'}, views "
        f"{cfg.views}, steps {list(cfg.rates)} images/s of "
        f"{cfg.step_s:.0f} s each"
    )
    rows: list[dict[str, Any]] = []
    outcomes: Outcomes | None = None
    try:
        stack.down(say)  # a bench stack left by --keep: start from its settings, not those
        for log in stack.logs.glob("*.log") if stack.logs.exists() else []:
            log.unlink()
        stack.up(say)
        _wait_ready(stack, cfg)
        clients = local_clients(settings)
        queue = clients.sqs.get_queue_url(QueueName=APP_QUEUE)["QueueUrl"]
        outcomes = Outcomes(clients.sqs, queue).start()
        bucket = settings.storage.uploads_bucket
        run_tag = time.strftime("%Y%m%d-%H%M%S")
        idle, idle_line = _idle(stack, cfg.idle_s)
        say(f"idle ({cfg.idle_s:.0f} s, no uploads): cores busy {idle}")
        print(
            json.dumps(
                {"database": cfg.database, **server_shape(cfg), "hosts": cfg.hosts, **idle_line}
            ),
            file=out,
            flush=True,
        )
        say(f"warm-up: {cfg.warmup_images} images")
        warm = upload_at(clients.s3, bucket, 4.0, cfg.warmup_images / 4.0, f"{run_tag}/warmup")
        outcomes.wait(warm, time.monotonic() + cfg.drain_s)
        for index, rate in enumerate(cfg.rates):
            figures = _step(
                stack, cfg, clients.s3, bucket, outcomes, rate, f"{run_tag}/{index}", idle
            )
            row = {
                "database": cfg.database,
                **server_shape(cfg),
                "hosts": cfg.hosts,
                "slots": cfg.slots,
                "dispatchers": cfg.dispatchers,
                "device_ms": cfg.device_ms,
                "batching": "adaptive" if cfg.adaptive else "fixed",
                "batch_size": cfg.batch_size,
                "views": cfg.views,
                "step": index,
                **figures,
            }
            reason = stop_reason(row, cfg.max_queue_wait_s)
            row["bound"] = name_bound(row, os.cpu_count() or 1)
            row["stopped_because"] = reason
            rows.append(row)
            print(json.dumps(row), file=out, flush=True)
            say(
                f"step {index}: offered {row['offered_images_per_s']} achieved "
                f"{row['achieved_images_per_s']} images/s, p95 queue wait "
                f"{row['p95_queue_wait_s']} s, {row['api_requests_per_image']} requests and "
                f"{row['server_cpu_ms_per_image']} server CPU ms per image; {row['bound']}"
            )
            if reason:
                say(f"stopping: {reason}")
                break
    finally:
        if outcomes is not None:
            outcomes.stop()
        if not keep:
            stack.down(say)
    return rows


def _step(
    stack: LocalStack,
    cfg: ControlPlaneConfig,
    s3: Any,
    bucket: str,
    outcomes: Outcomes,
    rate: float,
    tag: str,
    idle: dict[str, float],
) -> dict[str, Any]:
    before = mark(stack)
    offsets = _dispatcher_offsets(stack, cfg)
    first = datetime.now(UTC)
    started = time.monotonic()
    refs = upload_at(s3, bucket, rate, cfg.step_s, tag)
    upload_s = time.monotonic() - started
    last = datetime.now(UTC)
    docs = outcomes.wait(refs, time.monotonic() + cfg.drain_s)
    after = mark(stack)
    completed = [d for d in docs if d.get("outcome") == "result"]
    window = after.at - before.at
    logs = api_log_since(stack, before, after)
    log = [line for lines in logs.values() for line in lines]
    requests, health_checks = without_health_checks(count_requests(log))
    by_replica = (
        {
            name: sum(without_health_checks(count_requests(lines))[0].values())
            for name, lines in logs.items()
        }
        if stack.uses_ha()
        else {}
    )
    step = StepInput(
        offered_per_s=rate,
        uploaded=len(refs),
        upload_s=upload_s if len(refs) > 1 else 0.0,
        docs=completed,
        failed=len(docs) - len(completed),
        missing=len(refs) - len(docs),
        first_upload=first,
        last_upload=last,
        window_s=window,
        cpu_s={k: after.cpu.get(k, 0.0) - v for k, v in before.cpu.items()},
        machine_busy_s=after.machine - before.machine,
        server_idle_cores=server_cpu_s(idle),
        idle_cores=idle,
        requests=requests,
        health_checks=health_checks,
        lock_errors=sum(1 for line in log if "OperationalError) database is locked" in line),
        db_bytes=after.db_bytes - before.db_bytes,
        event_bytes=None
        if after.event_bytes is None or before.event_bytes is None
        else after.event_bytes - before.event_bytes,
        rows={t: after.rows[t] - before.rows.get(t, 0) for t in after.rows},
        batch_size=cfg.batch_size,
        batch_sizes=tuple(_batch_sizes(stack, offsets)),
        requests_by_replica=by_replica,
    )
    return step_figures(step)


def _dispatcher_offsets(stack: LocalStack, cfg: ControlPlaneConfig) -> dict[str, int]:
    """Where each dispatcher's log ends now."""
    paths = {n: stack.log_path(n) for n in map(dispatcher_name, range(cfg.dispatchers))}
    return {n: p.stat().st_size if p.exists() else 0 for n, p in paths.items()}


def _batch_sizes(stack: LocalStack, offsets: dict[str, int]) -> list[int]:
    """The size of each run the dispatchers created since `offsets` (their log lines
    `flow run <id> for <n> objects`)."""
    sizes = []
    for name, offset in offsets.items():
        path = stack.log_path(name)
        if not path.exists():
            continue
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        sizes += [int(m) for m in BATCH_LINE.findall(text)]
    return sizes


def _idle(stack: LocalStack, seconds: float) -> tuple[dict[str, float], dict[str, Any]]:
    """What the stack costs with no uploads (polling, heartbeats, the server's background
    services, paid whatever the load): the cores each process group keeps busy, and the
    API requests a minute, by route (the busiest ten)."""
    before = mark(stack)
    time.sleep(seconds)
    after = mark(stack)
    cores = {k: round((after.cpu.get(k, 0.0) - v) / seconds, 3) for k, v in before.cpu.items()}
    logs = api_log_since(stack, before, after)
    requests, health_checks = without_health_checks(
        count_requests(line for lines in logs.values() for line in lines)
    )
    per_min = 60.0 / seconds
    line = {
        "phase": "idle",
        "seconds": seconds,
        "requests_per_min": round(sum(requests.values()) * per_min, 1),
        "requests_per_min_by_route": {
            route: round(n * per_min, 1) for route, n in requests.most_common(10)
        },
        "cores": cores,
    }
    if stack.uses_ha():
        line["balancer_health_checks_per_min"] = round(health_checks * per_min, 1)
    return cores, line


def _wait_ready(stack: LocalStack, cfg: ControlPlaneConfig, timeout_s: float = 180.0) -> None:
    """Until every slot of every host has loaded (the simulated load time)."""
    deadline = time.monotonic() + timeout_s
    for i in range(cfg.hosts):
        left = max(deadline - time.monotonic(), 0.0)
        wait_for_log(stack.log_path(f"worker-{i}"), ": ready (pid", cfg.slots, left)

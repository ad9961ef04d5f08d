"""Figures of the control-plane benchmark (pure): what one image costs the Prefect server,
and where the ceiling is.

The inputs are read elsewhere (`infra/bench/control_plane.py`): the server's access log,
the CPU time of each process group, the database's size and row counts, and the outcome
documents of the images uploaded in one step.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from img2img.observe.timing import summarize

# uvicorn's access log line: `... "POST /api/flow_runs/filter HTTP/1.1" 200 OK`
_ACCESS = re.compile(r'"(GET|POST|PATCH|PUT|DELETE|HEAD) (\S+) HTTP/[\d.]+" (\d{3})')
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Prefect Cloud's published rate limits, per minute and account
# (https://docs.prefect.io/v3/concepts/rate-limits, read 2026-11): two buckets, every API
# request in one, every log line and every event in the other.
CLOUD_API_REQUESTS_PER_MIN = {"hobby": 625, "starter": 1250, "team": 2500, "pro": 5000}
CLOUD_LOGS_EVENTS_PER_MIN = {"hobby": 2000, "starter": 2800, "team": 8000, "pro": 40000}
# The earlier model, still quoted widely: the flow-run, task-run and flow endpoints alone,
# 2,000 requests a minute on Pro (250 Hobby, 500 Starter, 1,000 Team).
CLOUD_RUNS_ENDPOINTS_PER_MIN = {"hobby": 250, "starter": 500, "team": 1000, "pro": 2000}
CLOUD_LIMITED_PREFIXES = ("/api/flow_runs", "/api/task_runs", "/api/flows")
# The tables that grow with every batch (Prefect 3's schema).
GROWING_TABLES = (
    "flow_run",
    "flow_run_state",
    "task_run",
    "task_run_state",
    "log",
    "artifact",
    "artifact_collection",
    "events",
    "event_resources",
)
# Of those, the events' (kept `retention.events_days`, the runs `retention.runs_days`).
EVENT_TABLES = ("events", "event_resources")
# The Prefect server's CPU groups: its one process, or (a cluster) each API replica
# `prefect_api_<i>` and the background-services process.
SERVER_GROUP_PREFIXES = ("prefect_server", "prefect_api_", "prefect_services")
# CPU groups of one process (one core at most), in the order they are named as a bound when
# saturated: the server's, Redis (single-threaded) and moto.
SINGLE_PROCESS = (*SERVER_GROUP_PREFIXES, "redis", "moto")


# A cluster's parts, as the capacity plan sizes them: the API replicas (behind the balancer),
# the background-services process(es), Redis, the balancer.
CLUSTER_PARTS = {
    "api_replicas": ("prefect_api_",),
    "services": ("prefect_services",),
    "redis": ("redis",),
    "balancer": ("balancer",),
}


def cluster_parts_ms_per_image(
    cpu_s: dict[str, float], idle_cores: dict[str, float], window_s: float, images: int
) -> dict[str, float]:
    """CPU ms per image above idle of each part of a cluster (empty: one server process)."""
    if not any(k.startswith("prefect_api_") for k in cpu_s):
        return {}
    parts = {}
    for part, prefixes in CLUSTER_PARTS.items():
        groups = [k for k in cpu_s if k.startswith(prefixes)]
        spent = sum(cpu_s[k] - idle_cores.get(k, 0.0) * window_s for k in groups)
        parts[part] = round(spent * 1000 / max(images, 1), 1)
    return parts


def is_server_group(group: str) -> bool:
    return group.startswith(SERVER_GROUP_PREFIXES)


def server_cpu_s(cpu_s: dict[str, float]) -> float:
    """CPU seconds of the Prefect server, whatever its shape (one process or a cluster's
    replicas and services process; Redis, the balancer and the database apart)."""
    return sum(v for k, v in cpu_s.items() if is_server_group(k))


def route_of(path: str) -> str:
    """A request path without its query string, ids replaced: `/api/flow_runs/{id}/set_state`."""
    return _UUID.sub("{id}", path.split("?", 1)[0])


def count_requests(lines: Iterable[str]) -> Counter[str]:
    """Requests per `METHOD route` in access-log lines (other lines are skipped)."""
    counts: Counter[str] = Counter()
    for line in lines:
        match = _ACCESS.search(line)
        if match:
            counts[f"{match.group(1)} {route_of(match.group(2))}"] += 1
    return counts


HEALTH_CHECK = "GET /api/health"


def without_health_checks(requests: Counter[str]) -> tuple[Counter[str], int]:
    """(the clients' requests, the balancer's health checks): a cluster's balancer asks
    each replica for `/api/health` every second, whatever the load; counted apart so that
    requests per image stay the clients' and compare with one server's."""
    clients = Counter({k: n for k, n in requests.items() if k != HEALTH_CHECK})
    return clients, requests.get(
        HEALTH_CHECK,
        0,
        # `requests` is a Counter here, not the HTTP library (bandit B113)
    )  # nosec B113


def cloud_limited(requests: Counter[str]) -> int:
    """Requests to the endpoints Prefect Cloud rate-limits (flow runs, task runs, flows)."""
    return sum(
        n for key, n in requests.items() if key.split(" ", 1)[1].startswith(CLOUD_LIMITED_PREFIXES)
    )


@dataclass(frozen=True)
class StepInput:
    """What one step of the benchmark measured."""

    offered_per_s: float  # the arrival rate asked for
    uploaded: int
    upload_s: float  # from the first to the last upload
    docs: list[dict[str, Any]]  # outcome documents of this step's images (completed ones)
    failed: int
    missing: int  # no outcome within the drain time
    first_upload: datetime
    last_upload: datetime
    window_s: float  # from the step's start to its last outcome (the measured window)
    cpu_s: dict[str, float]  # CPU seconds per process group over the window
    machine_busy_s: float  # CPU seconds of the whole machine over the window
    requests: Counter[str]
    db_bytes: int  # growth of the database over the step
    rows: dict[str, int]  # growth of each table over the step
    batch_size: int
    lock_errors: int = 0  # "database is locked" in the server's log (SQLite)
    batch_sizes: tuple[int, ...] = ()  # the images of each run the dispatchers created
    server_idle_cores: float = 0.0  # what the server spends with no uploads (polling, services)
    event_bytes: int | None = None  # of db_bytes, the events' tables' (None: not told apart)
    # A cluster's: the requests each API replica answered (its own access log).
    requests_by_replica: dict[str, int] = field(default_factory=dict)
    # What each process group spends with no uploads (cores): a cluster's parts above idle.
    idle_cores: dict[str, float] = field(default_factory=dict)
    health_checks: int = 0  # the balancer's (a cluster), not in `requests`


def achieved_per_s(
    docs: list[dict[str, Any]], first_upload: datetime, last_upload: datetime
) -> float:
    """Images finished per second while arrivals went on: outcomes between the first
    outcome and the last upload, over that time. A pipeline that keeps up finishes images
    as fast as they arrive; one that does not falls behind here, whatever the drain adds."""
    ends = sorted(datetime.fromisoformat(d["finished_at"]) for d in docs)
    if not ends:
        return 0.0
    start = ends[0]
    span = (last_upload - start).total_seconds()
    if span <= 0:
        # Every image finished after the last upload (a short step): over the whole window.
        span = max((ends[-1] - first_upload).total_seconds(), 1e-9)
        return len(ends) / span
    finished = sum(1 for end in ends[1:] if end <= last_upload)  # after the first: a rate
    return finished / span


def step_figures(step: StepInput) -> dict[str, Any]:
    """One JSON line: throughput, queue wait, and the server's cost per image."""
    images = len(step.docs) + step.failed
    per_image = max(images, 1)
    summary = (
        summarize([d["timings_ms"] for d in step.docs]) if step.docs else {"p50": {}, "p95": {}}
    )
    total_requests = sum(step.requests.values())
    limited = cloud_limited(step.requests)
    logs_events = step.rows.get("log", 0) + step.rows.get("events", 0)
    offered = step.uploaded / step.upload_s if step.upload_s > 0 else step.offered_per_s
    server_s = server_cpu_s(step.cpu_s)
    achieved = achieved_per_s(step.docs, step.first_upload, step.last_upload)

    def per_min(count: int) -> float:
        return round(count / step.window_s * 60, 1) if step.window_s else 0.0

    cores = {k: round(v / step.window_s, 2) for k, v in step.cpu_s.items()} if step.window_s else {}
    sizes = sorted(step.batch_sizes)
    mean_batch = sum(sizes) / len(sizes) if sizes else step.batch_size
    batches = max(images / mean_batch, 1e-9)
    p50 = summary["p50"]
    waits = {k: v for k, v in p50.items() if k != "total"}
    return {
        "requested_images_per_s": step.offered_per_s,
        "offered_images_per_s": round(offered, 2),
        "achieved_images_per_s": round(achieved, 2),
        "images": step.uploaded,
        "window_s": round(step.window_s, 1),
        "completed": len(step.docs),
        "failed": step.failed,
        "missing": step.missing,
        "p50_total_s": round(p50.get("total", 0.0) / 1000, 2),
        "p95_queue_wait_s": round(summary["p95"].get("queue_wait", 0.0) / 1000, 2),
        "where_time_goes": max(waits, key=lambda k: waits[k]) if waits else None,
        "stage_p50_ms": {k: round(v, 1) for k, v in p50.items()},
        "api_requests_per_image": round(total_requests / per_image, 2),
        "api_requests_per_min": per_min(total_requests),
        "runs_endpoint_requests_per_image": round(limited / per_image, 2),
        "logs_events_per_image": round(logs_events / per_image, 2),
        "cloud_pro_images_per_s": cloud_ceiling(
            [
                (CLOUD_API_REQUESTS_PER_MIN["pro"], total_requests),
                (CLOUD_LOGS_EVENTS_PER_MIN["pro"], logs_events),
            ],
            per_image,
        ),
        "cloud_pro_images_per_s_runs_endpoints_limit": cloud_ceiling(
            [(CLOUD_RUNS_ENDPOINTS_PER_MIN["pro"], limited)], per_image
        ),
        "server_cpu_ms_per_image": round(server_s * 1000 / per_image, 1),
        "server_idle_cores": step.server_idle_cores,
        "server_cpu_ms_per_image_above_idle": round(
            (server_s - step.server_idle_cores * step.window_s) * 1000 / per_image, 1
        ),
        "database_cpu_ms_per_image": round(step.cpu_s.get("database", 0.0) * 1000 / per_image, 1),
        "cpu_ms_per_image": {
            k: round(v * 1000 / per_image, 1) for k, v in sorted(step.cpu_s.items())
        },
        "cores_busy": cores,
        "machine_cores_busy": round(step.machine_busy_s / step.window_s, 2)
        if step.window_s
        else 0.0,
        "db_bytes_per_image": round(step.db_bytes / per_image),
        "db_event_bytes_per_image": None
        if step.event_bytes is None
        else round(step.event_bytes / per_image),
        "rows_per_image": round(sum(step.rows.values()) / per_image, 2),
        "batch_size_p50": sizes[len(sizes) // 2] if sizes else step.batch_size,
        "batch_size_max": sizes[-1] if sizes else step.batch_size,
        "rows_per_batch": {k: round(v / batches, 1) for k, v in step.rows.items()},
        "database_locked_errors": step.lock_errors,
        "top_routes": dict(step.requests.most_common(6)),
        **(
            {"cluster_cpu_ms_per_image_above_idle": parts}
            if (
                parts := cluster_parts_ms_per_image(
                    step.cpu_s, step.idle_cores, step.window_s, per_image
                )
            )
            else {}
        ),
        **(
            {
                "api_requests_by_replica": dict(sorted(step.requests_by_replica.items())),
                "balancer_health_checks_per_min": per_min(step.health_checks),
            }
            if step.requests_by_replica
            else {}
        ),
    }


def cloud_ceiling(pairs: list[tuple[int, int]], images: int) -> float | None:
    """The most images a second one Prefect Cloud account takes at this cost per image:
    the tightest of (limit per minute, requests or items counted) pairs."""
    rates = [limit / 60 / (count / images) for limit, count in pairs if count]
    return round(min(rates), 2) if rates else None


def stop_reason(figures: dict[str, Any], max_queue_wait_s: float) -> str | None:
    """Why the stepping stops here, or None to go on."""
    offered = figures["offered_images_per_s"]
    requested = figures.get("requested_images_per_s", offered)
    if offered < 0.9 * requested:
        return (
            f"the uploads reached {offered} images/s of the {requested} asked for (each upload "
            "is an S3 PUT whose notification the endpoint sends before it answers)"
        )
    if figures["missing"]:
        return f"{figures['missing']} image(s) had no outcome within the drain time"
    if figures["achieved_images_per_s"] < 0.9 * offered:
        return f"achieved {figures['achieved_images_per_s']} < 0.9 x offered {offered} images/s"
    if figures["p95_queue_wait_s"] > max_queue_wait_s:
        return f"p95 queue wait {figures['p95_queue_wait_s']} s > {max_queue_wait_s} s"
    return None


def name_bound(figures: dict[str, Any], cores: int) -> str:
    """What bounds throughput at this step: a single-process service at one core, or the
    machine's CPU and who spends it, or nothing saturated (latency: batching, polling)."""
    busy: dict[str, float] = figures["cores_busy"]
    for prefix in SINGLE_PROCESS:
        for name in sorted(k for k in busy if k.startswith(prefix)):
            if busy[name] >= 0.85:
                return f"{name} (one process at {busy[name]:.0%} of a core)"
    machine = figures["machine_cores_busy"]
    top = sorted(busy.items(), key=lambda kv: -kv[1])[:3]
    spent = ", ".join(f"{k} {v:.2f}" for k, v in top)
    if machine >= 0.85 * cores:
        return f"the machine's CPU ({machine:.2f} of {cores} cores busy: {spent})"
    if figures.get("database_locked_errors"):
        return (
            f"the SQLite database's write lock ({figures['database_locked_errors']} 'database "
            f"is locked' errors; {machine:.2f} of {cores} cores busy)"
        )
    return f"not CPU ({machine:.2f} of {cores} cores busy: {spent}); latency: batching and polling"

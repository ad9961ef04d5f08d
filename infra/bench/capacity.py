"""The capacity plan (pure): what the Prefect side needs for a number of images a day, from
`img2img bench control-plane` figures.

A flow run costs the control plane a fixed amount (its states, events, requests) plus a
little per image (its parameters, its timing-table row); two benchmark steps at different
batch sizes give both parts (`fit_costs`). The batch a dispatcher builds at a rate follows
the dispatcher's own rule (`img2img.intake.batching.plan_batch`: what arrives in `max_wait_s`, no
more than a run does in `max_run_s` at the device's seconds per image, within the base and
the ceiling), and the plan (`plan_row`) is the fleet of API replicas, database and storage
that cost needs at the day's peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from img2img.config.dispatch import DispatchSettings
from img2img.intake.batching import plan_batch

# Assumptions, each stated in the capacity plan (docs/capacity.md).
PEAK_OVER_MEAN = 2.0  # the diurnal trace of the scaling simulation
API_REPLICA_BUSY = 0.6  # one API replica is one process (at most one core), kept at 60%
DATABASE_BUSY = 0.5  # a database instance's vCPUs kept at 50%
RUNS_DAYS = 14.0  # retention.runs_days (RunRetentionDays)
EVENTS_DAYS = 2.0  # retention.events_days (EventRetentionDays)


@dataclass(frozen=True)
class Cost:
    """One flow run's cost to the control plane: `per_run` + `per_image` × its images."""

    per_run: float
    per_image: float

    def per_image_at(self, batch: float) -> float:
        return self.per_run / max(batch, 1.0) + self.per_image


@dataclass(frozen=True)
class RunCosts:
    server_s: Cost  # Prefect server CPU seconds above idle
    database_s: Cost  # database CPU seconds
    bytes: Cost  # database growth
    rows: Cost  # database rows written
    event_bytes: Cost | None = None  # of `bytes`, the events' (None: not told apart)
    # Figures of a cluster (`bench control-plane --ha`): the server's CPU told apart into
    # its API replicas and its background services, and Redis beside them (None: one
    # server process, all of `server_s` sized as API replicas).
    api_s: Cost | None = None
    services_s: Cost | None = None
    redis_s: Cost | None = None


def fit(points: list[tuple[float, float]]) -> Cost:
    """The per-run and per-image parts of a cost measured per image at batch sizes:
    `y = per_run / batch + per_image` through the smallest and the largest batch (least
    squares would weigh the noisy low-rate steps as much). One batch size: all of it is
    taken as per run (the larger plan, so the safer one)."""
    if not points:
        raise ValueError("no benchmark steps to fit the costs to")
    small = min(points)
    large = max(points)
    if large[0] <= small[0]:
        return Cost(per_run=small[1] * small[0], per_image=0.0)
    per_run = (small[1] - large[1]) / (1 / small[0] - 1 / large[0])
    per_image = large[1] - per_run / large[0]
    if per_run < 0:  # noise larger than the effect: no fixed part to speak of
        return Cost(per_run=0.0, per_image=sum(y for _, y in points) / len(points))
    if per_image < 0:
        return Cost(per_run=large[1] * large[0], per_image=0.0)
    return Cost(per_run=per_run, per_image=per_image)


def fit_costs(steps: list[dict[str, Any]]) -> RunCosts:
    """The run costs from benchmark JSON lines (`img2img bench control-plane`): the steps
    that kept up, by their batch size p50."""
    kept = [s for s in steps if not s.get("stopped_because") and s.get("batch_size_p50")]
    if not kept:
        raise ValueError("no benchmark step that kept up and names its batch size")

    def points(key: str, scale: float) -> list[tuple[float, float]]:
        return [(float(s["batch_size_p50"]), float(s[key]) * scale) for s in kept]

    told_apart = all(s.get("db_event_bytes_per_image") is not None for s in kept)
    cluster = all("cluster_cpu_ms_per_image_above_idle" in s for s in kept)

    def part(name: str) -> Cost | None:
        if not cluster:
            return None
        return fit(
            [
                (float(s["batch_size_p50"]), s["cluster_cpu_ms_per_image_above_idle"][name] * 1e-3)
                for s in kept
            ]
        )

    return RunCosts(
        server_s=fit(points("server_cpu_ms_per_image_above_idle", 1e-3)),
        database_s=fit(points("database_cpu_ms_per_image", 1e-3)),
        bytes=fit(points("db_bytes_per_image", 1.0)),
        rows=fit(points("rows_per_image", 1.0)),
        event_bytes=fit(points("db_event_bytes_per_image", 1.0)) if told_apart else None,
        api_s=part("api_replicas"),
        services_s=part("services"),
        redis_s=part("redis"),
    )


@dataclass(frozen=True)
class Dispatch:
    """The dispatcher settings and device speed that set the batch at a rate."""

    base_batch: int = 8
    max_batch: int = 512
    max_wait_s: float = 2.0
    max_run_s: float = 30.0
    image_s: float = 0.01  # what an image adds to a run on its slot
    dispatchers: int = 2
    runs_per_slot: int = 3


def batch_at(rate: float, dispatch: Dispatch) -> int:
    """The batch each dispatcher builds at a steady total `rate` (images/s): the
    dispatcher's own rule (`plan_batch`), with no backlog, over the run slots of a fleet
    that keeps up with the rate (its slots busy, each holding `runs_per_slot` runs)."""
    settings = DispatchSettings(
        base_batch=dispatch.base_batch,
        max_batch=dispatch.max_batch,
        max_wait_s=dispatch.max_wait_s,
        max_run_s=dispatch.max_run_s,
    )
    each = rate / max(dispatch.dispatchers, 1)
    run_slots = math.ceil(rate * dispatch.image_s) * dispatch.runs_per_slot
    plan = plan_batch(settings, 0, 0, each, max(run_slots, 1), image_s=dispatch.image_s)
    return plan.size


def plan_row(
    images_per_day: float,
    costs: RunCosts,
    dispatch: Dispatch,
    runs_days: float = RUNS_DAYS,
    events_days: float = EVENTS_DAYS,
) -> dict[str, Any]:
    """What the control plane needs for `images_per_day`, at the day's peak; the database
    holds `runs_days` of runs and `events_days` of events (all of it `runs_days` when the
    figures do not tell events apart)."""
    peak = images_per_day / 86_400 * PEAK_OVER_MEAN
    batch = batch_at(peak, dispatch)
    server_cores = peak * costs.server_s.per_image_at(batch)
    database_cores = peak * costs.database_s.per_image_at(batch)
    bytes_per_image = costs.bytes.per_image_at(batch)
    event_bytes = costs.event_bytes.per_image_at(batch) if costs.event_bytes else 0.0
    event_bytes = min(event_bytes, bytes_per_image)
    held = (bytes_per_image - event_bytes) * runs_days + event_bytes * events_days
    # One server process sizes all its CPU as API replicas; a cluster's figures size the
    # replicas and the background-services processes apart (each process at most a core).
    api_cores = peak * costs.api_s.per_image_at(batch) if costs.api_s else server_cores
    cluster: dict[str, Any] = {}
    if costs.services_s is not None:
        services_cores = peak * costs.services_s.per_image_at(batch)
        cluster = {
            "services_cores": round(services_cores, 2),
            # One services process per server (the scheduler and the vacuum must not run
            # twice): past 60% of its core, the load needs that many independent servers.
            "shards": max(1, math.ceil(services_cores / API_REPLICA_BUSY)),
            "redis_cores": round(peak * costs.redis_s.per_image_at(batch), 2)
            if costs.redis_s
            else None,
        }
    return {
        "images_per_day": images_per_day,
        "peak_images_per_s": round(peak, 1),
        "batch": batch,
        "run_s_on_slot": round(batch * dispatch.image_s, 1),
        "flow_runs_per_s": round(peak / batch, 2),
        "server_ms_per_image": round(costs.server_s.per_image_at(batch) * 1000, 2),
        "server_cores": round(server_cores, 2),
        "api_cores": round(api_cores, 2),
        "api_replicas": max(1, math.ceil(api_cores / API_REPLICA_BUSY)),
        **cluster,
        "database_cores": round(database_cores, 2),
        "database_vcpus": max(2, 2 ** math.ceil(math.log2(max(database_cores / DATABASE_BUSY, 1)))),
        "rows_per_image": round(costs.rows.per_image_at(batch), 2),
        "bytes_per_image": round(bytes_per_image),
        "event_bytes_per_image": round(event_bytes),
        "database_gb": round(held * images_per_day / 1e9, 1),
    }


def markdown(rows: list[dict[str, Any]], label: str) -> str:
    """The plan as a Markdown table (docs/capacity.md)."""
    cluster = bool(rows) and all("shards" in r for r in rows)
    lines = [
        f"| images a day ({label}) | peak images/s | batch | a run on its slot | flow runs/s "
        "| server ms / image | API replicas (cores busy) "
        + ("| services process (cores busy) | Redis cores | shards " if cluster else "")
        + "| database vCPUs (busy) | rows / image | bytes / image | database held |",
        "| --- " * (14 if cluster else 11) + "|",
    ]
    for r in rows:
        parts = (
            f"| 1 ({r['services_cores']}) | {r['redis_cores']} | {r['shards']} " if cluster else ""
        )
        lines.append(
            f"| {_count(r['images_per_day'])} | {r['peak_images_per_s']:,} | {r['batch']} "
            f"| {r['run_s_on_slot']} s | {r['flow_runs_per_s']} | {r['server_ms_per_image']} "
            f"| {r['api_replicas']} ({r['api_cores']}) {parts}"
            f"| {r['database_vcpus']} ({r['database_cores']}) | {r['rows_per_image']} "
            f"| {r['bytes_per_image']:,} B ({r['event_bytes_per_image']:,} B events) "
            f"| {r['database_gb']:,} GB |"
        )
    return "\n".join(lines)


def _count(n: float) -> str:
    return f"{n / 1e6:g}M" if n >= 1e6 else f"{n:,.0f}"

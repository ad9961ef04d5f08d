"""Per-image stage timings and their summaries (p50, p95, max), as table rows."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

# Columns of the timing table, in pipeline order; all in milliseconds.
STAGES: tuple[str, ...] = (
    "queue_wait",
    # queue_wait's hops (see `queue_hops`): they add up to it.
    "intake",
    "batching",
    "claim",
    "run_start",
    "check",
    "copy",
    "download",
    "preprocess",
    "generate",
    # Split topology: the batch's stage-1 outputs written → the stage-2 run started.
    "handoff",
    "upscale",
    "postprocess",
    "upload",
    # The time between an image's own steps, so that the columns add up to `total`
    # (see waterfall.py): behind other images on the device, and everything else (the rest
    # of the batch, the orchestrator starting the next task).
    "device_wait",
    "other_wait",
    "total",
)
# The hops of an upload's queue wait, from its S3 event to its flow run's first line: the
# event reaching the dispatcher, the dispatcher's batch window and run creation, a worker
# claiming the run, the run starting on a slot.
QUEUE_HOPS = ("intake", "batching", "claim", "run_start")
# Columns that are not a stage's own work.
WAITS = frozenset({"queue_wait", *QUEUE_HOPS, "device_wait", "other_wait", "total"})


def queue_hops(
    event: float,
    received: float | None,
    created: float | None,
    claimed: float | None,
    started: float,
) -> dict[str, float]:
    """Milliseconds of each hop of the queue wait, from the instants (epoch seconds) the
    upload's event occurred, the dispatcher received it, its run was created, a worker
    claimed the run, and the run began. An instant not known (a run not made by the
    dispatcher, not claimed by a warm worker) folds its hop into the next one; instants are
    taken in order (clocks of different hosts may disagree by a few ms), so the hops always
    add up to the whole wait (`started - event`, at least 0)."""
    hops: dict[str, float] = {}
    previous = event
    end = max(started, event)
    for name, instant in zip(QUEUE_HOPS, (received, created, claimed, end), strict=True):
        if instant is None:
            continue
        at = min(max(instant, previous), end)
        hops[name] = (at - previous) * 1000.0
        previous = at
    return hops


class Timings(dict[str, float]):
    """Milliseconds per stage for one image; `measure` adds to a stage.

    Each measurement is also kept as a span on the wall clock (`spans`: stage, start, end in
    epoch seconds), so the time between them (waiting for the device, for the rest of the
    batch, for the orchestrator) can be shown too, not only the stages' own time.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spans: list[tuple[str, float, float]] = []
        self.started: float | None = None  # epoch seconds of the run's start
        self.ended: float | None = None  # epoch seconds of the image's outcome

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        wall = time.time()
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.add(stage, elapsed * 1000.0)
            self.spans.append((stage, wall, wall + elapsed))

    def add(self, stage: str, ms: float) -> None:
        self[stage] = self.get(stage, 0.0) + ms

    def span(self, stage: str, start: float, end: float) -> None:
        """Add `stage`'s time from `start` to `end` (epoch seconds, as `measure` keeps them)."""
        self.add(stage, (end - start) * 1000.0)
        self.spans.append((stage, start, end))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(rows: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """{"p50": {stage: ms}, "p95": {...}, "max": {...}} over the rows that have each stage."""
    out: dict[str, dict[str, float]] = {"p50": {}, "p95": {}, "max": {}}
    for stage in STAGES:
        values = [r[stage] for r in rows if stage in r]
        if not values:
            continue
        out["p50"][stage] = percentile(values, 50)
        out["p95"][stage] = percentile(values, 95)
        out["max"][stage] = max(values)
    return out


def slowest_stage(summary: dict[str, dict[str, float]]) -> str | None:
    """The processing stage (not a wait, not the total) with the highest p50."""
    p50 = {k: v for k, v in summary.get("p50", {}).items() if k not in WAITS}
    return max(p50, key=lambda k: p50[k]) if p50 else None

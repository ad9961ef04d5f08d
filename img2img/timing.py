"""Per-image stage timings and their summaries (p50, p95, max), as table rows."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

# Columns of the timing table, in pipeline order; all in milliseconds.
STAGES: tuple[str, ...] = (
    "queue_wait",
    "copy",
    "download",
    "preprocess",
    "stage1",
    "stage2",
    "postprocess",
    "upload",
    "total",
)


class Timings(dict[str, float]):
    """Milliseconds per stage for one image; `measure` adds to a stage."""

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, (time.perf_counter() - start) * 1000.0)

    def add(self, stage: str, ms: float) -> None:
        self[stage] = self.get(stage, 0.0) + ms


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
    """The processing stage (not queue wait or total) with the highest p50."""
    p50 = {k: v for k, v in summary.get("p50", {}).items() if k not in ("queue_wait", "total")}
    return max(p50, key=lambda k: p50[k]) if p50 else None

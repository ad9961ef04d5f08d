"""The soak's figures from its RSS samples (pure): per process a least-squares growth over
the measured window, per role the worst process and the spread.

A process is fitted only if it lived through most of the window (`MIN_SHARE` of it): a host
the autoscaler starts late, a slot replaced by a recycle, a worker drained half-way would
otherwise read as growth (a young process grows while it warms) or hide it (one that left
early). Those are counted as `transient`, not fitted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

MIN_SHARE = 0.8  # of the measured window a process must cover to be fitted
HOUR_S = 3600.0


@dataclass(frozen=True)
class Sample:
    """One process's resident memory at one time of the soak."""

    at_s: float  # since the soak's first upload
    pid: int
    role: str  # slot, worker, dispatcher, autoscaler, recovery, prefect-server, moto, ...
    rss_mb: float


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of (seconds, MB) points, in MB per hour; 0 for fewer than two
    distinct times."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) * HOUR_S / spread


def process_figures(
    samples: Iterable[Sample], warmup_s: float, end_s: float
) -> dict[int, dict[str, Any]]:
    """Per process (pid) sampled after warm-up: its role, first and last RSS in the window,
    its growth per hour, and whether it covered enough of the window to be fitted."""
    window = max(end_s - warmup_s, 0.0)
    by_pid: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        if warmup_s <= sample.at_s <= end_s:
            by_pid[sample.pid].append(sample)
    out: dict[int, dict[str, Any]] = {}
    for pid, rows in by_pid.items():
        rows.sort(key=lambda s: s.at_s)
        span = rows[-1].at_s - rows[0].at_s
        out[pid] = {
            "role": rows[0].role,
            "rss_mb_start": round(rows[0].rss_mb, 1),
            "rss_mb_end": round(rows[-1].rss_mb, 1),
            "growth_mb_per_h": round(slope_per_hour([(s.at_s, s.rss_mb) for s in rows]), 1),
            "span_s": round(span, 1),
            "fitted": window > 0 and span >= MIN_SHARE * window,
        }
    return out


def role_figures(samples: Iterable[Sample], warmup_s: float, end_s: float) -> list[dict[str, Any]]:
    """One line per role: its fitted processes' worst growth per hour and mean growth, the
    worst one's RSS after warm-up and at the end, and how many processes came and went."""
    per_process = process_figures(samples, warmup_s, end_s)
    roles: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for figures in per_process.values():
        roles[figures["role"]].append(figures)
    lines = []
    for role in sorted(roles):
        fitted = [f for f in roles[role] if f["fitted"]]
        line: dict[str, Any] = {
            "role": role,
            "processes": len(fitted),
            "transient": len(roles[role]) - len(fitted),
        }
        if fitted:
            worst = max(fitted, key=lambda f: f["growth_mb_per_h"])
            line.update(
                rss_mb_after_warmup=worst["rss_mb_start"],
                rss_mb_end=worst["rss_mb_end"],
                growth_mb_per_h=worst["growth_mb_per_h"],
                mean_growth_mb_per_h=round(
                    sum(f["growth_mb_per_h"] for f in fitted) / len(fitted), 1
                ),
            )
        lines.append(line)
    return lines


def over_goal(lines: Iterable[dict[str, Any]], goals: dict[str, float]) -> list[str]:
    """The roles whose worst fitted growth is above their goal (MB per hour), as sentences."""
    out = []
    for line in lines:
        goal = goals.get(line["role"])
        growth = line.get("growth_mb_per_h")
        if goal is not None and growth is not None and growth > goal:
            out.append(f"{line['role']} grows {growth} MB/hour (goal ≤ {goal})")
    return out


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (`share` in 0..1) of `values`, or None when empty."""
    if not values:
        return None
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, max(0, int(share * len(ranked) + 0.5) - 1))]


def recycle_figures(
    images: Sequence[tuple[float, float, float]],
    windows: Sequence[tuple[float, float]],
    settle_s: float = 10.0,
) -> dict[str, Any]:
    """What recycles cost the uploads: the end-to-end p95 of the images that finished
    during a recycle (from its start to `settle_s` after its end) against that of the rest,
    and a device batch's time to compare the difference with.

    Args:
        images: (finished at, end-to-end seconds, device seconds of its batch) per image,
            times in the soak's seconds.
        windows: (start, end) of each recycle, in the soak's seconds.
    """
    near = [e2e for at, e2e, _ in images if any(a <= at <= b + settle_s for a, b in windows)]
    rest = [e2e for at, e2e, _ in images if not any(a <= at <= b + settle_s for a, b in windows)]
    near_p95, rest_p95 = percentile(near, 0.95), percentile(rest, 0.95)
    return {
        "recycles": len(windows),
        "recycle_s_max": round(max((b - a for a, b in windows), default=0.0), 1),
        "images_during_recycles": len(near),
        "e2e_p95_s_during_recycles": None if near_p95 is None else round(near_p95, 2),
        "e2e_p95_s_otherwise": None if rest_p95 is None else round(rest_p95, 2),
        "device_batch_s_p50": _rounded(percentile([d for _, _, d in images], 0.5)),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

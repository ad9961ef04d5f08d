"""When a warm slot is recycled (pure): the safety net under a slot whose memory grows.

A slot is replaced by a fresh one when its resident memory has grown more than
`worker.recycle_growth_mb` above what it held once its models were loaded and warm (its RSS
when it said Ready), or, when `worker.recycle_after_runs` is set, after that many runs,
give or take `worker.recycle_jitter` so that slots started together are not all recycled
together (gunicorn's `max_requests_jitter`). The worker applies it (`SlotPool`): the old slot
takes no new run, a fresh one loads its models, then the old one finishes what it holds and
exits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from img2img.config.worker import WorkerSettings


@dataclass(frozen=True)
class RecycleRule:
    growth_mb: float | None  # RSS above its ready RSS; None: never for memory
    after_runs: int | None  # runs served; None: never for runs
    jitter: float  # share of after_runs added at random, per slot, 0..1


def recycle_rule(worker: WorkerSettings) -> RecycleRule:
    """The rule `worker`'s settings give (0 turns a part off)."""
    return RecycleRule(
        growth_mb=worker.recycle_growth_mb or None,
        after_runs=worker.recycle_after_runs or None,
        jitter=worker.recycle_jitter,
    )


def run_limit(rule: RecycleRule, rng: random.Random) -> int | None:
    """The runs one slot serves before it is recycled: `after_runs` plus a random share of
    up to `jitter` of it, drawn once per slot; None when runs do not recycle."""
    if rule.after_runs is None:
        return None
    return rule.after_runs + int(rng.uniform(0.0, rule.jitter) * rule.after_runs)


def recycle_reason(
    rule: RecycleRule,
    rss_mb: float | None,
    ready_rss_mb: float | None,
    runs_done: int,
    limit: int | None,
) -> str | None:
    """Why a slot is to be recycled now, or None. Memory is judged only when both its RSS
    now and at Ready are known (a platform with no /proc reports neither)."""
    if (
        rule.growth_mb is not None
        and rss_mb is not None
        and ready_rss_mb is not None
        and rss_mb - ready_rss_mb > rule.growth_mb
    ):
        return (
            f"its memory grew {rss_mb - ready_rss_mb:.0f} MB since it was ready "
            f"({ready_rss_mb:.0f} → {rss_mb:.0f} MB; worker.recycle_growth_mb "
            f"{rule.growth_mb:g})"
        )
    if limit is not None and runs_done >= limit:
        return f"it served {runs_done} runs (worker.recycle_after_runs, with jitter: {limit})"
    return None

"""The split topology in simulation: each stage on its own pool, scaled on its own queue,
against the single pool that runs both stages, on the same arrivals.

Two pools in a row are simulated exactly by two passes: the stage-1 pool sees the uploads;
its requests finish, in arrival order (one FIFO queue, one service time), at arrival + wait
+ stage-1 time, and reach the stage-2 pool a hand-off later (Lyrebird's stage-to-stage
transfer). The second pool never slows the first, so its arrivals are known once the first
pass is done. An upload's wait is its wait for a slot in each pool; the hand-off between them
is a transfer, not a wait for capacity, and is added on its own
(`split_p95_wait_with_handoff_s`).

What each pool gets of its own is what the issue is about: its stage's device time, its
slot layout (a host that holds one model fits more slots of it), and its start (one
stage's compiled parts to fetch and load, not both). The layout and the start split are
assumptions, stated with the figures (`SplitBench`), not measurements.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from img2img.config.scaling import ScalingSettings
from img2img.observe.timing import percentile
from img2img.scaling.policy import upstream_rate
from infra.bench.scaling_sim import (
    RATE_WINDOW_S,
    HostStart,
    SimResult,
    Trace,
    arrivals,
    simulate,
)


@dataclass(frozen=True)
class PoolModel:
    """One pool's hosts: seconds per image on a slot, slots per host, how they start."""

    name: str
    service_s: float
    slots_per_host: int
    starts: HostStart


@dataclass(frozen=True)
class SplitBench:
    """The single pool and the two split pools, on the same price per host-hour."""

    single: PoolModel
    generate: PoolModel
    upscale: PoolModel
    handoff_s: float
    price_per_hour: float
    seed: int = 7
    # The stage-2 pool's autoscaler sees the stage-1 pool's work on its way (as the live
    # one does, `Observation.upstream`); off: it sees only its own queue.
    look_ahead: bool = True

    @classmethod
    def from_stages(
        cls,
        stage_s: tuple[float, float],
        single_slots: int,
        split_slots: tuple[int, int],
        starts: HostStart,
        handoff_s: float,
        price_per_hour: float,
        seed: int = 7,
        look_ahead: bool = True,
    ) -> SplitBench:
        """The single pool runs both stages per slot; each split pool fetches and loads
        its own stage's share of the compiled parts (by device time; an assumption)."""
        total = sum(stage_s)

        def share(part: float) -> HostStart:
            return replace(
                starts,
                artifact_gb=starts.artifact_gb * part / total,
                load_s=starts.load_s * part / total,
                warmup_s=starts.warmup_s * part / total,
            )

        return cls(
            single=PoolModel("inf2", total, single_slots, starts),
            generate=PoolModel("inf2-generate", stage_s[0], split_slots[0], share(stage_s[0])),
            upscale=PoolModel("inf2-upscale", stage_s[1], split_slots[1], share(stage_s[1])),
            handoff_s=handoff_s,
            price_per_hour=price_per_hour,
            seed=seed,
            look_ahead=look_ahead,
        )


def policy_for(base: ScalingSettings, pool: PoolModel) -> ScalingSettings:
    """This project's policy, told the pool's own run time, slots and start (as each
    pool's autoscaler is configured)."""
    return base.model_validate(
        {
            **base.model_dump(),
            "slots_per_host": pool.slots_per_host,
            "expected_run_s": pool.service_s,
            "host_start_s": pool.starts.cold_s,
            "warm_start_s": pool.starts.warm_s,
        }
    )


def _run(
    trace: Trace,
    base: ScalingSettings,
    pool: PoolModel,
    times: list[float],
    upstream: Callable[[float], tuple[int, float]] | None = None,
) -> SimResult:
    return simulate(
        trace,
        policy_for(base, pool),
        pool.service_s,
        pool.starts.cold_s,
        slots_per_host=pool.slots_per_host,
        arrivals_at=times,
        starts=pool.starts,
        upstream=upstream,
    )


def upstream_of(
    arrived: list[float],
    finished: list[float],
    desired: list[tuple[float, int]],
    policy: ScalingSettings,
    run_s: float,
) -> Callable[[float], tuple[int, float]]:
    """What the stage-2 pool's autoscaler reads of the stage-1 pool at a time, as the live
    one reads it (`Autoscaler.upstream_view`): the requests there (arrived, not finished),
    and the rate they will come out at (`upstream_rate`). Lists sorted by time."""
    at_times = [t for t, _ in desired]

    def at(now: float) -> tuple[int, float]:
        came = bisect_right(arrived, now)
        inside = came - bisect_right(finished, now)
        window = (came - bisect_right(arrived, now - RATE_WINDOW_S)) / RATE_WINDOW_S
        recent = (came - bisect_right(arrived, now - policy.interval_s)) / policy.interval_s
        index = bisect_right(at_times, now) - 1
        hosts = desired[index][1] if index >= 0 else 0
        return inside, upstream_rate((window, recent), hosts, policy, run_s)

    return at


# Settings the split pools also try besides their defaults, to be compared at the single
# pool's p95 wait: less or more headroom (the target), a backlog cleared sooner.
SPLIT_GRID: tuple[dict[str, float], ...] = tuple(
    {"target_utilization": t, "drain_target_s": d}
    for t in (0.85, 0.75, 0.65)
    for d in (120.0, 60.0)
)


def compare_split(trace: Trace, base: ScalingSettings, bench: SplitBench) -> dict[str, Any]:
    """The single pool at `base`, and the split pools at `base` and at their best of
    `SPLIT_GRID`: the fewest host-hours at a p95 wait no higher than the single pool's
    (else the lowest p95). `split_over_single` is the best split's host-hours ÷ single's."""
    times = arrivals(trace, bench.seed)
    single = _run(trace, base, bench.single, times)
    bound = percentile(single.waits, 95)
    default = _split(trace, base, bench, times)
    tried = [default] + [
        _split(trace, base.model_copy(update=g), bench, times)
        for g in SPLIT_GRID
        if g
        != {"target_utilization": base.target_utilization, "drain_target_s": base.drain_target_s}
    ]
    within = [t for t in tried if t["split_p95_wait_s"] <= bound + 1e-6]
    best = (
        min(within, key=lambda t: (t["split_host_hours"], t["split_p95_wait_s"]))
        if within
        else min(tried, key=lambda t: (t["split_p95_wait_s"], t["split_host_hours"]))
    )
    single_h = single.host_seconds / 3600.0
    out = {
        "trace": trace.name,
        "requests": len(times),
        "single": _row(single, bench.single, bench.price_per_hour),
        "single_p95_wait_s": round(bound, 2),
        "single_host_hours": round(single_h, 2),
        "single_cost_usd": round(single.cost(bench.price_per_hour), 2),
        "split_default": default,
        "split": best,
        "split_over_single": round(best["split_host_hours"] / single_h, 3) if single_h else None,
        "split_default_over_single": round(default["split_host_hours"] / single_h, 3)
        if single_h
        else None,
        "handoff_s": bench.handoff_s,
    }
    return out


def _row(result: SimResult, pool: PoolModel, price_per_hour: float) -> dict[str, Any]:
    out = result.summary(pool.starts.cold_s, pool.slots_per_host, price_per_hour)
    return {
        "pool": pool.name,
        "service_s": pool.service_s,
        "slots_per_host": pool.slots_per_host,
        **{k: out[k] for k in ("host_hours", "min_host_hours", "p95_wait_s", "max_hosts")},
        "host_start_s": round(pool.starts.cold_s, 1),
        "idle_launches": out["idle_launches"],
    }


def _split(
    trace: Trace, base: ScalingSettings, bench: SplitBench, times: list[float]
) -> dict[str, Any]:
    """Both split pools at `base` on the uploads `times`."""
    first = _run(trace, base, bench.generate, times)
    # FIFO with one service time: requests finish in arrival order, so the i-th arrival's
    # wait is the i-th wait, and the stage-2 arrivals are in the same order.
    handed = [
        a + w + bench.generate.service_s + bench.handoff_s
        for a, w in zip(times, first.waits, strict=True)
    ]
    ahead = None
    if bench.look_ahead:
        ahead = upstream_of(
            times,
            [t - bench.handoff_s for t in handed],
            first.desired_log,
            policy_for(base, bench.generate),
            bench.generate.service_s,
        )
    second = _run(trace, base, bench.upscale, handed, ahead)
    # Waiting for a slot, in either pool (what the single pool's wait compares with); the
    # hand-off is a transfer, not a wait for capacity, and is reported on its own.
    waits = [w1 + w2 for w1, w2 in zip(first.waits, second.waits, strict=True)]
    pools_h = (first.host_seconds + second.host_seconds) / 3600.0
    return {
        "settings": {
            "target_utilization": base.target_utilization,
            "drain_target_s": base.drain_target_s,
        },
        "pools": [
            _row(first, bench.generate, bench.price_per_hour),
            _row(second, bench.upscale, bench.price_per_hour),
        ],
        "split_p95_wait_s": round(percentile(waits, 95), 2),
        "split_p95_wait_with_handoff_s": round(
            percentile([w + bench.handoff_s for w in waits], 95), 2
        ),
        "split_host_hours": round(pools_h, 2),
        "split_cost_usd": round(
            first.cost(bench.price_per_hour) + second.cost(bench.price_per_hour), 2
        ),
    }

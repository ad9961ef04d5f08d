"""Scaling a split topology: the stage-2 pool sees stage 1's work on its way, and the
simulation compares a pool per stage with the single pool on the same arrivals."""

from __future__ import annotations

import pytest

from img2img.config.scaling import ScalingSettings
from img2img.scaling.policy import Observation, PolicyState, decide, upstream_rate
from infra.bench.scaling_sim import HostStart, Trace
from infra.bench.scaling_split import SplitBench, compare_split, upstream_of

POLICY = ScalingSettings(max_hosts=50, slots_per_host=4, expected_run_s=2.0)


def test_upstream_work_starts_an_empty_pool_and_sizes_it() -> None:
    empty = Observation(now=100.0, queued=0, running=0, current_desired=0)
    assert decide(POLICY, empty, PolicyState())[0].desired == 0
    ahead = Observation(
        now=100.0, queued=0, running=0, current_desired=0, upstream=40, upstream_rate=6.0
    )
    decision, _ = decide(POLICY, ahead, PolicyState())
    assert decision.reason.startswith("activate from zero")
    # 6 runs/s × 2 s = 12 slots at target 0.75 → 4 hosts of 4 slots, at least.
    assert decision.desired >= 4
    # While stage 1 still holds work, the stage-2 pool is not idle.
    busy = Observation(now=500.0, queued=0, running=0, current_desired=3, upstream=10)
    assert not decide(POLICY, busy, PolicyState(idle_since=0.0))[0].reason.startswith("idle")


def test_the_upstream_rate_leads_with_the_hosts_asked_for() -> None:
    upstream = ScalingSettings(slots_per_host=12, target_utilization=0.75)
    # Leaving zero: 10 hosts asked for, arrivals not yet in the window.
    assert upstream_rate((1.5, None), 10, upstream, run_s=2.0) == pytest.approx(45.0)
    # Steady: the arrival rate when it is the higher.
    assert upstream_rate((50.0, 48.0), 1, upstream, run_s=2.0) == 50.0
    arrived, finished = [0.0, 1.0, 2.0, 3.0], [2.5, 3.5]
    at = upstream_of(arrived, finished, [(0.0, 1)], upstream, run_s=2.0)
    inside, rate = at(3.0)
    assert inside == 3 and rate == pytest.approx(4.5)  # 1 host × 12 × 0.75 ÷ 2 s


def _burst(t: float) -> float:
    return 40.0 if 60 <= t < 360 else 0.0


BURST = Trace("burst", 900, _burst, "idle a minute, 40 req/s for 5 min")


def test_a_pool_per_stage_costs_less_when_each_fits_more_slots_and_waits_less() -> None:
    policy = ScalingSettings(max_hosts=100)
    same = SplitBench.from_stages((2.02, 1.0), 12, (12, 12), HostStart(), 0.32, 12.98)
    wider = SplitBench.from_stages((2.02, 1.0), 12, (24, 12), HostStart(), 0.32, 12.98)
    # Each split pool fetches and loads its own stage only: it starts sooner.
    assert same.generate.starts.cold_s < same.single.starts.cold_s
    assert same.upscale.starts.cold_s < same.generate.starts.cold_s
    out = compare_split(BURST, policy, same)
    split = out["split_default"]
    assert out["requests"] > 10000
    # The stage-2 pool is ready when stage 1's outputs come: it adds little wait.
    assert split["pools"][1]["p95_wait_s"] < split["pools"][0]["p95_wait_s"] / 3
    assert split["split_p95_wait_s"] <= out["single_p95_wait_s"]
    # The same slots per host: about the same host-hours as one pool.
    assert 0.9 < out["split_default_over_single"] < 1.15
    cheaper = compare_split(BURST, policy, wider)
    assert cheaper["split_over_single"] < 0.85, cheaper
    assert cheaper["split"]["split_p95_wait_s"] <= cheaper["single_p95_wait_s"] + 1e-6
    # Without the look ahead, stage 2 waits for stage 1's outputs before it starts hosts.
    blind = compare_split(
        BURST,
        policy,
        SplitBench.from_stages(
            (2.02, 1.0), 12, (12, 12), HostStart(), 0.32, 12.98, look_ahead=False
        ),
    )
    assert blind["split_default"]["pools"][1]["p95_wait_s"] > split["pools"][1]["p95_wait_s"] * 3

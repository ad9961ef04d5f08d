"""The simulator's host model: start time in parts, warm pools and what they cost."""

from __future__ import annotations

import pytest

from img2img.config.scaling import ScalingSettings
from infra.bench.scaling_sim import HostStart, Trace, simulate

SETTINGS = ScalingSettings(max_hosts=20, slots_per_host=4, expected_run_s=4.0)


def burst(rate: float, seconds: float, idle_after: float = 600.0) -> Trace:
    return Trace(
        "burst", seconds + idle_after, lambda t: rate if t < seconds else 0.0, "a test burst"
    )


def test_start_time_is_the_sum_of_its_parts() -> None:
    starts = HostStart(boot_s=30, artifact_gb=6, s3_gb_per_s=0.5, load_s=20, warmup_s=5)
    assert starts.fetch_s == 12
    assert starts.cold_s == 30 + 12 + 20 + 5
    assert starts.warm_s == starts.resume_s + 20 + 5  # no boot, nothing to fetch
    assert starts.parts()["cold_s"] == 67


def test_a_warm_pool_shortens_the_cold_start_and_costs_disks_while_stopped() -> None:
    trace = burst(rate=2.0, seconds=120)
    cold = simulate(trace, SETTINGS, 4.0, 0.0, starts=HostStart())
    warm = simulate(trace, SETTINGS, 4.0, 0.0, starts=HostStart(warm_pool=2))

    assert cold.warm_starts == 0 and warm.warm_starts >= 1
    assert cold.cold_start_to_first_result_s is not None
    assert warm.cold_start_to_first_result_s is not None
    saved = HostStart().cold_s - HostStart().warm_s
    assert warm.cold_start_to_first_result_s == pytest.approx(
        cold.cold_start_to_first_result_s - saved, abs=1.0
    )
    # Stopped instances are paid for their disks only, for the whole trace.
    assert warm.stopped_seconds >= 2 * trace.duration_s * 0.5
    disk_only = warm.stopped_seconds / 3600 * HostStart().stopped_usd_per_hour
    assert warm.cost(10.0) == pytest.approx(warm.host_seconds / 3600 * 10.0 + disk_only)
    assert cold.cost(10.0) == pytest.approx(cold.host_seconds / 3600 * 10.0)


def test_a_used_warm_instance_is_replaced_by_one_that_boots_and_fetches() -> None:
    starts = HostStart(warm_pool=1)
    result = simulate(burst(rate=1.0, seconds=30), SETTINGS, 4.0, 0.0, starts=starts)
    # The replacement's boot and fetch are paid as running time, once per warm start.
    assert result.warm_starts == 1
    assert result.refill_seconds == pytest.approx(starts.boot_s + starts.fetch_s)
    assert result.host_seconds > result.refill_seconds


def test_every_host_a_small_burst_starts_serves_requests() -> None:
    result = simulate(burst(rate=0.5, seconds=20), SETTINGS, 4.0, 0.0, starts=HostStart())
    assert 1 <= result.max_hosts_seen <= 2
    assert result.idle_launches == 0
    assert len(result.waits) == result.requests


def test_idle_launches_count_hosts_that_served_nothing() -> None:
    # A fixed-size scaler that keeps 5 hosts for a trickle one host serves.
    class Five:
        name = "five"
        interval_s = 15.0

        def decide(self, view: object) -> int:
            return 5

    trace = Trace("trickle", 300, lambda t: 0.05 if t < 60 else 0.0, "a trickle")
    result = simulate(trace, Five(), 4.0, 0.0, slots_per_host=4, starts=HostStart())
    assert result.max_hosts_seen == 5
    assert result.idle_launches >= 3


# -- two lanes ---------------------------------------------------------------------------------


def _two_lanes() -> tuple[Trace, list[float], list[float]]:
    from infra.bench.scaling_sim import arrivals

    trace = Trace(
        "two lanes",
        900,
        lambda t: 1.0 if t < 600 else 0.0,
        "interactive 1/s, a bulk burst of 2,400 at 120 s",
        bulk=lambda t: 120.0 if 120 <= t < 140 else 0.0,
    )
    return trace, arrivals(trace, 3), arrivals(trace, 4, trace.bulk)


def test_with_lanes_interactive_requests_overtake_a_bulk_backlog_held_to_its_cap() -> None:
    trace, first, bulk = _two_lanes()
    settings = SETTINGS.model_copy(update={"lower_lanes_max_hosts": 3})
    args = (trace, settings, 4.0, 30.0)
    lanes = simulate(*args, arrivals_at=first, lower_at=bulk)
    one_line = simulate(*args, arrivals_at=first, lower_at=bulk, one_line=True)

    # Every request served exactly once, preempted ones resumed with what they had left.
    for result in (lanes, one_line):
        assert len(result.first_waits) == len(first) and len(result.bulk_waits) == len(bulk)
        assert result.service_seconds == pytest.approx((len(first) + len(bulk)) * 4.0)
    during = [
        w
        for a, w in zip(lanes.first_arrived, lanes.first_waits, strict=True)
        if 140 <= a <= max(lanes.bulk_started)
    ]
    waited = [
        w
        for a, w in zip(one_line.first_arrived, one_line.first_waits, strict=True)
        if 140 <= a <= max(one_line.bulk_started)
    ]
    assert during and max(during) < 1.0  # a slot is taken from bulk at once
    assert max(waited) > 30.0  # in one line they queue behind the burst
    # Bulk alone kept at most the cap; one line grew the pool for it.
    assert lanes.max_hosts_seen <= 3 < one_line.max_hosts_seen
    # Bulk used what the interactive lane left idle: it waited longer, nothing was lost.
    assert max(lanes.bulk_waits) > max(one_line.bulk_waits)

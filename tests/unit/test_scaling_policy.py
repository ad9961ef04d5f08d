from __future__ import annotations

import pytest
from pydantic import ValidationError

from img2img.config.scaling import ScalingSettings
from img2img.scaling.policy import LowerLanes, Observation, PolicyState, decide

S = ScalingSettings(
    min_hosts=0,
    max_hosts=10,
    slots_per_host=2,
    target_utilization=0.75,
    scale_out_cooldown_s=60,
    scale_in_cooldown_s=120,
    idle_to_zero_s=300,
    drain_target_s=120,
    expected_run_s=30,
)


def obs(
    now: float,
    queued: int = 0,
    running: int = 0,
    current: int = 0,
    rate: float | None = None,
    run_s: float | None = None,
) -> Observation:
    return Observation(
        now=now,
        queued=queued,
        running=running,
        current_desired=current,
        arrival_rate=rate,
        recent_run_s=run_s,
    )


def test_leaves_zero_at_once_on_the_first_run() -> None:
    decision, state = decide(S, obs(0, queued=1), PolicyState())
    assert decision.desired == 1 and decision.reason.startswith("activate from zero")
    assert state.last_scale_out == 0


def test_stays_at_zero_without_demand_and_honours_the_activation_threshold() -> None:
    assert decide(S, obs(0), PolicyState())[0].desired == 0
    strict = S.model_copy(update={"activation_threshold": 3})
    assert decide(strict, obs(0, queued=2), PolicyState())[0].desired == 0
    assert decide(strict, obs(0, queued=3), PolicyState())[0].desired >= 1


def test_sizes_to_keep_pace_with_arrivals_at_the_target_utilisation() -> None:
    # 1 run/s × 30 s per run = 30 busy slots; 2 slots per host at 0.75 → 20 hosts, capped at 10.
    decision, _ = decide(S, obs(0, running=2, current=1, rate=0.1, run_s=30), PolicyState())
    assert decision.desired == 2  # 0.1/s × 30 s = 3 slots → 3 / 1.5 = 2 hosts
    capped, _ = decide(S, obs(0, running=2, current=1, rate=1.0, run_s=30), PolicyState())
    assert capped.desired == 10


def test_a_backlog_counts_by_the_time_it_takes_not_one_slot_per_run() -> None:
    # 60 queued runs of 30 s drained within 120 s need 15 slots, not 60; a backlog is known
    # work, so it gets no utilisation headroom: 15 slots / 2 per host → 8 hosts.
    decision, _ = decide(S, obs(0, queued=60, current=1, rate=0.0, run_s=30), PolicyState())
    assert decision.desired == 8
    small, _ = decide(S, obs(0, queued=8, current=1, rate=0.0, run_s=30), PolicyState())
    assert small.desired == 1  # 2 slots → 1 host
    # Arrivals do get the headroom: 0.1/s × 30 s = 3 slots / 1.5 = 2 hosts (4 slots, 1 of them
    # headroom). The backlog uses that spare slot first: (3 + 15) slots / 2 = 9 hosts, not 10.
    both, _ = decide(S, obs(0, queued=60, current=1, rate=0.1, run_s=30), PolicyState())
    assert both.desired == 9


def test_scale_out_cooldown_holds_further_scale_outs() -> None:
    # 6 runs of 30 s drained in 120 s: 1.5 slots → 1 host, the one there is (no scale-out).
    d1, st = decide(S, obs(0, queued=6, current=1, rate=0.0, run_s=30), PolicyState())
    assert (d1.desired, d1.needed) == (1, 1) and d1.reason.startswith("hold"), d1
    d1, st = decide(S, obs(0, queued=12, current=1, rate=0.0, run_s=30), PolicyState())
    assert d1.desired == 2
    d2, st = decide(S, obs(30, queued=40, current=2, rate=0.0, run_s=30), st)
    assert d2.desired == 2 and d2.reason == "hold: scale-out cooldown"
    d3, _ = decide(S, obs(61, queued=40, current=2, rate=0.0, run_s=30), st)
    assert d3.desired == 5  # 40 × 30 s / 120 s = 10 slots → 5 hosts


def test_scale_in_waits_for_the_cooldown_and_uses_the_window_maximum() -> None:
    state = PolicyState(last_scale_out=0.0)
    busy = obs(10, running=6, current=4, rate=0.2, run_s=30)  # 6 slots → 4 hosts
    _, state = decide(S, busy, state)
    quiet = obs(60, running=1, current=4, rate=0.02, run_s=30)  # 0.6 slots → 1 host
    d, state = decide(S, quiet, state)
    assert d.desired == 4 and d.reason.startswith("hold: scale-in window (needed 1 now, 4")
    # 130 s after the scale-out, but the busy sample at t=10 is still in the window.
    d, state = decide(S, obs(125, running=1, current=4, rate=0.02, run_s=30), state)
    assert d.desired == 4
    d, state = decide(S, obs(135, running=1, current=4, rate=0.02, run_s=30), state)
    assert d.desired == 1 and d.reason.startswith("scale in")


def test_goes_to_zero_only_after_the_idle_time_and_to_min_hosts() -> None:
    state = PolicyState()
    d, state = decide(S, obs(0, current=2), state)
    assert d.desired == 2 and "idle for 0 s" in d.reason
    d, state = decide(S, obs(299, current=2), state)
    assert d.desired == 2
    d, state = decide(S, obs(300, current=2), state)
    assert d.desired == 0 and d.reason.startswith("idle for 300 s")
    keep_one = S.model_copy(update={"min_hosts": 1})
    d, _ = decide(keep_one, obs(400, current=2), PolicyState(idle_since=0))
    assert d.desired == 1


def test_new_demand_resets_the_idle_clock() -> None:
    _, state = decide(S, obs(0, current=2), PolicyState())
    _, state = decide(S, obs(200, queued=1, current=2, rate=0.01, run_s=30), state)
    d, _ = decide(S, obs(400, current=2), state)
    assert d.desired == 2  # idle only since t=400


def test_bounds_are_enforced() -> None:
    d, _ = decide(S.model_copy(update={"min_hosts": 2}), obs(0), PolicyState())
    assert d.desired == 2 and "min_hosts" in d.reason
    d, _ = decide(S, obs(0, current=50), PolicyState())
    assert d.desired == 10 and "max_hosts" in d.reason
    with pytest.raises(ValidationError, match=r"min_hosts \(5\) must not exceed"):
        ScalingSettings(min_hosts=5, max_hosts=2)


def test_steady_noisy_load_does_not_flap() -> None:
    """An hour of load whose rate wobbles ±8% around 10 hosts' worth: few changes."""
    settings = S.model_copy(update={"max_hosts": 100})
    state, current, changes = PolicyState(), 10, 0
    for i in range(240):
        rate = 0.5 * (1.08 if i % 2 else 0.92)  # 15 busy slots ± 8% → 10 hosts
        d, state = decide(
            settings, obs(i * 15.0, running=15, current=current, rate=rate, run_s=30), state
        )
        changes += d.desired != current
        current = d.desired
    assert changes <= 2 and 9 <= current <= 12


def test_a_cleared_backlog_scales_in_after_the_cooldown_not_after_the_window() -> None:
    """The stabilisation window smooths the arrival rate; a backlog that is gone is gone."""
    state = PolicyState()
    d, state = decide(S, obs(0, queued=60, running=2, current=1, rate=0.1, run_s=30), state)
    assert d.desired == 9  # 2 hosts for arrivals + 7 for the backlog (after the headroom)
    # The backlog is cleared; arrivals go on at the same rate. The window still holds the
    # t=0 sample, but only its arrival part (2 hosts) counts.
    d, state = decide(S, obs(100, running=3, current=9, rate=0.1, run_s=30), state)
    assert d.desired == 9 and d.reason == "hold: scale-in cooldown"
    d, state = decide(S, obs(121, running=3, current=9, rate=0.1, run_s=30), state)
    assert d.desired == 2 and d.reason.startswith("scale in")


def test_scale_in_protection_covers_exactly_the_busy_hosts_on_any_backend() -> None:
    from deployments.services.scale_targets import protection_plan
    from deployments.worker.names import host_of

    # Workers are named "<host>@<process nonce>"; the autoscaler reduces them to hosts.
    busy = {host_of("i-0aa@1f2e3d4c"), host_of("9c1d0e@77aa0011")}
    protect, release = protection_plan(["i-0aa", "i-0bb"], busy)
    assert (protect, release) == (["i-0aa"], ["i-0bb"])
    tasks = [
        "arn:aws:ecs:us-east-1:1:task/img2img/9c1d0e",
        "arn:aws:ecs:us-east-1:1:task/img2img/5f5f5f",
    ]
    protect, release = protection_plan(tasks, busy, lambda arn: arn.rsplit("/", 1)[-1])
    assert protect == tasks[:1] and release == tasks[1:]


# -- not launching in vain --------------------------------------------------------------

LOCAL = ScalingSettings(
    max_hosts=2,
    slots_per_host=1,
    scale_out_cooldown_s=10,
    scale_in_cooldown_s=30,
    drain_target_s=30,
    expected_run_s=10,
    host_start_s=20,
)


def burst_seen(queued: int, rate: float, recent: float, warm: int = 0) -> Observation:
    """One warm host busy with one run, a burst queued behind it."""
    return Observation(
        now=100.0,
        queued=queued,
        running=1,
        current_desired=1,
        live_hosts=1,
        recent_run_s=10.0,
        arrival_rate=rate,
        recent_arrival_rate=recent,
        warm=warm,
    )


def test_no_host_is_launched_for_a_burst_the_running_slot_starts_before_it_is_ready() -> None:
    # The live stack's case: a burst of 3 runs on one warm slot. The minute's rate (3/60)
    # and the backlog ask for a second host, but the slot starts both queued runs within
    # the 20 s a new host takes to start: that host would serve nothing.
    d, _ = decide(LOCAL, burst_seen(queued=2, rate=3 / 60, recent=0.0), PolicyState())
    assert d.needed == 2 and d.desired == 1
    assert d.reason.startswith("hold: the 1 hosts start the 2 queued") and "(20 s)" in d.reason
    # A burst that outlasts the start leaves runs for the new host: it is launched.
    d, _ = decide(LOCAL, burst_seen(queued=5, rate=6 / 60, recent=0.0), PolicyState())
    assert d.desired == 2 and d.reason.startswith("scale out")


def test_arrivals_that_go_on_still_scale_out_at_once() -> None:
    # 0.15 runs/s arriving, in the last interval too: 1.5 busy slots is load, not a burst.
    d, _ = decide(LOCAL, burst_seen(queued=2, rate=0.15, recent=0.15), PolicyState())
    assert d.desired == 2 and d.reason.startswith("scale out")


def test_a_waiting_warm_instance_shortens_the_start_the_policy_counts_on() -> None:
    settings = S.model_copy(update={"host_start_s": 90.0, "warm_start_s": 20.0})

    def seen(warm: int) -> Observation:
        return Observation(
            now=0.0,
            queued=3,
            running=2,
            current_desired=1,
            live_hosts=1,
            recent_run_s=30.0,
            arrival_rate=3 / 60,
            recent_arrival_rate=0.0,
            warm=warm,
        )

    # Cold, the host's 2 slots start all 3 queued runs within 90 s; from the warm pool a
    # host is serving in 20 s, when 2 of them still wait.
    cold, _ = decide(settings, seen(warm=0), PolicyState())
    assert cold.desired == 1 and "(90 s)" in cold.reason
    warm, _ = decide(settings, seen(warm=3), PolicyState())
    assert warm.desired == 2 and warm.reason.startswith("scale out")


def test_leaving_zero_sizes_for_the_rate_since_the_pool_was_idle() -> None:
    big = S.model_copy(update={"max_hosts": 1000, "slots_per_host": 12})
    _, idle = decide(big, obs(0), PolicyState())
    assert idle.last_idle == 0
    # 600 runs came in the 15 s since: 40 a second, not the minute's 10.
    first = obs(15, queued=600, rate=10.0, run_s=4.0)
    d, _ = decide(big, first, idle)
    assert d.desired == 18  # 160 slots at 0.75 → 17.8 hosts; the backlog fits the headroom
    unknown, _ = decide(big, first, PolicyState())
    assert unknown.desired == 5  # without the idle time the minute's rate is all it has


def test_leaving_zero_starts_no_more_hosts_than_the_queued_runs_can_occupy() -> None:
    # The live demo's case: one run (a batch of 8 images, 40 s) arrives at an idle pool.
    # Its 40 s exceed the 30-s drain target and the minute's rate adds more: 2 hosts
    # "needed", but one run occupies one slot; the second host would serve nothing.
    _, idle = decide(
        LOCAL, Observation(now=0, queued=0, running=0, current_desired=0), PolicyState()
    )
    one = Observation(
        now=2.0,
        queued=1,
        running=0,
        current_desired=0,
        recent_run_s=40.0,
        arrival_rate=1 / 60,
        recent_arrival_rate=0.5,
    )
    d, _ = decide(LOCAL, one, idle)
    assert d.needed == 2 and d.desired == 1 and d.reason.startswith("activate from zero")
    # Three runs at once can occupy both hosts.
    d, _ = decide(LOCAL, Observation(**{**one.__dict__, "queued": 3}), idle)
    assert d.desired == 2


def test_runs_held_by_hosts_on_their_way_out_start_no_host() -> None:
    """The flap seen with a hung slot: its runs stay Running on a host being drained. At zero
    hosts wanted they are no work a new host can take; a queued run is."""
    held, _ = decide(S, obs(0, running=2, current=0), PolicyState())
    assert held.desired == 0 and "on their way out" in held.reason
    queued, _ = decide(S, obs(0, queued=1, running=2, current=0), PolicyState())
    assert queued.desired >= 1 and queued.reason.startswith("activate from zero")


def test_hosts_running_runs_are_not_scaled_in_when_arrivals_stop() -> None:
    """Long runs, no arrivals for longer than the scale-in window: the rate says no host is
    needed, but the busy host stays (its runs would drain it slowly and count again)."""
    state, current = PolicyState(), 1
    for i in range(40):  # ten minutes, a decision every 15 s
        look = Observation(
            now=i * 15.0,
            queued=0,
            running=2,
            current_desired=current,
            arrival_rate=0.0,
            recent_run_s=30,
            busy_hosts=1,
        )
        d, state = decide(S, look, state)
        current = d.desired
    assert current == 1
    unknown, _ = decide(S, obs(600.0, running=2, current=1, rate=0.0, run_s=30), state)
    assert unknown.desired == 0  # without the busy count (the simulator), as before


def test_launch_backoff_after_idle_launches_doubles_and_is_bounded() -> None:
    from img2img.scaling.policy import launch_backoff

    assert launch_backoff(S, (), 0.0) == 0.0
    assert launch_backoff(S, (100.0,), 110.0) == 0.0  # one is below the limit of 2
    assert launch_backoff(S, (100.0, 200.0), 210.0) == pytest.approx(110.0)  # 120 s after
    assert launch_backoff(S, (100.0, 200.0, 300.0), 310.0) == pytest.approx(230.0)  # 240 s
    assert launch_backoff(S, (100.0, 200.0), 400.0) == 0.0  # served its time
    many = tuple(float(t) for t in range(10, 110, 10))  # 10 in 100 s: at most the window
    assert launch_backoff(S, many, 100.0) == pytest.approx(S.idle_launch_window_s)
    assert launch_backoff(S, (0.0, 10.0), 10.0 + S.idle_launch_window_s) == 0.0  # out of window


def test_the_policy_starts_no_host_while_backing_off_then_does() -> None:
    idle = (100.0, 200.0)
    look = Observation(now=210.0, queued=3, running=0, current_desired=0, idle_launches=idle)
    held, _ = decide(S, look, PolicyState())
    assert held.desired == 0 and "without serving a run" in held.reason
    out = Observation(
        now=210.0, queued=30, running=2, current_desired=1, live_hosts=1, idle_launches=idle
    )
    assert decide(S, out, PolicyState())[0].desired == 1
    later = Observation(now=330.0, queued=3, running=0, current_desired=0, idle_launches=idle)
    assert decide(S, later, PolicyState())[0].desired >= 1


def test_a_hung_host_does_not_make_the_policy_flap() -> None:
    """Ten minutes of the issue's hang, replayed on the policy: two runs stuck Running,
    nothing queued, no arrivals. Whether the stuck host is still wanted (it is busy, so it
    stays) or already let go (draining: its runs are held by a host on its way out), no host
    is started for them and none is let go and started again."""
    for start in (1, 0):
        state, current, launches, changes = PolicyState(), start, 0, 0
        for i in range(40):
            look = Observation(
                now=i * 15.0,
                queued=0,
                running=2,
                current_desired=current,
                arrival_rate=0.0,
                recent_run_s=30,
                busy_hosts=current,  # the stuck host, while it is wanted
            )
            d, state = decide(S, look, state)
            launches += d.desired > current
            changes += d.desired != current
            current = d.desired
        assert launches == 0 and changes == 0 and current == start


def test_the_local_target_drains_idle_workers_first_newest_first() -> None:
    from deployments.services.scale_targets import drain_choice

    workers = [(0, "w0"), (1, "w1"), (2, "w2"), (3, "w3")]
    # Two to go, w3 and w1 busy: the idle ones, newest first.
    assert drain_choice(workers, {"w1", "w3"}, 2) == [2, 0]
    # Three to go: the idle ones do not cover it, so the newest busy one drains too.
    assert drain_choice(workers, {"w1", "w3"}, 3) == [2, 0, 3]
    # None busy: newest first; nothing to cut, nothing drained.
    assert drain_choice(workers, set(), 1) == [3]
    assert drain_choice(workers, set(), 0) == [] and drain_choice(workers, set(), -1) == []


# -- lanes: the first lane sized alone, the lower lanes up to a cost cap ----------------------

LANED = S.model_copy(update={"lower_lanes_max_hosts": 2})


def laned(
    now: float,
    queued: int,
    running: int,
    current: int,
    rate: float | None,
    lower: LowerLanes,
) -> Observation:
    return Observation(
        now=now,
        queued=queued,
        running=running,
        current_desired=current,
        arrival_rate=rate,
        recent_run_s=30,
        lower=lower,
    )


def test_a_bulk_backlog_alone_keeps_no_more_hosts_than_the_cap() -> None:
    # 40 bulk runs queued: one line asks for 5 hosts (40 × 30 s ÷ 120 s = 10 slots, 2 a
    # host); the cap holds bulk to 2.
    bulk = LowerLanes(queued=40, running=0, arrival_rate=0.0)
    one_line, _ = decide(S, obs(0, queued=40, current=0), PolicyState())
    assert one_line.desired == 5
    capped, _ = decide(LANED, laned(0, 40, 0, 0, None, bulk), PolicyState())
    assert capped.desired == 2
    # Scaling out from there: still the cap, and the reason says the cap held it.
    held, _ = decide(LANED, laned(100, 40, 4, 1, 0.0, bulk), PolicyState())
    assert held.desired == 2 and "held to 2" in held.reason


def test_interactive_work_grows_the_pool_beyond_the_bulk_cap() -> None:
    # 0.3 interactive runs/s × 30 s = 9 slots → 9 / (2 × 0.75) = 6 hosts, with a bulk backlog
    # that the cap holds to 2: the pool is the first lane's need, not the cap.
    bulk = LowerLanes(queued=40, running=4, arrival_rate=0.0)
    decision, _ = decide(LANED, laned(100, 40, 4 + 4, 2, 0.3, bulk), PolicyState())
    assert decision.desired == 6
    # The same arrivals all in the bulk lane: held to the cap.
    all_bulk = LowerLanes(queued=40, running=8, arrival_rate=0.3)
    held, _ = decide(LANED, laned(100, 40, 8, 2, 0.3, all_bulk), PolicyState())
    assert held.desired == 2


def test_lanes_without_a_cap_size_as_one_line_and_empty_lanes_go_to_zero() -> None:
    uncapped = S  # lower_lanes_max_hosts None: max_hosts
    bulk = LowerLanes(queued=40, running=0, arrival_rate=0.0)
    decision, _ = decide(uncapped, laned(0, 40, 0, 0, None, bulk), PolicyState())
    assert decision.desired == decide(S, obs(0, queued=40), PolicyState())[0].desired
    state = PolicyState()
    empty = LowerLanes()
    _, state = decide(LANED, laned(0, 0, 0, 2, 0.0, empty), state)
    later, _ = decide(LANED, laned(LANED.idle_to_zero_s + 1, 0, 0, 2, 0.0, empty), state)
    assert later.desired == 0


def test_busy_bulk_hosts_above_the_cap_drain_only_through_scale_in() -> None:
    # Interactive load gone, bulk running on 5 hosts with more queued: scale in to the cap
    # after the cooldown, never below the hosts still running runs.
    bulk = LowerLanes(queued=20, running=6, arrival_rate=0.0)
    state = PolicyState()
    decision, state = decide(LANED, laned(0, 20, 6, 5, 0.0, bulk), state)
    decision, state = decide(LANED, laned(300, 20, 6, 5, 0.0, bulk), state)
    assert decision.desired == 2 and decision.reason.startswith("scale in")
    busy = Observation(
        now=600,
        queued=20,
        running=6,
        current_desired=5,
        arrival_rate=0.0,
        recent_run_s=30,
        lower=bulk,
        busy_hosts=3,
    )
    kept, _ = decide(LANED, busy, PolicyState())
    assert kept.desired == 3


def test_bulk_arrivals_above_the_cap_hold_no_hosts_in_the_scale_in_window() -> None:
    # Bulk arriving at 0.3/s (9 slots: 6 hosts unheld) was held to 2; when it slows, the
    # window remembers the 2 it was allowed, not the 6 it asked for.
    bulk = LowerLanes(queued=0, running=4, arrival_rate=0.3)
    held, state = decide(LANED, laned(0, 0, 4, 2, 0.3, bulk), PolicyState())
    assert held.desired == 2
    quiet = LowerLanes(queued=0, running=2, arrival_rate=0.0)
    later, _ = decide(LANED, laned(100, 0, 2, 5, 0.0, quiet), state)
    assert later.desired == 2 and later.reason.startswith("scale in"), later

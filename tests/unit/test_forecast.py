"""The daily forecast: what it reads from past days, when it is trusted, and the floor rule
(it adds hosts ahead of a rise and never keeps hosts the reactive part releases)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from img2img.config.scaling import ForecastSettings, ScalingSettings
from img2img.scaling.forecast import Forecast, forecast
from img2img.scaling.policy import Observation, PolicyState, decide
from infra.bench.scaling_sim import HostStart, PastDays, Trace, simulate

F = ForecastSettings(enabled=True, days=7, min_days=3, lead_s=120, bucket_s=60)
FINE = F.model_copy(update={"lead_s": 105.0, "bucket_s": 15.0})


def test_the_median_of_past_days_per_bucket_and_the_highest_bucket_ahead() -> None:
    # Per day: the minute ending now, then the two minutes ahead.
    days = [[60, 60, 600]] * 6 + [[6000, 6000, 6000]]  # one odd day (a launch)
    f = forecast(F, days, observed_rate=1.0)
    assert f.rate_now == 1.0 and f.rate_ahead == 10.0  # 600 a minute ahead, not 6000
    assert f.trusted and f.rising and f.days == 7


def test_too_little_history_or_a_day_unlike_the_past_is_not_trusted() -> None:
    few = forecast(F, [[60, 60, 600]] * 2 + [[0, 0, 0]] * 5, observed_rate=1.0)
    assert not few.trusted and few.reason == "2 days of history, 3 needed"
    assert not forecast(F, [], observed_rate=1.0).trusted
    # 60 a minute in the history; 60 ± (25% + 3 standard deviations of a count of 60) is
    # within [21.8, 98.2]: a quiet holiday at 12 a minute is not.
    days = [[60, 60, 600]] * 7
    assert forecast(F, days, observed_rate=90 / 60).trusted
    holiday = forecast(F, days, observed_rate=12 / 60)
    assert not holiday.trusted and "12 arrivals a bucket now" in holiday.reason


def test_a_flat_day_is_no_rise() -> None:
    f = forecast(F, [[600, 610, 620]] * 7, observed_rate=10.0)
    assert f.trusted and not f.rising  # +20 on 600 is noise, not a rise


def test_history_of_the_wrong_shape_is_refused_naming_the_day() -> None:
    with pytest.raises(ValueError, match=r"day 2 of the history has 2 buckets, expected 3"):
        forecast(F, [[1, 2, 3], [1, 2]], observed_rate=0.0)


def test_the_lead_must_cover_a_host_start_and_fit_before_a_release() -> None:
    with pytest.raises(ValidationError, match=r"lead_s \(60.0\) must be at least"):
        ScalingSettings(forecast=FINE.model_copy(update={"lead_s": 60.0}), host_start_s=90)
    # 120 s ahead in 60-s buckets reaches 180 s: past the 120 s after which the reactive
    # part releases an idle host.
    with pytest.raises(ValidationError, match=r"\(180.0\) must not exceed scaling.idle_to_zero"):
        ScalingSettings(forecast=F)
    ScalingSettings(forecast=F, idle_to_zero_s=180, scale_in_cooldown_s=180)
    with pytest.raises(ValidationError, match=r"min_days \(8\) must not exceed"):
        ForecastSettings(days=7, min_days=8)
    ScalingSettings(forecast=F.model_copy(update={"enabled": False}), idle_to_zero_s=60)
    ScalingSettings(forecast=FINE)  # 105 s ahead in 15-s buckets: the defaults fit


S = ScalingSettings(
    max_hosts=100,
    slots_per_host=12,
    expected_run_s=4.0,
    host_start_s=90,
    forecast=FINE,
)
RISE = Forecast(rate_now=5.0, rate_ahead=50.0, days=7, trusted=True, reason="r", rising=True)


def seen(now: float, current: int, running: int, rate: float, f: Forecast | None) -> Observation:
    return Observation(
        now=now,
        queued=0,
        running=running,
        current_desired=current,
        live_hosts=current,
        recent_run_s=4.0,
        arrival_rate=rate,
        recent_arrival_rate=rate,
        forecast=f,
    )


def test_a_trusted_rise_adds_hosts_ahead_and_the_reactive_part_runs_at_its_target() -> None:
    d, state = decide(S, seen(1000, current=2, running=20, rate=5.0, f=RISE), PolicyState())
    assert d.desired == 19 and d.reason.startswith("pre-scale: forecast")  # 200 slots at 0.9
    # A pre-scale starts no scale-out cooldown (the forecast may raise it as the rise
    # comes into view) but is a scale event for the reactive part's scale-in cooldown.
    assert state.last_pre_scale == 1000 and state.last_scale_out == -float("inf")
    # Without it (untrusted, or off), the reactive part alone, at its normal target 0.75:
    # 20 busy slots need 3 hosts (at 0.9, 2 hold them).
    for f in (None, Forecast(5.0, 50.0, 7, False, "no", rising=True)):
        assert decide(S, seen(1000, 2, 20, 5.0, f), PolicyState())[0].desired == 3
    off = S.model_copy(update={"forecast": FINE.model_copy(update={"enabled": False})})
    assert decide(off, seen(1000, 2, 20, 5.0, RISE), PolicyState())[0].desired == 3
    # Trusted, the reactive part steers to 0.9: 22 busy slots need 3 hosts, not 3 at 0.75
    # (27 slots); at 0.75 it would ask for 3 hosts only up to 27 slots, at 0.9 up to 32.
    flat = Forecast(5.0, 5.0, 7, True, "flat")
    d, _ = decide(S, seen(0, current=3, running=30, rate=30 / 4.0, f=flat), PolicyState())
    assert d.desired == 3
    d, _ = decide(S, seen(0, current=3, running=30, rate=30 / 4.0, f=None), PolicyState())
    assert d.desired == 4


def test_the_forecast_never_keeps_hosts_the_reactive_part_releases() -> None:
    # The reactive part scales 20 hosts in to what the last 120 s needed; a rise in the
    # forecast does not hold them.
    state = PolicyState(last_scale_out=0.0)
    d, state = decide(S, seen(500, current=20, running=10, rate=2.5, f=RISE), state)
    assert d.desired < 20 and d.reason.startswith("scale in")
    # Nor does it add hosts back within a scale-in cooldown of that release.
    d, state = decide(S, seen(515, current=d.desired, running=10, rate=2.5, f=RISE), state)
    assert not d.reason.startswith("pre-scale")
    d, _ = decide(S, seen(640, current=d.desired, running=10, rate=2.5, f=RISE), state)
    assert d.reason.startswith("pre-scale")
    # Held only by its cooldown, a scale-in is still a release: no pre-scale then either.
    d, _ = decide(S, seen(60, current=20, running=10, rate=2.5, f=RISE), PolicyState(0.0))
    assert d.reason == "hold: scale-in cooldown"


def test_hosts_started_ahead_of_a_rise_get_the_idle_time_before_they_go() -> None:
    d, state = decide(S, seen(0, current=0, running=0, rate=0.0, f=RISE), PolicyState())
    assert d.desired == 19 and d.reason.startswith("pre-scale")
    d, state = decide(S, seen(60, current=19, running=0, rate=0.0, f=None), state)
    assert d.desired == 19  # idle for 60 s since the scale-out, not since the pool was idle
    d, _ = decide(S, seen(121, current=19, running=0, rate=0.0, f=None), state)
    assert d.desired == 0


def test_in_the_simulator_a_daily_campaign_finds_its_hosts_up() -> None:
    trace = Trace("campaign", 1500, lambda t: 20.0 if 600 <= t < 900 else 0.0, "daily")
    settings = S.model_copy(update={"max_hosts": 40, "forecast": FINE})
    plain = simulate(trace, settings, 4.0, 0.0, starts=HostStart())
    ahead = simulate(
        trace, settings, 4.0, 0.0, starts=HostStart(), past=PastDays(trace, FINE, seed=3)
    )
    assert plain.cold_start_to_first_result_s is not None  # hosts started by the queue
    assert ahead.cold_start_to_first_result_s is None  # hosts up before the first request
    assert max(ahead.waits) < 15 < max(plain.waits)
    assert ahead.idle_launches == 0


def test_hosts_started_ahead_are_not_released_when_the_rise_begins() -> None:
    # Started at t=0 for a rise at t=105; at t=106 the minute's rate still says little
    # (1.5 a second), and the stabilisation window holds nothing but idle samples: the
    # reactive part would scale in, but not within its cooldown of the pre-scale.
    d, state = decide(S, seen(0, current=0, running=0, rate=0.0, f=RISE), PolicyState())
    assert d.desired == 19
    d, state = decide(S, seen(106, current=19, running=12, rate=1.5, f=None), state)
    assert d.desired == 19 and d.reason == "hold: scale-in cooldown"

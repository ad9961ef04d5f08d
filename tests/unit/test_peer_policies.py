"""The peer scalers behave as their documentation says, on hand-made observations."""

from __future__ import annotations

from infra.bench.peer_policies import KedaSqs, RayServe, SageMakerAsync, View
from infra.bench.scaling_compare import ahead, best_of


def view(now: float, queued: int, running: int, desired: int, ready: int | None = None) -> View:
    return View(
        now=now,
        queued=queued,
        running=running,
        desired=desired,
        ready=desired if ready is None else ready,
    )


# -- KEDA -------------------------------------------------------------------------------------


def test_keda_activates_from_zero_only_when_it_polls() -> None:
    keda = KedaSqs(max_hosts=100)
    assert keda.decide(view(0, 0, 0, 0)) == 0  # polled at 0: nothing there
    assert keda.decide(view(15, 3, 0, 0)) == 0  # messages, but the next poll is at 30 s
    assert keda.decide(view(30, 3, 0, 0)) == 1  # activationQueueLength 0 exceeded: one replica


def test_keda_hpa_scale_up_is_limited_to_double_or_four_more() -> None:
    keda = KedaSqs(max_hosts=100)
    # 200 messages at queueLength 5 want 40 replicas; from 2 the HPA adds at most 4.
    assert keda.decide(view(0, 190, 10, 2)) == 6
    assert keda.decide(view(15, 190, 10, 6)) == 12
    assert keda.decide(view(30, 190, 10, 12)) == 24


def test_keda_hpa_tolerance_holds_within_ten_percent() -> None:
    keda = KedaSqs(max_hosts=100)
    assert keda.decide(view(0, 1, 20, 4)) == 4  # 21 ÷ (4 × 5) = 1.05


def test_keda_scale_down_waits_for_the_stabilisation_window() -> None:
    keda = KedaSqs(max_hosts=100)
    assert keda.decide(view(0, 0, 50, 10)) == 10
    for t in range(15, 300, 15):
        assert keda.decide(view(t, 0, 5, 10)) == 10, t  # wants 1, holds the window's max
    assert keda.decide(view(315, 0, 5, 10)) == 1


def test_keda_goes_to_zero_after_the_cooldown_period() -> None:
    keda = KedaSqs(max_hosts=100)
    keda.decide(view(0, 0, 5, 1))
    assert keda.decide(view(150, 0, 0, 1)) == 1
    assert keda.decide(view(300, 0, 0, 1)) == 0


# -- SageMaker ----------------------------------------------------------------------------


def test_sagemaker_leaves_zero_after_two_late_backlog_datapoints() -> None:
    sm = SageMakerAsync(max_hosts=100)
    assert sm.decide(view(0, 7, 0, 0)) == 0  # this minute's datapoint is not visible yet
    assert sm.decide(view(60, 7, 0, 0)) == 0  # one datapoint seen
    assert sm.decide(view(120, 7, 0, 0)) == 1  # HasBacklogWithoutCapacity 2 of 2: +1


def test_sagemaker_scales_out_after_three_high_datapoints_then_cools_down() -> None:
    sm = SageMakerAsync(max_hosts=100)
    decisions = [sm.decide(view(60 * i, 49, 1, 1)) for i in range(4)]
    # Datapoints are seen a minute late: the third high one is visible at the fourth call.
    assert decisions == [1, 1, 1, 10]  # ceil(50 ÷ 5)
    assert sm.decide(view(240, 190, 10, 10)) == 10  # still high, but in the 300 s cooldown
    assert sm.decide(view(540, 190, 10, 10)) == 40


def test_sagemaker_scales_in_to_zero_after_fifteen_low_datapoints() -> None:
    sm = SageMakerAsync(max_hosts=100)
    results = [sm.decide(view(60 * i, 0, 0, 2)) for i in range(17)]
    assert results[:15] == [2] * 15
    assert results[15] == 0  # 15 low datapoints seen, backlog 0 wants 0 instances


# -- Ray Serve ------------------------------------------------------------------------------


def test_ray_cold_start_goes_to_one_at_once_and_waits_for_it() -> None:
    ray = RayServe(max_hosts=100)
    assert ray.decide(view(0, 500, 0, 0, ready=0)) == 1
    assert ray.decide(view(10, 900, 0, 1, ready=0)) == 1  # no replica running yet: hold


def test_ray_upscales_only_after_the_upscale_delay() -> None:
    ray = RayServe(max_hosts=100)
    calls = [ray.decide(view(10 * i, 38, 2, 1)) for i in range(4)]
    # 40 ongoing ÷ 2 = 20 replicas, decided for more than 30 s in a row.
    assert calls == [1, 1, 1, 20]


def test_ray_downscales_only_after_the_downscale_delay() -> None:
    ray = RayServe(max_hosts=100)
    decided = [ray.decide(view(10 * i, 0, 2, 5)) for i in range(62)]
    assert set(decided[:60]) == {5}
    assert decided[60] == 1


# -- the comparison --------------------------------------------------------------------------


def test_best_setting_is_the_cheapest_within_the_wait_bound() -> None:
    rows = [
        {"host_hours": 5.0, "p95_wait_s": 300.0},
        {"host_hours": 8.0, "p95_wait_s": 100.0},
        {"host_hours": 9.0, "p95_wait_s": 90.0},
    ]
    assert best_of(rows, 120.0)["host_hours"] == 8.0
    assert best_of(rows, 50.0)["host_hours"] == 9.0  # none within: the lowest wait


def test_ahead_means_no_more_host_hours_at_no_higher_wait() -> None:
    rows = [
        {"policy": "img2img", "setting": "default", "host_hours": 8.0, "p95_wait_s": 100.0},
        {"policy": "keda", "setting": "default", "host_hours": 9.0, "p95_wait_s": 100.0},
        {"policy": "ray", "setting": "best", "host_hours": 7.0, "p95_wait_s": 200.0},
    ]
    assert ahead(rows) == {"keda/default": True, "ray/best": False}

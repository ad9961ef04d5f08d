"""The queue wait, hop by hop: event → received by the dispatcher → run created → claimed by
a worker → run started."""

from __future__ import annotations

import pytest

from img2img.observe.timing import QUEUE_HOPS, WAITS, queue_hops, slowest_stage, summarize


def test_each_hop_is_the_time_between_its_instants_and_they_add_up_to_the_wait() -> None:
    hops = queue_hops(100.0, 100.05, 100.25, 100.3, 100.5)
    assert hops == pytest.approx(
        {"intake": 50.0, "batching": 200.0, "claim": 50.0, "run_start": 200.0}
    )
    assert sum(hops.values()) == pytest.approx(500.0)


def test_an_unknown_instant_folds_its_hop_into_the_next() -> None:
    # A run made by hand (no dispatcher) on a process pool (no warm worker's claim).
    hops = queue_hops(100.0, None, 100.25, None, 100.5)
    assert hops == pytest.approx({"batching": 250.0, "run_start": 250.0})
    assert queue_hops(100.0, None, None, None, 101.0) == pytest.approx({"run_start": 1000.0})


def test_clocks_that_disagree_never_make_a_hop_negative_nor_change_the_sum() -> None:
    # The worker's clock is 40 ms behind the server's: its claim seems to precede creation.
    hops = queue_hops(100.0, 100.05, 100.25, 100.21, 100.5)
    assert min(hops.values()) >= 0.0 and hops["claim"] == 0.0
    assert sum(hops.values()) == pytest.approx(500.0)
    # An event time after the start (a skewed uploader's clock): no wait at all.
    assert sum(queue_hops(101.0, 100.5, 100.6, 100.7, 100.8).values()) == 0.0


def test_hops_are_waits_not_stages() -> None:
    assert set(QUEUE_HOPS) <= WAITS
    summary = summarize([{"intake": 900.0, "claim": 900.0, "copy": 5.0, "generate": 40.0}])
    assert summary["p50"]["claim"] == 900.0
    assert slowest_stage(summary) == "generate"

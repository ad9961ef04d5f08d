"""The latency bench's per-image hops and its JSON line (pure)."""

from __future__ import annotations

import pytest

from infra.bench.latency import LatencyConfig, image_hops, summarize

CFG = LatencyConfig("single", 10.0, 2, 0.0, 0.0, 1.0, 50.0, 50.0)
MESSAGE = {
    "timings_ms": {
        "queue_wait": 200.0,
        "intake": 5.0,
        "batching": 45.0,
        "claim": 60.0,
        "run_start": 90.0,
        "check": 10.0,
        "copy": 5.0,
        "download": 4.0,
        "preprocess": 1.0,
        "generate": 50.0,
        "device_wait": 3.0,
        "upscale": 50.0,
        "postprocess": 6.0,
        "upload": 9.0,
        "other_wait": 12.0,
    },
    "finished_at": "2026-12-06T12:00:01.000000+00:00",
}
FINISHED = 1796558401.0  # 2026-12-06T12:00:01Z


def test_each_hop_comes_from_the_run_s_timings_and_the_bench_s_clock() -> None:
    hops = image_hops(MESSAGE, put_at=FINISHED - 0.5, read_at=FINISHED + 0.02)
    assert hops["claim"] == 60.0 and hops["run_start"] == 90.0
    assert hops["to_device"] == 20.0  # check, copy, download, preprocess
    assert hops["device"] == 103.0  # both calls and the wait between
    assert hops["to_result"] == 15.0
    assert hops["message"] == pytest.approx(20.0, abs=0.01)
    assert hops["total"] == pytest.approx(520.0, abs=0.01)
    assert hops["non_inference"] == pytest.approx(420.0, abs=0.01)  # total − 100 ms of device
    assert "handoff" not in hops


def test_the_line_gives_p50_and_p95_of_each_hop_and_counts_what_was_lost() -> None:
    fast = image_hops(MESSAGE, FINISHED - 0.5, FINISHED)
    slow = {**fast, "claim": 1060.0, "non_inference": 1420.0}
    line = summarize("lone", CFG, [fast, slow], uploads=3)
    assert line["lost"] == 1 and line["outcomes"] == 2 and line["poll_s"] == 10.0
    assert line["claim_ms_p50"] == 560 and line["claim_ms_p95"] == 1010
    assert line["device_ms_p50"] == 100 and "device_and_wait_ms_p50" in line
    assert line["non_inference_ms_p95"] == pytest.approx(1370, abs=1)

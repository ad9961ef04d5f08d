"""The lanes bench's figures (pure): rows from completion messages, the rates of two tenants
while both wait, the device's duty cycle, and its chart."""

from __future__ import annotations

import pytest

from infra.bench.lanes import Done, done_of, duty_cycle, latency_line, overlap_rates

T0 = 1_700_000_000.0


def _done(tenant: str, put_at: float, finished: float, device_ms: float = 300.0) -> Done:
    return Done(
        tenant, "bulk", put_at, finished, "result", (finished - put_at) * 1000, device_ms, 0
    )


def test_a_row_takes_its_device_time_and_wait_from_the_message() -> None:
    doc = {
        "outcome": "result",
        "lane": "interactive",
        "timings_ms": {"generate": 200.0, "upscale": 100.0, "device_wait": 150.0},
    }
    row = done_of(doc, "b", T0, T0 + 1.5)
    assert (row.total_ms, row.device_ms, row.device_wait_ms) == (1500.0, 300.0, 150.0)
    line = latency_line("idle", [row, done_of(doc, "b", T0, T0 + 0.5)], uploads=3)
    assert line["lost"] == 1 and line["total_ms_p95"] == 1450 and line["device_wait_ms_max"] == 150
    assert line["failures"] == 0
    failed = done_of({**doc, "outcome": "failure"}, "b", T0, T0 + 0.5)
    assert latency_line("idle", [row, failed], uploads=2)["failures"] == 1


def test_rates_are_compared_only_while_both_tenants_have_work_waiting() -> None:
    # C from 0, one a second for 100 s; D from 30 s, one every 2 s until 200 s: while both
    # wait (30 s → 100 s) C completes twice as fast.
    c = [_done("c", T0, T0 + i) for i in range(1, 101)]
    d = [_done("d", T0 + 30, T0 + 30 + 2 * i) for i in range(1, 86)]
    got = overlap_rates(c, d)
    assert got["overlap_s"] == pytest.approx(70.0)
    assert got["rate_ratio"] == pytest.approx(0.5, abs=0.03)
    even = [_done("d", T0 + 30, T0 + 30 + i) for i in range(1, 101)]
    assert overlap_rates(c, even)["rate_ratio"] == pytest.approx(1.0, abs=0.03)
    assert overlap_rates(c, [])["overlap_s"] == 0.0


def test_the_duty_cycle_is_device_time_over_slot_time_in_the_window() -> None:
    rows = [_done("a", T0, T0 + i, device_ms=900.0) for i in range(1, 11)]
    # 10 images of 0.9 s finished within 10 s on one slot → 0.9; on two slots → 0.45.
    assert duty_cycle(rows, T0, T0 + 10, slots=1) == pytest.approx(0.9)
    assert duty_cycle(rows, T0, T0 + 10, slots=2) == pytest.approx(0.45)
    assert duty_cycle(rows, T0 + 20, T0 + 20, slots=1) == 0.0
    # Only the images finished inside the window count: 5 of them (3 s to 7 s).
    assert duty_cycle(rows, T0 + 2.5, T0 + 7.5, slots=1) == pytest.approx(0.9)
    assert duty_cycle(rows, T0 + 20, T0 + 30, slots=1) == 0.0


def test_the_chart_draws_both_panels() -> None:
    from infra.bench.lanes_chart import lanes_png

    bulk = [_done("a", T0, T0 + i) for i in range(1, 50)]
    b = [_done("b", T0 + 2 * i, T0 + 2 * i + 1) for i in range(20)]
    c = [_done("c", T0, T0 + i) for i in range(1, 40)]
    d = [_done("d", T0 + 10, T0 + 10 + i) for i in range(1, 40)]
    png = lanes_png(bulk, b, T0, c, d, lanes=True)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

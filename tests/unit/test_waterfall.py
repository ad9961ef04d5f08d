from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from img2img.observe.charts import waterfall_png
from img2img.observe.waterfall import (
    QUEUE_WAIT,
    WAIT_DEVICE,
    WAIT_OTHER,
    breakdown,
    event_is_trusted,
    image_line,
    wait_columns,
)

T0 = 1_000_000.0
SPANS = [
    ("copy", T0 + 0.5, T0 + 0.7),
    ("preprocess", T0 + 1.0, T0 + 1.6),
    ("download", T0 + 1.0, T0 + 1.2),  # measured inside preprocess
    ("generate", T0 + 3.0, T0 + 4.0),
    ("upscale", T0 + 4.5, T0 + 6.5),
    ("postprocess", T0 + 7.0, T0 + 7.1),
]


def test_segments_cover_the_whole_time_in_order() -> None:
    line = image_line("a/b.png", "completed", SPANS, T0, T0 + 7.5, T0 - 2.0, 3600)
    labels = [s.label for s in line.segments]
    assert labels == [
        QUEUE_WAIT,
        WAIT_OTHER,
        "copy",
        WAIT_OTHER,
        "download",
        "preprocess",
        WAIT_DEVICE,
        "stage 1: generate",
        WAIT_DEVICE,
        "stage 2: upscale",
        WAIT_OTHER,
        "encode",
        WAIT_OTHER,
    ]
    # No gaps, no overlaps: each segment starts where the last ended, from 0 to the end.
    assert line.segments[0].start_s == 0.0
    for before, after in pairwise(line.segments):
        assert after.start_s == pytest.approx(before.end_s)
    assert line.seconds == pytest.approx(9.5)
    assert line.origin == "upload event" and not line.note
    # The inner download is cut out of preprocess, not counted twice.
    split = breakdown([line])
    assert split["download"] == pytest.approx(0.2) and split["preprocess"] == pytest.approx(0.4)
    assert sum(split.values()) == pytest.approx(9.5)
    waits = wait_columns(line)
    assert waits["device_wait"] == pytest.approx(1400.0 + 500.0)
    assert waits["other_wait"] == pytest.approx((0.5 + 0.3 + 0.5 + 0.4) * 1000)


def test_an_implausible_event_time_starts_the_line_at_the_run() -> None:
    replayed = image_line("x.png", "completed", SPANS, T0, T0 + 7.5, T0 - 2 * 86_400, 3600)
    assert replayed.origin == "run start" and "2.0 days before" in replayed.note
    assert replayed.segments[0].label != QUEUE_WAIT
    assert replayed.seconds == pytest.approx(7.5)
    future = image_line("x.png", "completed", SPANS, T0, T0 + 7.5, T0 + 600, 3600)
    assert future.origin == "run start" and "after" in future.note
    assert not event_is_trusted(None, T0, 3600)
    assert event_is_trusted(T0 - 3599, T0, 3600) and not event_is_trusted(T0 - 3601, T0, 3600)


def test_a_failed_image_ends_at_its_outcome() -> None:
    line = image_line("f.png", "failed", SPANS[:2], T0, T0 + 2.0, None, 3600)
    assert line.origin == "run start"
    assert line.segments[-1].label == WAIT_OTHER and line.seconds == pytest.approx(2.0)


def test_the_waterfall_chart_is_a_png() -> None:
    lines = [
        image_line(f"{i}.png", "completed", SPANS, T0, T0 + 7.5, T0 - i, 3600) for i in range(3)
    ]
    png = waterfall_png(lines, "3 completed")
    assert png.startswith(b"\x89PNG") and 5_000 < len(png) < 200_000


def test_a_long_run_s_table_keeps_the_failures_and_the_slowest_and_counts_the_rest() -> None:
    from img2img.observe.report import keep_rows

    rows: list[dict[str, Any]] = [{"image": f"{i}.png", "total": float(i)} for i in range(300)]
    rows[7]["image"] = "7.png (failed)"
    rows[250]["image"] = "250.png (done before)"
    kept = keep_rows(rows, limit=10)
    assert len(kept) == 11  # 10 images and the row that counts the others
    names = [r["image"] for r in kept[:-1]]
    assert "7.png (failed)" in names and "250.png (done before)" in names
    assert names[2:] == [f"{i}.png" for i in range(292, 300)]  # the 8 slowest, in order
    assert kept[-1]["image"] == "(… 290 more completed images)" and kept[-1]["total"] is None
    assert keep_rows(rows[:10], limit=10) == rows[:10]

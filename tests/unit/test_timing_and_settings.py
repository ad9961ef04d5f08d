from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from img2img.config.dispatch import DispatchSettings
from img2img.config.settings import Settings
from img2img.observe.timing import Timings, percentile, slowest_stage, summarize


def test_percentile_interpolates_and_handles_edges() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 95) == 5
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95) == pytest.approx(9.55)
    assert math.isnan(percentile([], 50))


def test_summary_and_slowest_stage_ignore_queue_wait_and_total() -> None:
    rows = [
        Timings(generate=10, upscale=30, queue_wait=500, total=600),
        Timings(generate=20, upscale=50, queue_wait=400, total=700),
    ]
    summary = summarize(rows)
    assert summary["p50"]["upscale"] == 40 and summary["max"]["generate"] == 20
    assert slowest_stage(summary) == "upscale"


def test_timings_measure_accumulates() -> None:
    t = Timings()
    with t.measure("copy"):
        pass
    t.add("copy", 5.0)
    assert t["copy"] >= 5.0


def test_batch_window_must_fit_in_the_visibility_timeout() -> None:
    with pytest.raises(ValidationError, match="visibility_timeout_s must exceed"):
        DispatchSettings(max_wait_s=100, visibility_timeout_s=60)


def test_nested_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMG2IMG_DISPATCH__MAX_BATCH", "3")
    monkeypatch.setenv("IMG2IMG_STAGES__HEIGHT", "512")
    settings = Settings()
    assert settings.dispatch.max_batch == 3 and settings.stages.height == 512
    monkeypatch.setenv("IMG2IMG_STAGES__HEIGHT", "500")
    with pytest.raises(ValidationError, match="multiple of 8"):
        Settings()


def test_a_cuda_worker_gets_one_slot_per_gpu_unless_told_otherwise() -> None:
    from img2img.config.worker import WorkerSettings
    from img2img.slots.layout import one_slot_per_gpu

    plain = WorkerSettings()
    assert one_slot_per_gpu(plain, "cuda", 4).devices == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert one_slot_per_gpu(plain, "cuda", 4).slot_count() == 4
    assert one_slot_per_gpu(plain, "cpu", 4) is plain
    assert one_slot_per_gpu(plain, "cuda:1", 4) is plain  # a GPU named: as set
    assert one_slot_per_gpu(plain, "cuda", 0) is plain  # none found: as set (and it will say)
    chosen = WorkerSettings(devices=["cuda:1"])
    assert one_slot_per_gpu(chosen, "cuda", 4).devices == ["cuda:1"]

"""Figures of a pipeline benchmark, from the result documents the pipeline writes (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from img2img.observe.timing import summarize

DEVICE_STAGES = ("generate", "upscale")


def pipeline_figures(docs: list[dict[str, Any]], started: datetime, slots: int) -> dict[str, Any]:
    """Throughput, duty cycle and non-inference overhead of one benchmark run.

    Args:
        docs: result metadata documents (`results/<key>@<tag>.json`) of every image.
        started: when the first image was uploaded.
        slots: device shares that served the images (duty cycle is per slot).
    """
    if not docs:
        raise ValueError("no completed images to measure")
    finished = max(datetime.fromisoformat(d["finished_at"]) for d in docs)
    wall_s = (finished - started).total_seconds()
    device_ms = sum(d["timings_ms"].get(s, 0.0) for d in docs for s in DEVICE_STAGES)
    capacity_ms = wall_s * 1000.0 * slots
    summary = summarize([d["timings_ms"] for d in docs])
    stage_p50 = {stage: round(ms, 1) for stage, ms in summary["p50"].items()}
    stage_p95 = {stage: round(ms, 1) for stage, ms in summary["p95"].items()}
    return {
        "images": len(docs),
        "wall_s": round(wall_s, 2),
        "images_per_s": round(len(docs) / wall_s, 3) if wall_s > 0 else 0.0,
        "duty_cycle": round(device_ms / capacity_ms, 3) if capacity_ms > 0 else 0.0,
        "overhead_ms_per_image": round((capacity_ms - device_ms) / len(docs), 1),
        "stage_p50_ms": stage_p50,
        "stage_p95_ms": stage_p95,
    }

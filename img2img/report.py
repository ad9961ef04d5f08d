"""The per-run timing report: table rows and a markdown summary (pure, no Prefect)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from img2img.jobs import ImageJob
from img2img.timing import STAGES, slowest_stage, summarize


@dataclass
class BatchReport:
    rows: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]
    completed: int
    failed: int
    skipped: int
    wall_s: float

    @property
    def images_per_s(self) -> float:
        done = self.completed + self.failed
        return done / self.wall_s if self.wall_s > 0 else 0.0


def _ms(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(value, 1)


def build_report(jobs: list[ImageJob], wall_s: float) -> BatchReport:
    processed = [j for j in jobs if j.status != "skipped"]
    rows: list[dict[str, Any]] = []
    for job in jobs:
        row: dict[str, Any] = {"image": job.ref.key, "status": job.status}
        for stage in STAGES:
            row[f"{stage}_ms"] = _ms(job.timings.get(stage))
        row["detail"] = (f"{job.failure.stage}: {job.failure.reason}" if job.failure else job.note)[
            :200
        ]
        rows.append(row)
    summary = summarize([j.timings for j in processed if j.status == "completed"])
    for label in ("p50", "p95", "max"):
        row = {"image": f"({label})", "status": ""}
        for stage in STAGES:
            row[f"{stage}_ms"] = _ms(summary[label].get(stage))
        row["detail"] = ""
        rows.append(row)
    return BatchReport(
        rows=rows,
        summary=summary,
        completed=sum(1 for j in jobs if j.status == "completed"),
        failed=sum(1 for j in jobs if j.status == "failed"),
        skipped=sum(1 for j in jobs if j.status == "skipped"),
        wall_s=wall_s,
    )


def markdown_summary(report: BatchReport, jobs: list[ImageJob]) -> str:
    slow = slowest_stage(report.summary)
    lines = [
        "## img2img batch",
        "",
        f"- images: **{len(jobs)}**: {report.completed} completed, {report.failed} failed, "
        f"{report.skipped} already processed",
        f"- wall time: {report.wall_s:.2f} s, throughput {report.images_per_s:.2f} images/s",
    ]
    if slow is not None:
        lines.append(f"- slowest stage (p50): **{slow}**, {report.summary['p50'][slow]:.0f} ms")
    total = report.summary["p50"].get("total")
    if total is not None:
        lines.append(f"- end-to-end p50 (upload event → result): {total:.0f} ms")
    failed = [j for j in jobs if j.failure is not None]
    if failed:
        lines += ["", "### failures", "", "| image | stage | reason |", "| --- | --- | --- |"]
        for job in failed:
            assert job.failure is not None
            reason = job.failure.reason.replace("|", "\\|")[:160]
            lines.append(f"| `{job.ref.key}` | {job.failure.stage} | {reason} |")
    return "\n".join(lines)

"""The per-run report: table rows, where the time went, the batch event's payload and a
markdown summary (pure, no Prefect)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from img2img.observe.timing import QUEUE_HOPS, STAGES, slowest_stage, summarize
from img2img.observe.waterfall import ImageLine, breakdown, image_line
from img2img.pipeline.jobs import ImageJob

# The table's columns, each the sum of some timings: narrow enough to fit the page (the
# waterfall chart and the result metadata keep every stage apart). They add up to `total`.
COLUMNS: dict[str, tuple[str, ...]] = {
    # The queue wait, hop by hop (`timing.QUEUE_HOPS`).
    "intake": ("intake",),
    "batching": ("batching",),
    "claim": ("claim",),
    "start": ("run_start",),
    "io": ("check", "copy", "download", "upload"),
    "cpu": ("preprocess", "postprocess"),
    "generate": ("generate",),
    "handoff": ("handoff",),
    "upscale": ("upscale",),
    "wait_dev": ("device_wait",),
    "wait_other": ("other_wait",),
    "total": ("total",),
}


# Not a time: the images in the device calls that ran the image's two stages ("4/4"),
# shown after the stage columns.
BATCH_COLUMN = "batch"
BATCH_AFTER = "upscale"

MAX_FAILURES_LISTED = 50  # in a run's summary; every failure has its record anyway
STATUS_MARK = {
    "failed": " (failed)",
    "skipped": " (done before)",
    "pending": " (unfinished)",
    "handed_off": " (to stage 2)",
}


def _row(image: str, values: dict[str, Any], batch: str | None = None) -> dict[str, Any]:
    """A table row: the image, the time columns in order, the batch column after stage 2."""
    row: dict[str, Any] = {"image": image}
    for column in COLUMNS:
        row[column] = values.get(column)
        if column == BATCH_AFTER:
            row[BATCH_COLUMN] = batch
    return row


def device_batch_label(batches: dict[str, int]) -> str | None:
    """ "4/2": stage 1 ran in a call of 4 images, stage 2 in a call of 2 ("–" for a stage
    that did not run); None when neither ran."""
    if not batches:
        return None
    return "/".join(str(batches.get(stage, "–")) for stage in ("generate", "upscale"))


def _column(timings: dict[str, float], parts: tuple[str, ...]) -> float | None:
    values = [timings[p] for p in parts if p in timings]
    return sum(values) if values else None


@dataclass
class BatchReport:
    rows: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]
    completed: int
    failed: int
    skipped: int
    wall_s: float
    lines: list[ImageLine] = field(default_factory=list)
    # Upload event → outcome, ms, for processed images whose event time can be trusted.
    e2e_ms: list[float] = field(default_factory=list)
    # Images whose event time lies outside what a real upload could have (see waterfall.py).
    stale_events: int = 0
    # With lanes or tenants: the batch by (lane, tenant) (see `placed_groups`).
    groups: list[dict[str, Any]] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        done = self.completed + self.failed
        return done / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def time_split(self) -> dict[str, float]:
        """Seconds per segment (stages and waits) over every image of the batch."""
        return breakdown(self.lines)


def _ms(value: float | None) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(value)


def keep_rows(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The image rows a long run's table shows: all of them up to `limit`; past it, every
    image that did not complete (up to the limit), then the slowest completed ones by
    total, in the batch's order, and one row that says how many are left out (the
    percentiles that follow cover all of them)."""
    if len(rows) <= limit:
        return rows

    def completed(row: dict[str, Any]) -> bool:
        return not any(str(row["image"]).endswith(mark) for mark in STATUS_MARK.values())

    others = [i for i, r in enumerate(rows) if not completed(r)][:limit]
    room = limit - len(others)
    done = [i for i, r in enumerate(rows) if completed(r)]
    slowest = sorted(done, key=lambda i: -(rows[i].get("total") or 0))[:room]
    kept = sorted(others + slowest)
    left_out = _row(f"(… {len(rows) - len(kept)} more completed images)", {})
    return [rows[i] for i in kept] + [left_out]


def build_report(
    jobs: list[ImageJob],
    wall_s: float,
    run_start: float,
    stale_after_s: float,
    table_rows: int = 100,
) -> BatchReport:
    """`run_start` is the run's start in epoch seconds; `stale_after_s` bounds the event
    times the fleet figures trust; `table_rows` bounds the image rows of the table (see
    `keep_rows`): a run's artifact does not grow with its images."""
    rows: list[dict[str, Any]] = []
    lines: list[ImageLine] = []
    e2e: list[float] = []
    stale = 0
    trusted_timings = []
    trusted_e2e: dict[int, float] = {}  # index in `jobs` → ms
    for index, job in enumerate(jobs):
        name = job.ref.key.rsplit("/", 1)[-1]
        name = name if len(name) <= 28 else "…" + name[-27:]
        # The status goes with the name (a column of its own would not fit the page).
        times = {c: _ms(_column(job.timings, parts)) for c, parts in COLUMNS.items()}
        label = device_batch_label(job.device_batch)
        rows.append(_row(name + STATUS_MARK.get(job.status, ""), times, label))
        if job.status == "skipped":
            continue
        event = job.ref.event_time.timestamp() if job.ref.event_time is not None else None
        t = job.timings
        line = image_line(
            job.ref.key, job.status, t.spans, run_start, t.ended, event, stale_after_s
        )
        lines.append(line)
        trusted = line.from_upload_event  # image_line judged the event time
        if event is not None and not trusted:
            stale += 1
        if job.status == "handed_off":
            continue  # on the chart; its end to end is the stage-2 run's to measure
        timings = dict(t)
        if not trusted:
            for hop in ("queue_wait", *QUEUE_HOPS, "total"):
                timings.pop(hop, None)
        elif "total" in t:
            e2e.append(t["total"])
            trusted_e2e[index] = t["total"]
        if job.status == "completed":
            trusted_timings.append(timings)
    summary = summarize(trusted_timings)
    rows = keep_rows(rows, table_rows)
    for label in ("p50", "p95", "max"):
        # Percentiles of each part, summed: an approximation for the grouped columns.
        times = {c: _ms(_column(summary[label], parts)) for c, parts in COLUMNS.items()}
        rows.append(_row(f"({label})", times))
    if not any("handoff" in job.timings for job in jobs):
        for row in rows:  # one pool ran both stages: there was no hand-off to show
            del row["handoff"]
    return BatchReport(
        rows=rows,
        summary=summary,
        completed=sum(1 for j in jobs if j.status == "completed"),
        failed=sum(1 for j in jobs if j.status == "failed"),
        skipped=sum(1 for j in jobs if j.status == "skipped"),
        wall_s=wall_s,
        lines=lines,
        e2e_ms=e2e,
        stale_events=stale,
        groups=placed_groups(jobs, trusted_e2e),
    )


def _device_here(job: ImageJob) -> tuple[str, ...]:
    """The device stages this run did for `job`: a split topology's stage-2 run took it
    over with stage 1's timings (which stage 1's pool already counted); a stage-1 run has
    no upscale time to count."""
    return ("upscale",) if "handoff" in job.timings else ("generate", "upscale")


def placed_groups(jobs: list[ImageJob], e2e_at: dict[int, float]) -> list[dict[str, Any]]:
    """The batch's images by the lane and tenant the dispatcher placed them in (none when
    lanes and tenants are off): outcomes, trusted end-to-end times (`e2e_at`: index in
    `jobs` → ms) and device milliseconds (each image's share of its device calls, every
    image that used the device: what a tenant's cost is attributed by)."""
    groups: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    for index, job in enumerate(jobs):
        lane, tenant = job.ref.lane, job.ref.tenant
        if (lane is None and tenant is None) or job.status == "skipped":
            continue
        group = groups.setdefault(
            (lane, tenant),
            {
                "lane": lane,
                "tenant": tenant,
                "completed": 0,
                "failed": 0,
                "handed_off": 0,
                "e2e_ms": [],
                "device_ms": 0.0,
            },
        )
        if job.status in ("completed", "failed", "handed_off"):
            group[job.status] += 1
        if index in e2e_at:
            group["e2e_ms"].append(round(e2e_at[index]))
        group["device_ms"] += sum(job.timings.get(stage, 0.0) for stage in _device_here(job))
    for group in groups.values():
        group["device_ms"] = round(group["device_ms"], 1)
    return list(groups.values())


def batch_event(report: BatchReport, jobs: list[ImageJob]) -> tuple[str, dict[str, Any]]:
    """The `img2img.batch.completed` / `img2img.batch.failed` event's name and payload:
    counts and timings, enough for the fleet figures (see fleet.py) without reading runs."""
    stage_ms: dict[str, list[int]] = {}
    failed_at: dict[str, int] = {}
    for job in jobs:
        if job.status == "completed":
            for stage in STAGES:
                if stage in job.timings and stage not in ("queue_wait", *QUEUE_HOPS, "total"):
                    stage_ms.setdefault(stage, []).append(round(job.timings[stage]))
        if job.failure is not None:
            failed_at[job.failure.stage] = failed_at.get(job.failure.stage, 0) + 1
    payload = {
        "images": len(jobs),
        "completed": report.completed,
        "failed": report.failed,
        "skipped": report.skipped,
        "handed_off": sum(1 for j in jobs if j.status == "handed_off"),
        "failed_at": failed_at,
        "wall_s": round(report.wall_s, 3),
        "e2e_ms": [round(v) for v in report.e2e_ms],
        "stale_events": report.stale_events,
        "stage_ms": stage_ms,
        "time_split_s": {k: round(v, 3) for k, v in report.time_split.items()},
        "slowest_stage": slowest_stage(report.summary),
    }
    if report.groups:
        payload["groups"] = report.groups
    return ("img2img.batch.failed" if report.failed else "img2img.batch.completed"), payload


def markdown_summary(report: BatchReport, jobs: list[ImageJob], chart: str | None) -> str:
    """The run's summary; `chart` is an image URL (a data: URI) or None."""
    slow = slowest_stage(report.summary)
    verdict = "all completed" if not report.failed else f"FAILED: {report.failed} image(s)"
    lines = [
        f"## img2img batch: {verdict}",
        "",
        f"- images: **{len(jobs)}**: {report.completed} completed, {report.failed} failed, "
        f"{report.skipped} already processed",
        f"- wall time: {report.wall_s:.2f} s, throughput **{report.images_per_s:.2f} images/s**",
    ]
    if slow is not None:
        lines.append(f"- slowest stage (p50): **{slow}**, {report.summary['p50'][slow]:.0f} ms")
    split = report.time_split
    if split:
        whole = sum(split.values())
        top = sorted(split.items(), key=lambda kv: -kv[1])[:3]
        shares = ", ".join(f"{name} {100 * s / whole:.0f}%" for name, s in top)
        lines.append(f"- where the time went: {shares}")
    total = report.summary["p50"].get("total")
    if total is not None:
        lines.append(
            f"- end-to-end p50: {total:.0f} ms, measured from the S3 event's `eventTime` "
            "(the upload as its event states it) to the outcome"
        )
    if report.stale_events:
        lines.append(
            f"- {report.stale_events} image(s) carry an event time outside "
            "[run start − `monitor.stale_event_s`, run start] (a replayed or hand-made "
            "message): their queue wait is kept in the table as measured, but left out of "
            "the percentiles and the fleet figures"
        )
    if chart is not None:
        lines += ["", f"![where each image's time went]({chart})"]
    failed = [j for j in jobs if j.failure is not None]
    if failed:
        lines += ["", "### failures", ""]
        for job in failed[:MAX_FAILURES_LISTED]:
            assert job.failure is not None
            retry = "retryable" if job.failure.retryable else "permanent"
            lines.append(
                f"- `{job.ref.key}` at **{job.failure.stage}** ({retry}): "
                f"{job.failure.reason[:500]}"
            )
        if len(failed) > MAX_FAILURES_LISTED:
            lines.append(
                f"- … and {len(failed) - MAX_FAILURES_LISTED} more: each has its failure record "
                "in the results bucket"
            )
    return "\n".join(lines)

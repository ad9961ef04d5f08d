"""What a run shows in the Prefect UI: its progress as it moves, then the timing table, the
summary with the waterfall chart, and one `img2img.batch.*` event."""

from __future__ import annotations

from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from img2img.observe.report import BatchReport, batch_event, build_report, markdown_summary
from img2img.pipeline.jobs import ImageJob
from tasks.runtime import get_runtime

# Stable keys: the Artifacts page keeps one history per key across runs.
TIMINGS_KEY = "img2img-stage-timings"
# What the timing table's columns say, under the run's summary.
LEGEND = (
    "Per-image timings in ms; the columns add up to `total` (queue = upload event → run "
    "start; io = outcome check, copy, download, upload; cpu = preprocess and encode; generate, "
    "upscale = the image's share of its device call; handoff = stage-1 outputs of the batch "
    "written → stage-2 run started (split topology); batch = images in that call, stage 1 / "
    "stage 2; wait_dev = behind other images on the device; wait_other = the rest of the "
    "batch and the orchestrator), then p50 / p95 / max over completed images."
)
PROGRESS_KEY = "img2img-batch-progress"


class Progress:
    """The run's progress artifact: the share of the batch's steps done, where an image with
    an outcome (result, failure record, already processed) counts as done."""

    def __init__(self, jobs: list[ImageJob], steps: int, first: str, enabled: bool = True) -> None:
        """Created as the first step (`first`) begins: one request fewer per run than
        creating it empty and updating it at once. Not `enabled`: nothing is written."""
        self.steps = steps
        self.artifact: UUID | None = None
        if not enabled:
            return
        try:
            created = create_progress_artifact(
                self._value(jobs, 0), key=PROGRESS_KEY, description=self._words(jobs, 0, first)
            )
            # Called from a synchronous flow, async_dispatch runs it and returns the id.
            self.artifact = created if isinstance(created, UUID) else None
        except Exception as exc:  # the UI's view must never fail the batch
            get_run_logger().warning("could not create the progress artifact: %s", exc)

    def update(self, jobs: list[ImageJob], done_steps: int, now: str) -> None:
        if self.artifact is None or not jobs:
            return
        try:
            update_progress_artifact(
                self.artifact,
                self._value(jobs, done_steps),
                description=self._words(jobs, done_steps, now),
            )
        except Exception as exc:
            get_run_logger().warning("could not update the progress artifact: %s", exc)

    def _value(self, jobs: list[ImageJob], done_steps: int) -> float:
        if not jobs:
            return 100.0
        per_image = [self.steps if not j.active else done_steps for j in jobs]
        return 100.0 * sum(per_image) / (len(jobs) * self.steps)

    def _words(self, jobs: list[ImageJob], done_steps: int, now: str) -> str:
        finished = sum(1 for j in jobs if not j.active)
        return (
            f"{finished} of {len(jobs)} images have an outcome; "
            f"step {min(done_steps + 1, self.steps)} of {self.steps}: {now}"
        )


@task(name="publish-timings", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def publish_timings(
    jobs: list[ImageJob], wall_s: float, run_start: float, links: list[str] | None = None
) -> BatchReport:
    """`links`: markdown lines that name the run's other half (split topology)."""
    monitor = get_runtime().settings.monitor
    report = build_report(jobs, wall_s, run_start, monitor.stale_event_s, monitor.table_rows)
    if monitor.run_artifacts:
        _publish_artifacts(report, jobs, monitor.run_chart, links or [])
    name, payload = batch_event(report, jobs)
    emit_event(
        event=name,
        resource={"prefect.resource.id": "img2img.pipeline", "prefect.resource.name": "img2img"},
        payload=payload,
    )
    return report


def _publish_artifacts(
    report: BatchReport, jobs: list[ImageJob], with_chart: bool, links: list[str]
) -> None:
    from img2img.observe.charts import data_uri, waterfall_png

    chart = None
    if with_chart and report.lines:
        title = f"{report.completed} completed, {report.failed} failed in {report.wall_s:.1f} s"
        chart = data_uri(waterfall_png(report.lines, title))
    summary = markdown_summary(report, jobs, chart)
    if links:
        summary += "\n\n" + "\n".join(links)
    # One artifact a run: the summary is the table's description (the UI renders it as
    # markdown above the rows). Each artifact costs the server a request, a row and two
    # events (created; its key's collection updated, with a copy of the data).
    create_table_artifact(report.rows, key=TIMINGS_KEY, description=f"{summary}\n\n{LEGEND}")

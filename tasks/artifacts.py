"""Task: publish the per-stage timing table and a short summary to the Prefect UI."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from img2img.jobs import ImageJob
from img2img.report import BatchReport, build_report, markdown_summary

# Stable keys: the Artifacts page keeps one history per key across runs.
TIMINGS_KEY = "img2img-stage-timings"
SUMMARY_KEY = "img2img-batch-summary"


@task(name="publish-timings", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def publish_timings(jobs: list[ImageJob], wall_s: float) -> BatchReport:
    report = build_report(jobs, wall_s)
    create_table_artifact(
        report.rows,
        key=TIMINGS_KEY,
        description="Per-image stage timings in ms (queue wait = upload event → run start; "
        "total = upload event → result), then p50 / p95 / max over completed images.",
    )
    create_markdown_artifact(
        markdown_summary(report, jobs),
        key=SUMMARY_KEY,
        description="Images completed and failed, throughput, slowest stage",
    )
    return report

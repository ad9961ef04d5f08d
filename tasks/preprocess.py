"""Task: download, validate and shape each image for stage 1."""

from __future__ import annotations

from prefect import get_run_logger

from img2img.intake.params import ImageParams
from img2img.pipeline import steps
from img2img.pipeline.jobs import ImageJob
from tasks.policy import transient_task
from tasks.runtime import get_runtime


@transient_task("preprocess")
def preprocess(jobs: list[ImageJob], defaults: ImageParams) -> list[ImageJob]:
    rt = get_runtime()
    s = rt.settings
    steps.preprocess(
        rt.clients.s3, jobs, s.storage.stage_bucket, s.limits, s.stages, defaults, concurrency=8
    )
    logger = get_run_logger()
    for job in jobs:
        if job.failure and job.failure.stage == "preprocess":
            logger.warning("%s refused: %s", job.ref.uri, job.failure.reason)
    return jobs

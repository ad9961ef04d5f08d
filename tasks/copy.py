"""Task: copy the batch's uploads into the S3 Express directory bucket."""

from __future__ import annotations

from prefect import get_run_logger

from img2img.pipeline import steps
from img2img.pipeline.jobs import ImageJob
from tasks.policy import transient_task
from tasks.runtime import get_runtime


@transient_task("copy-to-directory-bucket")
def copy_to_directory_bucket(jobs: list[ImageJob]) -> list[ImageJob]:
    rt = get_runtime()
    storage = rt.settings.storage
    steps.copy_to_stage(
        rt.clients.s3, jobs, storage.stage_bucket, storage.results_bucket, storage.copy_concurrency
    )
    get_run_logger().info(
        "copied %d of %d uploads to s3://%s",
        sum(1 for j in jobs if j.active),
        len(jobs),
        storage.stage_bucket,
    )
    return jobs

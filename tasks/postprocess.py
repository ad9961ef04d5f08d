"""Task: encode and write results and failure records (each exactly once)."""

from __future__ import annotations

import os

from prefect import get_run_logger
from prefect.events import emit_event

from img2img.delivery.announce import Announcer
from img2img.pipeline import steps
from img2img.pipeline.jobs import ImageJob, finish_timings
from tasks.policy import transient_task
from tasks.runtime import get_runtime


@transient_task("postprocess")
def postprocess(jobs: list[ImageJob], flow_run_id: str | None) -> list[ImageJob]:
    rt = get_runtime()
    bucket = rt.settings.storage.results_bucket
    worker = {
        "pid": os.getpid(),
        "slot": os.environ.get("IMG2IMG_SLOT"),
        "model_loads": rt.models.loads,
        "backend": rt.settings.stages.backend,
    }
    steps.postprocess(rt.clients.s3, jobs, bucket, flow_run_id, concurrency=8, worker=worker)
    steps.write_failures(rt.clients.s3, jobs, bucket, flow_run_id)
    finish_timings(jobs)
    logger = get_run_logger()
    # Raises on a retryable error after the rest were sent: the retry sends what is left.
    steps.announce(Announcer.for_clients(rt.clients, rt.settings), jobs)
    for job in jobs:
        if job.status == "failed" and job.failure is not None:
            logger.error("%s failed at %s: %s", job.ref.uri, job.failure.stage, job.failure.reason)
        if job.announce_error is not None:
            logger.error("%s: completion message not sent: %s", job.ref.uri, job.announce_error)
        if rt.settings.monitor.image_events:
            _image_event(job)
    return jobs


def _image_event(job: ImageJob) -> None:
    emit_event(
        event=f"img2img.image.{job.status}",
        resource={
            "prefect.resource.id": f"img2img.upload.{job.ref.identity}",
            "prefect.resource.name": job.ref.key,
        },
        payload={
            "source": job.ref.uri,
            "outcome": job.result_uri or "",
            "total_ms": round(job.timings.get("total", 0.0), 1),
        },
    )

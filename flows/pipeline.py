"""The pipeline flow: one run = one micro-batch of uploads.

    copy to directory bucket → preprocess → stage 1 (img2img) → stage 2 (x4 upscale)
    → post-process → timing artifacts

Run it directly against the local stack:

    eval "$(img2img local env)"
    python -m flows.pipeline --bucket img2img-uploads --key photos/cat.png
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed, State

from img2img.cancel import RunCancelled, registry
from img2img.events import ObjectRef
from img2img.jobs import ImageJob
from img2img.params import ImageParams
from img2img.stages.spec import STAGE1, STAGE2
from img2img.steps import record_queue_wait, reject_unaccepted
from tasks.artifacts import Progress, publish_timings
from tasks.copy import copy_to_directory_bucket
from tasks.inference import img2img_stage, upscale_stage
from tasks.policy import run_step
from tasks.postprocess import postprocess
from tasks.preprocess import preprocess
from tasks.runtime import get_runtime


@flow(name="img2img-pipeline", log_prints=False, validate_parameters=True)
def img2img_pipeline(objects: list[ObjectRef], defaults: ImageParams | None = None) -> State[Any]:
    """Process one micro-batch of uploads into results or failure records.

    Args:
        objects: the uploads, as the dispatcher parsed them from S3 notifications.
        defaults: generation parameters for images whose metadata does not set them.
    """
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    run_id = str(flow_run.id) if flow_run.id else None
    jobs = [ImageJob.for_ref(ref) for ref in _unique(objects)]
    record_queue_wait(jobs, started)

    rt = get_runtime()
    reject_unaccepted(jobs, rt.settings.storage.upload_buckets)
    cancels = registry()
    # Each step takes the batch and returns it, each image updated where it is (an image
    # that fails is marked failed; the others go on): a retry of a step sees what the
    # earlier attempt finished.
    monitor = rt.settings.monitor
    # Each step a task run, or a plain call in this flow run (monitor.task_runs).
    call = partial(run_step, task_run=monitor.task_runs)
    steps: list[tuple[str, Callable[[list[ImageJob]], list[ImageJob]]]] = [
        ("copy", partial(call, copy_to_directory_bucket)),
        ("preprocess", lambda batch: call(preprocess, batch, defaults or ImageParams())),
        (STAGE1.name, partial(call, img2img_stage)),
        (STAGE2.name, partial(call, upscale_stage)),
    ]
    progress = Progress(jobs, len(steps) + 1, steps[0][0], enabled=monitor.run_progress)
    cancelled = False
    for done, (stage, step) in enumerate(steps):
        if done:
            progress.update(jobs, done, stage)
        if cancels.requested(run_id):
            cancelled = True
        if not cancelled:
            jobs, finished = _guarded(jobs, stage, step)
            cancelled = not finished
        if cancelled:
            for job in jobs:
                if job.active:
                    job.fail("cancelled", RunCancelled(f"run cancelled before {stage}"))
            break
    progress.update(jobs, len(steps), "writing outcomes")
    jobs = call(postprocess, jobs, run_id)
    progress.update(jobs, len(steps) + 1, "done")
    report = call(publish_timings, jobs, time.perf_counter() - clock, started.timestamp())
    if run_id is not None:
        cancels.clear(run_id)

    unannounced = [j for j in jobs if j.announce_error is not None]
    result = {
        "completed": report.completed,
        "failed": report.failed,
        "skipped": report.skipped,
        "unannounced": len(unannounced),
        "outcomes": {j.ref.identity: j.result_uri for j in jobs},
    }
    message = (
        f"{report.completed} completed, {report.failed} failed, "
        f"{report.skipped} already processed, of {len(jobs)}"
    )
    if unannounced:
        # Every image has its outcome, but the app was not told: another run of the same
        # uploads (a redelivery, or this run retried from the UI) sends what is missing.
        message += (
            f"; {len(unannounced)} completion message(s) not sent: {unannounced[0].announce_error}"
        )
    if cancelled:
        return Cancelled(
            message=f"cancelled: {message}; unfinished images have failure "
            "records (stage 'cancelled')",
            data=result,
        )
    if report.failed:
        # A partial failure fails the run, so it shows in the UI and in alerts; every failed
        # image has its failure record, so nothing is lost.
        message = f"{report.failed} of {len(jobs)} images failed: {message}"
    if report.failed or unannounced:
        return Failed(message=message, data=result)
    return Completed(message=message, data=result)


def _unique(objects: list[ObjectRef]) -> list[ObjectRef]:
    seen: dict[str, ObjectRef] = {}
    for ref in objects:
        seen.setdefault(ref.identity, ref)
    return list(seen.values())


def _guarded(
    jobs: list[ImageJob], stage: str, step: Callable[[list[ImageJob]], list[ImageJob]]
) -> tuple[list[ImageJob], bool]:
    """Run a task on the batch; returns the batch it gives back and False if the run was
    cancelled. When the task fails for good (retries spent), its still-active images fail
    instead of the whole batch, so each ends as a failure record."""
    try:
        return step(jobs), True
    except RunCancelled:
        return jobs, False
    except Exception as exc:
        for job in jobs:
            if job.active:
                job.fail(stage, exc)
    return jobs, True


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the pipeline flow on explicit objects.")
    parser.add_argument("--bucket", required=True, help="uploads bucket")
    parser.add_argument("--key", action="append", required=True, help="object key (repeat)")
    parser.add_argument("--prompt", default=None, help="default prompt")
    args = parser.parse_args()
    defaults = ImageParams(prompt=args.prompt) if args.prompt else None
    # Name each upload as its S3 event would (ETag, version), so outcomes land where the
    # event-driven path would put them and a re-run is recognised as one.
    s3 = get_runtime().clients.s3
    refs = []
    for key in args.key:
        head = s3.head_object(Bucket=args.bucket, Key=key)
        refs.append(
            ObjectRef(
                bucket=args.bucket,
                key=key,
                etag=head["ETag"].strip('"'),
                version_id=head.get("VersionId"),
            )
        )
    img2img_pipeline(objects=refs, defaults=defaults)


if __name__ == "__main__":
    main()

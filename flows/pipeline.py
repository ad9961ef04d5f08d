"""The pipeline flow: one run = one micro-batch of uploads.

    copy to directory bucket → preprocess → stage 1: generate → stage 2: upscale (x4)
    → post-process → timing artifacts

Run it directly against the local stack:

    eval "$(img2img local env)"
    python -m flows.pipeline --bucket img2img-uploads --key photos/cat.png
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from functools import partial
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from prefect.states import State

from flows.batch_run import BatchRun, Step, unique
from img2img.intake.events import ObjectRef
from img2img.intake.params import ImageParams
from img2img.pipeline.jobs import ImageJob
from img2img.pipeline.stages.spec import GENERATE, UPSCALE
from img2img.pipeline.steps import record_queue_wait, reject_unaccepted
from img2img.slots import claims
from tasks.copy import copy_to_directory_bucket
from tasks.inference import generate_stage, upscale_stage
from tasks.preprocess import preprocess
from tasks.runtime import get_runtime


@flow(name="img2img-pipeline", log_prints=False, validate_parameters=True)
def img2img_pipeline(objects: list[ObjectRef], defaults: ImageParams | None = None) -> State[Any]:
    """Process one micro-batch of uploads into results or failure records.

    Args:
        objects: the uploads, as the dispatcher parsed them from S3 notifications.
        defaults: generation parameters for images whose metadata does not set them.
    """
    batch = begin(objects)
    cancelled = batch.steps(
        [*through_generate(batch, defaults), (UPSCALE.name, partial(batch.call, upscale_stage))]
    )
    return batch.finish(cancelled)


def through_generate(batch: BatchRun, defaults: ImageParams | None) -> list[Step]:
    """How every pipeline flow begins: copy → preprocess → stage 1."""
    call = batch.call
    return [
        ("copy", partial(call, copy_to_directory_bucket)),
        ("preprocess", lambda jobs: call(preprocess, jobs, defaults or ImageParams())),
        (GENERATE.name, partial(call, generate_stage)),
    ]


def begin(objects: list[ObjectRef]) -> BatchRun:
    """A run's batch from its uploads: one job each, its queue wait recorded, uploads this
    pipeline does not serve failed at 'validate'."""
    started = datetime.now(UTC)
    run_id = str(flow_run.id) if flow_run.id else None
    jobs = [ImageJob.for_ref(ref) for ref in unique(objects)]
    context = FlowRunContext.get()
    created = context.flow_run.created if context and context.flow_run else None
    record_queue_wait(jobs, started, created, claims.take(run_id))
    settings = get_runtime().settings
    reject_unaccepted(jobs, settings.storage.upload_buckets, settings.limits.max_bytes)
    return BatchRun.begin(jobs, run_id, started)


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

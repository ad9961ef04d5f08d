"""Whether an upload has its one outcome (a result or a failure record), and writing failure
records: for a batch's failed images, and for uploads that no run could finish."""

from __future__ import annotations

from typing import TYPE_CHECKING

from img2img import storage
from img2img.events import ObjectRef
from img2img.jobs import Failure, ImageJob, failure_record, finish_timings
from img2img.keys import keys_for

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def outcome_key(s3: S3Client, results_bucket: str, ref: ObjectRef) -> str | None:
    """The key of `ref`'s result metadata or failure record, or None when it has neither."""
    keys = keys_for(ref)
    for key in (keys.result_meta, keys.failure):
        if storage.exists(s3, results_bucket, key):
            return key
    return None


def write_failure_record(
    s3: S3Client, results_bucket: str, job: ImageJob, flow_run_id: str | None
) -> bool:
    """Write a failed job's record (create-once); False when it already had one."""
    finish_timings([job])
    created = storage.put_json_once(
        s3, results_bucket, job.keys.failure, failure_record(job, flow_run_id)
    )
    job.result_uri = f"s3://{results_bucket}/{job.keys.failure}"
    return created


def write_failure(
    s3: S3Client,
    results_bucket: str,
    ref: ObjectRef,
    *,
    stage: str,
    reason: str,
    retryable: bool,
    flow_run_id: str | None,
) -> bool:
    """Write `ref`'s failure record for an upload no run could finish; False when it
    already had one."""
    job = ImageJob.for_ref(ref)
    job.status = "failed"
    job.failure = Failure(stage=stage, reason=reason, error=stage, retryable=retryable)
    return write_failure_record(s3, results_bucket, job, flow_run_id)

"""Whether an upload has its one outcome (a result or a failure record), and writing failure
records: for a batch's failed images, and for uploads that no run could finish."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from img2img.aws import storage
from img2img.delivery.notify import request_id_from
from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for
from img2img.pipeline.jobs import Failure, ImageJob, failure_record, finish_timings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


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
    """Write a failed job's record (create-once); False when it already had one, or when
    another run wrote its result first (the job is then skipped: one outcome, the result)."""
    if storage.exists(s3, results_bucket, job.keys.result_meta):
        job.status = "skipped"
        job.result_uri = f"s3://{results_bucket}/{job.keys.result}"
        reason = job.failure.reason if job.failure is not None else "failed"
        job.note = f"{reason}; but another run wrote its result first"
        return False
    finish_timings([job])
    record = failure_record(job, flow_run_id)
    created = storage.put_json_once(s3, results_bucket, job.keys.failure, record)
    job.result_uri = f"s3://{results_bucket}/{job.keys.failure}"
    if created:
        job.outcome_doc = record
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
) -> ImageJob:
    """Write `ref`'s failure record for an upload no run could finish. The job returned has
    `outcome_doc` set when the record was written now (None: it already had one)."""
    job = ImageJob.for_ref(ref)
    job.status = "failed"
    job.failure = Failure(stage=stage, reason=reason, error=stage, retryable=retryable)
    job.request_id = caller_id(s3, ref)
    write_failure_record(s3, results_bucket, job, flow_run_id)
    return job


def caller_id(s3: S3Client, ref: ObjectRef) -> str | None:
    """The caller's id from the upload's metadata, for an outcome written without having
    read the upload (best effort: an upload that is gone or unreadable has none)."""
    try:
        return request_id_from(storage.upload_metadata(s3, ref))
    except Exception as exc:  # a missing id must not cost the upload its outcome
        log.warning("no caller id for %s: %s", ref.uri, exc)
        return None

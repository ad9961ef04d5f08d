"""Outcome records against a real moto server: what a failure record written for an upload no
run could finish says, and that one is never written beside another run's result."""

from __future__ import annotations

import logging

import pytest

from img2img.delivery.outcomes import caller_id, outcome_key, write_failure, write_failure_record
from img2img.errors import StorageUnavailable
from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for
from img2img.pipeline.jobs import ImageJob
from tests.conftest import AwsEnv
from tests.integration.helpers import FAST, outcome, png, unreachable_s3, upload


def test_a_failure_written_for_an_upload_says_what_where_and_who_asked(aws: AwsEnv) -> None:
    clients, settings = aws
    st = settings.storage
    ref = upload(clients, st.uploads_bucket, "rec/a.png", png(), {**FAST, "request-id": "r-7"})

    job = write_failure(
        clients.s3,
        st.results_bucket,
        ref,
        stage="crashed",
        reason="crashed 3 times",
        retryable=True,
        flow_run_id="run-9",
    )

    assert job.status == "failed" and job.outcome_doc is not None
    assert job.result_uri == f"s3://{st.results_bucket}/{keys_for(ref).failure}"
    status, record = outcome(clients, st.results_bucket, ref)
    assert status == "failed" and record == job.outcome_doc
    assert {k: record[k] for k in ("stage", "reason", "error", "retryable", "request_id")} == {
        "stage": "crashed",
        "reason": "crashed 3 times",
        "error": "crashed",
        "retryable": True,
        "request_id": "r-7",
    }
    assert record["flow_run_id"] == "run-9" and record["source"] == ref.uri
    assert outcome_key(clients.s3, st.results_bucket, ref) == keys_for(ref).failure
    # Written once: a second attempt creates nothing and says so.
    again = write_failure(
        clients.s3,
        st.results_bucket,
        ref,
        stage="crashed",
        reason="later",
        retryable=False,
        flow_run_id="run-10",
    )
    assert again.outcome_doc is None
    assert outcome(clients, st.results_bucket, ref)[1]["reason"] == "crashed 3 times"


def test_no_failure_record_beside_a_result_and_the_job_says_whose_it_is(aws: AwsEnv) -> None:
    clients, settings = aws
    st = settings.storage
    ref = upload(clients, st.uploads_bucket, "rec/b.png", png())
    keys = keys_for(ref)
    clients.s3.put_object(Bucket=st.results_bucket, Key=keys.result_meta, Body=b"{}")
    job = ImageJob.for_ref(ref)
    job.fail("upscale", StorageUnavailable("s3://stage: SlowDown"))

    assert write_failure_record(clients.s3, st.results_bucket, job, "run-1") is False

    assert job.status == "skipped" and job.outcome_doc is None
    assert job.result_uri == f"s3://{st.results_bucket}/{keys.result}"
    assert job.note == "s3://stage: SlowDown; but another run wrote its result first"
    assert outcome(clients, st.results_bucket, ref)[0] == "completed"


def test_the_caller_id_comes_from_the_upload_and_its_absence_costs_nothing(
    aws: AwsEnv, caplog: pytest.LogCaptureFixture
) -> None:
    clients, settings = aws
    st = settings.storage
    ref = upload(clients, st.uploads_bucket, "rec/c.png", png(), {"request-id": "r-1"})
    assert caller_id(clients.s3, ref) == "r-1"
    assert caller_id(clients.s3, upload(clients, st.uploads_bucket, "rec/d.png", png(), {})) is None
    gone = ObjectRef(bucket=st.uploads_bucket, key="rec/gone.png", etag="e")
    assert caller_id(clients.s3, gone) is None
    # S3 out of reach (nothing listens on port 1): no id, a warning naming the upload and
    # why, and no error, so the failure record is still written.
    unreachable = unreachable_s3()
    with caplog.at_level(logging.WARNING, logger="img2img.delivery.outcomes"):
        assert caller_id(unreachable, ref) is None
    assert f"no caller id for {ref.uri}: {ref.uri}: Could not connect" in caplog.text

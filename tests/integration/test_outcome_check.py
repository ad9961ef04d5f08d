"""The outcome check beside the work it would otherwise hold up (`steps.with_outcome_check`),
against moto over HTTP."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from img2img.aws import storage
from img2img.errors import PermanentError
from img2img.pipeline import steps
from img2img.pipeline.jobs import ImageJob
from tests.conftest import AwsEnv
from tests.integration.helpers import png, upload


def _jobs(aws: AwsEnv, *names: str) -> list[ImageJob]:
    clients, settings = aws
    return [
        ImageJob.for_ref(upload(clients, settings.storage.uploads_bucket, f"oc/{n}", png((8, 8))))
        for n in names
    ]


def test_the_lookups_go_out_while_the_work_runs(aws: AwsEnv) -> None:
    """Each side waits (bounded) to see the other begin: a check made before the work, or
    after it, leaves one of them waiting out its bound."""
    clients, settings = aws
    (job,) = _jobs(aws, "a.png")
    work_began, lookup_began = threading.Event(), threading.Event()
    saw: dict[str, bool] = {}

    def on_head(**_: Any) -> None:
        lookup_began.set()
        saw["work from the lookup"] = work_began.wait(timeout=5)

    def work(_: ImageJob) -> None:
        work_began.set()
        saw["lookup from the work"] = lookup_began.wait(timeout=5)

    clients.s3.meta.events.register("before-parameter-build.s3.HeadObject", on_head)
    try:
        steps.with_outcome_check(
            clients.s3, [job], settings.storage.results_bucket, "copy", work, 4
        )
    finally:
        clients.s3.meta.events.unregister("before-parameter-build.s3.HeadObject", on_head)
    assert saw == {"work from the lookup": True, "lookup from the work": True}
    assert job.active and job.timings["copy"] >= 0


def test_an_upload_with_its_outcome_is_skipped_whatever_the_work_did(aws: AwsEnv) -> None:
    clients, settings = aws
    results = settings.storage.results_bucket
    done, failed, fresh = _jobs(aws, "done.png", "failed.png", "fresh.png")
    storage.put_json_once(clients.s3, results, done.keys.result_meta, {"result": "x"})
    storage.put_json_once(clients.s3, results, failed.keys.failure, {"stage": "preprocess"})

    def work(job: ImageJob) -> None:
        raise PermanentError(f"cannot copy {job.ref.key}")  # e.g. the upload is gone

    steps.with_outcome_check(clients.s3, [done, failed, fresh], results, "copy", work, 4)

    assert done.status == "skipped" and done.result_uri == f"s3://{results}/{done.keys.result_meta}"
    assert failed.status == "skipped"
    assert failed.result_uri == f"s3://{results}/{failed.keys.failure}"
    # Without an outcome, the work's error is the image's: it fails at the work's stage.
    assert fresh.status == "failed" and fresh.failure is not None
    assert fresh.failure.stage == "copy" and "cannot copy oc/fresh.png" in fresh.failure.reason


def test_a_retryable_error_is_raised_after_the_others_ran(aws: AwsEnv) -> None:
    clients, settings = aws
    jobs = _jobs(aws, "one.png", "two.png")
    copied: list[str] = []

    def work(job: ImageJob) -> None:
        if job is jobs[0]:
            raise TimeoutError("slow down")  # retryable
        copied.append(job.ref.key)

    with pytest.raises(TimeoutError):
        steps.with_outcome_check(clients.s3, jobs, settings.storage.results_bucket, "copy", work, 4)
    assert copied == ["oc/two.png"] and all(j.active for j in jobs)

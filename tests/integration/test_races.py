"""Races on purpose, against a real moto server: two holders of one upload reach its outcome
at the same moment, and the exactly-once audit reads everything they produced.

Each holder is a run's own steps (the pipeline's step functions with real S3 I/O: the copy,
the download and decode, the create-once writes, the completion message), released at once
by a barrier after both found the upload without an outcome, which the sequential "run it
twice" tests never reach: there the second run stops at its skip-what-is-done check.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from img2img.config.notify import NotifySettings
from img2img.delivery.announce import Announcer
from img2img.delivery.outcomes import write_failure
from img2img.errors import StorageUnavailable
from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for
from img2img.intake.params import ImageParams
from img2img.pipeline import steps
from img2img.pipeline.jobs import ImageJob
from infra.local.resources import ensure_notifications
from tests.conftest import AwsEnv
from tests.integration.helpers import audited, drain, outcome, png, upload

Finish = Callable[[ImageJob], None]


def _announcer(aws: AwsEnv, topic: str) -> Announcer:
    clients, settings = aws
    return Announcer(
        s3=clients.s3,
        sns=clients.sns,
        events=clients.events,
        settings=NotifySettings(topic_arn=topic, writer_grace_s=2),
        results_bucket=settings.storage.results_bucket,
    )


def _holder(aws: AwsEnv, announcer: Announcer, ref: ObjectRef, run: str) -> Callable[..., ImageJob]:
    """One run's way through the upload: copy (its outcome check beside it), preprocess,
    then (after `gate`) its own finish (`finish`: a stage-2 image, or a failure),
    post-process, failure records and the completion message, as `flows/batch_run.py`
    orders them."""
    clients, settings = aws
    s3, st = clients.s3, settings.storage

    def run_it(gate: threading.Barrier, finish: Finish) -> ImageJob:
        job = ImageJob.for_ref(ref)
        steps.copy_to_stage(s3, [job], st.stage_bucket, st.results_bucket, concurrency=1)
        steps.preprocess(
            s3, [job], st.stage_bucket, settings.limits, settings.stages, ImageParams(), 1
        )
        gate.wait(timeout=30)
        if job.active:
            finish(job)
        steps.postprocess(s3, [job], st.results_bucket, run, concurrency=1)
        steps.write_failures(s3, [job], st.results_bucket, run)
        steps.announce(announcer, [job])
        return job

    return run_it


def _finished(job: ImageJob) -> None:
    job.upscale = Image.new("RGB", (256, 256), (200, 40, 40))


def _failed(job: ImageJob) -> None:
    job.fail("upscale", StorageUnavailable("s3://stage: SlowDown (retries spent)"))


# Every holder has sent what it sends before `_race` returns (its threads are joined), so a
# short quiet period after the first message is enough to see a repeat.
def _race(*holders: tuple[Callable[..., ImageJob], Finish]) -> list[ImageJob]:
    gate = threading.Barrier(len(holders))
    with ThreadPoolExecutor(max_workers=len(holders)) as pool:
        futures = [pool.submit(h, gate, finish) for h, finish in holders]
        return [f.result(timeout=120) for f in futures]


@pytest.mark.parametrize("attempt", range(3))
def test_two_runs_finishing_one_upload_at_once_write_it_once_and_announce_it_once(
    aws: AwsEnv, attempt: int
) -> None:
    clients, settings = aws
    topic, queue = ensure_notifications(clients)
    announcer = _announcer(aws, topic)
    ref = upload(clients, settings.storage.uploads_bucket, f"race/{attempt}.png", png())

    jobs = _race(
        (_holder(aws, announcer, ref, "run-a"), _finished),
        (_holder(aws, announcer, ref, "run-b"), _finished),
    )

    messages = drain(clients.sqs, queue, quiet_s=1, at_least=1)
    report = audited(clients, settings, [ref], messages)
    assert report.problems == (), report.problems
    assert report.counts()["duplicated"] == 0 and len(messages) == 1
    # Both found it without an outcome; one write won, the other reports the winner's.
    assert sorted(j.status for j in jobs) == ["completed", "skipped"]
    assert {j.result_uri for j in jobs} == {
        f"s3://{settings.storage.results_bucket}/{keys_for(ref).result}"
    }
    assert outcome(clients, settings.storage.results_bucket, ref)[0] == "completed"


def test_a_run_finishing_after_recovery_failed_its_image_leaves_the_failure_alone(
    aws: AwsEnv,
) -> None:
    """The recovery service gives up on an upload (its run looked dead) while the run still
    runs; the run then finishes the image: the failure record stays the one outcome."""
    clients, settings = aws
    st = settings.storage
    topic, queue = ensure_notifications(clients)
    announcer = _announcer(aws, topic)
    ref = upload(clients, st.uploads_bucket, "race/given-up.png", png())

    def recovery_gives_up(job: ImageJob) -> None:
        written = write_failure(
            clients.s3,
            st.results_bucket,
            ref,
            stage="crashed",
            reason="crashed 3 times; giving up",
            retryable=True,
            flow_run_id="recovery",
        )
        assert written.outcome_doc is not None
        announcer.announce_once(ref, ("failure", written.outcome_doc))
        _finished(job)

    (job,) = _race((_holder(aws, announcer, ref, "live-run"), recovery_gives_up))

    messages = drain(clients.sqs, queue, quiet_s=1, at_least=1)
    report = audited(clients, settings, [ref], messages)
    assert report.problems == (), report.problems
    assert job.status == "skipped" and job.result_uri is not None
    assert job.result_uri.endswith(keys_for(ref).failure)
    assert [m["outcome"] for m in messages] == ["failure"]
    # No result image was written beside the failure record either.
    assert report.verdicts[0].outcome == "failure"


def test_a_run_whose_retries_ran_out_leaves_another_runs_result_alone(aws: AwsEnv) -> None:
    """One holder finishes the image; the other ran out of retries on it at the same time:
    the upload keeps the result, and the failing run says so rather than adding a record."""
    clients, settings = aws
    topic, queue = ensure_notifications(clients)
    announcer = _announcer(aws, topic)
    ref = upload(clients, settings.storage.uploads_bucket, "race/mixed.png", png())
    finisher = _holder(aws, announcer, ref, "run-ok")
    failer = _holder(aws, announcer, ref, "run-failing")

    # The failing run reaches its failure record only after the other's result exists.
    done = threading.Event()

    def fail_late(job: ImageJob) -> None:
        done.wait(timeout=60)
        _failed(job)

    def run_finisher(gate: threading.Barrier, finish: Finish) -> ImageJob:
        try:
            return finisher(gate, finish)
        finally:
            done.set()

    ok, failing = _race((run_finisher, _finished), (failer, fail_late))

    messages = drain(clients.sqs, queue, quiet_s=1, at_least=1)
    report = audited(clients, settings, [ref], messages)
    assert report.problems == (), report.problems
    assert ok.status == "completed"
    assert failing.status == "skipped" and "wrote its result first" in failing.note
    assert [m["outcome"] for m in messages] == ["result"]


@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize("attempt", range(3))
def test_a_run_claimed_by_two_hosts_at_once_is_theirs_only_once(attempt: int) -> None:
    """Two warm workers take the same scheduled run in the same instant (each proposes
    Pending, as BaseWorker does): Prefect accepts one claim and refuses the other, which is
    what keeps a run from running on two hosts. Pinned here because the pipeline relies on
    Prefect's orchestration rule for it (`PreventPendingTransitions`)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Pending

    from tests.integration.warm import create_pool_and_deployment

    with get_client(sync_client=True) as client:
        _pool, deployment_id = create_pool_and_deployment(client)
        run = client.create_flow_run_from_deployment(deployment_id, parameters={"objects": []})
    gate = threading.Barrier(2)

    def claim(_: int) -> SetStateStatus:
        with get_client(sync_client=True) as own:  # each host its own connection
            gate.wait(timeout=30)
            return own.set_flow_run_state(run.id, Pending()).status

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = sorted(s.value for s in pool.map(claim, range(2)))
    assert answers.count(SetStateStatus.ACCEPT.value) == 1, answers
    with get_client(sync_client=True) as client:
        history = client.read_flow_run_states(run.id)
    assert [s.type for s in history].count(StateType.PENDING) == 1


def test_the_audit_sees_a_second_write_that_got_through(aws: AwsEnv) -> None:
    """The audit's own reading, against the versioned results bucket: an outcome document
    overwritten (as a write without `If-None-Match` would) counts as written twice, and a
    failure record beside the result as both outcomes."""
    clients, settings = aws
    results = settings.storage.results_bucket
    ref = upload(clients, settings.storage.uploads_bucket, "race/audited.png", png())
    keys = keys_for(ref)
    for body in (b"{}", b"{}"):  # the same bytes twice: still two writes
        clients.s3.put_object(Bucket=results, Key=keys.result_meta, Body=body)
    clients.s3.put_object(Bucket=results, Key=keys.result, Body=b"png")
    verdict = audited(clients, settings, [ref]).verdicts[0]
    assert verdict.problems == ("written twice: the result document has 2 versions",)
    clients.s3.put_object(Bucket=results, Key=keys.failure, Body=b"{}")
    assert audited(clients, settings, [ref]).counts()["both_outcomes"] == 1

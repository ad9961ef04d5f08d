"""The dispatcher against real SQS (moto, with real S3 notifications) and a real Prefect API."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient

from deployments.services.dispatcher import Dispatcher
from flows.pipeline import img2img_pipeline
from img2img.intake.events import ObjectRef
from img2img.pipeline.topology import dispatch_target
from tests.conftest import AwsEnv
from tests.integration.helpers import outcome, png, upload

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def deployment(client: Any) -> str:
    """The pipeline deployment, registered in the test server (no worker needed)."""
    flow_id = client.create_flow_from_name("img2img-pipeline")
    client.create_deployment(
        flow_id=flow_id,
        name="inf2",
        entrypoint="flows.pipeline.img2img_pipeline",
    )
    return "img2img-pipeline/inf2"


def dispatcher(clients: Any, client: Any, settings: Any, **overrides: Any) -> Dispatcher:
    dispatch = settings.dispatch.model_copy(
        update={"poll_wait_s": 1, "max_wait_s": 0.5, "max_batch": 8, **overrides}
    )
    target = dispatch_target(settings.model_copy(update={"dispatch": dispatch}))
    return Dispatcher(clients.sqs, client, settings.storage, dispatch, target)


def runs_of(client: Any) -> list[Any]:
    return [r for r in client.read_flow_runs() if "s3-event" in r.tags]


def queue_depth(clients: Any, queue: str) -> int:
    url = clients.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    attrs = clients.sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def drain(d: Dispatcher, until: Any, limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and not until():
        d.step()
    d.flush()


def test_uploads_become_one_run_and_messages_are_deleted(
    aws: AwsEnv, client: SyncPrefectClient, deployment: str
) -> None:
    clients, settings = aws
    before = len(runs_of(client))
    refs = [
        upload(clients, settings.storage.uploads_bucket, f"d/{i} x.png", png()) for i in range(3)
    ]
    d = dispatcher(clients, client, settings)

    drain(d, lambda: d.stats.objects >= 3 and d.batcher.pending_count == 0)

    assert d.stats.runs_created == 1 and d.stats.skipped >= 1  # moto's s3:TestEvent
    runs = runs_of(client)
    assert len(runs) == before + 1
    params = runs[0].parameters["objects"]
    assert sorted(p["key"] for p in params) == [r.key for r in refs]
    assert {p["etag"] for p in params} == {r.etag for r in refs}
    assert all(p["event_time"] for p in params)
    assert queue_depth(clients, settings.storage.ingest_queue) == 0


def test_an_upload_over_the_size_limit_is_refused_by_its_event_with_the_size_named(
    aws: AwsEnv, client: SyncPrefectClient, deployment: str
) -> None:
    clients, settings = aws
    small = upload(clients, settings.storage.uploads_bucket, "size/small.png", png())
    big = upload(clients, settings.storage.uploads_bucket, "size/big.png", png() + b"\0" * 4000)
    dispatch = settings.dispatch.model_copy(update={"poll_wait_s": 1, "max_wait_s": 0.5})
    d = Dispatcher(
        clients.sqs,
        client,
        settings.storage,
        dispatch,
        dispatch_target(settings),
        max_bytes=4000,
    )
    drain(d, lambda: d.stats.objects >= 2 and d.batcher.pending_count == 0)

    assert d.stats.oversize == 1
    params = {p["key"]: p for r in runs_of(client) for p in r.parameters["objects"]}
    size = params[big.key]["size"]
    assert size > 4000
    assert params[big.key]["refused"] == (
        f"upload is {size} bytes; the limit is 4000 (limits.max_bytes)"
    )
    assert "refused" not in params[small.key]


def test_a_lone_upload_leaves_at_once_while_the_pool_can_take_it_then_batches_grow(
    aws: AwsEnv, client: SyncPrefectClient
) -> None:
    """An idle pool (no run of its deployment waits): a lone upload's run is created at
    once, not after the batch window. Its run then waits (no worker here), so the next
    upload is held for the window: batches grow from backpressure."""
    clients, settings = aws
    flow_id = client.create_flow_from_name("lone-upload")
    client.create_deployment(flow_id=flow_id, name="idle", entrypoint="flows.pipeline.x")
    window = 8.0
    d = dispatcher(clients, client, settings, deployment="lone-upload/idle", max_wait_s=window)
    drain(d, lambda: d.stats.skipped >= 1, limit_s=10)  # moto's s3:TestEvent
    bucket = settings.storage.uploads_bucket

    upload(clients, bucket, "lone/first.png", png())
    sent = time.monotonic()
    drain(d, lambda: d.stats.runs_created >= 1, limit_s=window * 2)
    first_s = time.monotonic() - sent
    assert d.stats.runs_created == 1 and first_s < window / 2, first_s
    # At once, or within the window of the rate it measured (one upload since it started).
    assert "the pool can take a run now" in (d.plan.reason if d.plan else "")

    upload(clients, bucket, "lone/second.png", png())
    sent = time.monotonic()
    drain(d, lambda: d.stats.runs_created >= 2, limit_s=window * 3)
    second_s = time.monotonic() - sent
    assert d.stats.runs_created == 2 and second_s >= window * 0.75, second_s
    assert d.stats.batch_sizes == [1, 1]


def test_a_held_upload_leaves_when_the_waiting_run_is_claimed_heard_on_the_stream(
    aws: AwsEnv, client: SyncPrefectClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run waits for a slot, so an upload is held. When that run starts, the dispatcher
    hears it on the events stream and sends the upload at once. The count of waiting runs
    is re-read only every 60 s here and the batch window is 60 s: without the stream the
    upload would wait out one of them."""
    from prefect.states import Pending, Running

    from deployments.services import dispatcher as dispatcher_module

    monkeypatch.setattr(dispatcher_module, "QUEUED_EVERY_S", 60.0)
    clients, settings = aws
    flow_id = client.create_flow_from_name("claimed-upload")
    deployment_id = client.create_deployment(
        flow_id=flow_id, name="busy", entrypoint="flows.pipeline.x"
    )
    waiting = client.create_flow_run_from_deployment(deployment_id)  # no worker: it waits
    d = dispatcher(clients, client, settings, deployment="claimed-upload/busy", max_wait_s=60.0)
    thread = threading.Thread(target=d.run, kwargs={"stop_after_s": 90}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (d.claims and d.claims.connected) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert d.claims is not None and d.claims.connected, "the claims stream did not open"
        upload(clients, settings.storage.uploads_bucket, "claimed/held.png", png())
        while d.batcher.pending_count == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert d.batcher.pending_count == 1 and d.stats.runs_created == 0, d.plan
        time.sleep(1.0)
        assert d.stats.runs_created == 0  # held: a run waits for a slot

        # Claimed (Pending), it still holds the slot it waits for; started, it frees the line.
        client.set_flow_run_state(waiting.id, Pending(), force=True)
        time.sleep(2.0)
        assert d.stats.runs_created == 0
        client.set_flow_run_state(waiting.id, Running(), force=True)
        started = time.monotonic()
        while d.stats.runs_created == 0 and time.monotonic() < started + 20:
            time.sleep(0.05)
        assert d.stats.runs_created == 1 and d.stats.batch_sizes == [1], d.plan
        assert time.monotonic() - started < 20
    finally:
        d.stop()
        thread.join(timeout=30)
    assert d.claims is not None and not thread.is_alive()


def test_a_claim_heard_wakes_the_rounds_wait_as_an_arrival_does(
    client: SyncPrefectClient,
) -> None:
    """In a loop, a round waits for the receiving thread's next messages or a run claim,
    whichever comes first: the claims stream sets the round's wake as well as `heard`."""
    from prefect.states import Running

    from deployments.services.run_claims import RunClaims

    flow_id = client.create_flow_from_name("claim-wake")
    deployment_id = client.create_deployment(
        flow_id=flow_id, name="busy", entrypoint="flows.pipeline.x"
    )
    waiting = client.create_flow_run_from_deployment(deployment_id)
    wake = threading.Event()
    claims = RunClaims(deployment_id, logging.getLogger("test"), wake=wake).start()
    try:
        deadline = time.monotonic() + 30
        while not claims.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert claims.connected, "the claims stream did not open"
        assert wake.wait(10)  # (re)connected: counted afresh, the round woken
        wake.clear()
        claims.heard.clear()
        client.set_flow_run_state(waiting.id, Running(), force=True)
        assert wake.wait(20), "a claim heard did not wake the round"
        assert claims.heard.is_set()
    finally:
        claims.stop()


def test_in_a_loop_what_the_receiving_thread_holds_at_the_stop_is_dispatched(
    aws: AwsEnv, client: SyncPrefectClient, deployment: str
) -> None:
    """In a loop, messages are received by a thread of their own. Those it received that
    no round took yet are taken at the stop and sent: one run for all, every message
    deleted, none left to reappear."""
    clients, settings = aws
    d = dispatcher(clients, client, settings, max_wait_s=60.0)
    d.started()  # the receiving thread runs; no round takes what it brings
    for i in range(3):
        upload(clients, settings.storage.uploads_bucket, f"held/{i}.png", png())
    url = d.queue_url
    deadline = time.monotonic() + 20
    # S3's test event (from the bucket's notification set-up) and the 3 uploads.
    while time.monotonic() < deadline and _in_flight(clients, url) < 4:
        time.sleep(0.05)
    assert _in_flight(clients, url) == 4 and d.stats.objects == 0
    d.stop()
    stats = d.finished()
    assert stats.objects == 3 and stats.runs_created == 1 and stats.batch_sizes == [3], stats
    assert queue_depth(clients, settings.storage.ingest_queue) == 0
    assert d.receiver is not None and not d.receiver.ready


def test_in_a_loop_a_failed_receive_ends_the_dispatcher_with_its_error(
    aws: AwsEnv, client: SyncPrefectClient
) -> None:
    """The receiving thread's failure is not swallowed with the thread: the loop ends with
    it (the service exits and is restarted), as a failed receive in the round did."""
    clients, settings = aws
    d = dispatcher(clients, client, settings)
    errors: list[Exception] = []

    def loop() -> None:
        try:
            d.run(stop_after_s=60)
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    # S3's test event (from the bucket's notification set-up) taken and deleted first: the
    # receive is then the only call the missing queue fails.
    while d.stats.messages == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert d.stats.skipped == 1, d.stats
    while _in_flight(clients, d.queue_url) and time.monotonic() < deadline:
        time.sleep(0.05)
    clients.sqs.delete_queue(QueueUrl=d.queue_url)
    thread.join(timeout=30)
    assert not thread.is_alive(), "the dispatcher went on without its receives"
    assert len(errors) == 1, errors
    assert "NonExistentQueue" in str(errors[0]) or "QueueDoesNotExist" in str(errors[0]), errors


def _in_flight(clients: Any, url: str) -> int:
    attrs = clients.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_the_same_event_twice_gives_one_run_and_one_result(
    aws: AwsEnv, client: SyncPrefectClient, deployment: str
) -> None:
    clients, settings = aws
    st = settings.storage
    ref = upload(clients, st.uploads_bucket, "dup/one.png", png())
    queue_url = clients.sqs.get_queue_url(QueueName=st.ingest_queue)["QueueUrl"]
    # Capture the real notification, then deliver it again, to two independent replicas.
    messages: list[Any] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("one.png" in m["Body"] for m in messages):
        messages += clients.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
    body = next(m["Body"] for m in messages if "one.png" in m["Body"])
    for m in messages:
        clients.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    before = len(runs_of(client))

    run_ids = set()
    for _replica in range(2):
        clients.sqs.send_message(QueueUrl=queue_url, MessageBody=body)
        d = dispatcher(clients, client, settings)
        drain(d, lambda d=d: d.stats.runs_created >= 1)
        run_ids.update(d.stats.flow_run_ids)

    assert len(run_ids) == 1
    assert len(runs_of(client)) == before + 1
    assert queue_depth(clients, st.ingest_queue) == 0

    # Run what was dispatched, twice (as if a worker picked it up again): one result.
    [run_id] = run_ids
    run = client.read_flow_run(UUID(run_id))
    objects = [ObjectRef.model_validate(o) for o in run.parameters["objects"]]
    assert img2img_pipeline(objects=objects, return_state=True).is_completed()
    assert img2img_pipeline(objects=objects, return_state=True).is_completed()
    assert outcome(clients, st.results_bucket, ref)[0] == "completed"
    listing = clients.s3.list_objects_v2(
        Bucket=st.results_bucket, Prefix=f"results/{st.uploads_bucket}/dup/"
    )
    assert len(listing["Contents"]) == 2  # the image and its metadata, once


def test_unparseable_messages_go_to_the_dead_letter_queue_with_a_reason(
    aws: AwsEnv, client: SyncPrefectClient, deployment: str
) -> None:
    clients, settings = aws
    st = settings.storage
    queue_url = clients.sqs.get_queue_url(QueueName=st.ingest_queue)["QueueUrl"]
    dlq_url = clients.sqs.get_queue_url(QueueName=st.dead_letter_queue)["QueueUrl"]
    clients.sqs.send_message(QueueUrl=queue_url, MessageBody="{not json")
    clients.sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=json.dumps(
            {
                "Records": [
                    {
                        "eventSource": "aws:s3",
                        "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": {}},
                    }
                ]
            }
        ),
    )
    d = dispatcher(clients, client, settings)

    drain(d, lambda: d.stats.dead_lettered >= 2)

    assert d.stats.runs_created == 0
    dead = clients.sqs.receive_message(
        QueueUrl=dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )
    reasons = sorted(m["MessageAttributes"]["reason"]["StringValue"] for m in dead["Messages"])
    assert len(reasons) == 2
    assert "not JSON" in reasons[0] or "not JSON" in reasons[1]
    assert any("Records[0].s3.bucket.name" in r for r in reasons)
    assert queue_depth(clients, st.ingest_queue) == 0


def test_objects_wait_and_are_retried_when_the_run_cannot_be_created(
    aws: AwsEnv, client: SyncPrefectClient
) -> None:
    clients, settings = aws
    upload(clients, settings.storage.uploads_bucket, "nodeploy/a.png", png())
    d = dispatcher(clients, client, settings, deployment="no-such-flow/nope")

    drain(d, lambda: d.stats.run_errors >= 1, limit_s=10)

    assert d.stats.runs_created == 0 and d.batcher.pending_count == 1
    assert queue_depth(clients, settings.storage.ingest_queue) >= 1  # nothing deleted


def notification(bucket: str, key: str, etag: str = "0123abcd") -> str:
    from urllib.parse import quote_plus

    return json.dumps(
        {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "eventTime": "2026-11-28T12:00:00.000Z",
                    "s3": {
                        "bucket": {"name": bucket},
                        "object": {"key": quote_plus(key), "eTag": etag, "size": 10},
                    },
                }
            ]
        }
    )


def test_other_buckets_and_unsafe_keys_go_to_the_dead_letter_queue_with_the_reason(
    aws: AwsEnv, client: SyncPrefectClient, deployment: str
) -> None:
    clients, settings = aws
    st = settings.storage
    queue_url = clients.sqs.get_queue_url(QueueName=st.ingest_queue)["QueueUrl"]
    for body in (
        notification("someone-elses-bucket", "ok/cat.png"),
        notification(st.uploads_bucket, "../ev/../etc/passwd.jpg"),
        notification(st.uploads_bucket, "ctl/a\x07b.png"),
    ):
        clients.sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    d = dispatcher(clients, client, settings)

    drain(d, lambda: d.stats.dead_lettered >= 3)

    assert d.stats.runs_created == 0
    from deployments.services import dlq

    letters = dlq.show(clients.sqs, st)
    reasons = sorted(letter.reason for letter in letters)
    assert len(reasons) == 3, reasons
    assert any("'someone-elses-bucket' is not an upload bucket" in r for r in reasons)
    assert any("'..' path segments" in r for r in reasons)
    assert any("characters (U+0007)" in r for r in reasons)
    assert queue_depth(clients, st.ingest_queue) == 0


def test_dead_letters_are_replayed_to_the_ingest_queue_without_loss(aws: AwsEnv) -> None:
    from deployments.services import dlq

    clients, settings = aws
    st = settings.storage
    dlq_url = clients.sqs.get_queue_url(QueueName=st.dead_letter_queue)["QueueUrl"]
    bodies = {notification(st.uploads_bucket, f"replay/{i}.png") for i in range(13)}
    for body in bodies:
        clients.sqs.send_message(QueueUrl=dlq_url, MessageBody=body)

    assert dlq.replay(clients.sqs, st, dry_run=True)["messages"] == 13
    assert queue_depth(clients, st.dead_letter_queue) == 13  # a dry run moves nothing
    moved = dlq.replay(clients.sqs, st)

    assert moved["moved"] == 13 and queue_depth(clients, st.dead_letter_queue) == 0
    queue_url = clients.sqs.get_queue_url(QueueName=st.ingest_queue)["QueueUrl"]
    arrived: set[str] = set()
    for _ in range(20):
        got = clients.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        arrived |= {m["Body"] for m in got.get("Messages", [])}
        if not got.get("Messages"):
            break
    assert bodies <= arrived


def test_a_backlog_builds_one_batch_larger_than_64(
    aws: AwsEnv, client: SyncPrefectClient, deployment: str
) -> None:
    """150 uploads already waiting in the queue, a pool that holds one run at a time: the
    dispatcher reads the queue's depth and builds one run of all 150 (batches were capped
    at 64 before), then deletes every message."""
    clients, settings = aws
    before = len(runs_of(client))
    body = png()
    refs = [
        upload(clients, settings.storage.uploads_bucket, f"backlog/{i}.png", body)
        for i in range(150)
    ]
    wait_for_depth = time.monotonic() + 30
    while queue_depth(clients, settings.storage.ingest_queue) < 150:
        assert time.monotonic() < wait_for_depth, "the notifications did not all arrive"
        time.sleep(0.2)
    d = dispatcher(clients, client, settings, max_batch=512, max_hold_s=20.0)
    d.run_slots = 1

    drain(d, lambda: d.stats.objects >= 150 and d.batcher.pending_count == 0, limit_s=60)

    assert d.stats.batch_sizes == [150], d.stats.batch_sizes
    assert len(runs_of(client)) == before + 1
    run = client.read_flow_run(UUID(d.stats.flow_run_ids[0]))
    assert sorted(p["key"] for p in run.parameters["objects"]) == sorted(r.key for r in refs)
    assert queue_depth(clients, settings.storage.ingest_queue) == 0


def test_the_dispatcher_learns_what_an_image_adds_to_a_run_from_its_completed_runs(
    aws: AwsEnv, client: SyncPrefectClient, deployment: str
) -> None:
    """The steady-rate batch is bounded by what a run does in max_run_s: the dispatcher reads
    its deployment's recent completed runs (its own, by tag; their size from their name)
    from the real API: what an image adds to a run is its run's time in Running (as the
    server recorded it) over its images, and the reconciler's runs are left out. (How that
    figure bounds a batch is `plan_batch`'s, tested in tests/unit/test_batching.py.)"""
    from prefect.states import Completed, Pending, Running

    clients, settings = aws
    d = dispatcher(clients, client, settings, max_batch=512, max_wait_s=2.0, max_run_s=4.0)
    assert d._image_s() is None  # no completed run yet: the share rule alone

    deployment_id = client.read_deployment_by_name(deployment).id
    ref = ObjectRef(bucket=settings.storage.uploads_bucket, key="learn/0.png", etag="e")
    seconds = {}
    for name, tags in (("batch-8-learn.png", ["s3-event"]), ("reconcile-1-x.png", ["reconcile"])):
        run = client.create_flow_run_from_deployment(
            deployment_id, parameters={"objects": [ref.as_parameter()]}, name=name, tags=tags
        )
        client.set_flow_run_state(run.id, Pending())
        client.set_flow_run_state(run.id, Running())
        time.sleep(0.05)  # some time in Running; its length is read back, not assumed
        client.set_flow_run_state(run.id, Completed())
        seconds[name] = client.read_flow_run(run.id).total_run_time.total_seconds()
    assert all(s > 0 for s in seconds.values()), seconds

    d._image_s_read.at = -1e9  # read again now, not in 30 s
    # The dispatcher's run of 8 alone: with the reconciler's run of 1 in, the median of the
    # two rates would be another figure.
    assert d._image_s() == pytest.approx(seconds["batch-8-learn.png"] / 8)
    assert seconds["reconcile-1-x.png"] != pytest.approx(seconds["batch-8-learn.png"] / 8)


@pytest.mark.parametrize("thread", [False, True], ids=["round-receives", "receiving-thread"])
def test_with_tenants_a_dispatcher_holds_max_held_uploads_and_no_more(
    aws: AwsEnv, client: SyncPrefectClient, thread: bool
) -> None:
    """Tenants on and a run waiting for a slot (so no run leaves): the backlog is taken in
    up to `tenants.max_held` and not one more, whether the round receives or the
    receiving thread does; the rest stays in the queue. Stopping sends what is held."""
    from img2img.config.lanes import TenantSettings

    clients, settings = aws
    flow_id = client.create_flow_from_name("held-most")
    deployment_id = client.create_deployment(
        flow_id=flow_id, name="held", entrypoint="flows.pipeline.x"
    )
    client.create_flow_run_from_deployment(deployment_id)  # no worker: it waits
    dispatch = settings.dispatch.model_copy(
        update={"poll_wait_s": 1, "max_wait_s": 0.5, "max_batch": 512}
    )
    d = Dispatcher(
        clients.sqs,
        client,
        settings.storage,
        dispatch,
        "held-most/held",
        tenants=TenantSettings(enabled=True, max_held=100),
        s3=clients.s3,
    )
    bucket = settings.storage.uploads_bucket
    for i in range(133):
        upload(clients, bucket, f"a/{i:03d}.png", png())
    if thread:
        d.started()
    try:
        deadline = time.monotonic() + 60
        while d.batcher.pending_count < 100 and time.monotonic() < deadline:
            d.step()
        for _ in range(3):  # more rounds take no more
            d.step()
        assert d.batcher.pending_count == 100 and d.stats.runs_created == 0, d.stats
        url = d.queue_url
        visible = clients.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        assert int(visible) == 33
        assert d.receiver is None or not d.receiver.ready  # nothing more received ahead
    finally:
        d.stop()
        stats = d.finished()
    assert sum(stats.batch_sizes) == 100
    assert queue_depth(clients, settings.storage.ingest_queue) == 33


def test_with_tenants_a_held_backlog_gives_a_later_tenant_its_turns(
    aws: AwsEnv, client: SyncPrefectClient
) -> None:
    """Tenants on: tenant a's 40 uploads give one run of a base batch while no run waits,
    then are held (their messages kept from reappearing past their visibility), not cut into
    runs that would wait in arrival order; once that run starts, the next run takes turns
    between a and b, who came later. Stopping sends everything held."""
    from prefect.states import Running

    from img2img.config.lanes import TenantSettings

    clients, settings = aws
    # A deployment of its own: another test's runs left waiting would count as queued.
    flow_id = client.create_flow_from_name("tenant-turns")
    client.create_deployment(flow_id=flow_id, name="held", entrypoint="flows.pipeline.x")
    deployment = "tenant-turns/held"
    dispatch = settings.dispatch.model_copy(
        update={"poll_wait_s": 1, "max_wait_s": 0.5, "max_batch": 512, "visibility_timeout_s": 31}
    )
    ahead = [0.0]  # the dispatcher's clock, moved on by hand past half the visibility
    d = Dispatcher(
        clients.sqs,
        client,
        settings.storage,
        dispatch,
        deployment,
        clock=lambda: time.monotonic() + ahead[0],
        tenants=TenantSettings(enabled=True),
        s3=clients.s3,
    )
    bucket = settings.storage.uploads_bucket

    def take_in(count: int) -> None:
        deadline = time.monotonic() + 60
        while d.stats.objects < count and time.monotonic() < deadline:
            d.step()
        assert d.stats.objects == count, d.stats

    for i in range(40):
        upload(clients, bucket, f"a/{i:02d}.png", png())
    take_in(40)
    assert d.stats.batch_sizes == [8], d.stats.batch_sizes  # one run; the rest is held
    for i in range(40):
        upload(clients, bucket, f"b/{i:02d}.png", png())
    take_in(80)
    received = time.monotonic()
    # Held: 10 s on, the dispatcher's clock says 30 s, and it extends every held message's
    # visibility (31 s) from then. Nothing received after that: without the renewal all 80
    # would be visible again 31 s after they came; with it, none is at 35 s.
    until = received + 10
    while time.monotonic() < until:
        d.step()
    ahead[0] = 20.0
    for _ in range(5):  # 30 renewals a round
        d.step()
    time.sleep(max(0.0, received + 35 - time.monotonic()))
    assert d.stats.runs_created == 1 and d.batcher.pending_count == 72
    url = clients.sqs.get_queue_url(QueueName=settings.storage.ingest_queue)["QueueUrl"]
    visible = clients.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert int(visible) == 0 and d.batcher.duplicates == 0

    client.set_flow_run_state(UUID(d.stats.flow_run_ids[0]), Running(), force=True)
    deadline = time.monotonic() + 30
    while d.stats.runs_created < 2 and time.monotonic() < deadline:
        d.step()
    second = client.read_flow_run(UUID(d.stats.flow_run_ids[1]))
    tenants = sorted(p["key"].split("/")[0] for p in second.parameters["objects"])
    assert tenants == ["a"] * 4 + ["b"] * 4, tenants
    # Two running: a run waiting per two running, so two more go at once.
    client.set_flow_run_state(second.id, Running(), force=True)
    deadline = time.monotonic() + 30
    while d.stats.runs_created < 4 and time.monotonic() < deadline:
        d.step()
    time.sleep(1.5)  # the counts are read once a second: a third would go by now
    d.step()
    assert d.stats.runs_created == 4, d.stats.batch_sizes

    d.flush()
    assert d.batcher.pending_count == 0 and sum(d.stats.batch_sizes) == 80
    assert queue_depth(clients, settings.storage.ingest_queue) == 0


def _lanes_dispatcher(aws: AwsEnv, client: SyncPrefectClient, name: str, **dispatch: Any) -> Any:
    """A dispatcher with lanes on (uploads under cat/ are bulk, the rest interactive) for a
    deployment of its own, in a pool with both lanes' queues."""
    from prefect.client.schemas.actions import WorkPoolCreate

    from img2img.config.lanes import LaneSettings

    clients, settings = aws
    client.create_work_pool(WorkPoolCreate(name=f"{name}-pool", type="process"))
    lanes = LaneSettings(enabled=True, prefix_rules={"cat/": "bulk"})
    for lane in lanes.lanes:
        client.create_work_queue(lane.name, work_pool_name=f"{name}-pool", priority=lane.priority)
    flow_id = client.create_flow_from_name(name)
    client.create_deployment(
        flow_id=flow_id, name="lanes", entrypoint="flows.pipeline.x", work_pool_name=f"{name}-pool"
    )
    cfg = settings.dispatch.model_copy(
        update={"poll_wait_s": 1, "max_wait_s": 5.0, "max_batch": 64, **dispatch}
    )
    return Dispatcher(
        clients.sqs, client, settings.storage, cfg, f"{name}/lanes", lanes=lanes, s3=clients.s3
    )


def test_with_lanes_an_interactive_upload_leaves_in_the_round_it_arrives(
    aws: AwsEnv, client: SyncPrefectClient
) -> None:
    """The interactive lane was planned (a 5 s hold: nothing known in hand) before the
    round received its upload: it is planned again as it comes, and its run is made in
    that same round."""
    clients, settings = aws
    d = _lanes_dispatcher(aws, client, "lanes-round")
    d.step()  # nothing to receive: the lanes planned with nothing in hand
    upload(clients, settings.storage.uploads_bucket, "shop/edit.png", png())
    d.step()
    assert d.stats.objects == 1 and d.stats.runs_created == 1, d.stats
    run = client.read_flow_run(UUID(d.stats.flow_run_ids[0]))
    assert run.work_queue_name == "interactive"
    d.flush()


def test_with_lanes_due_runs_are_made_highest_lane_first(
    aws: AwsEnv, client: SyncPrefectClient
) -> None:
    """Bulk uploads that came first and an interactive one after, all due together: the
    interactive run is made before the bulk one."""
    clients, settings = aws
    # Whatever the rate, batches wait out max_wait_s; an interactive run waits for a place,
    # so the interactive upload is held too (within max_wait_s) until the flush.
    d = _lanes_dispatcher(aws, client, "lanes-order", full_window_rate=0.001)
    waiting = client.read_deployment_by_name("lanes-order/lanes")
    client.create_flow_run_from_deployment(waiting.id, work_queue_name="interactive")
    bucket = settings.storage.uploads_bucket
    for i in range(5):
        upload(clients, bucket, f"cat/{i}.png", png())
    upload(clients, bucket, "shop/edit.png", png())
    deadline = time.monotonic() + 30
    while d.stats.objects < 6 and time.monotonic() < deadline:
        d.step()
    assert d.stats.objects == 6 and d.stats.runs_created == 0, d.stats
    d.flush()
    queues = [client.read_flow_run(UUID(i)).work_queue_name for i in d.stats.flow_run_ids]
    assert queues == ["interactive", "bulk"], queues
    assert d.stats.batch_sizes == [1, 5]

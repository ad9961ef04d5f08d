"""Completion messages against a real moto server: SNS to a subscribed queue, EventBridge to
a rule's queue, the announced tag, presigned URLs, and a topic that refuses."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from img2img.config.notify import NotifySettings
from img2img.delivery.announce import ANNOUNCED_TAG, Announcer
from img2img.delivery.notify import EVENT_DETAIL_TYPE, EVENT_SOURCE
from img2img.errors import NotifyRefused
from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for
from infra.local.resources import ensure_notifications
from tests.conftest import AwsEnv
from tests.integration.helpers import drain, png, upload


def _announcer(aws: AwsEnv, **notify: object) -> Announcer:
    clients, settings = aws
    return Announcer(
        s3=clients.s3,
        sns=clients.sns,
        events=clients.events,
        settings=NotifySettings.model_validate(notify),
        results_bucket=settings.storage.results_bucket,
    )


def _write_result(aws: AwsEnv, key: str) -> tuple[ObjectRef, dict]:
    """An upload with a result image and metadata document, as a run writes them."""
    clients, settings = aws
    st = settings.storage
    ref = upload(clients, st.uploads_bucket, key, png(), {"request-id": "req-1"})
    keys = keys_for(ref)
    clients.s3.put_object(Bucket=st.results_bucket, Key=keys.result, Body=png((256, 256)))
    doc = {
        "source": ref.uri,
        "request_id": "req-1",
        "result": f"s3://{st.results_bucket}/{keys.result}",
        "width": 256,
        "height": 256,
        "timings_ms": {"generate": 5.0, "total": 9.0},
        "flow_run_id": None,
        "finished_at": "2026-11-29T10:00:00+00:00",
    }
    clients.s3.put_object(Bucket=st.results_bucket, Key=keys.result_meta, Body=json.dumps(doc))
    return ref, doc


def test_one_message_per_outcome_and_none_once_tagged(aws: AwsEnv) -> None:
    clients, settings = aws
    topic, queue = ensure_notifications(clients)
    announcer = _announcer(aws, topic_arn=topic)
    ref, doc = _write_result(aws, "a/cat.png")

    assert announcer.announce_once(ref, ("result", doc))
    # A re-run that finds the outcome, or a second batch, sends nothing more.
    assert not announcer.announce_once(ref)
    assert not announcer.announce_once(ref)

    messages = drain(clients.sqs, queue)
    assert len(messages) == 1
    message = messages[0]
    assert message["outcome"] == "result" and message["request_id"] == "req-1"
    assert message["dedup_id"] == keys_for(ref).result_meta
    assert message["result"]["uri"].endswith(keys_for(ref).result)
    tags = clients.s3.get_object_tagging(
        Bucket=settings.storage.results_bucket, Key=keys_for(ref).result_meta
    )["TagSet"]
    assert [t["Key"] for t in tags] == [ANNOUNCED_TAG]


def test_an_outcome_left_unannounced_is_announced_once_by_whoever_finds_it(aws: AwsEnv) -> None:
    clients, _ = aws
    topic, queue = ensure_notifications(clients)
    announcer = _announcer(aws, topic_arn=topic, writer_grace_s=2)
    before = time.time()
    ref, _ = _write_result(aws, "b/dog.png")  # its writer died before announcing

    assert announcer.announce_once(ref)
    # Not before the writer's grace was over: 2 s after the write (S3 keeps whole seconds).
    assert time.time() >= before + 2 - 1
    assert not announcer.announce_once(ref)

    messages = drain(clients.sqs, queue)
    assert [m["upload"]["key"] for m in messages] == ["b/dog.png"]
    assert messages[0]["timings_ms"] == {"generate": 5.0, "total": 9.0}


def test_an_outcome_its_writer_is_announcing_is_left_to_it(aws: AwsEnv) -> None:
    """Two runs hold the same upload: the one that wrote the outcome announces it; the other
    finds it untagged, waits for the writer's tag, and sends nothing."""
    import threading

    from img2img.aws.storage import put_tags

    clients, settings = aws
    topic, queue = ensure_notifications(clients)
    ref, _ = _write_result(aws, "b/cat.png")
    key = keys_for(ref).result_meta
    writer = threading.Timer(
        1.0, put_tags, (clients.s3, settings.storage.results_bucket, key, {ANNOUNCED_TAG: "m-1"})
    )
    writer.start()
    try:
        assert not _announcer(aws, topic_arn=topic, writer_grace_s=20).announce_once(ref)
    finally:
        writer.join()
    assert drain(clients.sqs, queue) == []


def test_eventbridge_bus_gets_the_same_message(aws: AwsEnv) -> None:
    clients, _ = aws
    bus = "img2img-outcomes"
    clients.events.create_event_bus(Name=bus)
    queue = clients.sqs.create_queue(QueueName="rule-target")["QueueUrl"]
    arn = clients.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    clients.events.put_rule(
        Name="results-only",
        EventBusName=bus,
        EventPattern=json.dumps({"source": [EVENT_SOURCE], "detail": {"outcome": ["result"]}}),
    )
    clients.events.put_targets(
        Rule="results-only", EventBusName=bus, Targets=[{"Id": "app", "Arn": arn}]
    )
    ref, doc = _write_result(aws, "c/bird.png")

    assert _announcer(aws, event_bus=bus).announce_once(ref, ("result", doc))

    events = drain(clients.sqs, queue)
    assert len(events) == 1
    assert events[0]["detail-type"] == EVENT_DETAIL_TYPE
    assert events[0]["detail"]["request_id"] == "req-1"


def test_presigned_url_fetches_the_result(aws: AwsEnv) -> None:
    clients, settings = aws
    topic, queue = ensure_notifications(clients)
    ref, doc = _write_result(aws, "d/fox.png")

    _announcer(aws, topic_arn=topic, presign_s=600).announce_once(ref, ("result", doc))

    result = drain(clients.sqs, queue)[0]["result"]
    with urllib.request.urlopen(result["presigned_url"], timeout=10) as response:
        body = response.read()
    stored = clients.s3.get_object(
        Bucket=settings.storage.results_bucket, Key=keys_for(ref).result
    )["Body"].read()
    assert body == stored
    assert result["presigned_expires_at"] > doc["finished_at"]


def test_a_missing_topic_is_a_clear_refusal_and_leaves_no_tag(aws: AwsEnv) -> None:
    clients, settings = aws
    missing = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    ref, doc = _write_result(aws, "e/owl.png")

    with pytest.raises(NotifyRefused, match="no-such-topic"):
        _announcer(aws, topic_arn=missing).announce_once(ref, ("result", doc))

    tags = clients.s3.get_object_tagging(
        Bucket=settings.storage.results_bucket, Key=keys_for(ref).result_meta
    )["TagSet"]
    assert tags == []


def test_nothing_is_sent_when_no_topic_or_bus_is_set(aws: AwsEnv) -> None:
    clients, _ = aws
    _, queue = ensure_notifications(clients)
    ref, doc = _write_result(aws, "f/elk.png")
    announcer = _announcer(aws)

    assert not announcer.enabled
    assert not announcer.announce_once(ref, ("result", doc))
    assert drain(clients.sqs, queue, quiet_s=0.5) == []


def test_the_announcer_is_built_from_the_settings_it_serves(aws: AwsEnv) -> None:
    from img2img.config.settings import Settings

    clients, settings = aws
    configured = Settings.model_validate(
        {**settings.model_dump(), "notify": {"topic_arn": "arn:aws:sns:us-east-1:1:t"}}
    )
    announcer = Announcer.for_clients(clients, configured)
    assert announcer.enabled and announcer.settings.topic_arn == "arn:aws:sns:us-east-1:1:t"
    assert announcer.results_bucket == settings.storage.results_bucket
    assert (announcer.s3, announcer.sns, announcer.events) == (
        clients.s3,
        clients.sns,
        clients.events,
    )
    assert not Announcer.for_clients(clients, settings).enabled  # no topic, no bus


def test_a_presigned_url_goes_only_with_a_result_and_only_when_asked(aws: AwsEnv) -> None:
    clients, _ = aws
    topic, queue = ensure_notifications(clients)
    ref, doc = _write_result(aws, "d/owl.png")
    one_second = _announcer(aws, topic_arn=topic, presign_s=1)
    one_second.announce_once(ref, ("result", doc))
    assert drain(clients.sqs, queue)[0]["result"]["presigned_url"].startswith("http")
    _announcer(aws, topic_arn=topic, presign_s=0).announce_once(ref, ("result", doc))
    assert "presigned_url" not in drain(clients.sqs, queue)[0]["result"]
    failure = {"stage": "copy", "reason": "gone", "retryable": False}
    clients.s3.put_object(
        Bucket=aws.settings.storage.results_bucket, Key=keys_for(ref).failure, Body=b"{}"
    )
    one_second.announce_once(ref, ("failure", failure))
    message = drain(clients.sqs, queue)[0]
    assert message["result"] is None and message["failure"]["record_uri"].startswith("s3://")


def test_a_bus_alone_tags_the_outcome_with_its_event_id_and_a_missing_bus_refuses(
    aws: AwsEnv,
) -> None:
    clients, settings = aws
    clients.events.create_event_bus(Name="only-bus")
    ref, doc = _write_result(aws, "g/yak.png")
    assert _announcer(aws, event_bus="only-bus").announce_once(ref, ("result", doc))
    tags = clients.s3.get_object_tagging(
        Bucket=settings.storage.results_bucket, Key=keys_for(ref).result_meta
    )["TagSet"]
    (tag,) = tags
    assert tag["Key"] == ANNOUNCED_TAG and tag["Value"] not in ("", "sent")

    other, other_doc = _write_result(aws, "g/emu.png")
    with pytest.raises(NotifyRefused) as info:
        _announcer(aws, event_bus="no-such-bus").announce_once(other, ("result", other_doc))
    assert str(info.value).startswith("EventBridge bus no-such-bus")


def test_a_fifo_topic_gets_the_ids_it_requires(aws: AwsEnv) -> None:
    """A `.fifo` topic refuses a message without a group id: the announcer sends the
    de-duplication and group ids (`notify.fifo_ids`) to such a topic, and only to it."""
    clients, _ = aws
    topic = clients.sns.create_topic(
        Name="outcomes.fifo", Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "false"}
    )["TopicArn"]
    ref, doc = _write_result(aws, "h/cat.png")
    assert _announcer(aws, topic_arn=topic).announce_once(ref, ("result", doc))


def _app_filter(bucket: str, prefix: str) -> dict:
    """The example app subscription's filter policy, as notify.yaml builds it."""
    from tests.integration.test_aws_templates import load_template

    sub = load_template("notify.yaml")["Resources"]["AppSubscription"]["Properties"]
    assert sub["FilterPolicyScope"] == "MessageBody"
    condition, with_prefix, without = sub["FilterPolicy"]["Fn::If"]
    assert condition == "WithKeyPrefix"
    values = {"AppUploadBucket": bucket, "AppKeyPrefix": prefix}

    def resolve(node: object) -> object:
        if isinstance(node, dict):
            if set(node) == {"Ref"}:
                return values[node["Ref"]]
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(with_prefix if prefix else without)  # type: ignore[return-value]


def test_each_apps_subscription_gets_its_own_uploads_only(aws: AwsEnv) -> None:
    """The topic carries every app's outcomes; a subscription made as notify.yaml makes it
    gets those of its bucket (and prefix) only: no other app's keys or request ids."""
    clients, settings = aws
    topic, _ = ensure_notifications(clients)
    queues = {}
    uploads = settings.storage.uploads_bucket
    apps = {"a": (uploads, "a/"), "b": (uploads, "b/"), "all": (uploads, ""), "x": ("xb", "")}
    for app, (bucket, prefix) in apps.items():
        url = clients.sqs.create_queue(QueueName=f"app-{app}")["QueueUrl"]
        arn = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        policy = _app_filter(bucket, prefix)
        clients.sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=arn["Attributes"]["QueueArn"],
            Attributes={
                "RawMessageDelivery": "true",
                "FilterPolicyScope": "MessageBody",
                "FilterPolicy": json.dumps(policy),
            },
        )
        queues[app] = url
    announcer = _announcer(aws, topic_arn=topic)
    for key in ("a/one.png", "b/two.png", "c/three.png"):
        ref, doc = _write_result(aws, key)
        assert announcer.announce_once(ref, ("result", doc))

    got = {
        app: sorted(m["upload"]["key"] for m in drain(clients.sqs, url))
        for app, url in queues.items()
    }
    assert got == {
        "a": ["a/one.png"],
        "b": ["b/two.png"],
        "all": ["a/one.png", "b/two.png", "c/three.png"],
        "x": [],  # an app of another bucket gets none of these
    }

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from img2img.errors import InvalidEvent
from img2img.intake.events import ObjectRef, parse_message
from img2img.intake.idempotency import batch_key as batch_idempotency_key


def s3_record(
    key: str,
    event: str = "ObjectCreated:Put",
    etag: str = "abc123",
    bucket: str = "uploads",
    **obj: object,
) -> dict:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-23T10:00:00.123Z",
        "eventName": event,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {
                "key": key,
                "size": 1234,
                "eTag": etag,
                "sequencer": "0055AED6DCD90281E5",
                **obj,
            },
        },
    }


def test_direct_notification_gives_one_object_with_its_fields() -> None:
    parsed = parse_message(json.dumps({"Records": [s3_record("photos/cat.png", versionId="v1")]}))
    assert parsed.skipped == []
    [ref] = parsed.objects
    assert (ref.bucket, ref.key, ref.etag, ref.version_id, ref.size) == (
        "uploads",
        "photos/cat.png",
        "abc123",
        "v1",
        1234,
    )
    assert ref.event_time == datetime(2026, 11, 23, 10, 0, 0, 123000, tzinfo=UTC)
    assert ref.identity == "uploads/photos/cat.png@v1"


def test_keys_are_url_decoded_as_s3_encodes_them() -> None:
    body = {"Records": [s3_record("my+photos%2Fsummer+%282026%29%2Fcaf%C3%A9.png")]}
    [ref] = parse_message(json.dumps(body)).objects
    assert ref.key == "my photos/summer (2026)/café.png"


def test_plus_sign_in_a_key_arrives_as_percent_2b() -> None:
    [ref] = parse_message(json.dumps({"Records": [s3_record("a%2Bb.png")]})).objects
    assert ref.key == "a+b.png"


def test_sns_wrapped_notification_is_unwrapped() -> None:
    inner = json.dumps({"Records": [s3_record("x/y.jpg")]})
    body = {
        "Type": "Notification",
        "MessageId": "m1",
        "TopicArn": "arn:aws:sns:x",
        "Message": inner,
    }
    [ref] = parse_message(json.dumps(body)).objects
    assert ref.key == "x/y.jpg"


def test_eventbridge_object_created_is_parsed_without_decoding() -> None:
    body = {
        "version": "0",
        "id": "e1",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "time": "2026-11-23T10:00:00Z",
        "region": "us-east-1",
        "detail": {
            "version": "0",
            "bucket": {"name": "uploads"},
            "object": {"key": "a b+c.png", "size": 5, "etag": "e1", "sequencer": "1"},
            "reason": "PutObject",
        },
    }
    [ref] = parse_message(json.dumps(body)).objects
    assert (ref.key, ref.etag, ref.size) == ("a b+c.png", "e1", 5)


def test_test_event_and_other_event_types_are_skipped_not_errors() -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "uploads"}
    parsed = parse_message(json.dumps(test_event))
    assert parsed.objects == [] and "TestEvent" in parsed.skipped[0]
    removed = parse_message(json.dumps({"Records": [s3_record("k", "ObjectRemoved:Delete")]}))
    assert removed.objects == [] and "ObjectRemoved:Delete" in removed.skipped[0]
    deleted = {"detail-type": "Object Deleted", "source": "aws.s3", "detail": {}}
    assert parse_message(json.dumps(deleted)).objects == []


def test_copy_events_count_as_creation() -> None:
    parsed = parse_message(json.dumps({"Records": [s3_record("k.png", "ObjectCreated:Copy")]}))
    assert [o.key for o in parsed.objects] == ["k.png"]


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"hello": 1}', "not an S3 notification"),
        ('{"Records": {}}', "'Records' must be a list"),
        (
            json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]}),
            "Records[0].s3",
        ),
        (json.dumps({"Records": [s3_record("")]}), "Records[0].s3.object.key"),
        (json.dumps({"Records": [{**s3_record("k"), "eventTime": "yesterday"}]}), "ISO-8601"),
        (json.dumps({"Records": [s3_record("k", size=-1)]}), "size"),
        (json.dumps({"Type": "Notification", "Message": 5}), "'Message' must be a string"),
    ],
)
def test_malformed_messages_raise_an_error_naming_the_problem(body: str, names: str) -> None:
    with pytest.raises(InvalidEvent, match=None) as info:
        parse_message(body)
    assert names in str(info.value)


def test_idempotency_key_depends_on_the_set_of_uploads_only() -> None:
    a = ObjectRef(bucket="b", key="1.png", etag="e1")
    b = ObjectRef(bucket="b", key="2.png", etag="e2")
    assert batch_idempotency_key([a, b]) == batch_idempotency_key([b, a])
    assert batch_idempotency_key([a]) != batch_idempotency_key([a, b])
    reuploaded = ObjectRef(bucket="b", key="1.png", etag="e9")
    assert batch_idempotency_key([a]) != batch_idempotency_key([reuploaded])


def test_run_idempotency_keys_never_change_between_releases() -> None:
    """Prefect keeps these keys with the runs: a dispatcher, reconciler or recovery service
    of the next release must make the same key for the same uploads, or a message
    redelivered across an upgrade would become a second run. Pinned: the uploads'
    identities sorted, one per line, SHA-256, first 40 hex digits."""
    from img2img.intake.idempotency import batch_key, reconcile_key, split_key

    pair = [ObjectRef(bucket="b", key="k2", etag="e"), ObjectRef(bucket="b", key="k1", etag="e")]
    assert batch_key(pair) == "img2img-batch-dd35df3aff07458cef9cc5366c91fe84647410ea"
    assert reconcile_key(pair) == "reconcile-img2img-batch-dd35df3aff07458cef9cc5366c91fe84647410ea"
    assert split_key("run-1", 0) == "run-1:split:0" != split_key("run-1", 1)


def test_an_event_size_over_the_limit_is_named_with_the_limit() -> None:
    from img2img.intake.events import oversize_reason

    assert oversize_reason(None, 10) is None  # no size in the event: the read checks it
    assert oversize_reason(10, 10) is None
    assert oversize_reason(11, 10) == "upload is 11 bytes; the limit is 10 (limits.max_bytes)"

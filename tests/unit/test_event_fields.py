"""Every field of an S3 notification, in each envelope, and every refusal's exact wording:
the parser's contract, field by field (what the dispatcher, the run parameters and the
outcome keys are built from)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from img2img.errors import InvalidEvent
from img2img.intake.events import ObjectRef, parse_document, parse_message

WHEN = datetime(2026, 11, 29, 10, 0, 1, tzinfo=UTC)


def direct(obj: dict[str, Any], **record: Any) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "eventTime": "2026-11-29T10:00:01.000Z",
                "s3": {"bucket": {"name": "uploads"}, "object": obj},
                **record,
            }
        ]
    }


def bridge(obj: dict[str, Any], **doc: Any) -> dict[str, Any]:
    return {
        "detail-type": "Object Created",
        "source": "aws.s3",
        "time": "2026-11-29T10:00:01Z",
        "detail": {"bucket": {"name": "uploads"}, "object": obj},
        **doc,
    }


FULL_DIRECT = {"key": "a/b.png", "eTag": '"e1"', "versionId": "v1", "size": 10, "sequencer": "s1"}
FULL_BRIDGE = {"key": "a/b.png", "etag": "e1", "version-id": "v1", "size": 10, "sequencer": "s1"}
EXPECTED = ObjectRef(
    bucket="uploads",
    key="a/b.png",
    etag="e1",
    version_id="v1",
    size=10,
    sequencer="s1",
    event_time=WHEN,
)


@pytest.mark.parametrize("doc", [direct(FULL_DIRECT), bridge(FULL_BRIDGE)], ids=["s3", "bridge"])
def test_every_field_is_carried_from_either_envelope(doc: dict[str, Any]) -> None:
    assert parse_document(doc).objects == [EXPECTED]
    assert parse_message(json.dumps(doc)).objects == [EXPECTED]


def test_a_direct_record_may_spell_its_etag_in_lower_case() -> None:
    assert parse_document(direct({"key": "k", "etag": "e2"})).objects[0].etag == "e2"


@pytest.mark.parametrize("missing", ["null", "", None])
def test_no_version_id_and_no_sequencer_are_none(missing: str | None) -> None:
    (ref,) = parse_document(direct({"key": "k", "versionId": missing, "sequencer": ""})).objects
    assert ref.version_id is None and ref.sequencer is None and ref.etag == ""
    assert ref.tag == "unversioned"


def test_a_zero_byte_upload_is_an_object_and_a_negative_size_is_refused() -> None:
    assert parse_document(direct({"key": "k", "size": 0})).objects[0].size == 0
    with pytest.raises(InvalidEvent) as info:
        parse_document(direct({"key": "k", "size": -1}))
    assert str(info.value) == "Records[0] object size must be a non-negative integer, got -1"
    with pytest.raises(InvalidEvent, match=r"^detail object size .* got '7'$"):
        parse_document(bridge({"key": "k", "size": "7"}))


def test_event_times_are_utc_whatever_their_spelling() -> None:
    for spelled in ("2026-11-29T10:00:01Z", "2026-11-29T10:00:01+00:00", "2026-11-29T10:00:01"):
        (ref,) = parse_document(bridge({"key": "k"}, time=spelled)).objects
        assert ref.event_time == WHEN and ref.event_time.tzinfo is not None
    shifted = parse_document(bridge({"key": "k"}, time="2026-11-29T12:00:01+02:00"))
    assert shifted.objects[0].event_time == WHEN
    assert parse_document(bridge({"key": "k"}, time="")).objects[0].event_time is None


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            bridge({"key": "k"}, time=5),
            "detail event time must be an ISO-8601 string, got 5",
        ),
        (
            direct({"key": "k"}, eventTime="yesterday"),
            "Records[0] event time 'yesterday' is not ISO-8601",
        ),
        ({"Records": "x"}, "'Records' must be a list, got str"),
        ({"Records": [7]}, "Records[0] must be an object, got int"),
        ([1], "message body must be a JSON object, got list"),
        (
            {"Type": "Notification", "Message": {"Records": []}},
            "SNS envelope field 'Message' must be a string",
        ),
        (
            {"b": 1, "a": 2},
            "message is not an S3 notification: expected 'Records', an SNS 'Notification' or an "
            "EventBridge event, got keys ['a', 'b']",
        ),
        (
            direct({"key": ""}),
            "Records[0].s3.object.key must be a non-empty str, got ''",
        ),
        (
            {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {}}]},
            "Records[0].s3.bucket must be a non-empty dict, got None",
        ),
        (
            {
                "Records": [
                    {
                        "eventSource": "aws:s3",
                        "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": {"name": ""}, "object": {"key": "k"}},
                    }
                ]
            },
            "Records[0].s3.bucket.name must be a non-empty str, got ''",
        ),
        (
            {
                "Records": [
                    {
                        "eventSource": "aws:s3",
                        "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": {"name": "b"}},
                    }
                ]
            },
            "Records[0].s3.object must be a non-empty dict, got None",
        ),
        ({"detail-type": "Object Created", "source": "aws.s3", "detail": 3}, None),
        (
            {"detail-type": "Object Created", "source": "aws.s3", "detail": {}},
            "detail.bucket must be a non-empty dict, got None",
        ),
        (
            {
                "detail-type": "Object Created",
                "source": "aws.s3",
                "detail": {"bucket": {"name": 1}},
            },
            "detail.bucket.name must be a non-empty str, got 1",
        ),
        (
            {
                "detail-type": "Object Created",
                "source": "aws.s3",
                "detail": {"bucket": {"name": "b"}},
            },
            "detail.object must be a non-empty dict, got None",
        ),
        (bridge({"key": 5}), "detail.object.key must be a non-empty str, got 5"),
    ],
)
def test_each_refusal_says_where_and_what(doc: Any, message: str | None) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_document(doc)
    if message is None:  # the envelope's own field
        assert str(info.value) == "event.detail must be a non-empty dict, got 3"
    else:
        assert str(info.value) == message


def test_what_is_skipped_says_why_and_the_rest_of_the_message_is_still_read() -> None:
    test_event = parse_document({"Event": "s3:TestEvent", "Bucket": "uploads"})
    assert test_event.skipped == ["s3:TestEvent for bucket 'uploads'"] and not test_event.objects
    assert parse_document(bridge({"key": "k"}, source="aws.ec2")).skipped == [
        "EventBridge source 'aws.ec2' is not aws.s3"
    ]
    assert parse_document(bridge({"key": "k"}, **{"detail-type": "Object Deleted"})).skipped == [
        "EventBridge detail-type 'Object Deleted' is not Object Created"
    ]
    mixed = direct({"key": "first.png"})
    mixed["Records"] = [
        {"eventSource": "aws:sqs", "eventName": "x"},
        {"eventSource": "aws:s3"},
        *mixed["Records"],
    ]
    parsed = parse_document(mixed)
    assert parsed.skipped == [
        "Records[0]: eventSource 'aws:sqs' is not aws:s3",
        "Records[1]: eventName '' is not an object creation",
    ]
    assert [o.key for o in parsed.objects] == ["first.png"]


def test_a_message_with_only_detail_or_only_detail_type_is_no_eventbridge_event() -> None:
    halves: list[dict[str, Any]] = [{"detail": {}}, {"detail-type": "Object Created"}]
    for doc in halves:
        with pytest.raises(InvalidEvent, match="is not an S3 notification"):
            parse_document(doc)
    with pytest.raises(InvalidEvent, match="is not an S3 notification"):
        parse_document({"Message": "{}"})  # no SNS Type: not an SNS envelope


def test_a_run_parameter_is_json_without_empty_fields() -> None:
    assert EXPECTED.as_parameter() == {
        "bucket": "uploads",
        "key": "a/b.png",
        "etag": "e1",
        "version_id": "v1",
        "size": 10,
        "sequencer": "s1",
        "event_time": "2026-11-29T10:00:01Z",
    }
    assert ObjectRef(bucket="b", key="k").as_parameter() == {"bucket": "b", "key": "k", "etag": ""}
    assert ObjectRef.model_validate(EXPECTED.as_parameter()) == EXPECTED

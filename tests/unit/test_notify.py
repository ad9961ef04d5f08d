"""The completion message: built from the outcome document, whatever wrote it."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from img2img.delivery.announce import _translate
from img2img.delivery.notify import (
    MAX_REASON_CHARS,
    fifo_ids,
    outcome_message,
    request_id_from,
    sns_attributes,
)
from img2img.errors import NotifyRefused, NotifyUnavailable
from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for

REF = ObjectRef(bucket="uploads", key="photos/cat.png", etag="e1", version_id="v1")


def result_doc() -> dict:
    return {
        "source": REF.uri,
        "request_id": "req-42",
        "result": f"s3://results/{keys_for(REF).result}",
        "width": 2048,
        "height": 2048,
        "timings_ms": {"generate": 10.0, "total": 50.0},
        "device_batch": {"generate": 4, "upscale": 2},
        "flow_run_id": "run-1",
        "finished_at": "2026-11-29T10:00:00+00:00",
    }


def test_result_message_names_the_upload_the_result_and_the_caller() -> None:
    message = outcome_message(REF, "results", "result", result_doc())

    assert message["version"] == 2 and message["outcome"] == "result"
    assert message["dedup_id"] == keys_for(REF).result_meta
    assert message["upload"] == {
        "bucket": "uploads",
        "key": "photos/cat.png",
        "version_id": "v1",
        "etag": "e1",
        "uri": "s3://uploads/photos/cat.png",
    }
    assert message["request_id"] == "req-42"
    assert message["result"] == {
        "uri": f"s3://results/{keys_for(REF).result}",
        "width": 2048,
        "height": 2048,
    }
    assert message["failure"] is None
    assert message["timings_ms"] == {"generate": 10.0, "total": 50.0}
    assert message["device_batch"] == {"generate": 4, "upscale": 2}
    assert message["finished_at"] == "2026-11-29T10:00:00+00:00"


def test_presigned_url_and_its_expiry_go_with_the_result() -> None:
    message = outcome_message(
        REF, "results", "result", result_doc(), ("https://signed", "2026-11-29T11:00:00+00:00")
    )
    assert message["result"]["presigned_url"] == "https://signed"
    assert message["result"]["presigned_expires_at"] == "2026-11-29T11:00:00+00:00"


def test_failure_message_carries_stage_reason_retryable_and_record() -> None:
    doc = {
        "stage": "preprocess",
        "reason": "x" * (MAX_REASON_CHARS + 500),
        "retryable": False,
        "timings_ms": {"copy": 3.0},
        "failed_at": "2026-11-29T10:00:00+00:00",
        "request_id": None,
    }
    message = outcome_message(REF, "results", "failure", doc)

    assert message["dedup_id"] == keys_for(REF).failure
    assert message["result"] is None and message["request_id"] is None
    failure = message["failure"]
    assert failure["stage"] == "preprocess" and failure["retryable"] is False
    assert len(failure["reason"]) == MAX_REASON_CHARS
    assert failure["record_uri"] == f"s3://results/{keys_for(REF).failure}"
    assert message["finished_at"] == "2026-11-29T10:00:00+00:00"


def test_request_id_comes_from_the_metadata_key_request_id() -> None:
    assert request_id_from({"request-id": "abc", "prompt": "p"}) == "abc"
    assert request_id_from({"prompt": "p"}) is None
    assert request_id_from({"request-id": ""}) is None
    assert request_id_from(None) is None
    assert request_id_from({"request-id": "app-1/2026-12-07T10:00:00Z@eu+x=1~y."}) is not None
    assert request_id_from({"request-id": "x" * 128}) == "x" * 128


@pytest.mark.parametrize(
    "value",
    ["x" * 129, "a b", "a\nb", "a\u2028b", "a\u202eb", '{"prefix": ""}', "ü", "a*", "a;b"],
)
def test_a_request_id_outside_its_characters_or_length_is_dropped(value: str) -> None:
    """It becomes a routing attribute and a log field: no spaces, breaks, bidi marks,
    JSON or wildcards, at most 128 characters."""
    assert request_id_from({"request-id": value}) is None


def test_sns_attributes_let_subscribers_filter() -> None:
    ok = sns_attributes(outcome_message(REF, "results", "result", result_doc()))
    assert ok["outcome"]["StringValue"] == "result"
    assert ok["request_id"]["StringValue"] == "req-42" and "retryable" not in ok
    failed = sns_attributes(
        outcome_message(REF, "results", "failure", {"stage": "copy", "retryable": True})
    )
    assert failed["retryable"]["StringValue"] == "true" and "request_id" not in failed


def test_fifo_ids_fit_sns_limits_and_group_versions_of_one_key() -> None:
    first = outcome_message(REF, "results", "result", result_doc())
    other_version = outcome_message(
        REF.model_copy(update={"version_id": "v2"}), "results", "result", result_doc()
    )
    other_key = outcome_message(
        REF.model_copy(update={"key": "photos/dog.png"}), "results", "result", result_doc()
    )
    dedup, group = fifo_ids(first)
    assert len(dedup) <= 128 and len(group) <= 128
    assert fifo_ids(first) == (dedup, group)
    assert fifo_ids(other_version)[1] == group and fifo_ids(other_version)[0] != dedup
    assert fifo_ids(other_key)[1] != group


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "Publish")


def test_throttling_is_retried_and_a_refusal_is_not() -> None:
    for code in ("Throttled", "KMSThrottling", "InternalError", "ServiceUnavailable"):
        assert isinstance(_translate(_client_error(code), "SNS topic t"), NotifyUnavailable)
    for code in ("NotFound", "AuthorizationError", "InvalidParameter", "KMSDisabled"):
        refused = _translate(_client_error(code), "SNS topic t")
        assert isinstance(refused, NotifyRefused) and code in str(refused)
    down = _translate(EndpointConnectionError(endpoint_url="http://x"), "SNS topic t")
    assert isinstance(down, NotifyUnavailable)


def test_a_consumer_finds_the_upload_a_message_is_about() -> None:
    from img2img.delivery.notify import upload_of

    message = outcome_message(REF, "results", "result", result_doc())
    assert upload_of(message) == REF
    unversioned = ObjectRef(bucket="uploads", key="k.png", etag="e2")
    assert upload_of(outcome_message(unversioned, "results", "failure", {})) == unversioned
    assert upload_of({}) == ObjectRef(bucket="", key="", etag="")


def test_each_translated_error_says_where_what_and_why() -> None:
    assert str(_translate(_client_error("Throttled"), "SNS topic t")) == "SNS topic t: Throttled"
    assert str(_translate(_client_error("NotFound"), "SNS topic t")) == (
        "SNS topic t refused the message: NotFound m"
    )
    bare = ClientError({"Error": {"Code": "NotFound"}}, "Publish")
    assert str(_translate(bare, "SNS topic t")) == "SNS topic t refused the message: NotFound"
    no_error = ClientError({}, "Publish")
    assert str(_translate(no_error, "bus b")) == "bus b refused the message:"
    down = _translate(EndpointConnectionError(endpoint_url="http://x"), "bus b")
    assert str(down) == 'bus b: Could not connect to the endpoint URL: "http://x"'
    plain = ValueError("not botocore's")
    assert _translate(plain, "bus b") is plain


def test_every_attribute_a_filter_policy_can_match() -> None:
    ok = sns_attributes(outcome_message(REF, "results", "result", result_doc()))
    assert ok == {
        "outcome": {"DataType": "String", "StringValue": "result"},
        "upload_bucket": {"DataType": "String", "StringValue": "uploads"},
        "request_id": {"DataType": "String", "StringValue": "req-42"},
    }
    final = sns_attributes(outcome_message(REF, "results", "failure", {"retryable": False}))
    assert final["retryable"] == {"DataType": "String", "StringValue": "false"}

"""S3 answers sorted onto the error tree: what is retried, what is final, what means "not
there" and what means "already there" (botocore's own exception objects, as a client raises
them)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError

from img2img.aws.clients import is_missing_object, is_precondition_failed, translate_error
from img2img.errors import ObjectMissing, StorageUnavailable, is_retryable


def answer(code: str, operation: str = "GetObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"said {code}"}}, operation)


@pytest.mark.parametrize(
    "code",
    [
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
        # A concurrent conditional write: not yet known which lands, so not "already there".
        "ConditionalRequestConflict",
    ],
)
def test_busy_and_timing_answers_are_retried(code: str) -> None:
    err = translate_error(answer(code), "s3://b/k")
    assert isinstance(err, StorageUnavailable) and is_retryable(err)
    assert str(err) == f"s3://b/k: {code}"
    assert not is_precondition_failed(answer(code, "PutObject"))


def test_connection_faults_are_retried() -> None:
    for exc in (
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
    ):
        err = translate_error(exc, "s3://b/k")
        assert isinstance(err, StorageUnavailable) and is_retryable(err)


@pytest.mark.parametrize("code", ["NoSuchKey", "404", "NotFound", "NoSuchBucket"])
def test_a_missing_object_is_final_and_named(code: str) -> None:
    err = translate_error(answer(code), "s3://b/k")
    assert isinstance(err, ObjectMissing) and not is_retryable(err)
    assert str(err) == f"s3://b/k does not exist ({code})"


def test_only_a_missing_key_is_not_there_a_missing_bucket_is_a_fault() -> None:
    assert is_missing_object(answer("NoSuchKey")) and is_missing_object(answer("404"))
    assert not is_missing_object(answer("NoSuchBucket"))
    assert not is_missing_object(answer("AccessDenied"))
    assert not is_missing_object(ValueError("NoSuchKey"))


def test_refusals_stay_as_they_are_and_are_not_retried() -> None:
    for code in ("AccessDenied", "InvalidArgument", "KMS.DisabledException"):
        original = answer(code)
        err = translate_error(original, "s3://b/k")
        assert err is original and not is_retryable(err)


def test_already_there_is_only_the_precondition_answer() -> None:
    assert is_precondition_failed(answer("PreconditionFailed", "PutObject"))
    assert is_precondition_failed(answer("412", "PutObject"))
    assert not is_precondition_failed(answer("AccessDenied", "PutObject"))
    assert not is_precondition_failed(RuntimeError("PreconditionFailed"))

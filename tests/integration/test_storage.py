"""The pipeline's S3 calls against a real moto server: what each sends and returns, and that
every error names the object it was about."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from img2img.aws import storage
from img2img.errors import ObjectMissing, StorageUnavailable
from img2img.intake.events import ObjectRef
from tests.conftest import AwsEnv
from tests.integration.helpers import unreachable_s3


def test_documents_and_images_are_written_with_their_type_and_read_back(aws: AwsEnv) -> None:
    clients, settings = aws
    bucket = settings.storage.results_bucket
    assert storage.put_json_once(clients.s3, bucket, "d/one.json", {"b": 1, "a": {"c": 2}})
    got = clients.s3.get_object(Bucket=bucket, Key="d/one.json")
    assert got["ContentType"] == "application/json"
    # Sorted and indented: a person reading the record in the console reads it easily.
    assert got["Body"].read() == json.dumps({"a": {"c": 2}, "b": 1}, indent=2).encode()
    # Values JSON has no type for are written as their text, not refused.
    assert storage.put_json_once(
        clients.s3, bucket, "d/two.json", {"at": ObjectRef(bucket="b", key="k")}
    )
    assert (
        "bucket='b'"
        in clients.s3.get_object(Bucket=bucket, Key="d/two.json")["Body"].read().decode()
    )
    storage.put(clients.s3, bucket, "d/img.png", b"png", "image/png")
    assert clients.s3.head_object(Bucket=bucket, Key="d/img.png")["ContentType"] == "image/png"
    assert storage.put_once(clients.s3, bucket, "d/once.png", b"1", "image/png")
    assert clients.s3.head_object(Bucket=bucket, Key="d/once.png")["ContentType"] == "image/png"
    # The second create-once write of a key is refused, and the first stays.
    assert not storage.put_once(clients.s3, bucket, "d/once.png", b"2", "image/png")
    assert storage.download_if_exists(clients.s3, bucket, "d/once.png", 10) == b"1"
    assert storage.download_if_exists(clients.s3, bucket, "d/none.png", 10) is None
    body, written = storage.download_with_time(clients.s3, bucket, "d/once.png", 10) or (b"", None)
    assert body == b"1" and written is not None and written.tzinfo is not None


def test_a_read_over_its_limit_is_refused_by_its_length_before_the_body(aws: AwsEnv) -> None:
    from img2img.errors import ObjectTooLarge, PermanentError

    clients, settings = aws
    bucket = settings.storage.results_bucket
    storage.put(clients.s3, bucket, "d/big.png", b"x" * 5000, "image/png")
    with pytest.raises(ObjectTooLarge, match="is 5000 bytes; the limit is 4999") as err:
        storage.download(clients.s3, bucket, "d/big.png", 4999)
    assert isinstance(err.value, PermanentError)  # not retried
    with pytest.raises(ObjectTooLarge, match="5000 bytes; the limit is 10"):
        storage.download_with_time(clients.s3, bucket, "d/big.png", 10)
    assert storage.download(clients.s3, bucket, "d/big.png", 5000).body == b"x" * 5000

    class Lying:  # a stream longer than its ContentLength said
        def __init__(self) -> None:
            self.closed = False

        def read(self, n: int) -> bytes:
            return b"y" * n

        def close(self) -> None:
            self.closed = True

    body = Lying()
    with pytest.raises(ObjectTooLarge, match="over 100 bytes"):
        storage.read_body({"ContentLength": 3, "Body": body}, 100, "s3://b/k")
    assert body.closed


def test_an_uploads_metadata_is_read_from_the_version_the_event_named(aws: AwsEnv) -> None:
    clients, settings = aws
    bucket = settings.storage.uploads_bucket
    clients.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = clients.s3.put_object(
        Bucket=bucket, Key="u/a.png", Body=b"1", Metadata={"prompt": "one"}
    )
    clients.s3.put_object(Bucket=bucket, Key="u/a.png", Body=b"2", Metadata={"prompt": "two"})
    old = ObjectRef(bucket=bucket, key="u/a.png", version_id=first["VersionId"])
    assert storage.upload_metadata(clients.s3, old) == {"prompt": "one"}
    assert storage.upload_metadata(clients.s3, ObjectRef(bucket=bucket, key="u/a.png")) == {
        "prompt": "two"
    }
    assert storage.upload_metadata(clients.s3, ObjectRef(bucket=bucket, key="u/gone.png")) is None
    # The copy into the stage bucket takes that version too, metadata and all.
    stage = settings.storage.stage_bucket
    storage.copy_to_stage(clients.s3, old, stage, "input/a.png")
    copied = storage.download(clients.s3, stage, "input/a.png", 1000)
    assert copied.body == b"1" and copied.metadata == {"prompt": "one"}


def test_tags_are_read_as_a_mapping_and_a_missing_object_has_none(aws: AwsEnv) -> None:
    clients, settings = aws
    bucket = settings.storage.results_bucket
    storage.put(clients.s3, bucket, "t/doc.json", b"{}", "application/json")
    assert storage.get_tags(clients.s3, bucket, "t/doc.json") == {}
    storage.put_tags(clients.s3, bucket, "t/doc.json", {"img2img-announced": "m-1", "x": "y"})
    assert storage.get_tags(clients.s3, bucket, "t/doc.json") == {
        "img2img-announced": "m-1",
        "x": "y",
    }
    assert storage.get_tags(clients.s3, bucket, "t/none.json") is None
    assert storage.exists(clients.s3, bucket, "t/doc.json")
    assert not storage.exists(clients.s3, bucket, "t/none.json")


def test_every_call_names_the_object_when_s3_cannot_be_reached(aws: AwsEnv) -> None:
    s3 = unreachable_s3()
    ref = ObjectRef(bucket="up", key="k.png", etag="e", version_id="v")
    calls: dict[str, list[Callable[[], object]]] = {
        "s3://up/k.png": [
            lambda: storage.copy_to_stage(s3, ref, "stage", "input/k"),
            lambda: storage.upload_metadata(s3, ref),
        ],
        "s3://b/k": [
            lambda: storage.download(s3, "b", "k", 1000),
            lambda: storage.download_with_time(s3, "b", "k", 1000),
            lambda: storage.exists(s3, "b", "k"),
            lambda: storage.put(s3, "b", "k", b"", "image/png"),
            lambda: storage.put_once(s3, "b", "k", b"", "image/png"),
            lambda: storage.get_tags(s3, "b", "k"),
            lambda: storage.put_tags(s3, "b", "k", {"a": "b"}),
        ],
    }
    for what, each in calls.items():
        for call in each:
            with pytest.raises(StorageUnavailable) as info:
                call()
            assert str(info.value).startswith(f"{what}: Could not connect"), str(info.value)


def test_a_missing_upload_or_bucket_is_final_and_named(aws: AwsEnv) -> None:
    clients, settings = aws
    gone = ObjectRef(bucket=settings.storage.uploads_bucket, key="u/none.png", etag="e")
    with pytest.raises(ObjectMissing) as info:
        storage.copy_to_stage(clients.s3, gone, settings.storage.stage_bucket, "input/x")
    assert str(info.value).startswith(f"{gone.uri} does not exist")
    with pytest.raises(ObjectMissing) as missing:
        storage.download(clients.s3, "no-such-bucket-here", "k", 1000)
    assert str(missing.value) == "s3://no-such-bucket-here/k does not exist (NoSuchBucket)"


def test_a_copy_keeps_the_uploads_metadata_and_drops_its_tags(aws: AwsEnv) -> None:
    """Directory buckets have no tagging: the copy replaces an upload's tags with none (a
    tagged source copied with S3's default would be refused there), its metadata kept."""
    clients, settings = aws
    bucket, stage = settings.storage.uploads_bucket, settings.storage.stage_bucket
    clients.s3.put_object(
        Bucket=bucket, Key="u/t.png", Body=b"1", Metadata={"prompt": "p"}, Tagging="app=x"
    )
    storage.copy_to_stage(clients.s3, ObjectRef(bucket=bucket, key="u/t.png"), stage, "in/t")
    assert clients.s3.get_object_tagging(Bucket=stage, Key="in/t")["TagSet"] == []
    assert storage.download(clients.s3, stage, "in/t", 1000).metadata == {"prompt": "p"}


def test_a_create_once_write_to_a_bucket_that_is_gone_is_final_and_named(aws: AwsEnv) -> None:
    clients, _ = aws
    with pytest.raises(ObjectMissing) as info:
        storage.put_once(clients.s3, "no-such-bucket-here", "k", b"", "image/png")
    assert str(info.value) == "s3://no-such-bucket-here/k does not exist (NoSuchBucket)"

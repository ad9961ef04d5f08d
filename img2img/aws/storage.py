"""The S3 calls of the pipeline, each translated onto the img2img error tree."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from img2img.aws.clients import is_missing_object, is_precondition_failed, translate_error
from img2img.errors import ObjectTooLarge
from img2img.intake.events import ObjectRef

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CopySourceTypeDef

T = TypeVar("T")

# The largest object of the pipeline's own that it reads back: a result or failure document
# (JSON of a few KiB) or a stage output kept for a retry (a PNG of at most a few tens of
# MiB at the largest upscaled shape). Uploads are held to `limits.max_bytes`.
DOCUMENT_MAX_BYTES = 4 * 1024 * 1024
STAGE_OUTPUT_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Downloaded:
    body: bytes
    metadata: dict[str, str]


def copy_to_stage(s3: S3Client, ref: ObjectRef, stage_bucket: str, key: str) -> None:
    """Server-side copy of an upload into the directory bucket.

    Directory buckets have no object tagging: the default tagging directive (COPY) fails with
    501 on a tagged source, so tags are replaced (with none). User metadata is kept.
    """
    source: CopySourceTypeDef = {"Bucket": ref.bucket, "Key": ref.key}
    if ref.version_id:
        source["VersionId"] = ref.version_id
    extra: dict[str, Any] = {}
    if ref.etag and not ref.version_id:
        # Copy exactly the upload the event named, not a later overwrite of the same key.
        extra["CopySourceIfMatch"] = f'"{ref.etag}"'
    try:
        s3.copy_object(
            Bucket=stage_bucket,
            Key=key,
            CopySource=source,
            MetadataDirective="COPY",
            TaggingDirective="REPLACE",
            **extra,
        )
    except (ClientError, BotoCoreError) as exc:
        raise translate_error(exc, ref.uri) from exc


def download(s3: S3Client, bucket: str, key: str, max_bytes: int) -> Downloaded:
    """The object's bytes and user metadata; ObjectTooLarge, before its body is read, when
    it is over `max_bytes`."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
        body = read_body(response, max_bytes, f"s3://{bucket}/{key}")
        return Downloaded(body=body, metadata=dict(response.get("Metadata", {})))
    except (ClientError, BotoCoreError) as exc:
        raise translate_error(exc, f"s3://{bucket}/{key}") from exc


def download_if_exists(s3: S3Client, bucket: str, key: str, max_bytes: int) -> bytes | None:
    """The object's bytes, or None when the key does not exist."""
    found = download_with_time(s3, bucket, key, max_bytes)
    return None if found is None else found[0]


def download_with_time(
    s3: S3Client, bucket: str, key: str, max_bytes: int
) -> tuple[bytes, datetime] | None:
    """The object's bytes and when it was written, or None when the key does not exist."""

    def get() -> tuple[bytes, datetime]:
        response = s3.get_object(Bucket=bucket, Key=key)
        return read_body(response, max_bytes, f"s3://{bucket}/{key}"), response["LastModified"]

    return _unless_missing(get, bucket, key)


def read_body(response: Any, max_bytes: int, uri: str) -> bytes:
    """A GetObject response's body, its `ContentLength` checked first: an object over
    `max_bytes` is refused (its stream closed unread) instead of being held in memory whole;
    a stream longer than it said is cut at the limit and refused too."""
    length = response.get("ContentLength")
    if length is not None and int(length) > max_bytes:
        response["Body"].close()
        raise ObjectTooLarge(f"{uri} is {int(length)} bytes; the limit is {max_bytes}")
    body: bytes = response["Body"].read(max_bytes + 1)
    if len(body) > max_bytes:
        response["Body"].close()
        raise ObjectTooLarge(f"{uri} is over {max_bytes} bytes, the limit")
    return body


def exists(s3: S3Client, bucket: str, key: str) -> bool:
    return _unless_missing(lambda: s3.head_object(Bucket=bucket, Key=key), bucket, key) is not None


def _unless_missing(call: Callable[[], T], bucket: str, key: str) -> T | None:
    """`call()`, or None when it answers that the key does not exist; any other error is
    translated onto the img2img error tree."""
    try:
        return call()
    except ClientError as exc:
        if is_missing_object(exc):
            return None
        raise translate_error(exc, f"s3://{bucket}/{key}") from exc
    except BotoCoreError as exc:
        raise translate_error(exc, f"s3://{bucket}/{key}") from exc


def put(s3: S3Client, bucket: str, key: str, body: bytes, content_type: str) -> None:
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
    except (ClientError, BotoCoreError) as exc:
        raise translate_error(exc, f"s3://{bucket}/{key}") from exc


def put_once(s3: S3Client, bucket: str, key: str, body: bytes, content_type: str) -> bool:
    """Create `key` only if it does not exist yet (S3 conditional write).

    Returns False when it already existed: another run wrote this outcome first, so there
    is still exactly one.
    """
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*")
        return True
    except ClientError as exc:
        if is_precondition_failed(exc):
            return False
        raise translate_error(exc, f"s3://{bucket}/{key}") from exc
    except BotoCoreError as exc:
        raise translate_error(exc, f"s3://{bucket}/{key}") from exc


def put_json_once(s3: S3Client, bucket: str, key: str, doc: dict[str, Any]) -> bool:
    body = json.dumps(doc, indent=2, sort_keys=True, default=str).encode()
    return put_once(s3, bucket, key, body, "application/json")


def upload_metadata(s3: S3Client, ref: ObjectRef) -> dict[str, str] | None:
    """An upload's user metadata (HEAD, the exact version the event named), or None when
    the upload is gone."""

    def head() -> dict[str, str]:
        extra: dict[str, Any] = {"VersionId": ref.version_id} if ref.version_id else {}
        return dict(s3.head_object(Bucket=ref.bucket, Key=ref.key, **extra).get("Metadata", {}))

    return _unless_missing(head, ref.bucket, ref.key)


def get_tags(s3: S3Client, bucket: str, key: str) -> dict[str, str] | None:
    """The object's tags, or None when the key does not exist."""
    got = _unless_missing(lambda: s3.get_object_tagging(Bucket=bucket, Key=key), bucket, key)
    return None if got is None else {t["Key"]: t["Value"] for t in got["TagSet"]}


def put_tags(s3: S3Client, bucket: str, key: str, tags: dict[str, str]) -> None:
    """Set the object's tags (replacing any it had)."""
    tag_set: list[Any] = [{"Key": k, "Value": v} for k, v in tags.items()]
    try:
        s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": tag_set})
    except (ClientError, BotoCoreError) as exc:
        raise translate_error(exc, f"s3://{bucket}/{key}") from exc

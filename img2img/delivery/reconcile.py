"""The reconciler's S3 side: which uploads have no outcome yet.

It backs the event path: whatever that lost (a dropped notification, a message that was
dead-lettered and is fixed now, a bug) shows up as an upload with neither a result nor a
failure record. Everything is listed by prefix and page (1,000 keys per request), never one
request per object: the uploads under a prefix, then the outcome documents under the
matching `results/<bucket>/<prefix>` and `failed/<bucket>/<prefix>`, compared in memory.

At 10⁸ objects a live listing takes about 10⁵ requests per pass; there, the same comparison
runs on two S3 Inventory reports (daily CSV or Parquet of the uploads bucket and of the
results bucket, with ETag and version id) instead of listing, and only the day's new keys
are listed live. See the runbook in docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from img2img.intake.events import ObjectRef
from img2img.intake.keys import outcome_prefixes, outcome_stem, stem_from_outcome_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class Listed:
    ref: ObjectRef
    last_modified: datetime


def list_uploads(s3: S3Client, bucket: str, prefix: str = "") -> Iterator[Listed]:
    """Every current upload under `prefix`, named as its S3 event would name it (version id
    on a versioned bucket, else ETag). Folder markers (empty keys ending in '/') are left
    out."""
    versioned = s3.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
    if versioned:
        versions = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
        for page in versions:
            for v in page.get("Versions", []):
                if not v.get("IsLatest") or _is_folder(v["Key"], v.get("Size", 0)):
                    continue
                yield Listed(
                    ObjectRef(
                        bucket=bucket,
                        key=v["Key"],
                        etag=v.get("ETag", "").strip('"'),
                        version_id=v.get("VersionId"),
                        size=v.get("Size"),
                    ),
                    v["LastModified"],
                )
        return
    objects = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for listing in objects:
        for o in listing.get("Contents", []):
            if _is_folder(o["Key"], o.get("Size", 0)):
                continue
            yield Listed(
                ObjectRef(
                    bucket=bucket, key=o["Key"], etag=o["ETag"].strip('"'), size=o.get("Size")
                ),
                o["LastModified"],
            )


def _is_folder(key: str, size: int) -> bool:
    return key.endswith("/") and size == 0


def outcome_stems(s3: S3Client, results_bucket: str, bucket: str, prefix: str = "") -> set[str]:
    """Outcome stems (`keys.outcome_stem`) of the uploads under `prefix` that have an
    outcome."""
    found: set[str] = set()
    paginator = s3.get_paginator("list_objects_v2")
    for outcome_prefix in outcome_prefixes(bucket, prefix):
        for page in paginator.paginate(Bucket=results_bucket, Prefix=outcome_prefix):
            for o in page.get("Contents", []):
                stem = stem_from_outcome_key(o["Key"])
                if stem is not None:
                    found.add(stem)
    return found


def without_outcome(
    uploads: Iterable[Listed],
    outcomes: set[str],
    live: set[str],
    now: datetime,
    older_than_s: float,
    newer_than_s: float | None = None,
) -> list[ObjectRef]:
    """Uploads older than `older_than_s` (and, when set, younger than `newer_than_s`) with
    no outcome and no live flow run: the ones the event path lost. `outcomes` and `live`
    hold outcome stems (`keys.outcome_stem`)."""
    cutoff = now - timedelta(seconds=older_than_s)
    floor = now - timedelta(seconds=newer_than_s) if newer_than_s else None
    missing = []
    for item in uploads:
        if item.last_modified > cutoff or (floor is not None and item.last_modified < floor):
            continue
        stem = outcome_stem(item.ref)
        if stem in outcomes or stem in live:
            continue
        missing.append(item.ref)
    return missing

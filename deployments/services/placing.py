"""The dispatcher's placement of uploads in lanes and tenants: each upload's metadata read
(one HEAD; the S3 event carries the key and size, not the metadata), then the pure policy
(`img2img.intake.placement`)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from img2img.aws import storage
from img2img.config.lanes import LaneSettings, TenantSettings
from img2img.intake.events import ObjectRef
from img2img.intake.placement import BadPlacement, place

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("img2img.dispatcher")

HEADS_AT_ONCE = 16


def refused(ref: ObjectRef, reason: str, lanes: LaneSettings, tenants: TenantSettings) -> ObjectRef:
    """`ref` refused for `reason`, in the default lane and tenant (when on): its run records
    the failure, so the upload still ends with one outcome."""
    return ref.model_copy(
        update={
            "lane": lanes.default if lanes.enabled else None,
            "tenant": tenants.default if tenants.enabled else None,
            "refused": reason,
        }
    )


class Placer:
    """Places uploads: lane and tenant from their metadata and the settings' rules."""

    def __init__(self, s3: S3Client, lanes: LaneSettings, tenants: TenantSettings) -> None:
        self.s3 = s3
        self.lanes = lanes
        self.tenants = tenants

    def place_all(self, refs: list[ObjectRef]) -> list[ObjectRef]:
        """Each upload with its lane and tenant set, or (bad input) with the reason it
        cannot run, in the default lane: its run records the failure."""
        if not refs:
            return refs
        with ThreadPoolExecutor(max_workers=min(HEADS_AT_ONCE, len(refs))) as pool:
            return list(pool.map(self.place_one, refs))

    def place_one(self, ref: ObjectRef) -> ObjectRef:
        metadata = self._metadata(ref)
        try:
            placed = place(metadata, ref.bucket, ref.key, self.lanes, self.tenants)
        except BadPlacement as exc:
            log.warning("%s cannot run: %s", ref.uri, exc)
            return refused(ref, str(exc), self.lanes, self.tenants)
        return ref.model_copy(update={"lane": placed.lane, "tenant": placed.tenant})

    def _metadata(self, ref: ObjectRef) -> dict[str, str]:
        """The upload's user metadata (keys without `x-amz-meta-`). An upload that cannot be
        read now is placed by the rules alone: its run reads it again and records why it
        failed if it is gone."""
        try:
            metadata = storage.upload_metadata(self.s3, ref)
        except Exception as exc:  # boto3 has retried transient errors already
            log.warning("could not read %s's metadata (placed by the rules): %s", ref.uri, exc)
            return {}
        return {k.lower(): v for k, v in (metadata or {}).items()}

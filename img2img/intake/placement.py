"""Where an upload goes (pure): its lane and its tenant.

The lane: the object's metadata (`x-amz-meta-lane`), else the longest key-prefix rule that
matches, else a rule for its bucket, else the default lane. The tenant: the metadata
(`x-amz-meta-tenant`), else the key's first path segment, else the default tenant. A name
that is not a lane, or not a valid tenant, is bad input: the upload ends with a failure
record that says so, rather than running in a line nobody asked for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from img2img.config.lanes import TENANT_NAME, LaneSettings, TenantSettings
from img2img.intake.events import ObjectRef

_TENANT = re.compile(TENANT_NAME)


class BadPlacement(ValueError):
    """The upload names a lane or tenant that cannot be used; the message says which."""


@dataclass(frozen=True)
class Placement:
    lane: str | None  # None: lanes off
    tenant: str | None  # None: tenants off
    lane_from: str = ""  # how the lane was chosen: "metadata", "prefix 'x/'", ...


def lane_of(
    metadata: Mapping[str, str], bucket: str, key: str, lanes: LaneSettings
) -> tuple[str, str]:
    """(lane, how it was chosen) of one upload."""
    named = metadata.get(lanes.metadata_key)
    if named is not None:
        lane = named.strip().lower()
        if lane not in {spec.name for spec in lanes.lanes}:
            raise BadPlacement(
                f"x-amz-meta-{lanes.metadata_key} is {named[:40]!r}, not one of the lanes: "
                f"{', '.join(lanes.names())}"
            )
        return lane, "metadata"
    matches = [prefix for prefix in lanes.prefix_rules if key.startswith(prefix)]
    if matches:
        prefix = max(matches, key=len)
        return lanes.prefix_rules[prefix], f"prefix {prefix!r}"
    if bucket in lanes.bucket_rules:
        return lanes.bucket_rules[bucket], f"bucket {bucket!r}"
    return lanes.default, "default"


def tenant_of(metadata: Mapping[str, str], key: str, tenants: TenantSettings) -> str:
    """The tenant of one upload."""
    named = metadata.get(tenants.metadata_key)
    if named is not None:
        if not _TENANT.match(named):
            raise BadPlacement(
                f"x-amz-meta-{tenants.metadata_key} is {named[:70]!r}: a tenant is 1 to 64 "
                "letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return named
    if tenants.from_key and "/" in key:
        segment = key.split("/", 1)[0]
        if _TENANT.match(segment):
            return segment
    return tenants.default


def place(
    metadata: Mapping[str, str],
    bucket: str,
    key: str,
    lanes: LaneSettings,
    tenants: TenantSettings,
) -> Placement:
    """An upload's lane and tenant (each None while its feature is off). Raises BadPlacement."""
    lane, how = lane_of(metadata, bucket, key, lanes) if lanes.enabled else (None, "")
    tenant = tenant_of(metadata, key, tenants) if tenants.enabled else None
    return Placement(lane=lane, tenant=tenant, lane_from=how)


def reads_metadata(lanes: LaneSettings, tenants: TenantSettings) -> bool:
    """Whether the dispatcher must read each upload's metadata (one HEAD an upload): the
    S3 event carries the key and size, not the metadata."""
    return lanes.enabled or tenants.enabled


def queue_of(objects: Sequence[ObjectRef]) -> str | None:
    """The work queue of a run of these uploads: their lane (the dispatcher makes a batch
    of one lane; a hand-off or a split half keeps its run's), or None for the deployment's
    own queue (lanes off)."""
    return next((o.lane for o in objects if o.lane), None)

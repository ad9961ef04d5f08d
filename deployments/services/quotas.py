"""Tenants' quotas, counted on the Prefect server so every dispatcher replica shares one
count: a global concurrency limit per tenant with a quota, `img2img-quota-<tenant>`, used
as Prefect's rate limit (its slots decay at quota ÷ 3600 a second). A tenant may upload its
quota at once, then as its count decays: the quota's images in any hour, on average.

An upload over quota is never dropped: with `tenants.over_quota = bulk` it moves to the
lowest-priority lane (with lanes on), else it ends with a failure record that names the
quota (`refused`, recorded by its run).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from img2img.config.lanes import LaneSettings, TenantSettings
from img2img.intake.events import ObjectRef

log = logging.getLogger("img2img.dispatcher")

LOCKED = 423


def limit_name(tenant: str) -> str:
    return f"img2img-quota-{tenant}"


class Quotas:
    """Applies `tenants.quota_per_hour` to placed uploads, through the Prefect API."""

    def __init__(self, client: Any, lanes: LaneSettings, tenants: TenantSettings) -> None:
        self.client = client
        self.lanes = lanes
        self.tenants = tenants
        self._ensured: set[str] = set()  # limits made or checked by this process

    def apply(self, refs: list[ObjectRef]) -> list[ObjectRef]:
        """The uploads, those over their tenant's quota moved to the last lane or refused."""
        if not self.tenants.enabled:
            return refs
        by_tenant: dict[str, list[int]] = {}
        for index, ref in enumerate(refs):
            counted = ref.tenant is not None and ref.refused is None
            if counted and self.tenants.quota(ref.tenant or "") is not None:
                by_tenant.setdefault(ref.tenant or "", []).append(index)
        out = list(refs)
        for tenant, indexes in by_tenant.items():
            quota = self.tenants.quota(tenant)
            assert quota is not None
            admitted = self._admit(tenant, quota, len(indexes))
            for index in indexes[admitted:]:
                out[index] = self._over(out[index], tenant, quota)
        return out

    def _over(self, ref: ObjectRef, tenant: str, quota: int) -> ObjectRef:
        why = f"tenant {tenant!r} is over its quota of {quota} images an hour"
        if self.tenants.over_quota == "bulk" and self.lanes.enabled:
            last = self.lanes.names()[-1]
            log.info("%s: %s; it runs in lane %s", ref.uri, why, last)
            return ref.model_copy(update={"lane": last})
        if self.tenants.over_quota == "bulk":
            log.warning("%s: %s (no lanes to move it to: it runs as usual)", ref.uri, why)
            return ref
        log.info("%s: %s; refused", ref.uri, why)
        return ref.model_copy(update={"refused": why})

    def _admit(self, tenant: str, quota: int, count: int) -> int:
        """How many of `count` uploads fit the tenant's count now (counted if they do). The
        count cannot be read or written: admitted (a quota never loses an upload)."""
        name = limit_name(tenant)
        try:
            self._ensure(name, quota)
            want = min(count, quota)  # the server refuses more slots than the limit
            if self._increment(name, want):
                return want
            available = min(want, self._available(name))
            if available >= 1 and self._increment(name, available):
                return available
            return 0
        except Exception as exc:  # advisory: admit rather than fail or hold the upload
            log.warning("could not count tenant %s's quota (admitted): %s", tenant, exc)
            return count

    def _ensure(self, name: str, quota: int) -> None:
        from prefect.client.schemas.actions import (
            GlobalConcurrencyLimitCreate,
            GlobalConcurrencyLimitUpdate,
        )
        from prefect.exceptions import ObjectNotFound

        if name in self._ensured:  # the settings do not change while the process runs
            return
        decay = quota / 3600.0
        try:
            limit = self.client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            self.client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(
                    name=name, limit=quota, slot_decay_per_second=decay, active=True
                )
            )
        else:
            if limit.limit != quota or not math.isclose(limit.slot_decay_per_second, decay):
                self.client.update_global_concurrency_limit(
                    name,
                    GlobalConcurrencyLimitUpdate(limit=quota, slot_decay_per_second=decay),
                )
        self._ensured.add(name)

    def _increment(self, name: str, slots: int) -> bool:
        from prefect.exceptions import PrefectHTTPStatusError

        try:
            self.client.increment_concurrency_slots([name], slots, "rate_limit")
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code == LOCKED:
                return False
            raise
        return True

    def _available(self, name: str) -> int:
        limit = self.client.read_global_concurrency_limit_by_name(name)
        return max(0, int(limit.limit - limit.active_slots))

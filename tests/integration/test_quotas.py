"""Tenants' quotas against a real Prefect API: one count per tenant on the server, shared
by every dispatcher replica; an upload over quota moves to the last lane or is refused with
a reason naming the quota, never dropped."""

from __future__ import annotations

from typing import Any

from deployments.services.quotas import Quotas, limit_name
from img2img.config.lanes import LaneSettings, TenantSettings
from img2img.intake.events import ObjectRef


def _refs(tenant: str, count: int, lane: str | None = "interactive") -> list[ObjectRef]:
    return [
        ObjectRef(bucket="b", key=f"{tenant}/{i}.png", etag="e", lane=lane, tenant=tenant)
        for i in range(count)
    ]


def test_two_replicas_share_one_count_and_the_rest_move_to_bulk(client: Any) -> None:
    lanes = LaneSettings(enabled=True)
    tenants = TenantSettings(enabled=True, quota_per_hour={"free": 5})
    first, second = Quotas(client, lanes, tenants), Quotas(client, lanes, tenants)
    one = first.apply(_refs("free", 3))
    two = second.apply(_refs("free", 4))  # another dispatcher: 2 of the quota are left
    assert [r.lane for r in one] == ["interactive"] * 3
    assert [r.lane for r in two] == ["interactive", "interactive", "bulk", "bulk"]
    assert all(r.refused is None for r in one + two)  # moved, not refused
    # A tenant without a quota is not counted; the limit is the server's, decaying hourly.
    assert [r.lane for r in first.apply(_refs("paid", 50))] == ["interactive"] * 50
    limit = client.read_global_concurrency_limit_by_name(limit_name("free"))
    assert limit.limit == 5 and abs(limit.slot_decay_per_second - 5 / 3600) < 1e-9


def test_over_quota_refused_names_the_quota_when_asked(client: Any) -> None:
    tenants = TenantSettings(enabled=True, quota_per_hour={"trial": 1}, over_quota="fail")
    quotas = Quotas(client, LaneSettings(enabled=True), tenants)
    out = quotas.apply(_refs("trial", 2))
    assert out[0].refused is None
    assert out[1].refused == "tenant 'trial' is over its quota of 1 images an hour"
    # A changed quota is applied to the server's limit.
    bigger = TenantSettings(enabled=True, quota_per_hour={"trial": 10}, over_quota="fail")
    assert all(
        r.refused is None for r in Quotas(client, LaneSettings(), bigger).apply(_refs("trial", 5))
    )
    assert client.read_global_concurrency_limit_by_name(limit_name("trial")).limit == 10

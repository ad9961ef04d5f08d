"""Lanes, tenants and their fair share: who waits behind whom.

Environment: `IMG2IMG_LANES__*` and `IMG2IMG_TENANTS__*`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

# A lane's or a tenant's name: what a work queue, a metric label and a key segment can hold.
LANE_NAME = r"^[a-z][a-z0-9-]{0,31}$"
TENANT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class Lane(BaseModel):
    """One lane: a work queue of its own in each pool, taken in priority order."""

    name: str = Field(pattern=LANE_NAME, description="The lane's name (its work queue's).")
    priority: int = Field(
        ge=1,
        le=100,
        description="Prefect's work-queue priority: a host with room takes the lowest number "
        "first; inside a slot, a lane's device calls go before those of higher numbers.",
    )


def _default_lanes() -> list[Lane]:
    return [Lane(name="interactive", priority=1), Lane(name="bulk", priority=10)]


class LaneSettings(BaseModel):
    """Lanes: interactive uploads never wait behind bulk work."""

    enabled: bool = Field(
        False,
        description="Give each upload a lane (its object's metadata, else a key-prefix or "
        "bucket rule, else the default) and each lane's runs a work queue of their own; off: "
        "every upload in one line, as before (no metadata read by the dispatcher).",
    )
    lanes: list[Lane] = Field(
        default_factory=_default_lanes,
        min_length=1,
        max_length=8,
        description="The lanes, each with a name and a priority (lowest first).",
    )
    default: str = Field(
        "interactive", description="The lane of an upload that no metadata or rule places."
    )
    metadata_key: str = Field(
        "lane",
        pattern=r"^[a-z0-9-]{1,64}$",
        description="The object metadata that names an upload's lane (x-amz-meta-<this>).",
    )
    prefix_rules: dict[str, str] = Field(
        default_factory=dict,
        description="Key prefix → lane, for uploads whose metadata names none (the longest "
        'matching prefix wins): {"catalogue/": "bulk"}.',
    )
    bucket_rules: dict[str, str] = Field(
        default_factory=dict,
        description="Upload bucket → lane, for uploads no metadata or prefix rule places.",
    )
    bulk_reserve: int = Field(
        1,
        ge=0,
        le=8,
        description="Run places per slot that only the highest-priority lane may take: a "
        "slot full of lower-priority runs still takes an interactive one at once (each slot "
        "holds worker.runs_per_slot runs).",
    )
    between_steps: bool = Field(
        True,
        description="Inside a slot, a lower lane's device call also hands the device to a "
        "waiting higher lane's call between two of its diffusion steps (it waits with its "
        "latents, then goes on), not only between two calls: an interactive image waits for "
        "one step of a bulk call (about 1/50 of it at 50 steps), not the whole call. Off: "
        "between calls only.",
    )

    @model_validator(mode="after")
    def _names_known(self) -> LaneSettings:
        names = [lane.name for lane in self.lanes]
        if len(set(names)) != len(names):
            raise ValueError(f"lanes.lanes names a lane twice: {names}")
        known = set(names)
        for where, lane in [
            ("lanes.default", self.default),
            *((f"lanes.prefix_rules[{k!r}]", v) for k, v in self.prefix_rules.items()),
            *((f"lanes.bucket_rules[{k!r}]", v) for k, v in self.bucket_rules.items()),
        ]:
            if lane not in known:
                raise ValueError(
                    f"{where} is {lane!r}, not one of the lanes: {', '.join(sorted(known))}"
                )
        return self

    def names(self) -> list[str]:
        """The lanes' names, highest priority first."""
        return [lane.name for lane in sorted(self.lanes, key=lambda lane: lane.priority)]

    def priority(self, name: str) -> int:
        return next(lane.priority for lane in self.lanes if lane.name == name)

    @property
    def first(self) -> str:
        """The highest-priority lane (the one `bulk_reserve` keeps places for)."""
        return self.names()[0]


class TenantSettings(BaseModel):
    """Tenants: fair share under a backlog, optional quotas, cost per tenant."""

    enabled: bool = Field(
        False,
        description="Give each upload a tenant (its object's metadata, else the key's first "
        "path segment) and, under a backlog, compose batches so that tenants with waiting "
        "work get their weighted shares in turn (deficit round robin), not arrival order.",
    )
    metadata_key: str = Field(
        "tenant",
        pattern=r"^[a-z0-9-]{1,64}$",
        description="The object metadata that names an upload's tenant (x-amz-meta-<this>).",
    )
    from_key: bool = Field(
        True, description="Without the metadata, the key's first path segment is the tenant."
    )
    default: str = Field(
        "default",
        pattern=TENANT_NAME,
        description="The tenant of an upload that neither the metadata nor its key names.",
    )
    weights: dict[str, float] = Field(
        default_factory=dict,
        description='Share of each tenant under a backlog, relative (1 unless named): {"paid": '
        "3} takes three images for each one of every other tenant with work waiting.",
    )
    quota_per_hour: dict[str, int] = Field(
        default_factory=dict,
        description="Images a tenant may upload in any hour (a tenant not named: "
        "default_quota_per_hour).",
    )
    default_quota_per_hour: int | None = Field(
        None, ge=1, description="The quota of tenants quota_per_hour does not name (None: none)."
    )
    over_quota: Literal["bulk", "fail"] = Field(
        "bulk",
        description="An upload over its tenant's quota: bulk moves it to the lowest-priority "
        "lane (with lanes on; else it runs as usual, logged), fail ends it with a failure "
        "record that names the quota. Never dropped.",
    )
    fair_run_s: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="Under a backlog (adaptive dispatch), a run holds at most this long of "
        "work on its slot (at least dispatch.base_batch images), and a lane adds a run only "
        "while few of its runs wait for a slot (one, plus one per two running): the rest "
        "of the backlog stays with the dispatcher, where tenants take turns, instead of in "
        "runs that wait in arrival order.",
    )
    max_held: int = Field(
        20_000,
        ge=100,
        le=100_000,
        description="Most uploads a dispatcher holds back (their messages' visibility "
        "extended while they wait): beyond it the rest waits in SQS (which caps in-flight "
        "messages at 120,000), and turns are taken among those held.",
    )
    top: int = Field(
        10,
        ge=1,
        le=100,
        description="Tenants shown by name in /metrics, the fleet view and top (the busiest); "
        "the rest are one group, so metric labels stay bounded.",
    )

    @model_validator(mode="after")
    def _weights_positive(self) -> TenantSettings:
        bad = {k: v for k, v in self.weights.items() if not 0.01 <= v <= 1000}
        if bad:
            raise ValueError(f"tenants.weights must be within 0.01..1000, got {bad}")
        low = {k: v for k, v in self.quota_per_hour.items() if v < 1}
        if low:
            raise ValueError(f"tenants.quota_per_hour must be at least 1, got {low}")
        return self

    def weight(self, tenant: str) -> float:
        return self.weights.get(tenant, 1.0)

    def quota(self, tenant: str) -> int | None:
        return self.quota_per_hour.get(tenant, self.default_quota_per_hour)

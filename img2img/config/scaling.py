"""The autoscaler: the policy's bounds and pace, its daily forecast, and where it applies the
size it decides.

Environment: `IMG2IMG_SCALING__*` (the forecast: `IMG2IMG_SCALING__FORECAST__*`),
`IMG2IMG_AUTOSCALER__*`.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field, model_validator


class ForecastSettings(BaseModel):
    """The scaling policy's daily forecast (off by default)."""

    enabled: bool = Field(
        False, description="Pre-scale ahead of the rises seen at this time on past days."
    )
    days: int = Field(
        7,
        ge=1,
        le=13,
        description="Past days read, at the same time of day (within the runs' retention).",
    )
    min_days: int = Field(
        3, ge=1, le=13, description="Days with arrivals needed before the forecast is trusted."
    )
    lead_s: float = Field(
        105.0,
        gt=0,
        le=3600,
        description="How far ahead it looks: at least a host's start time "
        "(scaling.host_start_s), and with a bucket at most the idle time and scale-in "
        "cooldown after which the reactive part releases an unused host.",
    )
    bucket_s: float = Field(
        15.0,
        ge=1,
        le=3600,
        description="Width of a history bucket (Prefect's run history): narrow enough that a "
        "rise fills a whole bucket within the lead, so it is sized in full.",
    )
    target_utilization: float = Field(
        0.9,
        gt=0,
        le=1,
        description="The reactive part's target while the forecast is trusted.",
    )
    tolerance: float = Field(
        0.25,
        ge=0,
        le=1,
        description="How far the rate arriving now may stray from the forecast's figure for "
        "now (a fraction of it, on top of Poisson noise) before the forecast is distrusted.",
    )

    @model_validator(mode="after")
    def _days(self) -> ForecastSettings:
        if self.min_days > self.days:
            raise ValueError(
                f"scaling.forecast.min_days ({self.min_days}) must not exceed "
                f"scaling.forecast.days ({self.days})"
            )
        return self

    @property
    def buckets_ahead(self) -> int:
        return max(1, math.ceil(self.lead_s / self.bucket_s))


class ScalingSettings(BaseModel):
    """Bounds and pace of the autoscaler."""

    min_hosts: int = Field(0, ge=0, le=10_000, description="Fewest hosts (0 scales to zero).")
    max_hosts: int = Field(4, ge=1, le=10_000, description="Most hosts.")
    slots_per_host: int = Field(
        1, ge=1, le=64, description="Runs a host serves at once (its warm worker's slots)."
    )
    target_utilization: float = Field(
        0.75, gt=0.0, le=1.0, description="Demand ÷ capacity the policy steers to."
    )
    scale_out_cooldown_s: float = Field(60.0, ge=0, description="Between two scale-outs.")
    scale_in_cooldown_s: float = Field(
        120.0,
        ge=0,
        description="After any scale event before scaling in; also the "
        "stabilisation window of scale-in.",
    )
    idle_to_zero_s: float = Field(
        120.0, ge=0, description="No demand for this long scales to min_hosts."
    )
    activation_threshold: int = Field(
        1, ge=1, description="Demand that starts the first host from zero, at once."
    )
    drain_target_s: float = Field(
        120.0,
        gt=0,
        le=86_400,
        description="Time within which the backlog should clear (about a host's start time).",
    )
    expected_run_s: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="Run duration assumed until recent runs say otherwise.",
    )
    interval_s: float = Field(15.0, gt=0, le=3600, description="Seconds between decisions.")
    zero_interval_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="Seconds between looks at the queue while the pool has no host (one "
        "request each): a first upload waits this long, not a whole interval, to start one.",
    )
    host_start_s: float = Field(
        90.0,
        ge=0,
        le=3600,
        description="Launch to first run of a new host (boot, artifact fetch, Neuron load, "
        "warm-up; the `start parts` line of img2img-boot's log).",
    )
    warm_start_s: float = Field(
        54.0,
        ge=0,
        le=3600,
        description="Start of a host resumed from the warm pool (no boot, nothing to fetch).",
    )
    forecast: ForecastSettings = Field(
        default_factory=ForecastSettings,
        description="Pre-scaling from the pool's arrivals at this time on past days.",
    )
    idle_launch_limit: int = Field(
        2,
        ge=1,
        le=1000,
        description="Idle launches (hosts that left without serving a run) within "
        "idle_launch_window_s before the policy backs off starting hosts.",
    )
    idle_launch_window_s: float = Field(
        900.0, gt=0, le=86_400, description="Window over which idle launches are counted."
    )
    idle_launch_backoff_s: float = Field(
        120.0,
        ge=0,
        le=86_400,
        description="No host started for this long after the idle launch that reached the "
        "limit; doubled for each one beyond it, at most idle_launch_window_s.",
    )
    max_replaced_per_hour: int = Field(
        4,
        ge=1,
        le=10_000,
        description="Hosts replaced for an unhealthy report in any hour, at most. A report "
        "is an event any holder of the API credential can send: a forged burst replaces "
        "this many hosts, not the fleet; the others wait for the next hour (logged, and "
        "the event img2img.autoscaler.replacement-held).",
    )
    lower_lanes_max_hosts: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="With lanes on: the most hosts the lower lanes' work (bulk) alone may "
        "keep running, a cost cap; the pool grows beyond it only for the first lane's work, "
        "and bulk uses what that leaves idle (None: scaling.max_hosts).",
    )
    scale_in_tolerance: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Scale in only when the stable need is at least this fraction below the "
        "current size (hysteresis against noise).",
    )

    @model_validator(mode="after")
    def _bounds(self) -> ScalingSettings:
        if self.min_hosts > self.max_hosts:
            raise ValueError(
                f"scaling.min_hosts ({self.min_hosts}) must not exceed scaling.max_hosts "
                f"({self.max_hosts})"
            )
        lead = self.forecast.lead_s
        if self.forecast.enabled and lead < self.host_start_s:
            raise ValueError(
                f"scaling.forecast.lead_s ({lead}) must be at least scaling.host_start_s "
                f"({self.host_start_s}): a host started on the forecast must be ready before "
                "the rise"
            )
        reach = lead + self.forecast.bucket_s
        if self.forecast.enabled and reach > min(self.idle_to_zero_s, self.scale_in_cooldown_s):
            raise ValueError(
                f"scaling.forecast.lead_s + bucket_s ({reach}) must not exceed "
                f"scaling.idle_to_zero_s ({self.idle_to_zero_s}) or "
                f"scaling.scale_in_cooldown_s ({self.scale_in_cooldown_s}): the reactive part "
                "would release the hosts started on the forecast before the rise came"
            )
        return self


class AutoscalerSettings(BaseModel):
    """Where the autoscaler applies the size it decides, and what it publishes."""

    pool: str = Field("inf2", description="Work pool whose queue drives the size.")
    target: Literal["local", "asg", "ecs"] = Field(
        "local",
        description="local: worker processes here; asg: an EC2 Auto Scaling group; "
        "ecs: an ECS service's desired count.",
    )
    asg_name: str | None = Field(None, description="Auto Scaling group (target asg).")
    ecs_cluster: str | None = Field(None, description="ECS cluster (target ecs).")
    ecs_service: str | None = Field(None, description="ECS service (target ecs).")
    pool_groups: dict[str, str] = Field(
        default_factory=dict,
        description="Split topology on AWS: each pool's own Auto Scaling group (asg) or ECS "
        'service (ecs), e.g. {"inf2-generate": "img2img-generate", "inf2-upscale": '
        '"img2img-upscale"}.',
    )
    pool_slots: dict[str, int] = Field(
        default_factory=dict,
        description="Split topology: each pool's slots per host when its hosts differ "
        "(pool → slots; a pool not named has scaling.slots_per_host).",
    )
    cloudwatch_namespace: str | None = Field(
        "img2img", description="Namespace for the usage and backlog metrics; None: off."
    )
    rate_window_s: float = Field(
        60.0, gt=0, le=3600, description="Window over which the arrival rate is measured."
    )

    @model_validator(mode="after")
    def _target_named(self) -> AutoscalerSettings:
        if self.target == "asg" and not self.asg_name:
            raise ValueError("autoscaler.asg_name is required with autoscaler.target=asg")
        if self.target == "ecs" and not (self.ecs_cluster and self.ecs_service):
            raise ValueError(
                "autoscaler.ecs_cluster and autoscaler.ecs_service are required "
                "with autoscaler.target=ecs"
            )
        return self

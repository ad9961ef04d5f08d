"""The settings tree: every section, read from `IMG2IMG_*` environment variables.

Nested fields use a double underscore: `IMG2IMG_AWS__ENDPOINT_URL`, `IMG2IMG_DISPATCH__MAX_BATCH`.
Each section lives in a module of its own beside this one (`dispatch.py` holds
`IMG2IMG_DISPATCH__*`); what only development reads is in `dev.py`. The package is data:
it imports nothing else of img2img. Nothing reads the environment at import time: call
`load_settings()` where a process starts.

Every field is described and bounded where it is declared; the configuration reference,
`docs/configuration.md`, is generated from these classes (`python -m img2img.config.reference`)
and a test fails when it is stale.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from img2img.config.aws import AwsSettings, StorageSettings
from img2img.config.dev import FaultFlags, LocalStackSettings
from img2img.config.dispatch import DispatchSettings
from img2img.config.lanes import LaneSettings, TenantSettings
from img2img.config.limits import ImageLimits
from img2img.config.monitor import MonitorSettings
from img2img.config.notify import NotifySettings
from img2img.config.recovery import RecoverySettings
from img2img.config.renamed import move_renamed
from img2img.config.retention import RetentionSettings
from img2img.config.scaling import AutoscalerSettings, ScalingSettings
from img2img.config.stages import StageSettings
from img2img.config.worker import WorkerSettings

log = logging.getLogger("img2img.settings")

# single: both stages on every host of one pool; split: a pool per stage.
Topology = Literal["single", "split"]


class Settings(BaseSettings):
    """Root of the settings tree."""

    model_config = SettingsConfigDict(
        env_prefix="IMG2IMG_", env_nested_delimiter="__", extra="ignore"
    )

    topology: Topology = Field(
        "single",
        description="single: both stages on every host of one pool (inf2); split: stage 1 "
        "on pool inf2-generate, stage 2 on inf2-upscale, each scaled on its own queue, "
        "handing off through the directory bucket.",
    )
    aws: AwsSettings = Field(default_factory=AwsSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    limits: ImageLimits = Field(default_factory=ImageLimits)
    stages: StageSettings = Field(default_factory=StageSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    lanes: LaneSettings = Field(default_factory=LaneSettings)
    tenants: TenantSettings = Field(default_factory=TenantSettings)
    scaling: ScalingSettings = Field(default_factory=ScalingSettings)
    autoscaler: AutoscalerSettings = Field(default_factory=AutoscalerSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    # Development only (img2img/config/dev.py).
    faults: FaultFlags = Field(default_factory=FaultFlags)
    local: LocalStackSettings = Field(default_factory=LocalStackSettings)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for warning in move_renamed(data):
                log.warning("settings: %s", warning)
        return data

    @model_validator(mode="after")
    def _forecast_within_retention(self) -> Settings:
        forecast = self.scaling.forecast
        if forecast.enabled and forecast.days >= self.retention.runs_days:
            raise ValueError(
                f"scaling.forecast.days ({forecast.days}) must be below retention.runs_days "
                f"({self.retention.runs_days}): the forecast reads the pool's runs of those "
                "days, which the server deletes after runs_days"
            )
        return self


def load_settings() -> Settings:
    """Read the settings from the environment (and nothing else)."""
    return Settings()

"""Recovery of crashed and orphaned runs, and the upload reconciler.

Environment: `IMG2IMG_RECOVERY__*`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class RecoverySettings(BaseModel):
    """Recovery of crashed and orphaned flow runs, and the upload reconciler."""

    interval_s: float = Field(
        15.0, gt=0, le=3600, description="How often the recovery service looks for crashed runs."
    )
    orphan_after_s: float = Field(
        90.0,
        ge=5,
        le=3600,
        description="A Pending or Running run whose worker has sent no heartbeat for this long "
        "is orphaned (its host is gone) and is recovered. At least 3 worker heartbeats "
        "(PREFECT_WORKER_HEARTBEAT_SECONDS, 30 s by default).",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="Crashes an image may take before it gets a failure record "
        "(stage 'crashed', retryable).",
    )
    split_after: int = Field(
        2,
        ge=1,
        le=20,
        description="Crashes of a batch of several images before it is split in two halves "
        "(bisection isolates an image that kills its slot every time).",
    )
    backoff_s: float = Field(
        5.0, ge=0, le=3600, description="Wait before the first re-run of a crashed run (doubles)."
    )
    max_backoff_s: float = Field(
        300.0, ge=0, le=86_400, description="Longest wait between re-runs."
    )
    reconcile_interval_s: float = Field(
        900.0,
        ge=0,
        le=86_400,
        description="How often the recovery service reconciles uploads against outcomes "
        "(0: never; `img2img reconcile` runs it by hand).",
    )
    reconcile_older_than_s: float = Field(
        1800.0,
        ge=0,
        le=30 * 86_400,
        description="Uploads younger than this are left to the event path by the periodic "
        "reconcile (longer than the queue's visibility timeout plus a batch).",
    )
    reconcile_hold_max_s: float = Field(
        7200.0,
        ge=0,
        le=30 * 86_400,
        description="While the ingest queue has messages in flight (a dispatcher holds them: a "
        "backlog held for tenants' turns), an upload made since they were last all gone may "
        "be among them: the periodic reconcile leaves it, for at most this long.",
    )
    lookback_s: float = Field(
        86_400.0,
        gt=0,
        description="The periodic reconcile looks at uploads no older than this (0 < age).",
    )

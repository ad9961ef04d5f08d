"""What the operator sees: the per-run chart, the fleet figures and where they go.

Environment: `IMG2IMG_MONITOR__*`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from img2img.config.prices import ON_DEMAND_USD_PER_HOUR


class MonitorSettings(BaseModel):
    """What the operator sees: the per-run chart, the fleet figures and where they go."""

    # What each batch costs the Prefect server (`img2img bench control-plane` measures it).
    # The defaults are what a pool at millions of images a day should run; the local stack
    # turns on the views a person watching one run wants (progress bar, chart).
    task_runs: bool = Field(
        False,
        description="Each step of a batch (copy, preprocess, stage 1, stage 2, post-process) "
        "is a Prefect task run: its states, retries and time in the run graph (the local "
        "stack's default). Off: the steps run inside the flow run with the same retry policy "
        "and the same per-step times in the run's timing table, and each batch costs the "
        "server 6 task runs, 18 states, 18 events and about 200 database rows fewer.",
    )
    api_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING",
        description="Least level of a run's log lines sent to the Prefect API (its Logs tab): "
        "WARNING keeps a run's problems there and spares the server a request and a row per "
        "INFO line (each step's, the engine's start and end); the local stack sends INFO. "
        "The worker's and the slots' own output (journal, console) keeps every level.",
    )
    table_rows: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Most image rows in a run's timing table: past it, the images that did "
        "not complete and the slowest completed ones, then one row counting the rest (the "
        "percentiles cover every image).",
    )
    run_artifacts: bool = Field(
        True,
        description="Each run publishes its timing table and summary artifacts (two artifacts "
        "and three events per batch); the batch event the fleet view reads is sent either way.",
    )
    run_progress: bool = Field(
        False,
        description="Each run keeps a progress artifact up to date as its steps go (six "
        "artifact writes and events per batch).",
    )
    run_chart: bool = Field(
        False,
        description="Each run's summary includes a waterfall chart of its images (a PNG of "
        "about 20-40 KB kept in the Prefect database with the artifact).",
    )
    image_events: bool = Field(
        False,
        description="An `img2img.image.completed` / `.failed` Prefect event per image (for "
        "automations on single images); the completion message to the app is sent either way.",
    )
    stale_event_s: float = Field(
        3600.0,
        gt=0,
        le=30 * 86_400,
        description="An upload whose S3 event time is older than this at the run's start (a "
        "message replayed from the dead-letter queue or sent by hand), or later than the "
        "start, keeps its queue wait in the run's table but is left out of the fleet's "
        "end-to-end figures.",
    )
    fleet_interval_s: float = Field(
        60.0, ge=5, le=3600, description="How often the control host refreshes the fleet view."
    )
    fleet_window_s: float = Field(
        300.0,
        ge=60,
        le=86_400,
        description="Window of the fleet figures (throughput, latency percentiles, cost).",
    )
    fleet_history: int = Field(
        120, ge=2, le=10_000, description="Points kept for the fleet chart (one per refresh)."
    )
    instance_type: str = Field(
        "inf2.xlarge", description="The pool's instance type, for its hourly price."
    )
    hourly_price_usd: float | None = Field(
        None,
        gt=0,
        description="What one host costs per hour; None: the on-demand price of "
        "`instance_type` (US East).",
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of the Prometheus endpoint (/metrics) on the control host "
        "(0: not served).",
    )
    metrics_host: str = Field("127.0.0.1", description="Address the Prometheus endpoint binds to.")
    alert_block: str | None = Field(
        None,
        description="The notification block the alerts go through, as "
        "<block-type-slug>/<name> (e.g. slack-webhook/ops); `img2img alerts apply` uses it, "
        "and the local stack falls back to a webhook block of its own.",
    )
    starved_after_s: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="Hosts wanted and no worker online for this long: the "
        "`img2img.pool.starved` event (an alert), longer than a host's start.",
    )

    @field_validator("alert_block", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _priced(self) -> MonitorSettings:
        self.price_per_hour  # noqa: B018 - raises for an instance type without a price
        return self

    @property
    def price_per_hour(self) -> float:
        if self.hourly_price_usd is not None:
            return self.hourly_price_usd
        try:
            return ON_DEMAND_USD_PER_HOUR[self.instance_type]
        except KeyError:
            raise ValueError(
                f"monitor.instance_type {self.instance_type!r} has no known price "
                f"(known: {', '.join(ON_DEMAND_USD_PER_HOUR)}); set "
                "monitor.hourly_price_usd"
            ) from None

"""Settings only development reads: the simulated device, fault injection and the local stack.

None of these changes what a production pipeline does; they are set by `img2img local`,
`img2img chaos` and the benchmarks. Environment: `IMG2IMG_STAGES__SIMULATED__*`,
`IMG2IMG_FAULTS__*`, `IMG2IMG_LOCAL__*`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator


class SimulatedDevice(BaseModel):
    """The `simulated` model backend: a fixed device time per call, no CPU used, and the
    faults `img2img chaos` injects through it."""

    generate_ms: float = Field(
        2020.0,
        ge=0,
        le=600_000,
        description="Simulated stage-1 device time per call (default: SD 1.5 512², 50 steps, "
        "inf2.xlarge, Neuron 2.21).",
    )
    upscale_ms: float = Field(
        2020.0,
        ge=0,
        le=600_000,
        description="Simulated stage-2 device time per call (no published Inf2 figure for the "
        "x4 upscaler; assumed equal to stage 1).",
    )
    image_share: float = Field(
        0.35,
        ge=0,
        le=1,
        description="Simulated device: what each image after the first adds to a call, as a "
        "share of a one-image call (a call of n images takes the stage's time × (1 + "
        "share × (n − 1))). 1: batching gains nothing; 0: a call costs the same at any size. No "
        "published Inf2 batch curve exists for these models; 0.35 is an assumption, "
        "replace it with `img2img bench device` on the target host.",
    )
    steps: int = Field(
        1,
        ge=1,
        le=1000,
        description="Denoising steps a simulated call is cut into (its time shared equally; "
        "the step callback runs between two, where a bulk call hands the device to an "
        "interactive one with lanes on). 1: a call is one wait.",
    )
    load_s: float = Field(
        20.0,
        ge=0,
        le=3600,
        description="Simulated time to load both stage models onto the device.",
    )
    crash_marker: str | None = Field(
        None,
        min_length=3,
        description="Fault injection: a stage-1 call whose prompt "
        "contains this string kills its process, as a compiled graph that faults on one input "
        "would. None: off.",
    )
    hang_marker: str | None = Field(
        None,
        min_length=3,
        description="Fault injection: a stage-1 call whose prompt "
        "contains this string never returns, as a device that stops answering on one input "
        "would (the process stays alive). None: off.",
    )
    hang_file: Path | None = Field(
        None,
        description="Fault injection: while this file exists, every "
        "device call never returns, warm-up included (a device that stays stuck). None: off.",
    )


class FaultFlags(BaseModel):
    """Faults `img2img chaos` injects into the services."""

    dispatcher_crash_flag: Path | None = Field(
        None,
        description="Fault injection (`img2img chaos`): when this file exists right after a "
        "flow run was created, the dispatcher removes it and kills itself before deleting the "
        "run's messages. None: off.",
    )


class LocalStackSettings(BaseModel):
    """The embedded local stack: Prefect server and moto on loopback."""

    state_dir: Path = Field(Path(".img2img"), description="State, logs and PIDs of the stack.")
    host: str = Field("127.0.0.1", description="Loopback address every local service binds to.")
    prefect_port: int = Field(4200, ge=1, le=65535, description="Prefect server port.")
    moto_port: int = Field(4566, ge=1, le=65535, description="moto (S3, SQS) server port.")
    metrics_port: int = Field(
        9464, ge=1, le=65535, description="Prometheus endpoint of the local autoscaler."
    )
    database: Literal["sqlite", "postgres"] | None = Field(
        None,
        description="The Prefect server's database: SQLite in the state folder, or a "
        "PostgreSQL server the stack runs on loopback (Debian's postgresql package). None: "
        "what the running stack uses, else sqlite.",
    )
    postgres_port: int = Field(
        5433, ge=1, le=65535, description="Port of the stack's PostgreSQL (database=postgres)."
    )
    ha: bool = Field(
        False,
        description="The Prefect server as a cluster, as on AWS: api_replicas API servers "
        "(`prefect server start --no-services`) behind HAProxy on prefect_port, the background "
        "services in a process of their own, PostgreSQL and Redis (Debian's redis-server and "
        "haproxy packages). Implies database=postgres.",
    )
    api_replicas: int = Field(2, ge=1, le=8, description="API replicas of the cluster (ha).")
    api_ports: list[int] = Field(
        default_factory=list,
        description="Ports of the cluster's API replicas, one each (ha); empty: prefect_port "
        "+ 100, + 101, ...",
    )
    redis_port: int = Field(6380, ge=1, le=65535, description="Port of the cluster's Redis (ha).")
    alert_webhook_url: str = Field(
        "http://127.0.0.1:9465/alerts",
        description="Where the local stack's own alert block posts (`img2img alerts listen` "
        "serves it) when monitor.alert_block is not set.",
    )
    workers: int = Field(
        0,
        ge=0,
        le=32,
        description="Workers started by `local up` besides the autoscaler's (0: the autoscaler "
        "starts them on demand and stops them when idle).",
    )
    dispatchers: int = Field(
        1,
        ge=1,
        le=8,
        description="Dispatcher replicas on the ingest queue (competing consumers; the first "
        "is `dispatcher`, the others `dispatcher-1`, ...).",
    )
    autoscaler: bool = Field(True, description="Run the autoscaler in the local stack.")
    worker_type: Literal["img2img-warm", "process"] = Field(
        "img2img-warm", description="Worker type of the local pipeline pool."
    )
    start_timeout_s: float = Field(120, gt=0, description="Longest wait for a service to answer.")

    @model_validator(mode="after")
    def _a_port_per_replica(self) -> LocalStackSettings:
        if self.api_ports and len(self.api_ports) < self.api_replicas:
            raise ValueError(
                f"local.api_ports names {len(self.api_ports)} port(s) for "
                f"{self.api_replicas} API replicas: give one each, or none"
            )
        return self

    @property
    def replica_ports(self) -> list[int]:
        """The API replicas' ports (ha)."""
        if self.api_ports:
            return list(self.api_ports[: self.api_replicas])
        return [self.prefect_port + 100 + i for i in range(self.api_replicas)]

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def moto_url(self) -> str:
        return f"http://{self.host}:{self.moto_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

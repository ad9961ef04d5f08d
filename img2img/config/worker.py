"""The warm worker and its slots.

Environment: `IMG2IMG_WORKER__*`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from img2img.config.stages import StageKind

# The flows prefect.yaml deploys on the warm pools (inf2, inf2-generate, inf2-upscale).
RELEASE_FLOWS = {
    "img2img-pipeline": "flows.pipeline.img2img_pipeline",
    "img2img-generate": "flows.split.img2img_generate",
    "img2img-upscale": "flows.split.img2img_upscale",
}


class WorkerSettings(BaseModel):
    """The warm worker: long-lived slots that keep the stage models resident."""

    slots: int = Field(1, ge=1, le=64, description="Executor processes (device shares) per worker.")
    runs_per_slot: int = Field(
        3,
        ge=1,
        le=8,
        description="Flow runs a slot holds at once: 3 keeps the device fed (one on the device, "
        "the next in copy/preprocess, the previous in post-process/upload); device calls "
        "never overlap.",
    )
    core_groups: list[str] = Field(
        default_factory=list,
        description="NeuronCore group per slot for NEURON_RT_VISIBLE_CORES, e.g. ['0-1', '2-3']; "
        "when set, there is one slot per group.",
    )
    devices: list[str] = Field(
        default_factory=list,
        description="torch device per slot for the eager backend, e.g. ['cuda:0', 'cuda:1']; "
        "when set, there is one slot per device. Unset with stages.device 'cuda': one slot "
        "per GPU the worker finds.",
    )
    drain_timeout_s: float = Field(
        900.0,
        gt=0,
        le=86_400,
        description="On SIGTERM, how long running flow runs may take to finish before exit.",
    )
    slot_start_timeout_s: float = Field(
        900.0, gt=0, description="Longest wait for a slot to load its models."
    )
    restart_backoff_s: float = Field(
        5.0, gt=0, le=3600, description="First wait before restarting a failed slot (doubles)."
    )
    cancel_grace_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="After a cancel request, how long a run may take to stop before its slot "
        "is killed and replaced.",
    )
    cancel_poll_s: float = Field(
        5.0,
        ge=0.2,
        le=300,
        description="How often the worker asks whether a run it is running was cancelled, "
        "while Prefect's events stream (which tells it with no request) is down.",
    )
    run_start_events: bool = Field(
        True,
        description="Claim the pool's runs as soon as Prefect's events stream says they are "
        "scheduled, instead of at the worker's next timed poll (PREFECT_WORKER_QUERY_SECONDS, "
        "which still runs, and starts runs while the stream is down).",
    )
    hang_factor: float = Field(
        10.0,
        ge=1.0,
        le=1000.0,
        description="A slot holding the device is hung after this many times its stage's "
        "expected call time (one call timed at warm-up) with no progress.",
    )
    hang_floor_s: float = Field(
        30.0,
        ge=1.0,
        le=3600,
        description="The shortest hang deadline; also how long a slot process may send "
        "nothing at all (it beats every progress_beat_s) before it is hung.",
    )
    hang_grace_s: float = Field(
        5.0,
        ge=0,
        le=600,
        description="After a slot is found hung, how long it has to move again before it is "
        "killed (SIGKILL) and replaced.",
    )
    progress_beat_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often a slot sends its last progress to its worker.",
    )
    stages: list[StageKind] | None = Field(
        None,
        description="Stage models this worker's slots load: generate, upscale or both. None: "
        "what its work pool runs (inf2-generate: generate, inf2-upscale: upscale, any other "
        "pool: both).",
    )
    unhealthy_after: int = Field(
        3,
        ge=1,
        le=100,
        description="A slot that failed this many times in a row with no run finished in "
        "between (failed or timed-out model loads, hangs with no run on the device) is given "
        "up; a worker with no slot left reports itself unhealthy, takes no runs, and its "
        "host is replaced.",
    )
    malloc_arenas: int = Field(
        2,
        ge=0,
        le=1024,
        description="malloc arenas a slot process may use (glibc's M_ARENA_MAX, set as it "
        "starts): its threads share them, so memory one run frees the next one reuses. "
        "0: glibc's default, 8 per core, under which a slot's memory grew for hours.",
    )
    recycle_growth_mb: float = Field(
        2048.0,
        ge=0,
        description="A slot whose resident memory grows this many MB above what it held "
        "once ready is recycled: a fresh slot loads its models, then the old one finishes "
        "its runs and exits (the safety net under a leak; a steady slot stays flat). 0: "
        "never for memory.",
    )
    recycle_after_runs: int = Field(
        0,
        ge=0,
        description="Recycle a slot after this many runs (plus up to recycle_jitter of it, "
        "drawn per slot). 0: never for runs.",
    )
    recycle_jitter: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of recycle_after_runs added at random per slot, so slots started "
        "together are not recycled together.",
    )

    allowed_flows: dict[str, str] = Field(
        default_factory=lambda: dict(RELEASE_FLOWS),
        description="The flows a warm worker runs (flow name → entrypoint, as prefect.yaml "
        "deploys them): a run of any other flow, another entrypoint, or pull steps other "
        "than none or the release's (set the working directory to project_dir) is refused "
        "with a Failed state that says why (`deployments/worker/run_guard.py`).",
    )
    project_dir: str | None = Field(
        None,
        description="The directory the release's pull step sets (prefect.yaml's "
        "IMG2IMG_PROJECT_DIR when deploying). None: the IMG2IMG_PROJECT_DIR environment "
        "variable, else the worker's working directory.",
    )

    @model_validator(mode="after")
    def _beat_within_floor(self) -> WorkerSettings:
        if self.progress_beat_s * 3 > self.hang_floor_s:
            raise ValueError(
                "worker.hang_floor_s must be at least 3 x worker.progress_beat_s (a slot that "
                f"missed fewer beats would be called hung), but hang_floor_s={self.hang_floor_s} "
                f"and progress_beat_s={self.progress_beat_s}"
            )
        return self

    def slot_count(self) -> int:
        return len(self.core_groups) or len(self.devices) or self.slots

"""All configuration in one pydantic-settings tree, read from `IMG2IMG_*` environment variables.

Nested fields use a double underscore: `IMG2IMG_AWS__ENDPOINT_URL`, `IMG2IMG_DISPATCH__MAX_BATCH`.
Nothing reads the environment at import time: call `load_settings()` where a process starts.

Every field is described and bounded where it is declared; the configuration reference,
`docs/configuration.md`, is generated from these classes (`python -m img2img.config.reference`)
and a test fails when it is stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from img2img.pipeline.stages import StageKind
from img2img.pipeline.topology import Topology, entry_deployment
from img2img.scaling.policy import ScalingSettings
from img2img.slots.recycle import RecycleRule


class AwsSettings(BaseModel):
    """How to reach AWS (or the local emulator that stands in for it)."""

    region: str = Field("us-east-1", description="AWS Region of every client.")
    endpoint_url: str | None = Field(
        None,
        description="Endpoint of an S3/SQS emulator such as http://127.0.0.1:4566; None on AWS.",
    )
    express_session_auth: bool = Field(
        True,
        description="S3 Express One Zone session auth (CreateSession). Keep on against AWS; "
        "the local emulator needs it off.",
    )
    credentials_block: str | None = Field(
        None,
        description="Name of a prefect-aws AwsCredentials block; when set, flows build their "
        "clients from it instead of from these settings.",
    )
    max_pool_connections: int = Field(
        32, ge=1, le=1024, description="HTTP connections per client (bounds copy concurrency)."
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=120, description="Connect timeout per call.")
    read_timeout_s: float = Field(30.0, gt=0, le=900, description="Read timeout per call.")
    max_attempts: int = Field(
        4, ge=1, le=20, description="botocore attempts per call (adaptive retry mode)."
    )


class StorageSettings(BaseModel):
    """The buckets and queues of the data path."""

    uploads_bucket: str = Field(
        "img2img-uploads", description="General-purpose bucket that users upload to."
    )
    extra_upload_buckets: list[str] = Field(
        default_factory=list,
        description="Other buckets whose events are accepted; events naming any other bucket "
        "go to the dead-letter queue.",
    )
    stage_bucket: str = Field(
        "img2img-stage--use1-az4--x-s3",
        description="S3 Express One Zone directory bucket for the hot path (inputs, stage "
        "outputs).",
    )
    results_bucket: str = Field(
        "img2img-results", description="Bucket for results and failure records."
    )
    ingest_queue: str = Field("img2img-ingest", description="SQS queue fed by S3 notifications.")
    dead_letter_queue: str = Field("img2img-ingest-dlq", description="Its dead-letter queue.")
    copy_concurrency: int = Field(
        16, ge=1, le=256, description="Parallel CopyObject calls into the directory bucket."
    )

    @property
    def upload_buckets(self) -> frozenset[str]:
        """Every bucket whose uploads the pipeline accepts."""
        return frozenset([self.uploads_bucket, *self.extra_upload_buckets])


class ImageLimits(BaseModel):
    """What an upload may be before it is decoded."""

    max_bytes: int = Field(25 * 1024 * 1024, ge=1, description="Largest accepted object, in bytes.")
    max_pixels: int = Field(
        40_000_000, ge=1, description="Largest accepted width × height (decompression bombs)."
    )
    min_side: int = Field(8, ge=1, description="Smallest accepted width or height, in pixels.")
    formats: tuple[str, ...] = Field(
        ("JPEG", "PNG", "WEBP", "HEIF", "AVIF", "GIF"),
        description="Accepted Pillow format names (HEIC/HEIF through pillow-heif; GIF and "
        "animated WebP give their first frame).",
    )


class StageSettings(BaseModel):
    """The two inference stages: which models, on what backend, at which shape."""

    backend: Literal["eager", "torchscript", "neuron", "simulated"] = Field(
        "eager",
        description="Model backend: eager diffusers on CPU or CUDA; torchscript runs artifacts "
        "traced by `img2img compile` (CPU/CUDA, what CI uses for the Neuron code path); "
        "neuron runs Neuron-compiled artifacts on the slot's NeuronCores (Inf2); simulated "
        "waits a fixed device time per call without using the CPU (benchmarks only).",
    )
    img2img_artifacts: str | None = Field(
        None,
        description="Compiled stage-1 artifacts (folder or s3:// URI written by `img2img "
        "compile`) for the torchscript and neuron backends. None: torchscript compiles "
        "img2img_model once into model_cache_dir; neuron refuses.",
    )
    upscale_artifacts: str | None = Field(
        None,
        description="Compiled stage-2 artifacts (folder or s3:// URI), as img2img_artifacts.",
    )
    simulated_img2img_ms: float = Field(
        2020.0,
        ge=0,
        le=600_000,
        description="Simulated stage-1 device time per call (default: SD 1.5 512², 50 steps, "
        "inf2.xlarge, Neuron 2.21).",
    )
    simulated_upscale_ms: float = Field(
        2020.0,
        ge=0,
        le=600_000,
        description="Simulated stage-2 device time per call (no published Inf2 figure for the "
        "x4 upscaler; assumed equal to stage 1).",
    )
    simulated_image_share: float = Field(
        0.35,
        ge=0,
        le=1,
        description="Simulated device: what each image after the first adds to a call, as a "
        "share of a one-image call (a call of n images takes simulated_*_ms × (1 + share × "
        "(n − 1))). 1: batching gains nothing; 0: a call costs the same at any size. No "
        "published Inf2 batch curve exists for these models; 0.35 is an assumption, "
        "replace it with `img2img bench device` on the target host.",
    )
    compiled_batches: list[int] | None = Field(
        None,
        description="Compiled backends: the batch sizes to load from artifacts compiled at "
        "several (`img2img compile --batch 1,4`; None: all they hold), and the sizes the "
        "torchscript backend compiles its default model at (None: 1). A call runs at one "
        "of them, padded when that is cheaper than two calls.",
    )
    device_batch: int = Field(
        4,
        ge=1,
        le=64,
        description="Most images in one device call on the eager and simulated backends "
        "(images of one run with the same steps, strength and guidance share a call). The "
        "compiled backends run the batch sizes their artifacts were compiled for.",
    )
    simulated_load_s: float = Field(
        20.0,
        ge=0,
        le=3600,
        description="Simulated time to load both stage models onto the device.",
    )
    simulated_crash_marker: str | None = Field(
        None,
        min_length=3,
        description="Fault injection (simulated backend only): a stage-1 call whose prompt "
        "contains this string kills its process, as a compiled graph that faults on one input "
        "would. None: off.",
    )
    simulated_hang_marker: str | None = Field(
        None,
        min_length=3,
        description="Fault injection (simulated backend only): a stage-1 call whose prompt "
        "contains this string never returns, as a device that stops answering on one input "
        "would (the process stays alive). None: off.",
    )
    simulated_hang_file: Path | None = Field(
        None,
        description="Fault injection (simulated backend only): while this file exists, every "
        "device call never returns, warm-up included (a device that stays stuck). None: off.",
    )
    device: str = Field("cpu", description="torch device for the eager backend (cpu, cuda).")
    channels_last: bool = Field(
        True,
        description="On a GPU, keep the UNet's and VAE's activations channels-last (faster "
        "convolutions on tensor cores); ignored on the CPU.",
    )
    torch_compile: bool = Field(
        False,
        description="On a GPU, compile the UNet with torch.compile when the model loads "
        "(minutes once per slot start, then faster calls; each new call size compiles "
        "again). Off by default: warm-up and slot starts stay short.",
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="Weights dtype; float16 only on CUDA."
    )
    img2img_model: str | None = Field(
        None,
        description="Stage-1 model: a diffusers folder or s3:// URI. None builds the tiny "
        "random-weight model (produces noise).",
    )
    upscale_model: str | None = Field(
        None,
        description="Stage-2 x4 upscaler: a diffusers folder or s3:// URI. None builds the tiny "
        "random-weight model (produces noise).",
    )
    model_cache_dir: Path = Field(
        Path(".img2img/models"), description="Where built and downloaded models are kept."
    )
    height: int = Field(64, ge=8, le=2048, multiple_of=8, description="Stage-1 input height.")
    width: int = Field(64, ge=8, le=2048, multiple_of=8, description="Stage-1 input width.")
    noise_level: int = Field(20, ge=0, le=350, description="x4 upscaler noise level.")
    torch_threads: int = Field(
        1, ge=1, le=256, description="torch threads per process (1 is fastest on small hosts)."
    )


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
        description="Stage models this worker's slots load: img2img, upscale or both. None: "
        "what its work pool runs (inf2-img2img: img2img, inf2-upscale: upscale, any other "
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

    def recycle_rule(self) -> RecycleRule:
        return RecycleRule(
            growth_mb=self.recycle_growth_mb or None,
            after_runs=self.recycle_after_runs or None,
            jitter=self.recycle_jitter,
        )

    def one_slot_per_gpu(self, stage_device: str, gpus: int) -> WorkerSettings:
        """With `stages.device` plain `cuda` and no slot layout given, one slot per GPU of
        the host (`gpus` of them): what GPU users expect of a worker by default. A layout
        that is set (`devices`, `core_groups`), a named GPU (`cuda:1`) or none found is
        kept as it is."""
        if stage_device != "cuda" or self.devices or self.core_groups or gpus < 1:
            return self
        return self.model_copy(update={"devices": [f"cuda:{i}" for i in range(gpus)]})

    def slot_env(self, index: int) -> dict[str, str]:
        """Environment that gives slot `index` its share of the device."""
        env = {"IMG2IMG_SLOT": str(index)}
        if self.core_groups:
            env["NEURON_RT_VISIBLE_CORES"] = self.core_groups[index]
        if self.devices:
            env["IMG2IMG_STAGES__DEVICE"] = self.devices[index]
        return env


class DispatchSettings(BaseModel):
    """The S3-event dispatcher: long polling and micro-batching."""

    deployment: str | None = Field(
        None,
        description="Deployment the dispatcher creates runs of, as FLOW_NAME/DEPLOYMENT_NAME. "
        "None: the topology's first (img2img-pipeline/inf2, or img2img-stage1/inf2-img2img "
        "when split).",
    )
    base_batch: int = Field(
        8,
        ge=1,
        le=4096,
        description="Images in one flow run at low load (nothing waiting beyond the batch): "
        "it leaves at this size or after max_wait_s. With adaptive off, every batch's size.",
    )
    max_batch: int = Field(
        512,
        ge=1,
        le=4096,
        description="Most images in one flow run: the ceiling batches grow to under a backlog "
        "(adaptive); below base_batch, it caps that too.",
    )
    adaptive: bool = Field(
        True,
        description="Size each batch from what is waiting (the messages in hand, the queue's "
        "depth, the rate since the last batch), spread over the runs the pool can hold at "
        "once; off: fixed batches of base_batch.",
    )
    max_wait_s: float = Field(
        2.0, ge=0, le=300, description="Longest an image waits for its batch to fill."
    )
    max_run_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Under a steady rate (adaptive), a batch holds what arrives in max_wait_s "
        "(one run per max_wait_s: the Prefect server's cost per image falls as the rate "
        "rises) but no more than a run does in this long on its slot, judged from the "
        "deployment's recent runs; it bounds what a bigger batch adds to an image's latency.",
    )
    max_hold_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="Under a backlog, longest a batch's oldest image waits for the batch to "
        "fill (at most visibility_timeout_s − 30 s, so messages held never reappear).",
    )
    poll_wait_s: int = Field(
        2, ge=0, le=20, description="SQS long-poll wait per ReceiveMessage call."
    )
    visibility_timeout_s: int = Field(
        120, ge=10, le=43200, description="How long received messages stay hidden from others."
    )
    dedup_window: int = Field(
        100_000, ge=0, description="Recently dispatched objects remembered in memory."
    )
    crash_flag: Path | None = Field(
        None,
        description="Fault injection (`img2img chaos`): when this file exists right after a "
        "flow run was created, the dispatcher removes it and kills itself before deleting the "
        "run's messages. None: off.",
    )

    @property
    def target(self) -> str:
        """The deployment runs are created of (the settings tree fills `deployment` from
        the topology; a bare DispatchSettings takes the single topology's)."""
        return self.deployment or entry_deployment("single")

    @model_validator(mode="after")
    def _batch_fits_visibility(self) -> DispatchSettings:
        if self.max_wait_s + 30 > self.visibility_timeout_s:
            raise ValueError(
                "dispatch.visibility_timeout_s must exceed dispatch.max_wait_s by at least 30 s "
                f"(messages would reappear while batching), but max_wait_s={self.max_wait_s} "
                f"and visibility_timeout_s={self.visibility_timeout_s}"
            )
        return self


class AutoscalerSettings(BaseModel):
    """Where the autoscaler applies the size it decides, and what it publishes."""

    pool: str = Field("inf2", description="Work pool whose queue drives the size.")
    backend: Literal["local", "asg", "ecs"] = Field(
        "local",
        description="local: worker processes here; asg: an EC2 Auto Scaling group; "
        "ecs: an ECS service's desired count.",
    )
    asg_name: str | None = Field(None, description="Auto Scaling group (backend asg).")
    ecs_cluster: str | None = Field(None, description="ECS cluster (backend ecs).")
    ecs_service: str | None = Field(None, description="ECS service (backend ecs).")
    pool_groups: dict[str, str] = Field(
        default_factory=dict,
        description="Split topology on AWS: each pool's own Auto Scaling group (asg) or ECS "
        'service (ecs), e.g. {"inf2-img2img": "img2img-p1", "inf2-upscale": '
        '"img2img-p2"}.',
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
    def _backend_named(self) -> AutoscalerSettings:
        if self.backend == "asg" and not self.asg_name:
            raise ValueError("autoscaler.asg_name is required with autoscaler.backend=asg")
        if self.backend == "ecs" and not (self.ecs_cluster and self.ecs_service):
            raise ValueError(
                "autoscaler.ecs_cluster and autoscaler.ecs_service are required "
                "with autoscaler.backend=ecs"
            )
        return self


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
    lookback_s: float = Field(
        86_400.0,
        gt=0,
        description="The periodic reconcile looks at uploads no older than this (0 < age).",
    )


class NotifySettings(BaseModel):
    """Where each upload's outcome is announced to the app: one message per result or failure
    record, to an SNS topic, an EventBridge bus, or both (neither: no messages)."""

    topic_arn: str | None = Field(
        None,
        description="SNS topic that gets one message per outcome (a `.fifo` topic also gets "
        "a de-duplication id and a message group per upload key).",
    )
    event_bus: str | None = Field(
        None,
        description="EventBridge bus (name or ARN) that gets the same message as an event "
        "(source `img2img`, detail-type `img2img outcome`).",
    )
    presign_s: int = Field(
        0,
        ge=0,
        le=7 * 86_400,
        description="Lifetime of a presigned GET URL of the result added to the message "
        "(0: no URL; S3 caps it at 7 days, and at the signing credentials' own expiry).",
    )

    writer_grace_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="An outcome another run wrote and has not announced yet is left to that "
        "run (which tags it right after its send) for this long after it was written; "
        "announced by whoever finds it untagged after that (its writer died).",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.topic_arn or self.event_bus)


# On-demand Linux prices in US East (N. Virginia), USD per hour, from
# https://aws.amazon.com/ec2/pricing/on-demand/ (inf2 rows; also listed on
# https://aws.amazon.com/ec2/instance-types/inf2/). Other regions and Savings Plans differ:
# set `monitor.hourly_price_usd` to what the account pays.
INF2_ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "inf2.xlarge": 0.7582,
    "inf2.8xlarge": 1.9679,
    "inf2.24xlarge": 6.4906,
    "inf2.48xlarge": 12.9813,
}
# The GPU hosts of the `cuda` variant (g5: NVIDIA A10G 24 GB; g6: L4 24 GB; g6e: L40S 48 GB),
# same source and region; check the page before sizing a budget on them.
GPU_ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.12xlarge": 5.672,
    "g6.xlarge": 0.8048,
    "g6.2xlarge": 0.9776,
    "g6e.xlarge": 1.861,
}
ON_DEMAND_USD_PER_HOUR = {**INF2_ON_DEMAND_USD_PER_HOUR, **GPU_ON_DEMAND_USD_PER_HOUR}


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


def _iso(days: float) -> str:
    """A duration as Prefect's settings read it (ISO 8601, in whole seconds)."""
    return f"PT{round(days * 86_400)}S"


class RetentionSettings(BaseModel):
    """How long the Prefect server keeps what the pipeline records. Prefect's own database
    vacuum does the deleting (flow runs with their task runs and states, their logs and
    artifacts, orphans, events); these settings turn it on and size it. The outcomes
    themselves (results and failure records in S3) are not touched."""

    runs_days: float = Field(
        14.0,
        gt=1 / 24,
        le=3650,
        description="Finished flow runs (with their task runs, states, logs and artifacts) "
        "are deleted this long after they ended; Prefect wants more than an hour.",
    )
    events_days: float = Field(
        2.0,
        gt=0,
        le=3650,
        description="Events are deleted this long after they happened. Nothing here reads "
        "an event older than minutes (the fleet view reads its window, the autoscaler and "
        "alerts the latest); they are most of the database's growth per run.",
    )
    vacuum_interval_s: float = Field(
        3600.0, ge=1, le=86_400, description="How often the vacuum looks for old runs and events."
    )
    orphans_interval_s: float = Field(
        86_400.0,
        ge=1,
        le=7 * 86_400,
        description="How often it scans for logs and artifacts left by deleted runs (a full "
        "scan of those tables).",
    )

    def server_env(self) -> dict[str, str]:
        """The Prefect server's settings that apply this retention."""
        return {
            "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs,orphans",
            "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(
                round(self.runs_days * 86_400)
            ),
            "PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS": str(self.vacuum_interval_s),
            "PREFECT_SERVER_SERVICES_DB_VACUUM_ORPHAN_CLEANUP_LOOP_SECONDS": str(
                self.orphans_interval_s
            ),
            "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": _iso(self.events_days),
        }


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

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def moto_url(self) -> str:
        return f"http://{self.host}:{self.moto_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def beside(self, state_dir: Path, port_offset: int, **updates: object) -> LocalStackSettings:
        """A stack of its own next to this one (a benchmark's): its state folder, every port
        shifted by `port_offset`, and `updates`."""
        return self.model_copy(
            update={
                "state_dir": state_dir,
                "prefect_port": self.prefect_port + port_offset,
                "moto_port": self.moto_port + port_offset,
                "metrics_port": self.metrics_port + port_offset,
                "postgres_port": self.postgres_port + port_offset,
                **updates,
            }
        )


class Settings(BaseSettings):
    """Root of the settings tree."""

    model_config = SettingsConfigDict(
        env_prefix="IMG2IMG_", env_nested_delimiter="__", extra="ignore"
    )

    topology: Topology = Field(
        "single",
        description="single: both stages on every host of one pool (inf2); split: stage 1 "
        "on pool inf2-img2img, stage 2 on inf2-upscale, each scaled on its own queue, "
        "handing off through the directory bucket.",
    )
    aws: AwsSettings = Field(default_factory=AwsSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    limits: ImageLimits = Field(default_factory=ImageLimits)
    stages: StageSettings = Field(default_factory=StageSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    scaling: ScalingSettings = Field(default_factory=ScalingSettings)
    autoscaler: AutoscalerSettings = Field(default_factory=AutoscalerSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    local: LocalStackSettings = Field(default_factory=LocalStackSettings)

    def use_topology(self, topology: Topology) -> None:
        """Switch the topology; the dispatcher's deployment follows unless it was set."""
        if self.dispatch.deployment == entry_deployment(self.topology):
            self.dispatch.deployment = entry_deployment(topology)
        self.topology = topology

    @model_validator(mode="after")
    def _dispatch_to_topology(self) -> Settings:
        if self.dispatch.deployment is None:
            self.dispatch.deployment = entry_deployment(self.topology)
        return self

    @model_validator(mode="after")
    def _a_group_per_pool(self) -> Settings:
        auto = self.autoscaler
        if self.topology == "split" and auto.backend != "local":
            from img2img.pipeline.topology import pools

            missing = [r.pool for r in pools("split") if r.pool not in auto.pool_groups]
            if missing:
                raise ValueError(
                    f"topology split with autoscaler.backend={auto.backend} scales each pool's "
                    f"own group: autoscaler.pool_groups must name one for {', '.join(missing)}"
                )
        return self

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

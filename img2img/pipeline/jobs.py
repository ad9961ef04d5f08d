"""One image's way through a batch: its keys, parameters, intermediate images, timings and
outcome. Steps mutate jobs in place and skip those that already finished or failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from PIL import Image

from img2img.errors import is_retryable
from img2img.intake.events import ObjectRef
from img2img.intake.keys import UploadKeys, keys_for
from img2img.intake.params import ImageParams
from img2img.observe.timing import Timings
from img2img.observe.waterfall import image_line, wait_columns
from img2img.slots.cancel import RunCancelled

# handed_off: stage 1 is done and a stage-2 run holds the image (split topology); that run
# writes its outcome.
Status = Literal["pending", "completed", "failed", "skipped", "handed_off"]


@dataclass
class Failure:
    stage: str
    reason: str
    error: str
    retryable: bool


@dataclass
class ImageJob:
    ref: ObjectRef
    keys: UploadKeys
    timings: Timings = field(default_factory=Timings)
    params: ImageParams | None = None
    seed: int = 0
    image: Image.Image | None = None
    generate: Image.Image | None = None
    upscale: Image.Image | None = None
    # The final image as the PNG kept in the directory bucket, so the result is the same
    # bytes and the image is encoded once (None: encode it when the result is written).
    upscale_png: bytes | None = None
    status: Status = "pending"
    failure: Failure | None = None
    result_uri: str | None = None
    note: str = ""
    # The caller's own id, from the upload's metadata (x-amz-meta-request-id), once read.
    request_id: str | None = None
    # The outcome document this run created (None: it created none), and whether the
    # upload's completion message went out (`announce_error` says why not).
    outcome_doc: dict[str, Any] | None = None
    announced: bool = False
    announce_error: str | None = None
    # Images in the device call that ran each inference stage for this image (by stage).
    device_batch: dict[str, int] = field(default_factory=dict)
    # When each inference stage's output was in the directory bucket (epoch s, by stage).
    output_written: dict[str, float] = field(default_factory=dict)
    # Split topology: the other run of this image (the stage-1 run in a stage-2 run, the
    # stage-2 run in a stage-1 run once handed off).
    linked_run: str | None = None

    @classmethod
    def for_ref(cls, ref: ObjectRef) -> ImageJob:
        return cls(ref=ref, keys=keys_for(ref))

    @property
    def active(self) -> bool:
        return self.status == "pending"

    @property
    def has_outcome(self) -> bool:
        """This run wrote (or found) the image's outcome: not pending, and not handed to a
        stage-2 run, which writes it there."""
        return self.status in ("completed", "failed", "skipped")

    def fail(self, stage: str, exc: BaseException) -> None:
        """Mark this image failed at `stage`; later steps skip it, post-process records it."""
        self.status = "failed"
        self.failure = Failure(
            stage=stage,
            reason=str(exc) or type(exc).__name__,
            error=type(exc).__name__,
            # A cancelled image can simply be submitted again.
            retryable=is_retryable(exc) or isinstance(exc, RunCancelled),
        )
        self.image = self.generate = self.upscale = None


def placed(ref: ObjectRef) -> dict[str, str]:
    """The upload's lane and tenant, where the dispatcher placed it (nothing when off)."""
    return {k: v for k, v in (("lane", ref.lane), ("tenant", ref.tenant)) if v is not None}


def failure_record(job: ImageJob, flow_run_id: str | None) -> dict[str, Any]:
    """The JSON document written to `failed/<key>@<tag>.json` for a failed image."""
    assert job.failure is not None
    return {
        "source": job.ref.uri,
        "etag": job.ref.etag,
        "version_id": job.ref.version_id,
        "request_id": job.request_id,
        **placed(job.ref),
        "stage": job.failure.stage,
        "reason": job.failure.reason,
        "error": job.failure.error,
        "retryable": job.failure.retryable,
        "timings_ms": {k: round(v, 1) for k, v in job.timings.items()},
        "flow_run_id": flow_run_id,
        "failed_at": datetime.now(UTC).isoformat(),
    }


def result_record(
    job: ImageJob,
    result_bucket: str,
    flow_run_id: str | None,
    worker: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON metadata written next to a result image."""
    assert job.params is not None and job.upscale is not None
    return {
        "source": job.ref.uri,
        "etag": job.ref.etag,
        "version_id": job.ref.version_id,
        "request_id": job.request_id,
        **placed(job.ref),
        "result": f"s3://{result_bucket}/{job.keys.result}",
        "width": job.upscale.size[0],
        "height": job.upscale.size[1],
        "params": job.params.model_dump(),
        "seed": job.seed,
        "timings_ms": {k: round(v, 1) for k, v in job.timings.items()},
        "device_batch": dict(job.device_batch),
        "flow_run_id": flow_run_id,
        # Split topology: the run that ran stage 1 (flow_run_id ran stage 2).
        **({"generate_flow_run_id": job.linked_run} if job.linked_run else {}),
        "worker": worker or {},
        "finished_at": datetime.now(UTC).isoformat(),
    }


def finish_timings(jobs: list[ImageJob], finished: datetime | None = None) -> None:
    """total = upload event → now (end-to-end), else the sum of the measured stages; the
    waits between the image's own steps (see waterfall.py) fill the rest."""
    finished = finished or datetime.now(UTC)
    for job in jobs:
        if "total" in job.timings:
            continue
        t = job.timings
        t.ended = finished.timestamp()
        if t.started is not None:
            line = image_line(job.ref.key, job.status, t.spans, t.started, t.ended, None, 0.0)
            t.update({k: v for k, v in wait_columns(line).items() if v > 0})
        if job.ref.event_time is not None:
            job.timings["total"] = (finished - job.ref.event_time).total_seconds() * 1000.0
        else:
            job.timings["total"] = sum(v for k, v in job.timings.items() if k != "total")

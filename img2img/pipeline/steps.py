"""The I/O and CPU steps around the two inference stages, one function per step.

Each takes clients and settings as arguments, works on a list of jobs, records per-image
timings and turns per-image permanent errors into failed jobs. Retryable errors propagate,
so the caller (a Prefect task) can retry the step; jobs already done are skipped on retry.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from img2img.aws import storage
from img2img.config.limits import ImageLimits
from img2img.config.stages import StageSettings
from img2img.delivery.announce import Announcer
from img2img.delivery.notify import Outcome, request_id_from
from img2img.delivery.outcomes import caller_id, write_failure_record
from img2img.errors import (
    DeviceOutOfMemory,
    InvalidEvent,
    ObjectTooLarge,
    PermanentError,
    is_retryable,
)
from img2img.intake.events import oversize_reason
from img2img.intake.images import decode_image, encode_png, fit_to_shape
from img2img.intake.keys import unsafe_key_reason
from img2img.intake.params import ImageParams, params_from_metadata
from img2img.models.registry import CallSizes
from img2img.observe.timing import queue_hops
from img2img.pipeline.device_batches import cut, group_by, plan_calls, split_shares
from img2img.pipeline.jobs import ImageJob, finish_timings, result_record
from img2img.pipeline.stages.spec import Stage
from img2img.slots import progress
from img2img.slots.cancel import RunCancelled
from img2img.slots.step_turns import Turns, offered

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def each(
    jobs: list[ImageJob],
    stage: str,
    work: Callable[[ImageJob], None],
    concurrency: int,
    measure: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Run `work` on every active job, `concurrency` at a time.

    A permanent error fails that job only. The first retryable error is re-raised after the
    others have run, so one slow or throttled image does not hold back the rest.
    """
    active = [j for j in jobs if j.active]
    if not active:
        return

    def guarded(job: ImageJob) -> BaseException | None:
        if should_stop is not None and should_stop():
            return RunCancelled(f"cancelled before {stage}")
        try:
            if measure:
                with job.timings.measure(stage):
                    work(job)
            else:
                work(job)
        except PermanentError as exc:
            job.fail(stage, exc)
        except RunCancelled as exc:
            return exc
        except Exception as exc:
            if is_retryable(exc):
                return exc
            job.fail(stage, exc)
        return None

    if concurrency <= 1 or len(active) == 1:
        errors = [guarded(j) for j in active]
    else:
        with ThreadPoolExecutor(max_workers=min(concurrency, len(active))) as pool:
            errors = list(pool.map(guarded, active))
    cancelled = [e for e in errors if isinstance(e, RunCancelled)]
    for err in cancelled or errors:
        if err is not None:
            raise err


def reject_unaccepted(jobs: list[ImageJob], upload_buckets: frozenset[str], max_bytes: int) -> None:
    """Fail uploads whose event names a size over `max_bytes` (never copied or read), that
    the dispatcher refused a place (a lane or tenant that cannot be used: the failure names
    it), from a bucket this pipeline does not serve, or whose key is unsafe to build outcome
    keys from (the dispatcher refuses those first, to the dead-letter queue; this catches
    runs created any other way)."""
    for job in jobs:
        if (too_big := oversize_reason(job.ref.size, max_bytes)) is not None:
            job.fail("validate", ObjectTooLarge(too_big))
        elif job.ref.refused is not None:
            job.fail("placement", InvalidEvent(job.ref.refused))
        elif job.ref.bucket not in upload_buckets:
            job.fail(
                "validate",
                InvalidEvent(
                    f"bucket {job.ref.bucket!r} is not an upload bucket of this pipeline "
                    f"(accepted: {', '.join(sorted(upload_buckets))})"
                ),
            )
        elif (reason := unsafe_key_reason(job.ref)) is not None:
            job.fail("validate", InvalidEvent(reason))


def with_outcome_check(
    s3: S3Client,
    jobs: list[ImageJob],
    results_bucket: str,
    stage: str,
    work: Callable[[ImageJob], None],
    concurrency: int,
    measure: bool = True,
) -> None:
    """Run `work` on each active job with the job's outcome check beside it, not before it:
    the two lookups (its result document, its failure record) go out at once, while `work`
    runs. A job that has its outcome already (a redelivered event) is skipped, whatever
    `work` did or raised (its copy or read was only wasted); otherwise an error of `work`
    counts as `stage`'s. `stage` gets `work`'s time (unless not `measure`); `check` what
    the lookups took beyond it, so the two columns still add up to the wall time."""
    active = [j for j in jobs if j.active]
    if not active:
        return
    threads = min(2 * concurrency, 2 * len(active))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="outcome-check") as side:

        def one(job: ImageJob) -> None:
            keys = (job.keys.result_meta, job.keys.failure)
            lookups = [side.submit(storage.exists, s3, results_bucket, key) for key in keys]
            started = time.time()
            error: Exception | None = None
            try:
                work(job)
            except Exception as exc:  # decided once the lookups say whether it matters
                error = exc
            ended = time.time()
            if measure:
                job.timings.span(stage, started, ended)
            try:
                found = [lookup.result() for lookup in lookups]
            except Exception as exc:
                if is_retryable(exc):
                    raise
                job.fail("check", exc)
                return
            finally:
                checked = time.time()
                if checked > ended:
                    job.timings.span("check", ended, checked)
            key = next((k for k, hit in zip(keys, found, strict=True) if hit), None)
            if key is not None:
                job.status = "skipped"
                job.result_uri = f"s3://{results_bucket}/{key}"
                job.note = "already processed by an earlier run"
            elif error is not None:
                raise error

        each(active, stage, one, concurrency, measure=False)


def record_queue_wait(
    jobs: list[ImageJob],
    started: datetime,
    created: datetime | None = None,
    claimed: float | None = None,
) -> None:
    """Queue wait = flow run start − the upload's event time (as the event states it), and
    its hops (`queue_hops`) from when the dispatcher received the event, the run was
    `created` and a worker `claimed` it (epoch seconds)."""
    for job in jobs:
        job.timings.started = started.timestamp()
        if job.ref.event_time is not None:
            wait = (started - job.ref.event_time).total_seconds() * 1000.0
            job.timings["queue_wait"] = max(wait, 0.0)
            received = job.ref.received_at
            job.timings.update(
                queue_hops(
                    job.ref.event_time.timestamp(),
                    received.timestamp() if received is not None else None,
                    created.timestamp() if created is not None else None,
                    claimed,
                    started.timestamp(),
                )
            )


def copy_to_stage(
    s3: S3Client, jobs: list[ImageJob], stage_bucket: str, results_bucket: str, concurrency: int
) -> None:
    """Server-side copy of every upload into the directory bucket, concurrently, each with
    its outcome check beside it (`with_outcome_check`): a redelivered upload is skipped."""
    with_outcome_check(
        s3,
        jobs,
        results_bucket,
        "copy",
        lambda job: storage.copy_to_stage(s3, job.ref, stage_bucket, job.keys.input),
        concurrency,
    )


def preprocess(
    s3: S3Client,
    jobs: list[ImageJob],
    stage_bucket: str,
    limits: ImageLimits,
    stages: StageSettings,
    defaults: ImageParams,
    concurrency: int,
) -> None:
    """Download from the directory bucket, validate parameters, decode and fit to shape."""

    def one(job: ImageJob) -> None:
        with job.timings.measure("download"):
            got = storage.download(s3, stage_bucket, job.keys.input, limits.max_bytes)
        job.request_id = request_id_from(got.metadata)
        job.params = params_from_metadata(got.metadata, defaults)
        job.seed = job.params.seed_for(job.ref.identity)
        image = decode_image(got.body, limits)
        job.image = fit_to_shape(image, stages.width, stages.height)

    # "preprocess" is measured around everything; the download part is subtracted below so
    # the two columns do not overlap.
    each(jobs, "preprocess", one, concurrency)
    for job in jobs:
        if "download" in job.timings and "preprocess" in job.timings:
            job.timings["preprocess"] -= job.timings["download"]


def decode_png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data), formats=["PNG"]).convert("RGB")


def postprocess(
    s3: S3Client,
    jobs: list[ImageJob],
    results_bucket: str,
    flow_run_id: str | None,
    concurrency: int,
    worker: dict[str, Any] | None = None,
) -> None:
    """Encode and write each finished image (create-once), then its metadata document,
    which carries the image's complete timings."""

    def one(job: ImageJob) -> None:
        assert job.upscale is not None
        png = job.upscale_png
        if png is None:  # not kept in the directory bucket by this run (an output reused)
            with job.timings.measure("postprocess"):
                png = encode_png(job.upscale)
        with job.timings.measure("upload"):
            # An image given up on meanwhile (the recovery service wrote its failure record
            # while this run still ran) keeps that one outcome: no result beside it.
            if storage.exists(s3, results_bucket, job.keys.failure):
                job.status = "skipped"
                job.note = "finished here, but its failure record was written first"
                job.result_uri = f"s3://{results_bucket}/{job.keys.failure}"
                return
            created = storage.put_once(s3, results_bucket, job.keys.result, png, "image/png")
        finish_timings([job])
        doc = result_record(job, results_bucket, flow_run_id, worker)
        if storage.put_json_once(s3, results_bucket, job.keys.result_meta, doc):
            job.outcome_doc = doc
        job.status = "completed" if created else "skipped"
        job.note = "" if created else "result already written by another run"
        job.result_uri = f"s3://{results_bucket}/{job.keys.result}"

    each(jobs, "postprocess", one, concurrency, measure=False)


def write_failures(
    s3: S3Client, jobs: list[ImageJob], results_bucket: str, flow_run_id: str | None
) -> None:
    """Write one failure record per failed image (create-once, like results). An image that
    failed before its upload was read gets the caller's id from the upload's metadata (a
    HEAD: an upload refused for its size too), unless it was refused at validation for its
    bucket or key (not one this pipeline reads)."""
    for job in jobs:
        if job.status == "failed":
            failure = job.failure
            foreign = (
                failure is not None
                and failure.stage == "validate"
                and failure.error != ObjectTooLarge.__name__
            )
            if job.request_id is None and not foreign:
                job.request_id = caller_id(s3, job.ref)
            write_failure_record(s3, results_bucket, job, flow_run_id)


def announce(announcer: Announcer, jobs: list[ImageJob], concurrency: int = 8) -> None:
    """Send each finished image's completion message, once (see `announce.py`).

    An outcome this run wrote is announced from its document; one an earlier run wrote
    (a skipped image) only when that run did not announce it. A retryable error is
    re-raised after the others were sent, so the task retries only what is left; a
    permanent one (the topic refuses) is kept in `announce_error`.
    """
    todo = [j for j in jobs if not j.announced and j.has_outcome]
    if not announcer.enabled or not todo:
        return

    def one(job: ImageJob) -> BaseException | None:
        outcome: Outcome = "failure" if job.status == "failed" else "result"
        written = (outcome, job.outcome_doc) if job.outcome_doc is not None else None
        try:
            announcer.announce_once(job.ref, written)
        except Exception as exc:
            if is_retryable(exc):
                return exc
            job.announce_error = str(exc) or type(exc).__name__
        job.announced = job.announce_error is None
        return None

    with ThreadPoolExecutor(max_workers=min(concurrency, len(todo))) as pool:
        errors = [e for e in pool.map(one, todo) if e is not None]
    if errors:
        raise errors[0]


class StageOutputs:
    """Keeps stage outputs in the directory bucket without holding up the device.

    Writes go to a small thread pool; `close()` waits for them. A failed intermediate write
    costs only the ability to resume from it, so it is reported, not raised.
    """

    def __init__(
        self, s3: S3Client, bucket: str, threads: int = 4, keep_encoded: bool = False
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stage-out")
        self._pending: list[tuple[str, Future[None]]] = []
        self._keep_encoded = keep_encoded
        self.written: dict[str, float] = {}  # key → when its write finished (epoch s)
        # key → the PNG written (with `keep_encoded`: the final stage's, which the result
        # reuses rather than encoding the image again)
        self.encoded: dict[str, bytes] = {}

    def save(self, key: str, image: Image.Image) -> None:
        def write() -> None:
            png = encode_png(image)
            if self._keep_encoded:
                self.encoded[key] = png
            storage.put(self._s3, self._bucket, key, png, "image/png")
            self.written[key] = time.time()

        self._pending.append((key, self._pool.submit(write)))

    def load(self, key: str) -> Image.Image | None:
        """A stage output kept by an earlier attempt, or None."""
        data = storage.download_if_exists(
            self._s3, self._bucket, key, storage.STAGE_OUTPUT_MAX_BYTES
        )
        return decode_png(data) if data is not None else None

    def close(self) -> list[str]:
        """Wait for every write; returns messages for the ones that failed."""
        problems = []
        for key, fut in self._pending:
            exc = fut.exception()
            if exc is not None:
                problems.append(f"s3://{self._bucket}/{key}: {exc}")
        self._pending.clear()
        self._pool.shutdown(wait=True)
        return problems


BatchInfer = Callable[[list[ImageJob]], list[Image.Image]]


class OutputStore(Protocol):
    """Where a stage keeps its outputs (`StageOutputs`: the directory bucket)."""

    def save(self, key: str, image: Image.Image) -> None: ...

    def load(self, key: str) -> Image.Image | None: ...


ONE_AT_A_TIME = CallSizes((1,), exact=True)


def run_stage(
    jobs: list[ImageJob],
    stage: Stage,
    infer: BatchInfer,
    outputs: OutputStore,
    resume: bool,
    device_lock: AbstractContextManager[Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    sizes: CallSizes = ONE_AT_A_TIME,
    between_calls: Callable[[], bool] | None = None,
    between_steps: bool = False,
) -> int:
    """Run one inference stage over the active jobs, in device calls of several images.

    `infer` runs one device call over its jobs' inputs and returns an output each, in
    order. Jobs that share what shapes a call (`stage.call_shape`) go together, cut into
    calls of `sizes` (`device_batches.plan_calls`); a compiled size with fewer images is
    padded by repeating the last one. With `resume`, outputs kept by an earlier attempt of
    an upload are reused instead of recomputed (stage 2 can be retried without redoing
    stage 1); that lookup happens before the device is taken. `device_lock` is held for
    the whole stage over the batch; `between_calls` runs between two of its calls (the
    slot's lock hands the device to a more urgent lane's waiting run there, returning
    whether it did), and with `between_steps` between two diffusion steps of a call too
    (`img2img.slots.step_turns`): the time given away is not the call's images' own.

    Each image's stage time is its share of its call's time (a call's images are laid end
    to end over it on the image's timeline), and `job.device_batch` says how many images
    its call held. A call that fails for one image's sake (a permanent error) is run again
    one image per call, so only that image fails; a call out of device memory is run again
    in smaller calls. The first retryable error is raised after the other calls ran.
    Returns how many device calls gave their outputs.
    """

    def reuse(job: ImageJob) -> None:
        existing = outputs.load(stage.output_key(job))
        if existing is not None:
            stage.accept(job, existing)
            job.note = f"{stage.name} reused from an earlier attempt"

    if resume:
        each(jobs, f"{stage.name}_lookup", reuse, concurrency=8, measure=False)
    errors: list[BaseException] = []
    done = 0
    turns = (
        Turns(between_calls, on_back=lambda: progress.mark(stage.name))
        if between_calls is not None
        else None
    )
    in_calls = turns if between_steps else None
    with device_lock if device_lock is not None else nullcontext():
        progress.mark(stage.name)  # the stage on the device, for the hang deadline
        todo = [j for j in jobs if j.active and stage.output(j) is None]
        first = True
        for group in group_by(todo, stage.call_shape):
            calls = plan_calls(len(group), sizes.sizes, exact=sizes.exact)
            for chunk, call in zip(cut(group, calls), calls, strict=True):
                if not first and turns is not None:
                    turns()
                first = False
                if should_stop is not None and should_stop():
                    raise RunCancelled(f"cancelled before {stage.name}")
                with offered(in_calls):
                    done += _device_call(
                        chunk, call.size, stage, infer, outputs, sizes, errors, in_calls
                    )
    if errors:
        raise errors[0]
    return done


def _device_call(
    chunk: list[ImageJob],
    size: int,
    stage: Stage,
    infer: BatchInfer,
    outputs: OutputStore,
    sizes: CallSizes,
    errors: list[BaseException],
    turns: Turns | None = None,
) -> int:
    """One device call over `chunk` (padded to `size`), its outputs accepted and kept; on
    failure, smaller calls (see `run_stage`) or the error kept in `errors`. Returns the
    calls that gave their outputs. The time `turns` gave to other calls between this one's
    steps is taken off its images' stage time (it shows as a wait on their timelines)."""
    padded = chunk + [chunk[-1]] * (size - len(chunk))
    wall = time.time()
    start = time.perf_counter()
    given_before = turns.given_s if turns is not None else 0.0
    try:
        images = infer(padded)[: len(chunk)]
    except RunCancelled:
        raise
    except DeviceOutOfMemory as exc:
        smaller = [s for s in sizes.sizes if s < size]
        if len(chunk) == 1 or not smaller:
            errors.append(exc)
            return 0
        # The same images in calls below the size that did not fit (halved when exact).
        limit = max(1, size // 2) if sizes.exact else smaller[-1]
        retry = CallSizes(tuple(s for s in smaller if s <= limit), sizes.exact)
        calls = plan_calls(len(chunk), retry.sizes, exact=retry.exact)
        parts = zip(cut(chunk, calls), calls, strict=True)
        return sum(
            _device_call(p, c.size, stage, infer, outputs, retry, errors, turns) for p, c in parts
        )
    except Exception as exc:
        if is_retryable(exc):
            errors.append(exc)
            return 0
        if len(chunk) == 1:
            chunk[0].fail(stage.name, exc)
            return 0
        # Find the image it was about: each alone (at the smallest size there is).
        smallest = sizes.sizes[0]
        return sum(
            _device_call([job], smallest, stage, infer, outputs, sizes, errors, turns)
            for job in chunk
        )
    given = turns.given_s - given_before if turns is not None else 0.0
    elapsed = max(0.0, time.perf_counter() - start - given)
    for k, (job, share, image) in enumerate(
        zip(chunk, split_shares(elapsed, len(chunk)), images, strict=True)
    ):
        job.timings.add(stage.name, share * 1000.0)
        job.timings.spans.append((stage.name, wall + k * share, wall + (k + 1) * share))
        job.device_batch[stage.name] = len(chunk)
        stage.accept(job, image)
        outputs.save(stage.output_key(job), image)
    return 1

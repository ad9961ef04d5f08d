"""The hand-off between the two pools of the split topology (pure, no I/O).

Stage 1's run keeps each output in the directory bucket, then creates one stage-2 run for
the images it finished. That run's parameters carry the uploads (`objects`, as every
pipeline run's do, so the recovery service and the reconciler read them as they read any
run) and, per upload, what stage 1 learnt that stage 2 needs: the parameters from the
upload's metadata, the seed, the caller's id, and the timings so far, so the stage-2 run's
table shows both runs' stages in one row per image.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from img2img.intake.params import ImageParams
from img2img.observe.timing import QUEUE_HOPS, WAITS
from img2img.pipeline.jobs import ImageJob

HANDOFF = "handoff"  # the timing column, and the stage of a failure to take over an image


class HandoffState(BaseModel):
    """One upload as stage 1 hands it over."""

    params: ImageParams
    seed: int
    request_id: str | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    spans: list[tuple[str, float, float]] = Field(default_factory=list)
    run_started: float = Field(description="The stage-1 run's start, epoch s.")
    written: float = Field(
        description="Its batch's stage-1 outputs all in the directory bucket, epoch s."
    )
    device_batch: dict[str, int] = Field(default_factory=dict)


def handoff_key(generate_run_id: str) -> str:
    """The stage-2 run's idempotency key: one stage-2 run per stage-1 run, however often
    the stage-1 run is retried."""
    return f"handoff:{generate_run_id}"


def batch_ready(jobs: list[ImageJob], now: float | None = None) -> float:
    """When the last of `jobs`' stage-1 outputs was in the directory bucket: the moment a
    stage-2 run of them could start. In one pool, stage 2 starts for the batch once its
    stage 1 is done too: an image's wait for the rest of its batch is `other_wait` in both
    topologies, and the hand-off is only what the second pool adds. An output reused from
    an earlier attempt was there already (`now`)."""
    now = time.time() if now is None else now
    return max((j.output_written.get("generate", now) for j in jobs), default=now)


# The queue wait and its hops are stage 1's to measure; they travel with the image.
QUEUE = frozenset({"queue_wait", *QUEUE_HOPS})


def handoff_state(job: ImageJob, written: float, now: float | None = None) -> HandoffState:
    """What stage 2 needs of `job`, whose stage 1 is done and whose batch's outputs were
    all written at `written` (`batch_ready`). Only measured stages travel (the waits and
    the total are computed at the outcome, over both runs)."""
    assert job.params is not None
    t = job.timings
    now = time.time() if now is None else now
    return HandoffState(
        params=job.params,
        seed=job.seed,
        request_id=job.request_id,
        timings_ms={k: round(v, 3) for k, v in t.items() if k not in WAITS or k in QUEUE},
        spans=list(t.spans),
        run_started=t.started if t.started is not None else now,
        written=written,
        device_batch=dict(job.device_batch),
    )


def restore(
    job: ImageJob, state: HandoffState, upscale_started: float, generate_run: str | None
) -> None:
    """Take over `job` in the stage-2 run: stage 1's view of it, plus the hand-off time
    (its batch's stage-1 outputs written → this run's start) on its timeline."""
    job.params = state.params
    job.seed = state.seed
    job.request_id = state.request_id
    job.timings.update(state.timings_ms)
    job.timings.spans = [tuple(span) for span in state.spans]  # type: ignore[misc]
    job.timings.started = state.run_started
    job.device_batch = dict(state.device_batch)
    job.linked_run = generate_run
    start = min(state.written, upscale_started)
    job.timings[HANDOFF] = (upscale_started - start) * 1000.0
    job.timings.spans.append((HANDOFF, start, upscale_started))


def run_origin(states: list[HandoffState], fallback: float) -> float:
    """The earliest stage-1 run start among `states`: where the stage-2 run's chart starts."""
    return min((s.run_started for s in states), default=fallback)

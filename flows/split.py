"""The split topology's two flows: each inference stage on its own work pool.

    inf2-generate:  copy → preprocess → stage 1 → hand-off (creates the stage-2 run)
    inf2-upscale:  take over (stage-1 outputs from the directory bucket) → stage 2
                   → post-process → timing artifacts

An upload still ends as exactly one result or one failure record: stage 1's run writes the
failure records of the images that failed before stage 2, the stage-2 run everything else.
The stage-2 run's timing table holds both runs' stages in one row per image, with the
hand-off time between them (`handoff`), and each run's summary links to the other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import State

from flows.batch_run import BatchRun, unique
from flows.pipeline import begin, through_generate
from img2img.intake.events import ObjectRef
from img2img.intake.params import ImageParams
from img2img.pipeline.handoff import HANDOFF, HandoffState, restore, run_origin
from img2img.pipeline.jobs import ImageJob
from img2img.pipeline.stages.spec import UPSCALE
from tasks.handoff import HandoffLost, hand_off, take_over
from tasks.inference import upscale_stage


def _run_link(run_id: str | None, what: str) -> list[str]:
    return [f"- {what}: [flow run {run_id}](/runs/flow-run/{run_id})"] if run_id else []


@flow(name="img2img-generate", log_prints=False, validate_parameters=True)
def img2img_generate(objects: list[ObjectRef], defaults: ImageParams | None = None) -> State[Any]:
    """Stage 1 of a micro-batch on the img2img pool; its finished images go on to one
    stage-2 run on the upscale pool.

    Args:
        objects: the uploads, as the dispatcher parsed them from S3 notifications.
        defaults: generation parameters for images whose metadata does not set them.
    """
    batch = begin(objects)
    cancelled = batch.steps(
        [
            *through_generate(batch, defaults),
            (HANDOFF, lambda jobs: batch.call(hand_off, jobs, batch.run_id)),
        ]
    )
    handed = next((j.linked_run for j in batch.jobs if j.status == "handed_off"), None)
    return batch.finish(cancelled, links=_run_link(handed, "stage 2 (upscale) of these images"))


@flow(name="img2img-upscale", log_prints=False, validate_parameters=True)
def img2img_upscale(
    objects: list[ObjectRef],
    handoff: dict[str, HandoffState],
    generate_run: str | None = None,
) -> State[Any]:
    """Stage 2 of the images a stage-1 run handed over, then their outcomes.

    Args:
        objects: the uploads (the recovery service splits a crashed run by them).
        handoff: per upload identity, what stage 1 learnt: parameters, seed, timings so far.
        generate_run: the stage-1 flow run that handed them over.
    """
    started = datetime.now(UTC)
    run_id = str(flow_run.id) if flow_run.id else None
    jobs = [ImageJob.for_ref(ref) for ref in unique(objects)]
    for job in jobs:
        state = handoff.get(job.ref.identity)
        if state is None:
            job.fail(HANDOFF, HandoffLost(f"no hand-off state for {job.ref.uri} in this run"))
        else:
            restore(job, state, started.timestamp(), generate_run)
    batch = BatchRun.begin(jobs, run_id, started)
    call = batch.call
    cancelled = batch.steps(
        [(HANDOFF, partial(call, take_over)), (UPSCALE.name, partial(call, upscale_stage))]
    )
    origin = run_origin(list(handoff.values()), started.timestamp())
    return batch.finish(
        cancelled,
        run_start=origin,
        links=_run_link(generate_run, "stage 1 (generate) of these images"),
    )

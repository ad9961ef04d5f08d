"""Tasks of the split topology's hand-off: stage 1's run creates the stage-2 run for the
images it finished; stage 2's run takes them over from the directory bucket."""

from __future__ import annotations

import threading
from uuid import UUID

from prefect import get_run_logger

from img2img.errors import PermanentError
from img2img.intake.batching import run_name
from img2img.intake.placement import queue_of
from img2img.pipeline import steps
from img2img.pipeline.handoff import HANDOFF, batch_ready, handoff_key, handoff_state
from img2img.pipeline.jobs import ImageJob
from img2img.pipeline.stages.spec import GENERATE
from img2img.pipeline.topology import UPSCALE_POOL
from tasks.policy import transient_task
from tasks.runtime import get_runtime


class HandoffLost(PermanentError):
    """Stage 1's output of an image is not in the directory bucket any more."""


_deployment_lock = threading.Lock()
_deployment_ids: dict[str, UUID] = {}


def _deployment_id(name: str) -> UUID:
    """The stage-2 deployment's id, read once per process (it changes only on redeploy)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with _deployment_lock:
        if name not in _deployment_ids:
            with get_client(sync_client=True) as client:
                try:
                    _deployment_ids[name] = client.read_deployment_by_name(name).id
                except ObjectNotFound:
                    raise PermanentError(
                        f"the stage-2 deployment {name} does not exist: deploy prefect.yaml's "
                        "split deployments (prefect --no-prompt deploy --all) and run a worker "
                        f"on pool {UPSCALE_POOL.pool}"
                    ) from None
        return _deployment_ids[name]


@transient_task("hand-off-to-stage-2")
def hand_off(jobs: list[ImageJob], run_id: str | None) -> list[ImageJob]:
    """Create the stage-2 run of the images whose stage 1 is done (their outputs are in the
    directory bucket by now), with an idempotency key from this run's id: a retried stage-1
    run gets the same stage-2 run back, never a second one."""
    from prefect.client.orchestration import get_client

    ready = [j for j in jobs if j.active and j.generate is not None]
    if not ready:
        return jobs
    if run_id is None:
        raise PermanentError("a hand-off to stage 2 needs the stage-1 flow run's id")
    written = batch_ready(ready)
    parameters = {
        "objects": [j.ref.as_parameter() for j in ready],
        "handoff": {
            j.ref.identity: handoff_state(j, written).model_dump(mode="json") for j in ready
        },
        "generate_run": run_id,
    }
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            _deployment_id(UPSCALE_POOL.deployment),
            parameters=parameters,
            idempotency_key=handoff_key(run_id),
            name=run_name([j.ref for j in ready], "upscale"),
            tags=["handoff"],
            work_queue_name=queue_of([j.ref for j in ready]),
        )
    for job in ready:
        job.status = "handed_off"
        job.linked_run = str(run.id)
        job.note = f"stage 2 in flow run {run.id}"
        job.generate = None  # kept in the directory bucket; the stage-2 host reads it there
    get_run_logger().info("%d images handed to stage 2: flow run %s", len(ready), run.id)
    return jobs


@transient_task("take-over-from-stage-1")
def take_over(jobs: list[ImageJob]) -> list[ImageJob]:
    """Read each image's stage-1 output from the directory bucket, with its outcome check
    beside the read: an upload that has its outcome already (a redelivery) is skipped. (An
    earlier attempt of this run may have kept its stage-2 output: the stage reuses it.)"""
    rt = get_runtime()
    storage = rt.settings.storage
    s3 = rt.clients.s3
    outputs = steps.StageOutputs(s3, storage.stage_bucket)

    def load(job: ImageJob) -> None:
        image = outputs.load(GENERATE.output_key(job))
        if image is None:
            raise HandoffLost(
                f"stage 1's output s3://{storage.stage_bucket}/{GENERATE.output_key(job)} is "
                "gone (deleted by a lifecycle rule before stage 2 ran?); submit the upload again"
            )
        job.generate = image

    try:
        # Not measured: the hand-off column ends at this run's start (`handoff.restore`).
        steps.with_outcome_check(s3, jobs, storage.results_bucket, HANDOFF, load, 8, False)
    finally:
        outputs.close()
    return jobs

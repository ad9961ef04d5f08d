"""Tasks: the two inference stages. Models are loaded once per process and reused."""

from __future__ import annotations

from prefect import get_run_logger

from img2img.models import registry as backends
from img2img.pipeline import steps
from img2img.pipeline.jobs import ImageJob
from img2img.pipeline.stages.spec import GENERATE, UPSCALE, Stage
from tasks.policy import DEVICE_DELAYS_S, transient_task
from tasks.runtime import earlier_attempt, get_runtime, stop_requested


def _run_on_device(jobs: list[ImageJob], stage: Stage) -> list[ImageJob]:
    """Run one stage over the batch on this process's device, several images per device
    call where the backend allows (`backends.call_sizes`), keeping each output in the
    directory bucket (written in the background, waited for before the task ends), then log
    how it went. Outputs kept by an earlier attempt are looked up only when there was one
    (`earlier_attempt`)."""
    if not any(j.active for j in jobs):
        return jobs  # nothing left to do: do not even load the model
    rt = get_runtime()
    st = rt.settings.stages
    pipe = rt.models.get(stage.model, st, rt.clients.s3)
    stop = stop_requested()
    # The last stage's PNG is the result's: kept, so the result does not encode it again.
    final = stage is UPSCALE
    outputs = steps.StageOutputs(
        rt.clients.s3, rt.settings.storage.stage_bucket, keep_encoded=final
    )
    try:
        calls = steps.run_stage(
            jobs,
            stage,
            lambda batch: stage.run_batch(pipe, batch, st, stop),
            outputs,
            resume=earlier_attempt(),
            device_lock=rt.models.device_lock,
            should_stop=stop,
            sizes=backends.call_sizes(st, pipe),
            # A warm slot's lock (lanes): a more urgent run's call goes between two of ours,
            # and between two diffusion steps of ours when the lanes say so.
            between_calls=getattr(rt.models.device_lock, "yield_to_waiting", None),
            between_steps=rt.settings.lanes.enabled and rt.settings.lanes.between_steps,
        )
    finally:
        for problem in outputs.close():
            get_run_logger().warning("could not keep a stage output: %s", problem)
        for job in jobs:
            key = stage.output_key(job)
            written = outputs.written.get(key)
            if written is not None:
                job.output_written[stage.name] = written
            if final and key in outputs.encoded:
                job.upscale_png = outputs.encoded[key]
    get_run_logger().info(
        "%s done for %d images in %d device calls (model loads in this process: %d)",
        stage.name,
        sum(1 for j in jobs if stage.output(j) is not None),
        calls,
        rt.models.loads,
    )
    return jobs


@transient_task("generate-img2img", DEVICE_DELAYS_S)
def generate_stage(jobs: list[ImageJob]) -> list[ImageJob]:
    return _run_on_device(jobs, GENERATE)


@transient_task("upscale-upscale", DEVICE_DELAYS_S)
def upscale_stage(jobs: list[ImageJob]) -> list[ImageJob]:
    return _run_on_device(jobs, UPSCALE)

"""Tasks: the two inference stages. Models are loaded once per process and reused."""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image
from prefect import get_run_logger

from img2img import steps
from img2img.jobs import ImageJob
from img2img.stages.img2img import run_img2img
from img2img.stages.upscale import run_upscale
from tasks.policy import DEVICE_DELAYS_S, transient_task
from tasks.runtime import get_runtime, stop_requested


def _run_on_device(
    jobs: list[ImageJob], stage: str, infer: Callable[[ImageJob], Image.Image]
) -> list[ImageJob]:
    """Run one stage over the batch on this process's device, keeping each output in the
    directory bucket (written in the background, waited for before the task ends), then log
    how it went."""
    rt = get_runtime()
    outputs = steps.StageOutputs(rt.clients.s3, rt.settings.storage.stage_bucket)
    try:
        steps.run_stage(
            jobs,
            stage,
            infer,
            outputs,
            resume=True,
            device_lock=rt.models.device_lock,
            should_stop=stop_requested(),
        )
    finally:
        for problem in outputs.close():
            get_run_logger().warning("could not keep a stage output: %s", problem)
    done = sum(1 for j in jobs if (j.stage1 if stage == "stage1" else j.stage2) is not None)
    get_run_logger().info(
        "%s done for %d images (model loads in this process: %d)", stage, done, rt.models.loads
    )
    return jobs


@transient_task("stage1-img2img", DEVICE_DELAYS_S)
def img2img_stage(jobs: list[ImageJob]) -> list[ImageJob]:
    if not any(j.active for j in jobs):
        return jobs  # nothing left to do: do not even load the model
    rt = get_runtime()
    st = rt.settings.stages
    pipe = rt.models.get("img2img", st, rt.clients.s3)
    shape = (st.width, st.height)

    def infer(job: ImageJob) -> Image.Image:
        assert job.image is not None and job.params is not None
        return run_img2img(pipe, job.image, job.params, job.seed, shape, stop_requested())

    return _run_on_device(jobs, "stage1", infer)


@transient_task("stage2-upscale", DEVICE_DELAYS_S)
def upscale_stage(jobs: list[ImageJob]) -> list[ImageJob]:
    if not any(j.active for j in jobs):
        return jobs
    rt = get_runtime()
    st = rt.settings.stages
    pipe = rt.models.get("upscale", st, rt.clients.s3)

    def infer(job: ImageJob) -> Image.Image:
        assert job.stage1 is not None and job.params is not None
        return run_upscale(pipe, job.stage1, job.params, job.seed, st.noise_level, stop_requested())

    return _run_on_device(jobs, "stage2", infer)

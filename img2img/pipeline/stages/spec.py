"""The two inference stages, each described once: what it is called (its timing column and
failure-record stage), which model it runs, where its output is kept, what it reads and
writes on an image's job, and how it calls its pipeline. The steps, the tasks and the flow
all read these descriptors instead of comparing stage names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image

from img2img.config.stages import StageKind, StageSettings
from img2img.pipeline.jobs import ImageJob
from img2img.pipeline.stages.generate import call_shape as stage1_shape
from img2img.pipeline.stages.generate import run_img2img
from img2img.pipeline.stages.upscale import call_shape as stage2_shape
from img2img.pipeline.stages.upscale import run_upscale

Runner = Callable[
    [Any, "list[ImageJob]", StageSettings, "Callable[[], bool] | None"], "list[Image.Image]"
]


@dataclass(frozen=True)
class Stage:
    name: str  # "stage1" | "stage2": the timing column and a failure record's stage
    model: StageKind
    input_attr: str  # the ImageJob field the stage reads (and clears once it has its output)
    output_attr: str  # the ImageJob field it writes
    run_batch: Runner  # one device call over the jobs' inputs, an output each, in order
    call_shape: Callable[[ImageJob], tuple[Any, ...]]  # what jobs in one call share

    def output_key(self, job: ImageJob) -> str:
        """Where this stage's output of `job` is kept in the directory bucket."""
        key: str = getattr(job.keys, self.name)
        return key

    def output(self, job: ImageJob) -> Image.Image | None:
        image: Image.Image | None = getattr(job, self.output_attr)
        return image

    def accept(self, job: ImageJob, image: Image.Image) -> None:
        """Keep the output on the job and drop the input it no longer needs."""
        setattr(job, self.output_attr, image)
        setattr(job, self.input_attr, None)


T = TypeVar("T")


def _present(values: list[T | None]) -> list[T]:
    """`values`, each of which the step before this stage has set."""
    assert all(v is not None for v in values)
    return [v for v in values if v is not None]


def _run_stage1(
    pipe: Any, jobs: list[ImageJob], st: StageSettings, should_stop: Callable[[], bool] | None
) -> list[Image.Image]:
    images, params = _present([j.image for j in jobs]), _present([j.params for j in jobs])
    seeds = [j.seed for j in jobs]
    return run_img2img(pipe, images, params, seeds, (st.width, st.height), should_stop)


def _run_stage2(
    pipe: Any, jobs: list[ImageJob], st: StageSettings, should_stop: Callable[[], bool] | None
) -> list[Image.Image]:
    images, params = _present([j.stage1 for j in jobs]), _present([j.params for j in jobs])
    seeds = [j.seed for j in jobs]
    return run_upscale(pipe, images, params, seeds, st.noise_level, should_stop)


def _shape1(job: ImageJob) -> tuple[Any, ...]:
    (params,) = _present([job.params])
    return stage1_shape(params)


def _shape2(job: ImageJob) -> tuple[Any, ...]:
    (params,), (image,) = _present([job.params]), _present([job.stage1])
    return stage2_shape(params, image)


STAGE1 = Stage(
    "stage1",
    "img2img",
    input_attr="image",
    output_attr="stage1",
    run_batch=_run_stage1,
    call_shape=_shape1,
)
STAGE2 = Stage(
    "stage2",
    "upscale",
    input_attr="stage1",
    output_attr="stage2",
    run_batch=_run_stage2,
    call_shape=_shape2,
)
INFERENCE_STAGES = (STAGE1, STAGE2)

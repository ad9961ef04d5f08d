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
from img2img.pipeline.stages.generate import call_shape as generate_shape
from img2img.pipeline.stages.generate import run_generate
from img2img.pipeline.stages.upscale import call_shape as upscale_shape
from img2img.pipeline.stages.upscale import run_upscale

Runner = Callable[
    [Any, "list[ImageJob]", StageSettings, "Callable[[], bool] | None"], "list[Image.Image]"
]


@dataclass(frozen=True)
class Stage:
    name: str  # "generate" | "upscale": the timing column and a failure record's stage
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


def _run_generate(
    pipe: Any, jobs: list[ImageJob], st: StageSettings, should_stop: Callable[[], bool] | None
) -> list[Image.Image]:
    images, params = _present([j.image for j in jobs]), _present([j.params for j in jobs])
    seeds = [j.seed for j in jobs]
    return run_generate(pipe, images, params, seeds, (st.width, st.height), should_stop)


def _run_upscale(
    pipe: Any, jobs: list[ImageJob], st: StageSettings, should_stop: Callable[[], bool] | None
) -> list[Image.Image]:
    images, params = _present([j.generate for j in jobs]), _present([j.params for j in jobs])
    seeds = [j.seed for j in jobs]
    return run_upscale(pipe, images, params, seeds, st.noise_level, should_stop)


def _shape1(job: ImageJob) -> tuple[Any, ...]:
    (params,) = _present([job.params])
    return generate_shape(params)


def _shape2(job: ImageJob) -> tuple[Any, ...]:
    (params,), (image,) = _present([job.params]), _present([job.generate])
    return upscale_shape(params, image)


GENERATE = Stage(
    "generate",
    "generate",
    input_attr="image",
    output_attr="generate",
    run_batch=_run_generate,
    call_shape=_shape1,
)
UPSCALE = Stage(
    "upscale",
    "upscale",
    input_attr="generate",
    output_attr="upscale",
    run_batch=_run_upscale,
    call_shape=_shape2,
)
INFERENCE_STAGES = (GENERATE, UPSCALE)

"""The two inference stages, each described once: what it is called (its timing column and
failure-record stage), which model it runs, where its output is kept, what it reads and
writes on an image's job, and how it calls its pipeline. The steps, the tasks and the flow
all read these descriptors instead of comparing stage names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from img2img.jobs import ImageJob
from img2img.settings import StageSettings
from img2img.stages import StageKind
from img2img.stages.img2img import run_img2img
from img2img.stages.upscale import run_upscale

Runner = Callable[[Any, ImageJob, StageSettings, "Callable[[], bool] | None"], Image.Image]


@dataclass(frozen=True)
class Stage:
    name: str  # "stage1" | "stage2": the timing column and a failure record's stage
    model: StageKind
    input_attr: str  # the ImageJob field the stage reads (and clears once it has its output)
    output_attr: str  # the ImageJob field it writes
    run: Runner

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


def _run_stage1(
    pipe: Any, job: ImageJob, st: StageSettings, should_stop: Callable[[], bool] | None
) -> Image.Image:
    assert job.image is not None and job.params is not None
    return run_img2img(pipe, job.image, job.params, job.seed, (st.width, st.height), should_stop)


def _run_stage2(
    pipe: Any, job: ImageJob, st: StageSettings, should_stop: Callable[[], bool] | None
) -> Image.Image:
    assert job.stage1 is not None and job.params is not None
    return run_upscale(pipe, job.stage1, job.params, job.seed, st.noise_level, should_stop)


STAGE1 = Stage("stage1", "img2img", input_attr="image", output_attr="stage1", run=_run_stage1)
STAGE2 = Stage("stage2", "upscale", input_attr="stage1", output_attr="stage2", run=_run_stage2)
INFERENCE_STAGES = (STAGE1, STAGE2)

"""Cancel reaches a real diffusers pipeline between denoising steps, not only between
images (tiny real models, both stages)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from img2img.config.stages import StageSettings
from img2img.intake.params import ImageParams
from img2img.models import registry as backends
from img2img.pipeline.stages.generate import run_generate
from img2img.pipeline.stages.upscale import run_upscale
from img2img.slots.cancel import RunCancelled


class StopAfter:
    """A `should_stop` that says yes from its `n`-th question on, counting them."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked >= self.n


@pytest.fixture(scope="module")
def settings(model_cache: Path) -> StageSettings:
    return StageSettings(model_cache_dir=model_cache)


PARAMS = ImageParams(steps=20, strength=1.0, upscale_steps=10, prompt="a test card")


def test_stage_1_stops_at_the_step_the_cancel_arrives(settings: StageSettings) -> None:
    pipe = backends.load("generate", settings)
    stop = StopAfter(3)
    with pytest.raises(RunCancelled, match="during stage 1, after denoising step 3"):
        run_generate(pipe, [Image.new("RGB", (64, 64))], [PARAMS], [1], (64, 64), stop)
    assert stop.asked == 3  # of 20 steps


def test_stage_2_stops_at_the_step_the_cancel_arrives(settings: StageSettings) -> None:
    pipe = backends.load("upscale", settings)
    stop = StopAfter(2)
    with pytest.raises(RunCancelled, match="during stage 2, after denoising step 2"):
        run_upscale(pipe, [Image.new("RGB", (16, 16))], [PARAMS], [1], 20, stop)
    assert stop.asked == 2  # of 10 steps


def test_without_a_cancel_every_step_runs_and_the_image_comes_back(
    settings: StageSettings,
) -> None:
    pipe = backends.load("generate", settings)
    stop = StopAfter(10_000)
    (out,) = run_generate(pipe, [Image.new("RGB", (64, 64))], [PARAMS], [1], (64, 64), stop)
    assert out.size == (64, 64) and stop.asked == 20

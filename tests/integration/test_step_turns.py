"""Turns between diffusion steps: a bulk call on the slot's device hands it to a waiting
interactive call between two of its steps and goes on after, each image as it comes out
alone (tiny real diffusers pipelines), its own device time charged to it (simulated)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from img2img.config.stages import StageSettings
from img2img.dev.simulated import SimulatedPipeline
from img2img.intake.params import ImageParams
from img2img.models import registry as backends
from img2img.pipeline.jobs import ImageJob
from img2img.pipeline.stages.spec import GENERATE, UPSCALE, Stage
from img2img.pipeline.steps import run_stage
from img2img.slots.device_turns import PriorityLock
from tests.integration.test_device_calls import make_jobs, pixels

BULK, INTERACTIVE = 10, 1
# Different steps, strength, guidance and prompt: a call that ran on the other's state
# (timesteps, step index, guidance) would not come out as it does alone.
BULK_PARAMS = ImageParams(prompt="a red boat", steps=24, strength=1.0, upscale_steps=24)
URGENT_PARAMS = ImageParams(
    prompt="a blue hill", steps=6, strength=0.5, guidance=3.0, upscale_steps=4
)


class NoOutputs:
    """Stage outputs kept nowhere (the device's turns are what is tested)."""

    def load(self, key: str) -> None:
        return None

    def save(self, key: str, image: Image.Image) -> None:
        return None


class Slot:
    """One slot's device: the warm slot's lock by priority, taken as a context manager."""

    def __init__(self) -> None:
        self.lock = PriorityLock()

    @contextmanager
    def device(self, priority: int) -> Iterator[None]:
        self.lock.acquire(priority)
        try:
            yield
        finally:
            self.lock.release()


class Traced:
    """A stage's device calls on `pipe`, each call's start and end (monotonic) noted."""

    def __init__(self, pipe: Any, stage: Stage, st: StageSettings) -> None:
        self.pipe, self.stage, self.st = pipe, stage, st
        self.spans: list[tuple[float, float]] = []
        self.started = threading.Event()

    def __call__(self, jobs: list[ImageJob]) -> list[Image.Image]:
        start = time.monotonic()
        self.started.set()
        out = self.stage.run_batch(self.pipe, jobs, self.st, None)
        self.spans.append((start, time.monotonic()))
        return out


def _side_by_side(
    slot: Slot,
    stage: Stage,
    bulk: tuple[list[ImageJob], Traced],
    urgent: tuple[list[ImageJob], Traced],
    between_steps: bool,
    urgent_stage: Stage | None = None,
) -> None:
    """The bulk stage takes the device; once its call is under way, the urgent one asks
    (for the same stage unless `urgent_stage`)."""

    def run(jobs: list[ImageJob], infer: Traced, priority: int) -> None:
        run_stage(
            jobs,
            infer.stage if priority == INTERACTIVE and urgent_stage else stage,
            infer,
            NoOutputs(),
            resume=False,
            device_lock=slot.device(priority),
            between_calls=slot.lock.yield_to_waiting,
            between_steps=between_steps,
        )

    bulk_thread = threading.Thread(target=run, args=(*bulk, BULK), daemon=True)
    bulk_thread.start()
    assert bulk[1].started.wait(30)
    time.sleep(0.05)  # a few steps into the call
    urgent_thread = threading.Thread(target=run, args=(*urgent, INTERACTIVE), daemon=True)
    urgent_thread.start()
    urgent_thread.join(60)
    bulk_thread.join(60)
    assert not bulk_thread.is_alive() and not urgent_thread.is_alive()


@pytest.fixture(scope="module")
def settings(model_cache: Path) -> StageSettings:
    return StageSettings(model_cache_dir=model_cache)


@pytest.mark.parametrize("stage", [GENERATE, UPSCALE])
def test_an_interactive_call_runs_between_two_steps_of_a_bulk_call_and_both_come_out_as_alone(
    settings: StageSettings, stage: Stage
) -> None:
    pipe = backends.load(stage.model, settings)
    bulk_jobs = make_jobs([("bulk.png", BULK_PARAMS)])
    urgent_jobs = make_jobs([("urgent.png", URGENT_PARAMS)])
    # Made as the others are (each job list's images come from one seeded generator).
    alone = [*make_jobs([("bulk.png", BULK_PARAMS)]), *make_jobs([("urgent.png", URGENT_PARAMS)])]
    if stage is UPSCALE:
        for job in [*bulk_jobs, *urgent_jobs, *alone]:
            job.generate = job.image.resize((16, 16)) if job.image else None
    for job in alone:
        (image,) = stage.run_batch(pipe, [job], settings, None)
        stage.accept(job, image)

    slot = Slot()
    bulk, urgent = Traced(pipe, stage, settings), Traced(pipe, stage, settings)
    _side_by_side(slot, stage, (bulk_jobs, bulk), (urgent_jobs, urgent), between_steps=True)

    (bulk_span,), (urgent_span,) = bulk.spans, urgent.spans
    # The urgent call started and ended inside the bulk call: between two of its steps.
    assert bulk_span[0] < urgent_span[0] < urgent_span[1] < bulk_span[1]
    for turned, single in zip([*bulk_jobs, *urgent_jobs], alone, strict=True):
        assert np.array_equal(pixels(stage.output(turned)), pixels(stage.output(single))), (
            turned.ref.key
        )


def _simulated_pair(between_steps: bool) -> tuple[ImageJob, Traced, Traced]:
    st = StageSettings(backend="simulated")
    bulk_pipe = SimulatedPipeline("generate", call_ms=400.0, scale=1, steps=20)
    urgent_pipe = SimulatedPipeline("generate", call_ms=200.0, scale=1, steps=20)
    (bulk_job,) = make_jobs([("bulk.png", BULK_PARAMS)])
    urgent_jobs = make_jobs([("urgent.png", URGENT_PARAMS)])
    bulk, urgent = Traced(bulk_pipe, GENERATE, st), Traced(urgent_pipe, GENERATE, st)
    _side_by_side(Slot(), GENERATE, ([bulk_job], bulk), (urgent_jobs, urgent), between_steps)
    return bulk_job, bulk, urgent


def test_a_paused_bulk_call_is_charged_its_own_device_time_not_the_interactive_calls() -> None:
    bulk_job, bulk, urgent = _simulated_pair(between_steps=True)
    (bulk_span,), (urgent_span,) = bulk.spans, urgent.spans
    assert bulk_span[0] < urgent_span[0] < urgent_span[1] < bulk_span[1]
    wall_ms = (bulk_span[1] - bulk_span[0]) * 1000.0
    urgent_ms = (urgent_span[1] - urgent_span[0]) * 1000.0
    # The bulk image's stage time is its call less the urgent call that ran inside it.
    charged = bulk_job.timings["generate"]
    assert charged == pytest.approx(wall_ms - urgent_ms, abs=60.0), (charged, wall_ms, urgent_ms)
    assert charged < wall_ms - urgent_ms / 2
    assert charged == pytest.approx(400.0, abs=80.0)  # its own call: 20 steps of 20 ms


def test_between_calls_only_the_interactive_call_waits_for_the_whole_bulk_call() -> None:
    bulk_job, bulk, urgent = _simulated_pair(between_steps=False)
    (bulk_span,), (urgent_span,) = bulk.spans, urgent.spans
    assert urgent_span[0] >= bulk_span[1]  # after the bulk call, not inside it
    assert bulk_job.timings["generate"] == pytest.approx(
        (bulk_span[1] - bulk_span[0]) * 1000.0, abs=5.0
    )


def test_a_compiled_pipeline_of_several_sizes_gives_each_call_its_own_state(
    settings: StageSettings,
) -> None:
    from img2img.models.compiled.sizes import CompiledSizes

    pipe = backends.load("generate", settings)
    sizes = CompiledSizes({1: pipe, 2: pipe})
    view = sizes.for_one_call()
    for size in (1, 2):
        assert view.pipes[size].unet is pipe.unet  # the same graphs
        assert view.pipes[size].scheduler is not pipe.scheduler
        assert view.pipes[size].scheduler.config == pipe.scheduler.config
    assert view.calls is sizes.calls  # one count of the calls per size


def test_after_a_hand_over_the_device_is_marked_as_the_bulk_stage_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hang rule reads which stage is on the device: an interactive stage-2 call that
    ran inside a bulk stage-1 call leaves it marked as stage 1 again when the bulk call
    goes on."""
    from img2img.slots import progress

    recorder = progress.ProgressRecorder()
    monkeypatch.setattr(progress, "_recorder", recorder)
    st = StageSettings(backend="simulated")
    bulk_pipe = SimulatedPipeline("generate", call_ms=300.0, scale=1, steps=20)
    urgent_pipe = SimulatedPipeline("upscale", call_ms=50.0, scale=4, steps=5)
    (bulk_job,) = make_jobs([("bulk.png", BULK_PARAMS)])
    urgent_jobs = make_jobs([("urgent.png", URGENT_PARAMS)])
    urgent_jobs[0].generate = urgent_jobs[0].image
    bulk, urgent = Traced(bulk_pipe, GENERATE, st), Traced(urgent_pipe, UPSCALE, st)
    _side_by_side(
        Slot(), GENERATE, ([bulk_job], bulk), (urgent_jobs, urgent), True, urgent_stage=UPSCALE
    )
    (bulk_span,), (urgent_span,) = bulk.spans, urgent.spans
    assert bulk_span[0] < urgent_span[0] < urgent_span[1] < bulk_span[1]
    assert recorder.snapshot().stage == "generate"

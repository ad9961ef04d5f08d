"""Device batches: a stage runs a run's images several per device call (tiny real diffusers
pipelines, outputs kept in a real S3 directory bucket on moto), and each image comes out as
it would alone."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from img2img.config.stages import StageSettings
from img2img.errors import DeviceOutOfMemory, InvalidParameters
from img2img.intake.events import ObjectRef
from img2img.intake.params import ImageParams
from img2img.models import registry as backends
from img2img.models.registry import CallSizes
from img2img.observe.report import build_report
from img2img.pipeline.jobs import ImageJob
from img2img.pipeline.stages.spec import GENERATE, UPSCALE, Stage
from img2img.pipeline.steps import StageOutputs, run_stage
from img2img.slots import progress
from tests.conftest import AwsEnv

SHAPE = (64, 64)


@pytest.fixture(scope="module")
def settings(model_cache: Path) -> StageSettings:
    return StageSettings(model_cache_dir=model_cache, device_batch=4)


class Recorder:
    """Runs a stage's real pipeline and writes down the keys of each call's images."""

    def __init__(self, pipe: Any, stage: Stage, st: StageSettings) -> None:
        self.pipe, self.stage, self.st = pipe, stage, st
        self.calls: list[list[str]] = []

    def __call__(self, jobs: list[ImageJob]) -> list[Image.Image]:
        self.calls.append([j.ref.key for j in jobs])
        return self.stage.run_batch(self.pipe, jobs, self.st, None)


def make_jobs(specs: list[tuple[str, ImageParams]]) -> list[ImageJob]:
    rng = np.random.default_rng(7)
    jobs = []
    for key, params in specs:
        job = ImageJob.for_ref(ObjectRef(bucket="uploads", key=key, etag="e1"))
        job.params = params
        job.seed = params.seed_for(job.ref.identity)
        pixels = rng.integers(0, 255, (*SHAPE, 3), dtype=np.uint8)
        job.image = Image.fromarray(pixels)
        jobs.append(job)
    return jobs


def pixels(image: Image.Image | None) -> np.ndarray:
    assert image is not None
    return np.asarray(image, dtype=np.int16)


FOUR_STEPS = ImageParams(prompt="a red boat", steps=4, strength=0.6, upscale_steps=2)
THREE_STEPS = ImageParams(prompt="a blue hill", steps=3, strength=0.6, upscale_steps=3)
STRONGER = ImageParams(prompt="a red boat", steps=4, strength=0.9, upscale_steps=2)


def test_a_mixed_run_is_grouped_into_calls_and_each_image_comes_out_as_alone(
    aws: AwsEnv, settings: StageSettings
) -> None:
    clients, cfg = aws
    specs = [(f"a{i}.png", FOUR_STEPS) for i in range(5)]
    specs += [("b0.png", THREE_STEPS), ("c0.png", STRONGER), ("b1.png", THREE_STEPS)]
    jobs = make_jobs(specs)
    sizes = backends.call_sizes(settings)
    assert sizes == CallSizes((1, 2, 3, 4), exact=True)

    recorders = {}
    for stage in (GENERATE, UPSCALE):
        pipe = backends.load(stage.model, settings)
        recorders[stage.name] = Recorder(pipe, stage, settings)
        outputs = StageOutputs(clients.s3, cfg.storage.stage_bucket)
        run_stage(jobs, stage, recorders[stage.name], outputs, resume=False, sizes=sizes)
        assert outputs.close() == []

    # Stage 1: the same steps, strength and guidance share a call, at most 4 images each.
    assert recorders["generate"].calls == [
        ["a0.png", "a1.png", "a2.png", "a3.png"],
        ["a4.png"],
        ["b0.png", "b1.png"],
        ["c0.png"],
    ]
    # Stage 2 groups by its own steps and guidance (strength is not one of them).
    assert recorders["upscale"].calls == [
        ["a0.png", "a1.png", "a2.png", "a3.png"],
        ["a4.png", "c0.png"],
        ["b0.png", "b1.png"],
    ]
    assert [j.device_batch for j in jobs[:2]] == [{"generate": 4, "upscale": 4}] * 2
    assert jobs[4].device_batch == {"generate": 1, "upscale": 2}
    assert all(j.upscale is not None and j.upscale.size == (256, 256) for j in jobs)

    # Each image as it would be alone, at batch 1 with the same seed: the same to within
    # 1 of 255 on a few pixels (float rounding in the batched kernels), never more.
    alone = make_jobs(specs)
    for stage in (GENERATE, UPSCALE):
        outputs = StageOutputs(clients.s3, cfg.storage.stage_bucket)
        run_stage(
            alone,
            stage,
            recorders[stage.name],
            outputs,
            resume=False,
            sizes=CallSizes((1,), exact=True),
        )
        outputs.close()
    for batched, single in zip(jobs, alone, strict=True):
        diff = np.abs(pixels(batched.upscale) - pixels(single.upscale))
        assert diff.max() <= 1 and diff.mean() < 0.01, (batched.ref.key, diff.max())
    # Different seeds and prompts stay different images inside one call.
    assert np.abs(pixels(jobs[0].upscale) - pixels(jobs[1].upscale)).mean() > 1.0

    # The call's time is split over its images, laid end to end, and the table says the
    # batch each image ran in.
    first_call = jobs[:4]
    ends = [j.timings.spans[0] for j in first_call]
    assert all(a[2] == pytest.approx(b[1]) for a, b in itertools.pairwise(ends))
    assert len({round(j.timings["generate"], 6) for j in first_call}) == 1
    for job in jobs:
        job.status = "completed"
    rows = build_report(jobs, 1.0, 0.0, 3600.0).rows
    assert rows[0]["batch"] == "4/4" and rows[4]["batch"] == "1/2"
    assert list(rows[0])[:9] == [
        "image",
        "intake",
        "batching",
        "claim",
        "start",
        "io",
        "cpu",
        "generate",
        "upscale",
    ]
    assert list(rows[0])[9] == "batch"


def test_a_call_fails_for_one_image_only_that_image_fails(aws: AwsEnv) -> None:
    clients, cfg = aws
    jobs = make_jobs([(f"i{i}.png", FOUR_STEPS) for i in range(4)])
    calls: list[int] = []

    def infer(batch: list[ImageJob]) -> list[Image.Image]:
        calls.append(len(batch))
        if any(j.ref.key == "i2.png" for j in batch):
            raise InvalidParameters("i2.png cannot be drawn")
        return [Image.new("RGB", SHAPE)] * len(batch)

    outputs = StageOutputs(clients.s3, cfg.storage.stage_bucket)
    run_stage(jobs, GENERATE, infer, outputs, resume=False, sizes=CallSizes((1, 2, 4), True))
    outputs.close()
    # One call of 4 fails; each image is tried alone; only i2 fails, naming stage 1.
    assert calls == [4, 1, 1, 1, 1]
    assert [j.status for j in jobs] == ["pending", "pending", "failed", "pending"]
    assert jobs[2].failure is not None and jobs[2].failure.stage == "generate"
    assert "cannot be drawn" in jobs[2].failure.reason


def test_a_call_out_of_device_memory_is_split_and_compiled_sizes_are_padded(
    aws: AwsEnv,
) -> None:
    clients, cfg = aws
    jobs = make_jobs([(f"o{i}.png", FOUR_STEPS) for i in range(7)])
    calls: list[list[str]] = []

    def infer(batch: list[ImageJob]) -> list[Image.Image]:
        calls.append([j.ref.key for j in batch])
        if len(batch) > 2:
            raise DeviceOutOfMemory(f"stage 1 ran out of device memory at {len(batch)}")
        return [Image.new("RGB", SHAPE, (len(calls), 0, 0))] * len(batch)

    outputs = StageOutputs(clients.s3, cfg.storage.stage_bucket)
    # Compiled for 1, 2 and 4 images per call: 7 = 4 + a padded 4 (3 images + 1 repeat).
    run_stage(jobs, GENERATE, infer, outputs, resume=False, sizes=CallSizes((1, 2, 4), False))
    outputs.close()
    sizes = [len(c) for c in calls]
    assert sizes == [4, 2, 2, 4, 2, 1]
    assert calls[3] == ["o4.png", "o5.png", "o6.png", "o6.png"]  # padded with its last image
    assert all(j.status == "pending" and j.generate is not None for j in jobs)
    assert [j.device_batch["generate"] for j in jobs] == [2, 2, 2, 2, 2, 2, 1]


def test_the_simulated_device_charges_a_fixed_part_per_call_and_a_part_per_image() -> None:
    from img2img.dev.simulated import SimulatedPipeline

    pipe = SimulatedPipeline("generate", call_ms=100.0, scale=1, image_share=0.35)
    assert pipe.call_s(1) == pytest.approx(0.1)
    assert pipe.call_s(4) == pytest.approx(0.205)  # 4 images for 2.05 calls of one
    out = pipe(image=[Image.new("RGB", (8, 8))] * 3, prompt=["a", "b", "c"])
    assert len(out.images) == 3 and pipe.calls == 1 and pipe.images == 3
    # Cut into steps, the step callback runs between two of them (one step: never).
    between: list[int] = []
    stepped = SimulatedPipeline("generate", call_ms=1.0, scale=1, steps=4)
    stepped(image=[Image.new("RGB", (8, 8))], callback_on_step_end=lambda *a: between.append(a[1]))
    assert between == [0, 1, 2]
    pipe(image=[Image.new("RGB", (8, 8))], callback_on_step_end=lambda *a: between.append(-1))
    assert between == [0, 1, 2]


def test_torchscript_compiled_at_two_batch_sizes_runs_both(
    aws: AwsEnv,
    settings: StageSettings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`img2img compile --batch 1,2` to S3; a host prefetches and loads both sizes; a run of
    3 images is one call at 2 and one at 1, each image as the eager stage makes it alone."""
    from cli.main import main as cli
    from img2img.models.compiled.sizes import SIZES

    clients, cfg = aws
    bucket = cfg.storage.results_bucket
    uris = {}
    for kind in ("generate", "upscale"):
        uris[kind] = f"s3://{bucket}/models/{kind}/sizes-1-2"
        argv = ["compile", "--stage", kind, "--model", "tiny", "--height", "64", "--width"]
        argv += ["64", "--backend", "torchscript", "--batch", "1,2", "--out", uris[kind]]
        assert cli(argv) == 0
    keys = {
        o["Key"]
        for o in clients.s3.list_objects_v2(Bucket=bucket, Prefix="models/generate/sizes-1-2/")[
            "Contents"
        ]
    }
    prefix = "models/generate/sizes-1-2"
    assert {f"{prefix}/{SIZES}", f"{prefix}/batch-1/manifest.json"} <= keys
    assert f"{prefix}/batch-2/manifest.json" in keys
    capsys.readouterr()

    cache = tmp_path / "host-cache"
    monkeypatch.setenv("IMG2IMG_STAGES__GENERATE_ARTIFACTS", uris["generate"])
    monkeypatch.setenv("IMG2IMG_STAGES__UPSCALE_ARTIFACTS", uris["upscale"])
    monkeypatch.setenv("IMG2IMG_STAGES__MODEL_CACHE_DIR", str(cache))
    assert cli(["prefetch"]) == 0
    fetched = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert sorted(line["source"].rsplit("/", 1)[1] for line in fetched) == [
        "batch-1",
        "batch-1",
        "batch-2",
        "batch-2",
    ]

    st = settings.model_copy(
        update={
            "backend": "torchscript",
            "generate_artifacts": uris["generate"],
            "upscale_artifacts": uris["upscale"],
            "model_cache_dir": cache,
        }
    )
    specs = [(f"t{i}.png", FOUR_STEPS) for i in range(3)]
    jobs, alone = make_jobs(specs), make_jobs(specs)
    eager = {s.name: backends.load(s.model, settings) for s in (GENERATE, UPSCALE)}
    for stage in (GENERATE, UPSCALE):
        pipe = backends.load(stage.model, st, clients.s3)
        sizes = backends.call_sizes(st, pipe)
        assert sizes == CallSizes((1, 2), exact=False)
        outputs = StageOutputs(clients.s3, cfg.storage.stage_bucket)
        run_stage(jobs, stage, Recorder(pipe, stage, st), outputs, resume=False, sizes=sizes)
        outputs.close()
        assert pipe.calls == {1: 1, 2: 1}  # 3 images: a call of 2, then one of 1
        outputs = StageOutputs(clients.s3, cfg.storage.stage_bucket)
        run_stage(alone, stage, Recorder(eager[stage.name], stage, settings), outputs, False)
        outputs.close()
    assert [j.device_batch for j in jobs] == [{"generate": 2, "upscale": 2}] * 2 + [
        {"generate": 1, "upscale": 1}
    ]
    for traced, single in zip(jobs, alone, strict=True):
        diff = np.abs(pixels(traced.upscale) - pixels(single.upscale))
        assert diff.max() <= 1 and diff.mean() < 0.01, (traced.ref.key, diff.max())
    # A location holds its sizes for good: compiling over it is refused.
    argv = ["compile", "--stage", "generate", "--model", "tiny", "--height", "64", "--width"]
    argv += ["64", "--backend", "torchscript", "--batch", "2,4", "--out", uris["generate"]]
    assert cli(argv) == 2
    assert "already holds compiled artifacts" in capsys.readouterr().err


class CountingRecorder(progress.ProgressRecorder):
    """The process's real progress recorder, counting its marks (what the slot's beat
    thread reads for hang detection)."""

    def __init__(self) -> None:
        super().__init__()
        self.marks = 0

    def mark(self, stage: str | None = None) -> None:
        super().mark(stage)
        self.marks += 1


@pytest.mark.parametrize(
    ("stage", "denoising_steps"),
    # Stage 1 runs steps × strength denoising steps (4 × 0.6 → 2); stage 2 its upscale steps.
    [(GENERATE, 2), (UPSCALE, 2)],
)
def test_the_real_pipelines_mark_progress_after_every_denoising_step(
    settings: StageSettings, stage: Stage, denoising_steps: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hang detection reads the device's progress: the tiny real pipelines' own step
    callbacks (diffusers' `callback_on_step_end` for img2img, the x4 upscaler's older
    `callback`) must mark it after each step, besides the marks around the call."""
    counting = CountingRecorder()
    monkeypatch.setattr(progress, "_recorder", counting)
    jobs = make_jobs([("marks.png", FOUR_STEPS)])
    if stage is UPSCALE:
        jobs[0].generate = jobs[0].image
    pipe = backends.load(stage.model, settings)

    stage.run_batch(pipe, jobs, settings, None)

    # One mark before the call, one after each denoising step, one after the call.
    assert counting.marks == denoising_steps + 2, counting.marks

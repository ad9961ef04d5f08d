"""`img2img bench device`: what device batches buy, per stage and per slot, on whatever
device this machine has.

One process, no stack, no network: each stage's model is built once (tiny, or a published
architecture with random weights), then for every device batch size:

- the stage as the pipeline runs it (`steps.run_stage`: grouping, calls, progress marks,
  per-image generators and timings) over a run of `--images` images, and
- the same calls with bare diffusers (`pipe(prompt=[...], image=[...])`, nothing else),

so `pipeline_over_bare` says what the pipeline's own code costs (1.0: nothing). One JSON
line per stage and batch size, and one per batch size for a slot (both stages, the same
run): images/s and its ratio to batch 1.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from img2img.config.stages import StageSettings
from img2img.dev.realsize import build_random
from img2img.intake.events import ObjectRef
from img2img.intake.params import ImageParams
from img2img.models.registry import CallSizes
from img2img.pipeline.jobs import ImageJob
from img2img.pipeline.stages.spec import INFERENCE_STAGES, Stage
from img2img.pipeline.steps import run_stage


@dataclass(frozen=True)
class DeviceBenchConfig:
    size: str  # tiny | sd15 | sd21
    side: int  # stage-1 input side (pixels)
    batches: list[int]
    images: int  # images in the run each batch size processes
    steps: int
    strength: float
    upscale_steps: int
    guidance: float
    device: str
    dtype: str


class Discard:
    """Stage outputs kept nowhere: the device, not S3, is what is measured here."""

    def save(self, key: str, image: Image.Image) -> None:
        return None

    def load(self, key: str) -> Image.Image | None:
        return None


def pick_device(asked: str) -> str:
    """`auto`: the first GPU when there is one, else the CPU."""
    if asked != "auto":
        return asked
    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mb(device: str) -> float:
    """Peak device memory since the last reset (GPU), else this process's peak RSS."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _jobs(cfg: DeviceBenchConfig, stage: Stage, count: int) -> list[ImageJob]:
    """`count` images of the run with one set of parameters (so they may share calls) and
    a seed each, holding the stage's input at the stage-1 side (stage 2 upscales what
    stage 1 made)."""
    params = ImageParams(
        prompt="a lighthouse at dusk, oil painting",
        steps=cfg.steps,
        strength=cfg.strength,
        upscale_steps=cfg.upscale_steps,
        guidance=cfg.guidance,
    )
    rng = np.random.default_rng(0)
    jobs = []
    for i in range(count):
        job = ImageJob.for_ref(ObjectRef(bucket="bench", key=f"{i}.png", etag="bench"))
        job.params, job.seed = params, i
        image = Image.fromarray(rng.integers(0, 255, (cfg.side, cfg.side, 3), np.uint8))
        setattr(job, stage.input_attr, image)
        jobs.append(job)
    return jobs


def _bare_call(pipe: Any, stage: Stage, jobs: list[ImageJob], st: StageSettings) -> None:
    """The same call with nothing of the pipeline's around it."""
    params = jobs[0].params
    assert params is not None
    args: dict[str, Any] = {
        "prompt": [params.prompt] * len(jobs),
        "image": [getattr(j, stage.input_attr) for j in jobs],
        "guidance_scale": params.guidance,
        "generator": [torch.Generator("cpu").manual_seed(j.seed) for j in jobs],
    }
    if stage.model == "generate":
        args |= {"num_inference_steps": params.steps, "strength": params.strength}
    else:
        args |= {"num_inference_steps": params.upscale_steps, "noise_level": st.noise_level}
    with torch.inference_mode():
        pipe(**args)


def bench_stage(
    stage: Stage, pipe: Any, cfg: DeviceBenchConfig, st: StageSettings, batch: int
) -> dict[str, Any]:
    """One stage over the run at calls of up to `batch` images: pipeline, then bare."""
    jobs = _jobs(cfg, stage, cfg.images)
    warm = _jobs(cfg, stage, batch)
    stage.run_batch(pipe, warm, st, None)  # lazy initialisation, allocator, autotuning
    _sync(cfg.device)
    _reset_peak(cfg.device)
    sizes = CallSizes(tuple(range(1, batch + 1)), exact=True)
    start = time.perf_counter()
    run_stage(
        jobs,
        stage,
        lambda chunk: stage.run_batch(pipe, chunk, st, None),
        Discard(),
        resume=False,
        sizes=sizes,
    )
    _sync(cfg.device)
    pipeline_s = time.perf_counter() - start
    peak = _peak_mb(cfg.device)
    calls = -(-cfg.images // batch)
    bare_jobs = _jobs(cfg, stage, cfg.images)
    start = time.perf_counter()
    for k in range(0, len(bare_jobs), batch):
        _bare_call(pipe, stage, bare_jobs[k : k + batch], st)
    _sync(cfg.device)
    bare_s = time.perf_counter() - start
    done = sum(1 for j in jobs if stage.output(j) is not None)
    return {
        "bench": "device",
        "stage": stage.name,
        "model": cfg.size,
        "device": describe(cfg.device),
        "dtype": cfg.dtype,
        "batch": batch,
        "images": done,
        "calls": calls,
        "ms_per_call": round(pipeline_s * 1000 / calls, 1),
        "ms_per_image": round(pipeline_s * 1000 / cfg.images, 1),
        "images_per_s": round(cfg.images / pipeline_s, 3),
        "peak_mem_mb": round(peak, 1),
        "bare_ms_per_call": round(bare_s * 1000 / calls, 1),
        "pipeline_over_bare": round(bare_s / pipeline_s, 3),
    }


def describe(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({torch.get_num_threads()} torch thread(s))"


def _load(stage: Stage, cfg: DeviceBenchConfig) -> Any:
    pipe = build_random(stage.model, cfg.size)
    pipe = pipe.to(cfg.device)
    if cfg.dtype != "float32":
        pipe = pipe.to(getattr(torch, cfg.dtype))
    if cfg.device.startswith("cuda"):
        from img2img.models.eager import tune_for_gpu

        tune_for_gpu(pipe, StageSettings(device=cfg.device))  # what the GPU slots run
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_device_bench(cfg: DeviceBenchConfig, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every stage at every batch size, then the slot's figures; returns the JSON lines."""
    st = StageSettings(
        device=cfg.device,
        dtype=cfg.dtype,
        height=cfg.side,
        width=cfg.side,
    )
    lines: list[dict[str, Any]] = []
    per_stage: dict[int, float] = {b: 0.0 for b in cfg.batches}
    for stage in INFERENCE_STAGES:
        t0 = time.perf_counter()
        pipe = _load(stage, cfg)
        say(f"{stage.name}: {cfg.size} model on {cfg.device} in {time.perf_counter() - t0:.1f} s")
        for batch in cfg.batches:
            line = bench_stage(stage, pipe, cfg, st, batch)
            say(
                f"{stage.name} batch {batch}: {line['ms_per_call']} ms/call, "
                f"{line['images_per_s']} images/s, pipeline/bare {line['pipeline_over_bare']}"
            )
            per_stage[batch] += cfg.images / line["images_per_s"]
            lines.append(line)
        del pipe
        if cfg.device.startswith("cuda"):
            torch.cuda.empty_cache()
    base = cfg.images / per_stage[cfg.batches[0]]
    for batch in cfg.batches:
        rate = cfg.images / per_stage[batch]
        lines.append(
            {
                "bench": "device",
                "slot": "both stages",
                "model": cfg.size,
                "device": describe(cfg.device),
                "batch": batch,
                "images": cfg.images,
                "images_per_s": round(rate, 3),
                f"vs_batch_{cfg.batches[0]}": round(rate / base, 2),
            }
        )
    return lines


def print_lines(lines: list[dict[str, Any]]) -> None:
    for line in lines:
        print(json.dumps(line), flush=True)

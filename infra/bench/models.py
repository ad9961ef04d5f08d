"""`img2img bench models`: latency per call and per image of each stage on each backend.

One process, no stack: the stage model is built once (tiny, or a real architecture with
random weights), then run eager, compiled with torchscript and, on an Inf2 host, compiled
with neuron, all at the same static shape and seed. Each backend's output is compared with
the eager one, so a figure never comes from a backend that computes something else.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from img2img.config.stages import StageSettings
from img2img.dev.realsize import build_random
from img2img.models.compiled.compile import compile_pipeline
from img2img.models.compiled.parts import StageKind
from img2img.models.compiled.request import CompileRequest
from img2img.models.registry import load as load_pipeline


@dataclass(frozen=True)
class ModelBenchConfig:
    stages: list[StageKind]
    backends: list[str]
    size: str
    height: int
    width: int
    batch: int
    steps: int
    strength: float
    upscale_steps: int
    guidance: float
    calls: int
    device: str
    dtype: str


def neuron_available() -> bool:
    try:
        import torch_neuronx  # noqa: F401
    except ImportError:
        return False
    return True


def _inputs(stage: StageKind, cfg: ModelBenchConfig) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    pixels = (torch.rand((cfg.height, cfg.width, 3), generator=gen) * 255).to(torch.uint8)
    image = Image.fromarray(pixels.numpy())
    args: dict[str, Any] = {
        "prompt": ["a lighthouse at dusk, oil painting"] * cfg.batch,
        "image": [image] * cfg.batch,
        "guidance_scale": cfg.guidance,
        "output_type": "np",
    }
    if stage == "generate":
        args |= {"num_inference_steps": cfg.steps, "strength": cfg.strength}
    else:
        args |= {"num_inference_steps": cfg.upscale_steps, "noise_level": 20}
    return args


def _time_calls(
    pipe: Any, args: dict[str, Any], calls: int, device: str
) -> tuple[list[float], Any]:
    def call() -> Any:
        gen = torch.Generator(device="cpu").manual_seed(1)
        with torch.inference_mode():
            out = pipe(**args, generator=gen).images
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    first = call()  # warm-up: lazy initialisation, allocator, asynchronous loads
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times, first


def bench_stage(
    stage: StageKind, cfg: ModelBenchConfig, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Figures of `stage` on every backend in `cfg.backends`."""
    t0 = time.perf_counter()
    source = build_random(stage, cfg.size)
    if cfg.dtype != "float32":
        source = source.to(getattr(torch, cfg.dtype))
    source.set_progress_bar_config(disable=True)
    say(f"{stage}: built {cfg.size} model in {time.perf_counter() - t0:.1f} s")
    args = _inputs(stage, cfg)
    rows: list[dict[str, Any]] = []
    reference = None
    with tempfile.TemporaryDirectory(prefix="img2img-bench-models-") as tmp:
        for backend in cfg.backends:
            compile_s = 0.0
            if backend == "eager":
                pipe = source.to(cfg.device)
            else:
                out = Path(tmp) / f"{stage}-{backend}"
                t0 = time.perf_counter()
                compile_pipeline(
                    source.to("cpu"),
                    CompileRequest(
                        stage=stage,
                        model=f"random:{cfg.size}",
                        height=cfg.height,
                        width=cfg.width,
                        batch=cfg.batch,
                        backend=backend,
                        out=str(out),
                        guidance=cfg.guidance > 1,
                        dtype=cfg.dtype,
                    ),
                    revision=f"{cfg.size}-random-seed0",
                    progress=lambda m: say(f"  {m}"),
                )
                compile_s = time.perf_counter() - t0
                settings = StageSettings(
                    backend=backend,
                    device=cfg.device,
                    dtype=cfg.dtype,
                    height=cfg.height,
                    width=cfg.width,
                    generate_artifacts=str(out),
                    upscale_artifacts=str(out),
                    model_cache_dir=Path(tmp) / "cache",
                )
                pipe = load_pipeline(stage, settings, batch=cfg.batch)
            times, images = _time_calls(pipe, args, cfg.calls, cfg.device)
            if reference is None:
                reference = images
            ms_call = statistics.mean(times)
            row = {
                "stage": stage,
                "backend": backend,
                "size": cfg.size,
                "ms_per_image": round(ms_call / cfg.batch, 1),
                "ms_per_call": round(ms_call, 1),
                "ms_per_call_min": round(min(times), 1),
                "batch": cfg.batch,
                "input": f"{cfg.width}x{cfg.height}",
                "steps": cfg.steps if stage == "generate" else cfg.upscale_steps,
                "device": cfg.device,
                "dtype": cfg.dtype,
                "calls": cfg.calls,
                "compile_s": round(compile_s, 1),
                "max_abs_diff_vs_first": round(float(abs(images - reference).max()), 6),
                "torch_threads": torch.get_num_threads(),
            }
            say(
                f"{stage} on {backend}: {row['ms_per_call']} ms per call, "
                f"{row['ms_per_image']} ms per image (max |Δ| vs {cfg.backends[0]}: "
                f"{row['max_abs_diff_vs_first']})"
            )
            rows.append(row)
            if backend != "eager":
                del pipe
    return rows


def run_models_bench(cfg: ModelBenchConfig, say: Callable[[str], None], as_json: bool) -> None:
    for stage in cfg.stages:
        for row in bench_stage(stage, cfg, say):
            if as_json:
                print(json.dumps(row), flush=True)

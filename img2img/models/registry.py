"""The one registry of model backends: eager, simulated, torchscript and neuron.

Each backend answers `load(stage, settings, s3, batch)` with an object called like a diffusers
pipeline (so the stage code never knows which it has) and a cache key (what makes two loads
the same model in one process). Each backend's module is imported only when it is used:
`neuron` needs torch-neuronx, and the simulated backend is for benchmarks.

    eager        plain diffusers (img2img/models/eager.py)                       CPU or CUDA
    torchscript  compiled parts traced with torch.jit (img2img/models/compiled)  CPU, CI's stand-in
    neuron       compiled parts traced with torch_neuronx                 Inf2
    simulated    a fixed device time per call, no CPU (img2img/simulated) benchmarks, chaos
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from img2img.config.stages import StageKind, StageSettings
from img2img.errors import ModelLoadError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

Loader = Callable[[StageKind, StageSettings, "S3Client | None", "int | None"], Any]
CacheKey = Callable[[StageKind, StageSettings], tuple[str, ...]]


@dataclass(frozen=True)
class Backend:
    name: str
    load: Loader
    cache_key: CacheKey


def _eager(kind: StageKind, settings: StageSettings, s3: S3Client | None, batch: int | None) -> Any:
    from img2img.models.eager import load_eager

    return load_eager(kind, settings, s3, batch)


def _eager_key(kind: StageKind, settings: StageSettings) -> tuple[str, ...]:
    from img2img.models.eager import eager_cache_key

    return eager_cache_key(kind, settings)


def _compiled(
    kind: StageKind, settings: StageSettings, s3: S3Client | None, batch: int | None
) -> Any:
    from img2img.models.compiled.loader import load_compiled

    return load_compiled(kind, settings, s3, batch)


def _compiled_key(kind: StageKind, settings: StageSettings) -> tuple[str, ...]:
    source = settings.generate_artifacts if kind == "generate" else settings.upscale_artifacts
    return (kind, settings.backend, str(source), settings.device)


def _simulated(
    kind: StageKind, settings: StageSettings, s3: S3Client | None, batch: int | None
) -> Any:
    from img2img.dev.simulated import SimulatedPipeline

    time.sleep(settings.simulated.load_s / 2)  # half the load time for each of two models
    if kind == "generate":
        return SimulatedPipeline(
            kind,
            settings.simulated.generate_ms,
            scale=1,
            crash_marker=settings.simulated.crash_marker,
            hang_marker=settings.simulated.hang_marker,
            hang_file=settings.simulated.hang_file,
            image_share=settings.simulated.image_share,
            steps=settings.simulated.steps,
        )
    return SimulatedPipeline(
        kind,
        settings.simulated.upscale_ms,
        scale=4,
        hang_file=settings.simulated.hang_file,
        image_share=settings.simulated.image_share,
        steps=settings.simulated.steps,
    )


def _simulated_key(kind: StageKind, settings: StageSettings) -> tuple[str, ...]:
    return (kind, "simulated")


BACKENDS: dict[str, Backend] = {
    "eager": Backend("eager", _eager, _eager_key),
    "torchscript": Backend("torchscript", _compiled, _compiled_key),
    "neuron": Backend("neuron", _compiled, _compiled_key),
    "simulated": Backend("simulated", _simulated, _simulated_key),
}


def get(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ModelLoadError(
            f"unknown backend {name!r}; expected one of {', '.join(sorted(BACKENDS))}"
        ) from None


def load(
    stage: StageKind, settings: StageSettings, s3: S3Client | None = None, batch: int | None = None
) -> Any:
    """The pipeline of `stage` on the backend the settings name. `batch`, when given, is
    the images per call the caller runs (compiled artifacts must hold that size)."""
    return get(settings.backend).load(stage, settings, s3, batch)


@dataclass(frozen=True)
class CallSizes:
    """The images per device call a backend can run: any count up to `sizes[-1]`
    (`exact`: eager and simulated pipelines take what they get) or only the sizes listed
    (compiled graphs are frozen at their batch; a shorter call is padded)."""

    sizes: tuple[int, ...]
    exact: bool


def call_sizes(settings: StageSettings, pipe: Any = None) -> CallSizes:
    """What one device call of `pipe` may hold: the sizes a pipeline compiled at fixed
    batches declares (`CompiledSizes.call_sizes`), else any count up to
    `stages.device_batch` (eager and simulated pipelines take what they get)."""
    declared = getattr(pipe, "call_sizes", None)
    if declared is not None:
        return CallSizes(tuple(declared), exact=False)
    return CallSizes(tuple(range(1, settings.device_batch + 1)), exact=True)


def cache_key(stage: StageKind, settings: StageSettings) -> tuple[str, ...]:
    return get(settings.backend).cache_key(stage, settings)

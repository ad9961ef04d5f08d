"""Loading the stage models, once per process, from a folder, an s3:// URI or the tiny default."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from img2img.buildonce import build_once
from img2img.errors import ModelLoadError
from img2img.s3folders import download_prefix, split_s3_uri
from img2img.settings import StageSettings
from img2img.tiny import save_tiny

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

StageKind = Literal["img2img", "upscale"]


def pipeline_class(kind: StageKind) -> Any:
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionUpscalePipeline

    return {"img2img": StableDiffusionImg2ImgPipeline, "upscale": StableDiffusionUpscalePipeline}[
        kind
    ]


def resolve_source(kind: StageKind, settings: StageSettings, s3: S3Client | None) -> Path:
    """The local folder holding the model of `kind`, fetching or building it once per host."""
    source = settings.img2img_model if kind == "img2img" else settings.upscale_model
    cache = settings.model_cache_dir
    if source is None:
        folder = cache / f"tiny-{kind}"
        build_once(folder, "model_index.json", lambda tmp: save_tiny(kind, tmp))
        return folder
    if source.startswith("s3://"):
        if s3 is None:
            raise ModelLoadError(f"{kind} model {source} is on S3 but no S3 client was given")
        bucket, prefix = split_s3_uri(source)
        folder = cache / "s3" / bucket / prefix
        build_once(
            folder,
            "model_index.json",
            lambda tmp: download_prefix(s3, bucket, prefix, tmp, required=["model_index.json"]),
        )
        return folder
    folder = Path(source)
    if not (folder / "model_index.json").exists():
        raise ModelLoadError(
            f"{kind} model folder {folder} has no model_index.json (expected a diffusers "
            "save_pretrained layout)"
        )
    return folder


@dataclass
class ModelCache:
    """Pipelines loaded in this process, keyed by stage kind and source folder.

    `loads` counts real loads, so callers (and tests) can see that a model was loaded once
    and then reused.
    """

    _pipes: dict[tuple[str, str, str, str], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    loads: int = 0
    load_s: float = 0.0
    # Held for a whole stage over a batch: device calls of concurrent runs never overlap.
    # A warm slot swaps in a lock that also tells its worker which run is on the device.
    device_lock: AbstractContextManager[Any] = field(default_factory=threading.Lock)

    def get(self, kind: StageKind, settings: StageSettings, s3: S3Client | None = None) -> Any:
        with self._lock:
            key = _cache_key(kind, settings)
            pipe = self._pipes.get(key)
            if pipe is None:
                start = time.perf_counter()
                pipe = load_pipeline(kind, settings, s3)
                self._pipes[key] = pipe
                self.loads += 1
                self.load_s += time.perf_counter() - start
            return pipe

    def warm_up(self, settings: StageSettings, s3: S3Client | None = None) -> None:
        """Load both stage models and run one call through each, so the first real
        request does not pay for lazy initialisation."""
        from PIL import Image

        from img2img.params import ImageParams
        from img2img.stages.img2img import run_img2img
        from img2img.stages.upscale import run_upscale

        params = ImageParams(prompt="warm-up", steps=2, strength=0.5, upscale_steps=1)
        shape = (settings.width, settings.height)
        with self.device_lock:
            first = run_img2img(
                self.get("img2img", settings, s3), Image.new("RGB", shape), params, 0, shape
            )
            run_upscale(self.get("upscale", settings, s3), first, params, 0, settings.noise_level)


def _cache_key(kind: StageKind, settings: StageSettings) -> tuple[str, str, str, str]:
    if settings.backend == "simulated":
        return (kind, "simulated", "", "")
    if settings.backend in ("torchscript", "neuron"):
        source = settings.img2img_artifacts if kind == "img2img" else settings.upscale_artifacts
        return (kind, settings.backend, str(source), settings.device)
    source = settings.img2img_model if kind == "img2img" else settings.upscale_model
    return (kind, str(source), settings.device, settings.dtype)


def load_pipeline(
    kind: StageKind, settings: StageSettings, s3: S3Client | None = None, batch: int = 1
) -> Any:
    """The pipeline of `kind` on the backend the settings name. Every backend returns an
    object called like a diffusers pipeline, so the stage code never knows which it has.
    `batch` is the images per call (compiled artifacts are checked against it)."""
    if settings.backend == "simulated":
        return _load_simulated(kind, settings)
    if settings.backend in ("torchscript", "neuron"):
        from img2img.compiled.loader import load_compiled

        return load_compiled(kind, settings, s3, batch)
    return _load(kind, resolve_source(kind, settings, s3), settings)


def _load_simulated(kind: StageKind, settings: StageSettings) -> Any:
    from img2img.simulated import SimulatedPipeline

    time.sleep(settings.simulated_load_s / 2)  # half the load time for each of two models
    if kind == "img2img":
        return SimulatedPipeline(
            kind,
            settings.simulated_img2img_ms,
            scale=1,
            crash_marker=settings.simulated_crash_marker,
        )
    return SimulatedPipeline(kind, settings.simulated_upscale_ms, scale=4)


def _load(kind: StageKind, folder: Path, settings: StageSettings) -> Any:
    import torch

    dtype = getattr(torch, settings.dtype)
    if dtype != torch.float32 and settings.device == "cpu":
        raise ModelLoadError(f"dtype {settings.dtype} needs a GPU; stages.device is 'cpu'")
    log.info("loading %s model from %s on %s (%s)", kind, folder, settings.device, settings.dtype)
    try:
        pipe = pipeline_class(kind).from_pretrained(str(folder), torch_dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load {kind} model from {folder}: {exc}") from exc
    try:
        pipe = pipe.to(settings.device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot put the {kind} model on device {settings.device!r}: {exc}"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


_process_cache: ModelCache | None = None


def process_models() -> ModelCache:
    """The model cache of this process (created on first use, never at import)."""
    global _process_cache
    if _process_cache is None:
        _process_cache = ModelCache()
    return _process_cache

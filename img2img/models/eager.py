"""The eager backend: plain diffusers pipelines from a folder, an s3:// URI or the tiny
default, on CPU or CUDA. The compiled backends trace these same pipelines."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from img2img.aws.folders import download_prefix, split_s3_uri
from img2img.config.stages import StageKind, StageSettings
from img2img.dev.tiny import save_tiny
from img2img.errors import ModelLoadError
from img2img.models.buildonce import build_once

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("img2img.models")


def pipeline_class(kind: StageKind) -> Any:
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionUpscalePipeline

    return {"generate": StableDiffusionImg2ImgPipeline, "upscale": StableDiffusionUpscalePipeline}[
        kind
    ]


def resolve_source(kind: StageKind, settings: StageSettings, s3: S3Client | None) -> Path:
    """The local folder holding the model of `kind`, fetching or building it once per host."""
    source = settings.generate_model if kind == "generate" else settings.upscale_model
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


def load_eager(
    kind: StageKind, settings: StageSettings, s3: S3Client | None = None, batch: int | None = None
) -> Any:
    """The diffusers pipeline of `kind` (any batch: eager pipelines take what they get)."""
    return _load(kind, resolve_source(kind, settings, s3), settings)


def eager_cache_key(kind: StageKind, settings: StageSettings) -> tuple[str, ...]:
    source = settings.generate_model if kind == "generate" else settings.upscale_model
    return (kind, "eager", str(source), settings.device, settings.dtype)


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
    if settings.device.startswith("cuda"):
        tune_for_gpu(pipe, settings)
    return pipe


def tune_for_gpu(pipe: Any, settings: StageSettings) -> None:
    """What GPU users expect of a diffusers pipeline: attention through PyTorch's
    scaled-dot-product kernels (diffusers' default processor on torch 2, set explicitly
    where the UNet has plain attention, so a saved pipeline with the classic processor does
    not keep it), channels-last convolutions, and, when asked, a compiled UNet."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    plain = (AttnProcessor, AttnProcessor2_0)
    if all(isinstance(p, plain) for p in pipe.unet.attn_processors.values()):
        pipe.unet.set_attn_processor(AttnProcessor2_0())
    if settings.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if settings.torch_compile:
        pipe.unet = torch.compile(pipe.unet, mode="max-autotune", fullgraph=False)

"""Real Stable Diffusion architectures with random weights, built offline from shipped configs.

`img2img/dev/configs/` holds the published `config.json` of each component (SD 1.5, SD 2.1 base,
the x4 upscaler). Random weights of the real shapes cost the same to compile, load and run
as the trained ones, so benchmarks measure real sizes without a model hub. The outputs are
noise. The tokenizer is the tiny offline one (token ids are shape-only here).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import torch

SIZES = ("tiny", "sd15", "sd21")
# The only x4 upscaler architecture is stabilityai/stable-diffusion-x4-upscaler.
_FOLDERS = {("generate", "sd15"): "sd15", ("generate", "sd21"): "sd21"}


def config(folder: str, component: str) -> dict[str, Any]:
    """The shipped config of `component` ("unet", "vae", ...) of architecture `folder`."""
    text = (
        resources.files("img2img.dev").joinpath("configs", folder, f"{component}.json").read_text()
    )
    raw: dict[str, Any] = json.loads(text)
    return raw


def folder_for(stage: str, size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)} but is {size!r}")
    return _FOLDERS.get((stage, size), "x4-upscaler")


def build_components(folder: str) -> dict[str, Any]:
    """Random-weight text encoder, UNet and VAE of architecture `folder` (seeded)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    return {
        "unet": UNet2DConditionModel.from_config(config(folder, "unet")).eval(),
        "vae": AutoencoderKL.from_config(config(folder, "vae")).eval(),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**config(folder, "text_encoder"))).eval(),
    }


def _scheduler(folder: str, name: str) -> Any:
    import diffusers

    cfg = config(folder, name)
    return getattr(diffusers, cfg["_class_name"]).from_config(cfg)


def build_random(stage: str, size: str) -> Any:
    """A diffusers pipeline of `stage` at `size`: tiny (the test model) or a real architecture."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionUpscalePipeline

    from img2img.dev.tiny import build_tiny_img2img, build_tiny_upscale, tiny_tokenizer

    if size == "tiny":
        return build_tiny_img2img() if stage == "generate" else build_tiny_upscale()
    folder = folder_for(stage, size)
    parts = build_components(folder)
    tokenizer = tiny_tokenizer()
    if stage == "generate":
        return StableDiffusionImg2ImgPipeline(
            **parts,
            tokenizer=tokenizer,
            scheduler=_scheduler(folder, "scheduler"),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    return StableDiffusionUpscalePipeline(
        **parts,
        tokenizer=tokenizer,
        scheduler=_scheduler(folder, "scheduler"),
        low_res_scheduler=_scheduler(folder, "low_res_scheduler"),
        max_noise_level=config(folder, "pipeline")["max_noise_level"],
    )


def parameter_counts(folder: str) -> dict[str, int]:
    """Parameters per component, counted on the meta device (no memory, no weights)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        models = {
            "unet": UNet2DConditionModel.from_config(config(folder, "unet")),
            "vae": AutoencoderKL.from_config(config(folder, "vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**config(folder, "text_encoder"))),
        }
    return {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}

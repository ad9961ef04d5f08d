"""Stage 2: x4 super-resolution of the stage-1 output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image

from img2img.params import ImageParams
from img2img.stages.call import call_pipeline


def run_upscale(
    pipe: Any,
    image: Image.Image,
    params: ImageParams,
    seed: int,
    noise_level: int,
    should_stop: Callable[[], bool] | None = None,
) -> Image.Image:
    """Upscale `image` four times per side, guided by the same prompt as stage 1."""
    import torch

    return call_pipeline(
        pipe,
        "stage 2",
        should_stop,
        prompt=params.prompt,
        negative_prompt=params.negative_prompt or None,
        image=image,
        num_inference_steps=params.upscale_steps,
        guidance_scale=params.guidance,
        noise_level=noise_level,
        generator=torch.Generator(device="cpu").manual_seed(seed),
    )

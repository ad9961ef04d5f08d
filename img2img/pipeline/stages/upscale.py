"""Stage 2: x4 super-resolution of the stage-1 output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from img2img.intake.params import ImageParams
from img2img.pipeline.stages.call import call_pipeline


def run_upscale(
    pipe: Any,
    images: Sequence[Image.Image],
    params: Sequence[ImageParams],
    seeds: Sequence[int],
    noise_level: int,
    should_stop: Callable[[], bool] | None = None,
) -> list[Image.Image]:
    """Upscale each of `images` four times per side in one device call, each guided by its
    own prompt and seed; they share steps and guidance (the caller groups them so)."""
    first = params[0]
    return call_pipeline(
        pipe,
        "stage 2",
        images,
        params,
        seeds,
        should_stop,
        num_inference_steps=first.upscale_steps,
        guidance_scale=first.guidance,
        noise_level=noise_level,
    )


def call_shape(params: ImageParams, image: Image.Image) -> tuple[Any, ...]:
    """What images must share to go into one stage-2 call."""
    return (params.upscale_steps, params.guidance, image.size)

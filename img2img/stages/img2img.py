"""Stage 1: image-to-image generation at the static stage-1 shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image

from img2img.errors import InvalidParameters
from img2img.params import ImageParams
from img2img.stages.call import call_pipeline


def run_img2img(
    pipe: Any,
    image: Image.Image,
    params: ImageParams,
    seed: int,
    shape: tuple[int, int],
    should_stop: Callable[[], bool] | None = None,
) -> Image.Image:
    """Generate one image from `image` (already brought to `shape` = (width, height))."""
    import torch

    if image.size != shape:
        raise InvalidParameters(
            f"stage 1 runs at {shape[0]}x{shape[1]} but the image is {image.size[0]}x"
            f"{image.size[1]}; preprocess must fit it first"
        )
    return call_pipeline(
        pipe,
        "stage 1",
        should_stop,
        prompt=params.prompt,
        negative_prompt=params.negative_prompt or None,
        image=image,
        strength=params.strength,
        num_inference_steps=params.steps,
        guidance_scale=params.guidance,
        generator=torch.Generator(device="cpu").manual_seed(seed),
    )

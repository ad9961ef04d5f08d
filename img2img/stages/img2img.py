"""Stage 1: image-to-image generation at the static stage-1 shape."""

from __future__ import annotations

from typing import Any

from PIL import Image

from img2img.errors import DeviceError, InvalidParameters
from img2img.params import ImageParams


def run_img2img(
    pipe: Any, image: Image.Image, params: ImageParams, seed: int, shape: tuple[int, int]
) -> Image.Image:
    """Generate one image from `image` (already brought to `shape` = (width, height))."""
    import torch

    if image.size != shape:
        raise InvalidParameters(
            f"stage 1 runs at {shape[0]}x{shape[1]} but the image is {image.size[0]}x"
            f"{image.size[1]}; preprocess must fit it first"
        )
    if int(params.steps * params.strength) < 1:
        raise InvalidParameters(
            f"steps × strength must be at least 1 denoising step, but is "
            f"{params.steps} × {params.strength}"
        )
    generator = torch.Generator(device="cpu").manual_seed(seed)
    try:
        with torch.inference_mode():
            out = pipe(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt or None,
                image=image,
                strength=params.strength,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance,
                generator=generator,
            )
    except torch.cuda.OutOfMemoryError as exc:
        raise DeviceError(f"stage 1 ran out of device memory: {exc}") from exc
    result: Image.Image = out.images[0]
    return result

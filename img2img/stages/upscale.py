"""Stage 2: x4 super-resolution of the stage-1 output."""

from __future__ import annotations

from typing import Any

from PIL import Image

from img2img.errors import DeviceError
from img2img.params import ImageParams


def run_upscale(
    pipe: Any, image: Image.Image, params: ImageParams, seed: int, noise_level: int
) -> Image.Image:
    """Upscale `image` four times per side, guided by the same prompt as stage 1."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(seed)
    try:
        with torch.inference_mode():
            out = pipe(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt or None,
                image=image,
                num_inference_steps=params.upscale_steps,
                guidance_scale=params.guidance,
                noise_level=noise_level,
                generator=generator,
            )
    except torch.cuda.OutOfMemoryError as exc:
        raise DeviceError(f"stage 2 ran out of device memory: {exc}") from exc
    result: Image.Image = out.images[0]
    return result

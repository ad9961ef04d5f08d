"""Stage 1: image-to-image generation at the static stage-1 shape."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from img2img.errors import InvalidParameters
from img2img.intake.params import ImageParams
from img2img.pipeline.stages.call import call_pipeline


def run_generate(
    pipe: Any,
    images: Sequence[Image.Image],
    params: Sequence[ImageParams],
    seeds: Sequence[int],
    shape: tuple[int, int],
    should_stop: Callable[[], bool] | None = None,
) -> list[Image.Image]:
    """Generate one image from each of `images` (already brought to `shape` = (width,
    height)) in one device call. The images share their steps, strength and guidance (the
    caller groups them so); prompts and seeds are per image, one generator each, so an
    image comes out as it would alone."""
    for image in images:
        if image.size != shape:
            raise InvalidParameters(
                f"stage 1 runs at {shape[0]}x{shape[1]} but the image is {image.size[0]}x"
                f"{image.size[1]}; preprocess must fit it first"
            )
    first = params[0]
    return call_pipeline(
        pipe,
        "stage 1",
        images,
        params,
        seeds,
        should_stop,
        strength=first.strength,
        num_inference_steps=first.steps,
        guidance_scale=first.guidance,
    )


def call_shape(params: ImageParams) -> tuple[Any, ...]:
    """What images must share to go into one stage-1 call."""
    return (params.steps, params.strength, params.guidance)

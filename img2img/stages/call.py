"""The one way a stage calls its pipeline: no autograd, device faults mapped onto the error
tree, progress marked before, during (each diffusion step) and after the call, and a cancel
request honoured between diffusion steps, not only between images."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from PIL import Image

from img2img import progress
from img2img.cancel import RunCancelled
from img2img.errors import DeviceError


def call_pipeline(
    pipe: Any, stage: str, should_stop: Callable[[], bool] | None = None, **kwargs: Any
) -> Image.Image:
    """`pipe(**kwargs).images[0]`. The pipeline's step callback (diffusers'
    `callback_on_step_end`, or the older `callback` of the x4 upscaler) marks progress after
    every denoising step, so a device that stops is seen within a step; with `should_stop`,
    it also stops the call with `RunCancelled` when that says so."""
    import torch

    kwargs.update(_step_guard(pipe, stage, should_stop))
    progress.mark()
    try:
        with torch.inference_mode():
            out = pipe(**kwargs)
    except torch.cuda.OutOfMemoryError as exc:
        raise DeviceError(f"{stage} ran out of device memory: {exc}") from exc
    progress.mark()
    result: Image.Image = out.images[0]
    return result


def _step_guard(pipe: Any, stage: str, should_stop: Callable[[], bool] | None) -> dict[str, Any]:
    try:
        accepted = inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        return {}

    def check(step: int) -> None:
        progress.mark()
        if should_stop is not None and should_stop():
            raise RunCancelled(f"run cancelled during {stage}, after denoising step {step + 1}")

    if "callback_on_step_end" in accepted:

        def on_step_end(_pipe: Any, step: int, _t: Any, kw: dict[str, Any]) -> dict[str, Any]:
            check(step)
            return kw

        return {"callback_on_step_end": on_step_end}
    if "callback" in accepted and "callback_steps" in accepted:

        def on_step(step: int, _t: Any, _latents: Any) -> None:
            check(step)

        return {"callback": on_step, "callback_steps": 1}
    return {}

"""The one way a stage calls its pipeline (one device call over one or more images): no
autograd, device faults mapped onto the error tree, progress marked before, during (each
diffusion step) and after the call, a cancel request honoured between diffusion steps, not
only between calls, and the device handed to a more urgent lane's call between two steps
when the slot offers turns (`img2img.slots.step_turns`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from img2img.errors import DeviceError, DeviceOutOfMemory
from img2img.intake.params import ImageParams
from img2img.models.per_call import own_state
from img2img.slots import progress, step_turns
from img2img.slots.cancel import RunCancelled


def call_pipeline(
    pipe: Any,
    stage: str,
    images: Sequence[Image.Image],
    params: Sequence[ImageParams],
    seeds: Sequence[int],
    should_stop: Callable[[], bool] | None = None,
    **kwargs: Any,
) -> list[Image.Image]:
    """One device call over `images`, an output each: `pipe(**kwargs).images` with what
    stays per image (prompt, negative prompt, one generator per seed, so each image comes
    out as it would alone) taken from `params` and `seeds`; `kwargs` holds what the call
    takes once. The pipeline's step callback (diffusers' `callback_on_step_end`, or the
    older `callback` of the x4 upscaler) marks progress after every denoising step, so a
    device that stops is seen within a step; with `should_stop`, it also stops the call
    with `RunCancelled` when that says so, and takes a turn when the slot offers them (a
    more urgent call runs between two of this call's steps, on a view of the pipeline with
    its own per-call state: `own_state`). A device out of memory is `DeviceOutOfMemory`
    (retryable: a smaller call may fit)."""
    import torch

    turns = step_turns.current()
    if turns is not None:
        pipe = own_state(pipe)
    count = len(images)
    negatives = [p.negative_prompt or "" for p in params]
    kwargs.update(
        image=list(images),
        prompt=[p.prompt for p in params],
        # "" is what the pipeline uses for no negative prompt: the same call either way.
        negative_prompt=negatives if any(negatives) else None,
        generator=[torch.Generator(device="cpu").manual_seed(s) for s in seeds],
    )
    kwargs.update(_step_guard(pipe, stage, should_stop, turns))
    progress.mark()
    try:
        with torch.inference_mode():
            out = pipe(**kwargs)
    except torch.cuda.OutOfMemoryError as exc:
        raise DeviceOutOfMemory(
            f"{stage} ran out of device memory at {count} image(s) per call: {exc}"
        ) from exc
    progress.mark()
    outputs: list[Image.Image] = list(out.images)
    if len(outputs) != count:
        raise DeviceError(f"{stage} returned {len(outputs)} images for a call of {count}")
    return outputs


def _step_guard(
    pipe: Any,
    stage: str,
    should_stop: Callable[[], bool] | None,
    turns: step_turns.Turns | None = None,
) -> dict[str, Any]:
    # A wrapper around pipelines (compiled sizes) says what its pipelines take.
    accepted = getattr(pipe, "call_parameters", None)
    if accepted is None:
        try:
            accepted = inspect.signature(pipe.__call__).parameters
        except (TypeError, ValueError):
            return {}

    def check(step: int) -> None:
        progress.mark()
        if should_stop is not None and should_stop():
            raise RunCancelled(f"run cancelled during {stage}, after denoising step {step + 1}")
        if turns is not None:
            turns()

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

"""A pipeline's view for one device call that may be paused between its diffusion steps
while another call runs on the same models (`img2img.slots.step_turns`)."""

from __future__ import annotations

import copy
from typing import Any


def own_state(pipe: Any) -> Any:
    """A view of `pipe` for one call that may be paused between its steps while another
    call runs: the same models (weights, compiled graphs), its own scheduler and call
    attributes (a diffusers call keeps its timesteps, step index and guidance on the
    pipeline and its scheduler, which the other call would overwrite). A wrapper makes its
    own (`for_one_call`); a pipeline without a scheduler keeps nothing per call."""
    if hasattr(pipe, "for_one_call"):
        return pipe.for_one_call()
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None or not hasattr(scheduler, "config"):
        return pipe
    view = copy.copy(pipe)
    # Past the pipeline's __setattr__, which would rewrite its config: the same scheduler,
    # fresh (a scheduler's config is all it is made of).
    object.__setattr__(view, "scheduler", type(scheduler).from_config(scheduler.config))
    return view

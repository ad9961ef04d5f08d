"""Turns on the device between diffusion steps (pure threading, no I/O).

A device call of stage 1 is tens of denoising steps. Handing the device over only between
calls holds an interactive image behind the whole bulk call on it (a stage-1 call of 2 s on
Inf2). Between two steps the call's state is its latents on the host, so it can wait there:
`run_stage` offers its `Turns` to each call (`offered`), the pipeline's step callback
takes one (`current()()`: the slot's lock hands the device to a more urgent waiting run and
gets it back), and the time given away is counted so the call's images are charged their
own device time only. A call that may be paused shares its pipeline's models with the call
that runs meanwhile, never its per-call state (`img2img.models.per_call`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class Turns:
    """`hand_over` (the slot lock's `yield_to_waiting`: True when it gave the device away
    and got it back) with the seconds given away counted; `on_back` runs each time the
    device comes back (the stage on it is this one's again, for the hang rule)."""

    def __init__(
        self, hand_over: Callable[[], bool], on_back: Callable[[], object] | None = None
    ) -> None:
        self.hand_over = hand_over
        self.on_back = on_back
        self.given_s = 0.0
        self.given = 0

    def __call__(self) -> bool:
        start = time.perf_counter()
        handed = bool(self.hand_over())
        if handed:
            self.given_s += time.perf_counter() - start
            self.given += 1
            if self.on_back is not None:
                self.on_back()
        return handed


_offered: ContextVar[Turns | None] = ContextVar("img2img_step_turns", default=None)


@contextmanager
def offered(turns: Turns | None) -> Iterator[None]:
    """Within this block (one thread's device call), the pipeline's steps take `turns`."""
    token = _offered.set(turns)
    try:
        yield
    finally:
        _offered.reset(token)


def current() -> Turns | None:
    """The turns offered to this thread's device call, if any."""
    return _offered.get()

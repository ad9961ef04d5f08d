"""The one shape of the control host's long-running services (the dispatcher, the
autoscaler, the recovery service): rounds until stopped, a stop that any thread or SIGTERM /
SIGINT may ask for, and an optional deadline (`stop_after_s`, what the tests use).

A service says what it does as it starts (`started`), does one round (`round`: a step and
the wait after it, through `wait`, which a stop cuts short), and hands back its figures at
the end (`finished`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from deployments.services.signals import stop_on_signals

T = TypeVar("T")


class LoopService(Generic[T]):
    """Base of a long-running service: subclasses give `round` and `finished`."""

    log = logging.getLogger("img2img.service")
    # What the log says when a signal stops the service.
    stopping_note = "stopping"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._stop = threading.Event()

    # -- what a service gives ---------------------------------------------------------------

    def started(self) -> None:
        """Say what the service does, once, before the first round."""

    def round(self) -> None:
        """One step and the wait after it."""
        raise NotImplementedError

    def finished(self) -> T:
        """After the last round: what is pending is finished, the figures returned."""
        raise NotImplementedError

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop_after_s: float | None = None) -> T:
        """Rounds until `stop()` (or SIGTERM/SIGINT, once `install_signal_handlers` ran) or
        until `stop_after_s` has passed; then `finished()`."""
        deadline = None if stop_after_s is None else self.clock() + stop_after_s
        self.started()
        while not self.stopped and (deadline is None or self.clock() < deadline):
            self.round()
        return self.finished()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when the service was stopped meanwhile."""
        return self._stop.wait(max(0.0, seconds))

    def install_signal_handlers(self) -> None:
        stop_on_signals(self.stop, self.log, self.stopping_note)

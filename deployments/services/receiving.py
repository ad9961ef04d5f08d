"""The dispatcher's receives, in a thread of their own, so an upload's event is taken while
the dispatcher's round does the rest of its work (counts, renewals, runs to make).

A round that received its messages itself left every upload that arrived meanwhile in the
queue until its next receive: behind the round's wait for a claim (up to
`dispatcher.CLAIM_PAUSE_S`), its reads and its runs. Profiled under a bulk burst on the
local stack, that wait was 60% of the round. Here a long poll is always out; what it brings
is put in the inbox and the dispatcher is woken (`wake`, which a run claim heard sets too),
so one wait ends for whichever comes first.

Nothing is deleted here: a message in the inbox is one received and not yet taken, as if
the round had received it, and one the process dies with reappears after its visibility
timeout (the run's idempotency key makes it one run). A failed receive ends the thread and
is raised by the next `take`, as a failed receive in the round was.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# While the dispatcher has no room, how long the thread waits for a take before asking again.
FULL_PAUSE_S = 0.2


@dataclass(frozen=True)
class Received:
    """One message and the instant it was received (an upload's intake ends there)."""

    message: Any
    at: datetime


class Receiver:
    """Long polls of at most `room(unsettled)` messages (10 at most each; none while it
    says 0), into an inbox the dispatcher takes from; `start`, `take`, `settled`, `stop`.
    `unsettled`: the messages in the inbox and those taken that the dispatcher has not
    said are in its hands yet (`settled`), so what it holds is never counted twice as
    room."""

    def __init__(
        self,
        receive: Callable[[int, int], list[Any]],
        wait_s: int,
        room: Callable[[int], int],
        wake: threading.Event,
        logger: logging.Logger,
    ) -> None:
        """`receive(wait_s, most)`: one receive. `room(unsettled)`: how many more the
        dispatcher would take now. `wake` is set whenever the inbox gets messages or the
        thread fails."""
        self._receive = receive
        self.wait_s = wait_s
        self._room = room
        self.wake = wake
        self.log = logger
        self._inbox: list[Received] = []
        self._handed = 0  # taken, not yet settled
        self._lock = threading.Lock()
        self._taken = threading.Event()
        self._stop = threading.Event()
        self._failed: Exception | None = None
        self._thread = threading.Thread(target=self._main, name="sqs-receive", daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    @property
    def ready(self) -> bool:
        """Whether a `take` would return something (or raise)."""
        with self._lock:
            return bool(self._inbox) or self._failed is not None

    def take(self) -> list[Received]:
        """Everything in the inbox, oldest first; raises the error that ended the thread
        once the inbox is empty."""
        with self._lock:
            got, self._inbox = self._inbox, []
            self._handed += len(got)
        self._taken.set()
        if not got and self._failed is not None:
            raise self._failed
        return got

    def settled(self) -> None:
        """What was taken is in the dispatcher's hands now (its own count has it)."""
        with self._lock:
            self._handed = 0
        self._taken.set()

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop receiving; returns whether the thread ended (its receive in flight
        returned) within `timeout_s` (default: the long poll plus 5 s). Take what it
        left after this."""
        self._stop.set()
        self._taken.set()
        if self._thread.is_alive():
            self._thread.join(self.wait_s + 5.0 if timeout_s is None else timeout_s)
        return not self._thread.is_alive()

    def _main(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                unsettled = len(self._inbox) + self._handed
            most = min(10, self._room(unsettled))
            if most <= 0:
                # Full: the dispatcher takes what it holds first.
                self._taken.wait(FULL_PAUSE_S)
                self._taken.clear()
                continue
            try:
                got = self._receive(self.wait_s, most)
            except Exception as exc:
                self.log.error("receiving from the queue failed: %s", exc)
                with self._lock:
                    self._failed = exc
                self.wake.set()
                return
            if got:
                at = datetime.now(UTC)
                with self._lock:
                    self._inbox += [Received(message, at) for message in got]
                self.wake.set()

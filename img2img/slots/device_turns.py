"""Whose turn on the device (pure threading, no I/O): a lock taken by priority.

A slot holds several runs at once (`worker.runs_per_slot`), each a thread that takes the
device for a stage of its batch (its calls one after the other). With lanes, a waiting
interactive run must not wait for a bulk run's whole stage: `PriorityLock` grants the device
to the waiter with the lowest priority number (first come first served within one), and
its holder, between two calls, hands it to a waiter more urgent than itself
(`yield_to_waiting`) and takes it back after, ahead of the waiters of its own priority that
came later. A bulk run of hundreds of images holds an interactive image for at most the
one call already on the device; runs of one priority keep the device for their stage, as
without lanes.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field


@dataclass(order=True)
class _Waiter:
    priority: int
    ticket: int
    wake: threading.Event = field(compare=False, default_factory=threading.Event)


class PriorityLock:
    """A mutex granted to the waiter with the lowest (priority, arrival)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._holder: _Waiter | None = None
        self._waiting: list[_Waiter] = []
        self._tickets = itertools.count()

    def acquire(self, priority: int = 0) -> None:
        self._wait_turn(_Waiter(priority, next(self._tickets)))

    def _wait_turn(self, waiter: _Waiter) -> None:
        with self._mutex:
            if self._holder is None and not self._waiting:
                self._holder = waiter
                return
            self._waiting.append(waiter)
            self._waiting.sort()
        waiter.wake.wait()  # the releasing thread hands the lock over: held on waking

    def release(self) -> None:
        with self._mutex:
            if self._holder is None:
                raise RuntimeError("release of a PriorityLock that is not held")
            self._hand_over()

    def _hand_over(self) -> None:
        """To the first waiter (the mutex held), or free."""
        if self._waiting:
            self._holder = self._waiting.pop(0)
            self._holder.wake.set()
        else:
            self._holder = None

    def yield_to_waiting(self) -> bool:
        """Called by the holder between two calls: when a waiter is more urgent (a lower
        priority number), hand it the lock and wait to get it back (ahead of this
        priority's later waiters). Returns whether it was handed over."""
        with self._mutex:
            holder = self._holder
            if holder is None:
                raise RuntimeError("yield_to_waiting by a thread that does not hold the lock")
            if not self._waiting or self._waiting[0].priority >= holder.priority:
                return False
            again = _Waiter(holder.priority, holder.ticket)  # its place in line kept
            self._waiting.append(again)
            self._waiting.sort()
            self._hand_over()
        again.wake.wait()
        return True

    def waiting(self) -> list[int]:
        """The priorities of the threads waiting now, in the order they will be served."""
        with self._mutex:
            return [w.priority for w in self._waiting]

"""Whose turn on the device (pure threading, no I/O): a lock taken by priority.

A slot holds several runs at once (`worker.runs_per_slot`), each a thread that takes the
device for one call at a time. A plain lock lets whichever thread the OS wakes take it;
with lanes, a waiting interactive run's call must go before a waiting bulk run's, so that a
bulk run of hundreds of images holds an interactive image for at most the one call already
on the device. `PriorityLock` grants the device to the waiter with the lowest priority
number, first come first served within a priority.
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
        self._held = False
        self._waiting: list[_Waiter] = []
        self._tickets = itertools.count()

    def acquire(self, priority: int = 0) -> None:
        with self._mutex:
            if not self._held and not self._waiting:
                self._held = True
                return
            waiter = _Waiter(priority, next(self._tickets))
            self._waiting.append(waiter)
            self._waiting.sort()
        waiter.wake.wait()  # the releasing thread hands the lock over: held on waking

    def release(self) -> None:
        with self._mutex:
            if not self._held:
                raise RuntimeError("release of a PriorityLock that is not held")
            if self._waiting:
                self._waiting.pop(0).wake.set()  # handed over: stays held
            else:
                self._held = False

    def waiting(self) -> list[int]:
        """The priorities of the threads waiting now, in the order they will be served."""
        with self._mutex:
            return [w.priority for w in self._waiting]

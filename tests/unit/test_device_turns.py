"""The device lock by priority: real threads waiting on it."""

from __future__ import annotations

import threading
import time

import pytest

from img2img.slots.device_turns import PriorityLock


def _wait_until(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.001)


def test_the_lowest_priority_number_goes_first_then_arrival_order() -> None:
    lock = PriorityLock()
    lock.acquire(10)  # a bulk call on the device
    order: list[str] = []

    def call(name: str, priority: int) -> None:
        lock.acquire(priority)
        order.append(name)
        lock.release()

    threads = []
    for name, priority in [("bulk-1", 10), ("bulk-2", 10), ("inter-1", 1), ("inter-2", 1)]:
        thread = threading.Thread(target=call, args=(name, priority), daemon=True)
        thread.start()
        threads.append(thread)
        queued = len(threads)
        _wait_until(lambda n=queued: len(lock.waiting()) == n)
    assert lock.waiting() == [1, 1, 10, 10]
    lock.release()
    for thread in threads:
        thread.join(5)
    assert order == ["inter-1", "inter-2", "bulk-1", "bulk-2"]


def test_an_interactive_call_waits_for_one_bulk_call_not_for_the_bulk_run() -> None:
    """Two bulk runs call the device in a loop; once an interactive call waits, the next
    grant is its own: it waited for the call already on the device and no more."""
    lock = PriorityLock()
    stop = threading.Event()
    grants: list[str] = []  # appended by whoever holds the lock, in grant order

    def bulk(name: str) -> None:
        while not stop.is_set():
            lock.acquire(10)
            grants.append(name)
            time.sleep(0.02)  # a device call
            lock.release()

    def interactive() -> None:
        lock.acquire(1)
        grants.append("interactive")
        lock.release()

    runs = [threading.Thread(target=bulk, args=(f"bulk-{i}",), daemon=True) for i in range(2)]
    for run in runs:
        run.start()
    _wait_until(lambda: len(grants) > 5 and len(lock.waiting()) == 1)  # bulk contending
    waiter = threading.Thread(target=interactive, daemon=True)
    waiter.start()
    _wait_until(lambda: 1 in lock.waiting() or "interactive" in grants)
    # The call on the device now was granted before this (a 20 ms call: seen waiting).
    seen = len(grants) if "interactive" not in grants else grants.index("interactive")
    waiter.join(5)
    stop.set()
    for run in runs:
        run.join(5)
    assert grants[seen:][0] == "interactive", grants[seen - 2 : seen + 3]
    assert len(grants) - seen > 1  # the bulk runs went on after it


def test_released_when_nobody_waits_and_misuse_is_refused() -> None:
    lock = PriorityLock()
    lock.acquire(5)
    lock.release()
    lock.acquire(1)  # free again: taken at once
    lock.release()
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()

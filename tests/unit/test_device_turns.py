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


def test_an_interactive_call_waits_for_one_bulk_call_not_for_the_bulk_stage() -> None:
    """Two bulk runs each hold the device for a stage of 20 calls, offering it between
    calls; once an interactive call waits, the next call is its own. The other bulk run
    does not take the device in the middle of the first one's stage."""
    lock = PriorityLock()
    calls: list[str] = []  # appended by whoever holds the lock, in call order
    started = threading.Event()

    def bulk(name: str) -> None:
        lock.acquire(10)
        started.set()
        for index in range(20):
            if index:
                lock.yield_to_waiting()
            calls.append(name)
            time.sleep(0.02)  # a device call
        lock.release()

    def interactive() -> None:
        lock.acquire(1)
        calls.append("interactive")
        lock.release()

    runs = [threading.Thread(target=bulk, args=(f"bulk-{i}",), daemon=True) for i in range(2)]
    runs[0].start()
    started.wait(5)
    runs[1].start()
    _wait_until(lambda: len(lock.waiting()) == 1 and len(calls) > 3)
    waiter = threading.Thread(target=interactive, daemon=True)
    waiter.start()
    _wait_until(lambda: 1 in lock.waiting() or "interactive" in calls)
    # The call on the device now was granted before this (a 20 ms call: seen waiting).
    seen = len(calls) if "interactive" not in calls else calls.index("interactive")
    for thread in [waiter, *runs]:
        thread.join(10)
    assert calls[seen] == "interactive", calls[seen - 2 : seen + 3]
    # Each bulk run's stage is one stretch, before or after the interactive call.
    bulk_only = [c for c in calls if c != "interactive"]
    assert bulk_only == ["bulk-0"] * 20 + ["bulk-1"] * 20


def test_the_holder_keeps_the_device_when_nobody_more_urgent_waits() -> None:
    lock = PriorityLock()
    lock.acquire(5)
    assert lock.yield_to_waiting() is False  # nobody waits
    with pytest.raises(RuntimeError, match="does not hold"):
        other = PriorityLock()
        other.yield_to_waiting()
    lock.release()


def test_released_when_nobody_waits_and_misuse_is_refused() -> None:
    lock = PriorityLock()
    lock.acquire(5)
    lock.release()
    lock.acquire(1)  # free again: taken at once
    lock.release()
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()


def test_the_slots_lock_counts_the_device_held_once_per_holder_through_a_hand_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hang rule reads whether the device is held: after a bulk holder handed it to an
    interactive call and took it back, and both let go, it is free again."""
    from deployments.worker.slot_process import ReportingDeviceLock
    from img2img.slots import progress

    recorder = progress.ProgressRecorder()
    monkeypatch.setattr(progress, "_recorder", recorder)
    priority = threading.local()
    sent: list[object] = []
    lock = ReportingDeviceLock(sent.append, lambda _queue: priority.value)
    priority.value = 10
    lock.__enter__()

    def interactive() -> None:
        priority.value = 1
        with lock:
            assert recorder.snapshot().on_device

    waiter = threading.Thread(target=interactive, daemon=True)
    waiter.start()
    _wait_until(lambda: lock._lock.waiting() == [1])
    assert lock.yield_to_waiting() is True
    waiter.join(5)
    assert recorder.snapshot().on_device  # the bulk holder has it back
    lock.__exit__(None, None, None)
    assert not recorder.snapshot().on_device
    assert len(sent) == 5  # on, the interactive on and off, back on, off


def test_turns_count_the_time_given_away_and_mark_the_stage_back_only_when_handed_over() -> None:
    from img2img.slots.step_turns import Turns, current, offered

    back: list[str] = []
    answers = iter([False, True])

    def hand_over() -> bool:
        handed = next(answers)
        if handed:
            time.sleep(0.05)  # another call on the device meanwhile
        return handed

    turns = Turns(hand_over, on_back=lambda: back.append("generate"))
    assert turns() is False and turns.given == 0 and back == []
    assert turns() is True and turns.given == 1 and back == ["generate"]
    assert turns.given_s >= 0.05
    assert current() is None
    with offered(turns):
        assert current() is turns
    assert current() is None

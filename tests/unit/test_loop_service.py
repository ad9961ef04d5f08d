"""The services' one loop: rounds until a stop (from any thread, or SIGTERM), or until the
deadline; a stop cuts a wait short; the figures come back once the loop ends."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from deployments.services.loop import LoopService


class Counting(LoopService[list[str]]):
    def __init__(self, pause_s: float = 0.0, stop_after_rounds: int | None = None) -> None:
        super().__init__()
        self.rounds = 0
        self.pause_s = pause_s
        self.stop_after_rounds = stop_after_rounds
        self.said: list[str] = []

    def started(self) -> None:
        self.said.append("started")

    def round(self) -> None:
        self.rounds += 1
        if self.rounds == self.stop_after_rounds:
            self.stop()
        self.wait(self.pause_s)

    def finished(self) -> list[str]:
        return [*self.said, f"finished after {self.rounds}"]


def test_rounds_until_stopped_then_finished() -> None:
    service = Counting(stop_after_rounds=3)
    assert service.run() == ["started", "finished after 3"]
    assert service.stopped


def test_the_deadline_ends_the_loop() -> None:
    service = Counting(pause_s=0.05)
    began = time.monotonic()
    figures = service.run(stop_after_s=0.3)
    assert 0.25 <= time.monotonic() - began < 2.0
    assert 3 <= service.rounds <= 8 and figures[-1] == f"finished after {service.rounds}"
    assert not service.stopped  # the deadline is not a stop


def test_a_stop_from_another_thread_cuts_the_wait_short() -> None:
    service = Counting(pause_s=30.0)
    threading.Timer(0.2, service.stop).start()
    began = time.monotonic()
    service.run()
    assert time.monotonic() - began < 5.0 and service.rounds == 1


def test_sigterm_stops_the_service_once_its_handlers_are_installed() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    service = Counting(pause_s=30.0)
    try:
        service.install_signal_handlers()
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        began = time.monotonic()
        service.run()
        assert time.monotonic() - began < 5.0 and service.stopped
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])


def test_a_service_without_a_round_says_so() -> None:
    class Empty(LoopService[None]):
        def finished(self) -> None:
            return None

    with pytest.raises(NotImplementedError):
        Empty().run(stop_after_s=1)

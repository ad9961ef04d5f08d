"""A step run inside the flow run (no task run) keeps the task's retry policy."""

from __future__ import annotations

import pytest

from img2img.errors import DeviceError, InvalidImage
from tasks.policy import run_step, transient_task


def _flaky(failures: list[BaseException]) -> tuple[object, list[int]]:
    calls: list[int] = []

    @transient_task("flaky", delays_s=(0, 0))
    def step(value: int) -> int:
        calls.append(value)
        if failures:
            raise failures.pop(0)
        return value * 2

    return step, calls


def test_transient_errors_are_retried_with_the_tasks_retries() -> None:
    step, calls = _flaky([DeviceError("device reset"), DeviceError("again")])
    assert run_step(step, 21, task_run=False) == 42  # type: ignore[arg-type]
    assert calls == [21, 21, 21]


def test_retries_run_out() -> None:
    step, calls = _flaky([DeviceError(str(i)) for i in range(3)])
    with pytest.raises(DeviceError, match="2"):
        run_step(step, 1, task_run=False)  # type: ignore[arg-type]
    assert len(calls) == 3  # the first try and two retries


def test_permanent_errors_are_not_retried() -> None:
    step, calls = _flaky([InvalidImage("not an image"), DeviceError("never reached")])
    with pytest.raises(InvalidImage):
        run_step(step, 1, task_run=False)  # type: ignore[arg-type]
    assert calls == [1]

"""The hung-slot rule (`img2img.slots.progress`), and how a hang's failure record reads."""

from __future__ import annotations

import threading

import pytest

from img2img.delivery.recovery import give_up_record
from img2img.slots.progress import ProgressRecorder, Snapshot, deadline_s, hung_reason

CALLS = {"generate": 2.0, "upscale": 0.5}


def judge(now: float, heard_at: float, at: float, stage: str | None, on_device: bool) -> str | None:
    return hung_reason(
        now=now,
        heard_at=heard_at,
        progress=Snapshot(at, stage, on_device),
        call_s=CALLS,
        factor=10.0,
        floor_s=8.0,
    )


def test_the_deadline_is_the_call_time_times_the_factor_never_under_the_floor() -> None:
    assert deadline_s(2.0, 10.0, 8.0) == 20.0
    assert deadline_s(0.5, 10.0, 8.0) == 8.0
    assert deadline_s(None, 10.0, 8.0) == 8.0 and deadline_s(0.0, 10.0, 8.0) == 8.0


def test_a_slot_that_moves_or_waits_off_the_device_is_not_hung() -> None:
    # Beating, device held, last progress 19 s ago in a stage whose deadline is 20 s.
    assert judge(now=100, heard_at=99.5, at=81, stage="generate", on_device=True) is None
    # Off the device for a long time (I/O, waiting for runs): its own timeouts bound it.
    assert judge(now=1000, heard_at=999, at=0, stage="upscale", on_device=False) is None


def test_a_device_held_past_its_stage_deadline_is_hung_and_the_reason_says_where() -> None:
    reason = judge(now=100, heard_at=99.5, at=79, stage="generate", on_device=True)
    assert reason == "hung: no progress for 21 s during generate (deadline 20 s)"
    # Stage 2's calls are short: the floor is its deadline.
    assert judge(now=100, heard_at=99.5, at=91, stage="upscale", on_device=True) is not None
    assert judge(now=100, heard_at=99.5, at=93, stage="upscale", on_device=True) is None


def test_a_stage_with_no_measured_call_time_gets_the_longest_one() -> None:
    assert judge(now=100, heard_at=99.5, at=85, stage="other", on_device=True) is None
    assert judge(now=100, heard_at=99.5, at=79, stage="other", on_device=True) is not None


def test_a_silent_slot_is_hung_after_the_floor_wherever_it_was() -> None:
    reason = judge(now=100, heard_at=91, at=91, stage="upscale", on_device=False)
    assert reason is not None and reason.startswith("hung: no progress for 9 s during upscale")
    assert "sends nothing" in reason
    assert judge(now=100, heard_at=93, at=93, stage=None, on_device=False) is None


def test_the_recorder_keeps_the_last_mark_and_the_device_holders() -> None:
    rec = ProgressRecorder()
    rec.mark("generate")
    first = rec.snapshot()
    assert first.stage == "generate" and not first.on_device
    rec.device(True)
    rec.mark()  # a diffusion step: the stage stays
    held = rec.snapshot()
    assert held.on_device and held.stage == "generate" and held.at >= first.at
    rec.device(False)
    rec.device(False)  # never below zero
    assert not rec.snapshot().on_device
    threads = [threading.Thread(target=rec.mark, args=("upscale",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rec.snapshot().stage == "upscale"


@pytest.mark.parametrize(
    ("last", "stage", "lead"),
    [
        (
            "slot 0 (cpu) (pid 9) hung: no progress for 31 s during upscale (deadline 30 s); "
            "it was killed; the slot is being replaced",
            "upscale",
            "hung: no progress for 31 s during upscale",
        ),
        (
            "slot 0 (cpu) (pid 9) hung: no progress for 40 s (the slot process sends nothing; "
            "deadline 30 s); it was killed",
            "hung",
            "hung: no progress for 40 s",
        ),
        ("slot 0 (cpu) (pid 9) was killed by signal SIGKILL", "crashed", "its flow run"),
    ],
)
def test_a_hang_s_failure_record_names_its_stage_and_leads_with_the_hang(
    last: str, stage: str, lead: str
) -> None:
    got_stage, reason = give_up_record(last, "crashed 3 times (max_attempts 3)")
    assert got_stage == stage
    assert reason.startswith(lead) and "crashed 3 times" in reason and last in reason

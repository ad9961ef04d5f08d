"""Progress of this process's work, and the rule that calls a slot hung.

A hung accelerator (a Neuron runtime that stops answering, a deadlocked collective, a GPU
stuck in a kernel) leaves its process alive: nothing crashes, the worker heartbeats, and the
runs stay Running with no bound. So the device's work reports progress where it happens:

- `mark(stage)` when a stage takes the device, `mark()` before and after each device call
  and after each diffusion step (the pipeline's step callback); only the device's holder
  marks, so other runs' I/O in the same slot cannot hide a device that stopped;
- the slot sends the last mark to its worker every `worker.progress_beat_s` from a thread of
  its own, so a process that stops entirely (SIGSTOP, a lock held for ever) goes silent.

The worker judges with `hung_reason`: a slot is hung when it has sent nothing for its
deadline, or when the device has been held with no mark for the deadline of the stage on it.
A stage's deadline comes from the work: its expected call time (one call timed at warm-up)
times `worker.hang_factor`, never under `worker.hang_floor_s`. Model loading (and a compile
on first load) has its own, longer bound, `worker.slot_start_timeout_s`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

HUNG = "hung"


@dataclass(frozen=True)
class Snapshot:
    """The last progress of a process: when (`time.monotonic()`, which is one clock for
    every process of a Linux host), in which stage, and whether the device is held."""

    at: float
    stage: str | None
    on_device: bool


@dataclass
class ProgressRecorder:
    """Thread-safe record of the last progress mark of this process."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _at: float = field(default_factory=time.monotonic)
    _stage: str | None = None
    _on_device: int = 0  # nested holders of the device

    def mark(self, stage: str | None = None) -> None:
        with self._lock:
            self._at = time.monotonic()
            if stage is not None:
                self._stage = stage

    def device(self, held: bool) -> None:
        """The device is taken (`held`) or given back; either is progress."""
        with self._lock:
            self._on_device = max(0, self._on_device + (1 if held else -1))
            self._at = time.monotonic()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._at, self._stage, self._on_device > 0)


_recorder: ProgressRecorder | None = None
_recorder_lock = threading.Lock()


def recorder() -> ProgressRecorder:
    """The process's recorder (created on first use, never at import)."""
    global _recorder
    with _recorder_lock:
        if _recorder is None:
            _recorder = ProgressRecorder()
        return _recorder


def mark(stage: str | None = None) -> None:
    """Record progress in this process (cheap: a lock and a clock read)."""
    recorder().mark(stage)


def deadline_s(call_s: float | None, factor: float, floor_s: float) -> float:
    """How long a stage may go without progress: `factor` × its expected call time, at
    least `floor_s` (and `floor_s` when the call time is unknown)."""
    if call_s is None or call_s <= 0:
        return floor_s
    return max(floor_s, factor * call_s)


def hung_reason(
    *,
    now: float,
    heard_at: float,
    progress: Snapshot,
    call_s: dict[str, float],
    factor: float,
    floor_s: float,
) -> str | None:
    """Why a slot is hung, or None while it makes progress.

    Args:
        now: the worker's `time.monotonic()`.
        heard_at: when the worker last heard from the slot (any message).
        progress: the slot's last progress, as it last reported it.
        call_s: the expected device time of one call per stage (timed at warm-up).
        factor, floor_s: a stage's deadline is `factor` × its call time, at least `floor_s`.
    """
    where = f" during {progress.stage}" if progress.stage else ""
    silent = now - heard_at
    if silent >= floor_s:
        # The whole process is still: it cannot even send its beat.
        return (
            f"{HUNG}: no progress for {silent:.0f} s{where} (the slot process sends nothing; "
            f"deadline {floor_s:.0f} s)"
        )
    if not progress.on_device:
        return None  # off the device, each step is bounded by its own timeouts
    known = call_s.get(progress.stage or "") if progress.stage else None
    if known is None and call_s:
        known = max(call_s.values())
    limit = deadline_s(known, factor, floor_s)
    stalled = now - progress.at
    if stalled >= limit:
        return f"{HUNG}: no progress for {stalled:.0f} s{where} (deadline {limit:.0f} s)"
    return None

"""When a warm worker claimed each run a slot of this process runs: the worker knows it
(its Pending proposal was accepted), the run's flow reads it to split its queue wait into
hops (`img2img.observe.timing.queue_hops`). Outside a warm slot nothing is recorded and the
claim folds into the run's start."""

from __future__ import annotations

import threading

_claimed: dict[str, float] = {}
_lock = threading.Lock()


def record(run_id: str, claimed_at: float) -> None:
    """The worker claimed `run_id` at `claimed_at` (epoch seconds)."""
    with _lock:
        _claimed[run_id] = claimed_at


def take(run_id: str | None) -> float | None:
    """When `run_id` was claimed (and forget it), or None when not known."""
    if run_id is None:
        return None
    with _lock:
        return _claimed.pop(run_id, None)

"""Cooperative cancellation of flow runs that share a long-lived process.

A warm slot runs flow runs in threads, and a thread cannot be killed; so the slot marks a
run as cancelled here and the pipeline checks between images and stages. Images not yet
finished then get failure records (stage "cancelled", retryable), so none is lost.
"""

from __future__ import annotations

import threading

from img2img.errors import Img2ImgError


class RunCancelled(Img2ImgError):
    """The run was cancelled by an operator; stop at the next image boundary."""


class CancelRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: set[str] = set()

    def request(self, run_id: str) -> None:
        with self._lock:
            self._runs.add(run_id)

    def requested(self, run_id: str | None) -> bool:
        if run_id is None:
            return False
        with self._lock:
            return run_id in self._runs

    def clear(self, run_id: str) -> None:
        with self._lock:
            self._runs.discard(run_id)


_registry: CancelRegistry | None = None
_registry_lock = threading.Lock()


def registry() -> CancelRegistry:
    """The process's registry (created on first use)."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = CancelRegistry()
        return _registry

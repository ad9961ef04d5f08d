"""What a warm worker and its slot processes say to each other, typed.

The messages cross a `multiprocessing` pipe (pickled dataclasses). A flow run's
infrastructure identifier names the host, the slot process and the run
(`<host>:<pid>:slot-<n>:<run id>`), as prefect-aws's ECS worker names a task: several runs
share a slot process, so the pid alone would not say which one to stop.

    worker → slot: RunRequest, CancelRequest, StopRequest
    slot → worker: Ready, LoadFailed, OnDevice, Beat, RunDone
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SlotState = Literal["starting", "ready", "hung", "failed", "dead", "stopped"]
CRASHED = "CRASHED"


@dataclass(frozen=True)
class RunRequest:
    """Run `run_id`. `flow_run` is the run as the worker read it (Prefect's `FlowRun`),
    so the slot need not read it again; None: the slot reads it. `claimed_at`: when the
    worker claimed it (epoch seconds), for the run's queue-wait hops."""

    run_id: str
    flow_run: Any = None
    claimed_at: float | None = None


@dataclass(frozen=True)
class CancelRequest:
    run_id: str


@dataclass(frozen=True)
class StopRequest:
    """Finish the runs held, then exit."""


WorkerMessage = RunRequest | CancelRequest | StopRequest


@dataclass(frozen=True)
class Ready:
    pid: int
    loads: int
    load_s: float
    # Each stage's warm-up call time in seconds, by stage name: its hang deadline's base.
    call_s: dict[str, float] = field(default_factory=dict)
    # Its resident memory once loaded and warm: the base the recycle rule measures growth
    # from (None where it cannot be read).
    rss_mb: float | None = None


@dataclass(frozen=True)
class LoadFailed:
    reason: str


@dataclass(frozen=True)
class OnDevice:
    """The run that holds the device now (None: the device is free)."""

    run_id: str | None


@dataclass(frozen=True)
class Beat:
    """The slot's last device progress (`img2img.slots.progress`), sent every
    `worker.progress_beat_s` from a thread of its own: `at` is `time.monotonic()`, one
    clock for every process of the host."""

    at: float
    stage: str | None
    on_device: bool
    rss_mb: float | None = None  # its resident memory now


@dataclass(frozen=True)
class RunDone:
    run_id: str
    state: str  # a Prefect state type's value, or CRASHED
    error: str | None = None
    # When the slot died while another run was on the device: that run's id. This run is a
    # victim and is re-run without a crash counted against it.
    victim_of: str | None = None


SlotMessage = Ready | LoadFailed | OnDevice | Beat | RunDone


@dataclass(frozen=True)
class SlotIdentifier:
    """Where a flow run executes: host, slot process, slot index and the run."""

    host: str
    pid: int
    slot: int
    run_id: str

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:slot-{self.slot}:{self.run_id}"

    @classmethod
    def parse(cls, value: str) -> SlotIdentifier:
        try:
            host, pid, slot, run_id = value.rsplit(":", 3)
            if not slot.startswith("slot-"):
                raise ValueError(slot)
            return cls(host=host, pid=int(pid), slot=int(slot[len("slot-") :]), run_id=run_id)
        except ValueError as exc:
            raise ValueError(
                f"not a warm-slot infrastructure identifier: {value!r} (expected "
                "<host>:<pid>:slot-<n>:<run id>)"
            ) from exc

"""The worker side of warm slots: start, watch, hand out and replace slot processes.

Watching covers three ways a slot stops serving: its process ends (read from its pipe), it
does not load its models in time (`worker.slot_start_timeout_s`), and it stops making
progress while alive (a hung device or a stopped process: `img2img.slots.progress.hung_reason`,
checked by a watchdog thread). A slot that keeps failing with no run finished in between
is given up; a worker with no slot left is unhealthy (`on_unhealthy`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from deployments.worker.slot_protocol import (
    CRASHED,
    Beat,
    LoadFailed,
    OnDevice,
    Ready,
    RunDone,
    RunRequest,
    SlotState,
    StopRequest,
    WorkerMessage,
)
from img2img.config.worker import WorkerSettings
from img2img.slots.lane_room import places
from img2img.slots.layout import slot_env
from img2img.slots.progress import Snapshot, hung_reason
from img2img.slots.recycle import recycle_reason, recycle_rule, run_limit


@dataclass
class Slot:
    """Handle of one slot process."""

    index: int
    env: dict[str, str]
    state: SlotState = "starting"
    reason: str = ""
    pid: int | None = None
    process: Any = None
    conn: Any = None
    inflight: dict[str, Future[RunDone]] = field(default_factory=dict)
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    ready_event: threading.Event = field(default_factory=threading.Event)
    start_timed_out: bool = False
    ready: Ready | None = None
    load_failures: int = 0  # consecutive, for the restart back-off
    on_device: str | None = None  # the flow run that holds the device now
    heard_at: float = 0.0  # time.monotonic() of the slot's last message
    progress: Snapshot | None = None  # its last reported device progress
    call_s: dict[str, float] = field(default_factory=dict)  # warm-up call time per stage
    hang_reason: str = ""  # set when the slot is killed for a hang
    # Failures in a row with no run finished in between: load failures and timeouts, and
    # hangs with no run on the device (a hang on the device is the run's, and recovery
    # isolates it). At worker.unhealthy_after the slot is given up.
    strikes: int = 0
    # The recycle rule's inputs (`img2img.slots.recycle`): its RSS now and once ready, the runs
    # it finished and the runs it may serve (drawn with jitter at each start).
    rss_mb: float | None = None
    ready_rss_mb: float | None = None
    runs_done: int = 0
    run_limit: int | None = None
    # Being recycled: a fresh slot loads to take its place (it serves on meanwhile), then
    # it takes no new run, finishes what it holds and exits. `retiring`: it was asked to
    # (or it is a replacement still loading), and it is not restarted when it ends.
    recycling: bool = False
    retiring: bool = False
    recycle_not_before: float = 0.0  # time.monotonic(): after a replacement failed to load

    def send(self, message: WorkerMessage) -> None:
        with self.send_lock:
            self.conn.send(message)

    def describe(self) -> str:
        share = (
            self.env.get("NEURON_RT_VISIBLE_CORES")
            or self.env.get("IMG2IMG_STAGES__DEVICE")
            or "cpu"
        )
        return f"slot {self.index} ({share})"


class SlotPool:
    """All slots of one worker. Thread-safe; the worker's event loop polls it."""

    def __init__(
        self,
        settings: WorkerSettings,
        base_env: dict[str, str],
        logger: Any,
        on_unhealthy: Callable[[str], None] | None = None,
        on_recycle: Callable[[str, str], None] | None = None,
        reserve: int = 0,
    ) -> None:
        """`reserve`: run places of each slot that only runs of the first lane may take
        (`img2img.slots.lane_room.reserve_of`; 0: lanes off)."""
        self.settings = settings
        self.reserve = reserve
        self.base_env = base_env
        self.log = logger
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.slots: list[Slot] = []
        self.restarts = 0
        self.hangs = 0
        self.recycles = 0  # slots replaced by a fresh one (the recycle rule)
        self._rule = recycle_rule(settings)
        # recycle jitter, not security (bandit B311)
        self._rng = random.Random()  # nosec B311
        self._on_recycle = on_recycle
        # Why no slot is left (sticky: a worker that lost every slot is replaced, not
        # trusted again), and who is told.
        self.unhealthy: str | None = None
        self._on_unhealthy = on_unhealthy

    # -- lifecycle ------------------------------------------------------------------------

    def start_all(self) -> None:
        for index in range(self.settings.slot_count()):
            env = {**self.base_env, **slot_env(self.settings, index)}
            self.slots.append(Slot(index=index, env=env))
        for slot in self.slots:
            self._spawn(slot)
        _in_background(self._watch, name="slot-watchdog")

    def _spawn(self, slot: Slot) -> None:
        from deployments.worker.slot_process import slot_main

        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=slot_main,
            args=(child, slot.index, slot.env),
            name=f"img2img-slot-{slot.index}",
            daemon=False,
        )
        process.start()
        child.close()
        with self._lock:
            slot.state, slot.reason, slot.process, slot.conn = "starting", "", process, parent
            slot.pid = process.pid
            slot.ready_event.clear()
            slot.start_timed_out = False
            slot.hang_reason, slot.progress, slot.on_device = "", None, None
            slot.rss_mb = slot.ready_rss_mb = None
            slot.runs_done, slot.run_limit = 0, run_limit(self._rule, self._rng)
        self.log.info("%s: started (pid %s), loading models", slot.describe(), process.pid)
        _in_background(self._read, slot, process, parent, name=f"slot-{slot.index}-reader")
        _in_background(self._bound_start, slot, process, name=f"slot-{slot.index}-start-timeout")

    def _bound_start(self, slot: Slot, process: Any) -> None:
        """Kill a slot that has not loaded its models within `slot_start_timeout_s` (a hung
        device or download); it is then restarted with back-off like a failed load."""
        if slot.ready_event.wait(self.settings.slot_start_timeout_s) or self._stopping.is_set():
            return
        if slot.process is process and process.is_alive():
            self.log.error(
                "%s (pid %s) did not load its models within %.0f s; killing it",
                slot.describe(),
                process.pid,
                self.settings.slot_start_timeout_s,
            )
            slot.start_timed_out = True
            process.kill()

    def _read(self, slot: Slot, process: Any, conn: Any) -> None:
        """Follow one slot process until it ends; then fail its runs and replace it."""
        failure = ""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            now = time.monotonic()
            with self._lock:
                slot.heard_at = now
            if isinstance(message, Beat):
                with self._lock:
                    slot.progress = Snapshot(message.at, message.stage, message.on_device)
                    slot.rss_mb = message.rss_mb
                self._recycle_if_due(slot)
            elif isinstance(message, Ready):
                with self._lock:
                    slot.state, slot.ready, slot.load_failures = "ready", message, 0
                    slot.call_s = dict(message.call_s)
                    slot.progress = Snapshot(now, None, False)
                    slot.rss_mb = slot.ready_rss_mb = message.rss_mb
                slot.ready_event.set()
                self.log.info(
                    "%s: ready (pid %s, %d model loads in %.1f s)",
                    slot.describe(),
                    message.pid,
                    message.loads,
                    message.load_s,
                )
            elif isinstance(message, LoadFailed):
                failure = f"could not load its models: {message.reason}"
                self.log.error("%s %s", slot.describe(), failure)
            elif isinstance(message, OnDevice):
                with self._lock:
                    slot.on_device = message.run_id
            elif isinstance(message, RunDone):
                with self._lock:
                    future = slot.inflight.pop(message.run_id, None)
                    if message.state != CRASHED:
                        slot.strikes = 0  # it served a run: whatever failed before is past
                        slot.runs_done += 1
                if future is not None:
                    future.set_result(message)
        if not failure and slot.start_timed_out:
            failure = (
                f"did not load its models within {self.settings.slot_start_timeout_s:.0f} s "
                "(worker.slot_start_timeout_s); it was killed"
            )
        process.join(timeout=30)
        code = process.exitcode
        with self._lock:
            stopping = self._stopping.is_set() or slot.state == "stopped" or slot.retiring
            if slot.retiring and slot in self.slots:
                self.slots.remove(slot)  # its replacement serves in its place
            orphans = list(slot.inflight.items())
            slot.inflight.clear()
            culprit, slot.on_device = slot.on_device, None
            hang, slot.hang_reason = slot.hang_reason, ""
            slot.state = "stopped" if stopping else ("failed" if failure else "dead")
            slot.reason = failure or (f"{hang}; it was killed" if hang else _exit_reason(code))
            if failure or (hang and culprit is None):
                slot.strikes += 1
        for run_id, future in orphans:
            future.set_result(
                RunDone(
                    run_id=run_id,
                    state=CRASHED,
                    victim_of=_blame(run_id, culprit, bool(hang)),
                    error=f"{slot.describe()} (pid {slot.pid}) {slot.reason}",
                )
            )
        if stopping:
            return
        if slot.strikes >= self.settings.unhealthy_after:
            self._give_up(slot)
            return
        if not failure:
            self.log.error("%s (pid %s) %s; replacing it", slot.describe(), slot.pid, slot.reason)
        self._restart_later(slot, failed=bool(failure))

    # -- hangs and health -------------------------------------------------------------------

    def _watch(self) -> None:
        """Look at every ready slot's progress about four times per floor (at most once a
        second); a hung one gets `hang_grace_s` to move again, then is killed."""
        every = min(1.0, self.settings.hang_floor_s / 4)
        while not self._stopping.wait(every):
            for slot in list(self.slots):
                reason = self.hung(slot)
                if reason is None:
                    continue
                with self._lock:
                    if slot.state != "ready":
                        continue
                    slot.state = "hung"  # no new runs while it has its grace
                self.log.error(
                    "%s (pid %s) %s; killing it in %.0f s unless it moves",
                    slot.describe(),
                    slot.pid,
                    reason,
                    self.settings.hang_grace_s,
                )
                _in_background(
                    self._kill_if_still_hung, slot, slot.process, name=f"slot-{slot.index}-hang"
                )

    def hung(self, slot: Slot, now: float | None = None) -> str | None:
        """Why `slot` is hung now, or None (see `img2img.slots.progress.hung_reason`)."""
        with self._lock:
            if slot.state not in ("ready", "hung") or slot.progress is None:
                return None
            heard, progress, call_s = slot.heard_at, slot.progress, dict(slot.call_s)
        return hung_reason(
            now=time.monotonic() if now is None else now,
            heard_at=heard,
            progress=progress,
            call_s=call_s,
            factor=self.settings.hang_factor,
            floor_s=self.settings.hang_floor_s,
        )

    def _kill_if_still_hung(self, slot: Slot, process: Any) -> None:
        if self._stopping.wait(self.settings.hang_grace_s) or slot.process is not process:
            return
        reason = self.hung(slot)
        if reason is None:
            with self._lock:
                if slot.state == "hung":
                    slot.state = "ready"
            self.log.warning("%s moved again within its grace; not killed", slot.describe())
            return
        with self._lock:
            slot.hang_reason = reason
        self.hangs += 1
        self.log.error("%s (pid %s) %s: SIGKILL", slot.describe(), slot.pid, reason)
        self.kill(slot)

    # -- recycling --------------------------------------------------------------------------

    def _recycle_if_due(self, slot: Slot) -> None:
        """Start recycling `slot` when the rule says so (`img2img.slots.recycle`): one slot of the
        worker at a time, only a ready one, never while the worker stops."""
        with self._lock:
            if (
                slot.state != "ready"
                or slot.recycling
                or slot.retiring
                or self._stopping.is_set()
                or self.unhealthy is not None
                or time.monotonic() < slot.recycle_not_before
                or any(s.recycling for s in self.slots)
            ):
                return
            reason = recycle_reason(
                self._rule, slot.rss_mb, slot.ready_rss_mb, slot.runs_done, slot.run_limit
            )
            if reason is None:
                return
            slot.recycling = True  # one recycle at a time per worker
        _in_background(self._recycle, slot, reason, name=f"slot-{slot.index}-recycle")

    def _recycle(self, old: Slot, reason: str) -> None:
        """Replace `old` by a fresh slot with its share of the device. Where two processes
        can hold the device at once (CPU, GPU), the fresh one loads while `old` serves on,
        and `old` takes no new run only once the fresh one is ready: the worker keeps its
        capacity throughout. A NeuronCore serves one process, so with core groups `old`
        finishes its runs and exits first, then the fresh one loads; the worker's other
        slots serve meanwhile."""
        overlap = not self.settings.core_groups
        self.log.warning(
            "%s (pid %s) %s; recycling it: %s",
            old.describe(),
            old.pid,
            reason,
            "a fresh slot loads its models while it serves on, then it finishes its runs and exits"
            if overlap
            else "it finishes its runs and exits, then a fresh slot loads on its cores",
        )
        fresh = Slot(index=old.index, env=old.env, retiring=overlap)
        if overlap:
            with self._lock:
                self.slots.append(fresh)
            self._spawn(fresh)
            if not self._wait_ready(fresh):
                self.kill(fresh)
                if self._stopping.is_set():
                    return
                with self._lock:
                    old.recycling = False
                    old.recycle_not_before = time.monotonic() + self.settings.slot_start_timeout_s
                self.log.error(
                    "%s: its replacement did not load (%s); it keeps serving, and is tried "
                    "again in %.0f s",
                    old.describe(),
                    fresh.reason or "stopped",
                    self.settings.slot_start_timeout_s,
                )
                return
            with self._lock:
                fresh.retiring = False  # a slot like any other from now on
        self._retire(old)
        if not overlap and not self._stopping.is_set():
            with self._lock:
                fresh.retiring = False
                self.slots.append(fresh)
            self._spawn(fresh)
        self.recycles += 1
        self.log.info("%s (pid %s) recycled: %s", old.describe(), old.pid, reason)
        if self._on_recycle is not None:
            self._on_recycle(old.describe(), reason)

    def _wait_ready(self, slot: Slot) -> bool:
        """Whether `slot` loads its models within `slot_start_timeout_s` (False as soon as
        it ends, or when the worker stops)."""
        deadline = time.monotonic() + self.settings.slot_start_timeout_s
        while time.monotonic() < deadline and not self._stopping.is_set():
            if slot.ready_event.wait(0.5):
                return True
            with self._lock:
                if slot.state in ("failed", "dead", "stopped"):
                    return False
        return False

    def _retire(self, slot: Slot) -> None:
        """Ask `slot` to finish its runs and exit (it is not replaced when it ends); kill it
        if it has not within `drain_timeout_s` (its runs are then re-run elsewhere)."""
        with self._lock:
            slot.retiring = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            slot.send(StopRequest())
        if slot.process is None:
            return
        slot.process.join(timeout=self.settings.drain_timeout_s)
        if slot.process.is_alive():
            self.log.error(
                "%s (pid %s) did not finish its runs within %.0f s of its recycle; killing it",
                slot.describe(),
                slot.pid,
                self.settings.drain_timeout_s,
            )
            self.kill(slot)
            slot.process.join(timeout=10)

    def _give_up(self, slot: Slot) -> None:
        """A slot that failed `unhealthy_after` times in a row is not restarted; a worker
        left with no slot is unhealthy."""
        with self._lock:
            slot.state = "failed"
            left = [s for s in self.slots if s.strikes < self.settings.unhealthy_after]
        self.log.error(
            "%s failed %d times in a row with no run finished (last: %s); given up",
            slot.describe(),
            slot.strikes,
            slot.reason,
        )
        if left or self.unhealthy is not None:
            return
        self.unhealthy = (
            f"no slot left: each failed {self.settings.unhealthy_after} times in a row "
            f"(last: {slot.describe()} {slot.reason})"
        )
        self.log.error("worker unhealthy: %s", self.unhealthy)
        if self._on_unhealthy is not None:
            self._on_unhealthy(self.unhealthy)

    def _restart_later(self, slot: Slot, failed: bool) -> None:
        attempts = slot.load_failures + 1 if failed else 0
        slot.load_failures = attempts
        delay = (
            0.0 if not failed else min(self.settings.restart_backoff_s * 2 ** (attempts - 1), 300.0)
        )
        if failed:
            self.log.error(
                "%s: retrying in %.0f s; the other slots keep running", slot.describe(), delay
            )

        def later() -> None:
            if self._stopping.wait(delay):
                return
            self.restarts += 1
            self._spawn(slot)

        _in_background(later, name=f"slot-{slot.index}-restart")

    def stop(self, timeout_s: float) -> None:
        """Ask every slot to finish its runs and exit; kill what is still there after
        `timeout_s`."""
        self._stopping.set()
        for slot in self.slots:
            with self._lock:
                slot.state = "stopped"
            with contextlib.suppress(OSError, ValueError, AttributeError):
                slot.send(StopRequest())
        deadline = time.monotonic() + timeout_s
        for slot in self.slots:
            if slot.process is None:
                continue
            slot.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                self.log.warning("%s did not stop in time; killing it", slot.describe())
                slot.process.kill()
                slot.process.join(timeout=10)

    # -- handing out runs -------------------------------------------------------------------

    def has_room(self, first: bool = True) -> bool:
        """Whether a ready slot can take one more run now: of the first lane (`first`),
        or of another (which leaves each slot's reserved places, `lanes.bulk_reserve`)."""
        with self._lock:
            return self.unhealthy is None and any(self._takes_runs(s, first) for s in self.slots)

    def room(self) -> tuple[int, int]:
        """(free run places on ready slots, of which runs of lanes other than the first may
        take)."""
        with self._lock:
            if self.unhealthy is not None:
                return 0, 0
            ready = [s for s in self.slots if s.state == "ready" and not s.retiring]
            per_slot = self.settings.runs_per_slot
            free = sum(places(len(s.inflight), per_slot, self.reserve, True) for s in ready)
            other = sum(places(len(s.inflight), per_slot, self.reserve, False) for s in ready)
            return free, other

    def try_acquire(
        self, request: RunRequest, first: bool = True
    ) -> tuple[Slot, Future[RunDone]] | None:
        """Reserve room for `request`'s run on the ready slot with the fewest runs and hand
        it the request, or None. `first`: the run is of the first lane (or lanes are off)
        and may take a slot's reserved place."""
        run_id = request.run_id
        with self._lock:
            ready = [s for s in self.slots if self._takes_runs(s, first)]
            if not ready or self.unhealthy is not None:
                return None
            slot = min(ready, key=lambda s: len(s.inflight))
            future: Future[RunDone] = Future()
            slot.inflight[run_id] = future
        try:
            slot.send(request)
        except (OSError, ValueError) as exc:
            with self._lock:
                slot.inflight.pop(run_id, None)
            future.set_result(
                RunDone(run_id=run_id, state=CRASHED, error=f"{slot.describe()} unreachable: {exc}")
            )
        return slot, future

    def _takes_runs(self, slot: Slot, first: bool = True) -> bool:
        """Whether `slot` can take one more run now (the pool's lock held)."""
        return (
            slot.state == "ready"
            and not slot.retiring
            and places(len(slot.inflight), self.settings.runs_per_slot, self.reserve, first) > 0
        )

    def running_ids(self) -> list[str]:
        with self._lock:
            return [run_id for s in self.slots for run_id in s.inflight]

    def slot_of(self, run_id: str) -> Slot | None:
        with self._lock:
            return next((s for s in self.slots if run_id in s.inflight), None)

    def kill(self, slot: Slot) -> None:
        """Kill a slot process (it is then replaced, models loaded again)."""
        if slot.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.pid, signal.SIGKILL)

    def status(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "slot": s.index,
                    "state": s.state,
                    "pid": s.pid,
                    "runs": len(s.inflight),
                    "reason": s.reason,
                    "strikes": s.strikes,
                    "rss_mb": None if s.rss_mb is None else round(s.rss_mb, 1),
                    "recycling": s.recycling,
                }
                for s in self.slots
            ]


def _in_background(target: Callable[..., None], *args: Any, name: str) -> None:
    """Run `target(*args)` on a daemon thread of its own, named for what it watches."""
    threading.Thread(target=target, args=args, daemon=True, name=name).start()


def _blame(run_id: str, culprit: str | None, hung: bool) -> str | None:
    """Why a run the slot held when it died is not to blame (it is then re-run at once with
    no crash counted), or None when it is: the run on the device when the slot died or
    hung is the one that did it; with none on the device, a crash is everyone's (the slot
    died for a reason nobody can tell) but a hang is nobody's."""
    if culprit is not None:
        return None if run_id == culprit else f"flow run {culprit} was on the device"
    if hung:
        return "no run was on the device when the slot hung"
    return None


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"

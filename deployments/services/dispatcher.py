"""The S3-event dispatcher: SQS notifications in, one pipeline flow run per micro-batch out.

A long-running service and a competing consumer: run as many replicas as you like. Each
flow run is created with an idempotency key derived from its objects, so a redelivered
message never makes a second run, and a message is deleted only after its run exists.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

from deployments.services.loop import LoopService
from deployments.services.placing import Placer, refused
from deployments.services.quotas import Quotas
from deployments.services.receiving import Received, Receiver
from deployments.services.run_claims import RunClaims
from img2img.config.aws import StorageSettings
from img2img.config.dispatch import DispatchSettings
from img2img.config.lanes import LaneSettings, TenantSettings
from img2img.errors import InvalidEvent
from img2img.intake.batching import (
    Batch,
    Batcher,
    BatchPlan,
    plan_batch,
    run_name,
    seconds_per_image,
)
from img2img.intake.events import ObjectRef, oversize_reason, parse_message
from img2img.intake.keys import unsafe_key_reason
from img2img.intake.placement import reads_metadata

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from prefect.client.orchestration import SyncPrefectClient

log = logging.getLogger("img2img.dispatcher")

RETRY_BACKOFF_S = 2.0
T = TypeVar("T")
# How often, and over how many of its deployment's last completed runs, the dispatcher
# learns what an image adds to a run (one small read at steady load, none at low load).
IMAGE_S_EVERY_S = 30.0
DISPATCH_TAG = "s3-event"
RECENT_RUNS = 10
CLAIMS_RETRY_S = 30.0
# How often the count of the deployment's waiting runs is read while it matters, unless a
# claim heard on the events stream says it changed.
QUEUED_EVERY_S = 1.0
# While runs wait for a slot (and the stream is up), the longest wait for a claim between
# two receives: what arrives meanwhile waits in the queue at most this much longer.
CLAIM_PAUSE_S = 0.2
# Receives of 10 messages in one round while a backlog is taken in to be held.
RECEIVES_HOLDING = 5
# How often a dispatcher in a loop reads the queue's depth (one SQS call; a round comes
# with each receive, and moto's answer takes longer with every message in flight).
DEPTH_EVERY_S = 1.0
# Held messages whose visibility one round extends at most (three SQS calls).
RENEWALS_PER_ROUND = 30


class _AtMostEvery(Generic[T]):
    """An advisory read of the Prefect API done at most every `every_s`; between two, the
    last answer. `read` gets the last answer (to keep it when a read fails)."""

    def __init__(self, every_s: float, clock: Callable[[], float]) -> None:
        self.every_s = every_s
        self.clock = clock
        self.at = -1e9
        self.value: T | None = None

    def get(self, read: Callable[[T | None], T | None]) -> T | None:
        if self.clock() - self.at >= self.every_s:
            self.value = read(self.value)
            self.at = self.clock()
        return self.value

    def forget(self) -> None:
        """The next `get` reads afresh, however recent the last read."""
        self.at = -1e9


def _placement(ref: ObjectRef) -> dict[str, str | None]:
    return {"lane": ref.lane, "tenant": ref.tenant, "refused": ref.refused}


class _LaneFlow:
    """What the dispatcher knows of one lane's flow (lanes off: one, for every upload):
    when its last batch went and the objects taken since (its rate), and how many of its
    runs wait for a slot (read at most every QUEUED_EVERY_S)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.since_batch = (clock(), 0)
        self.queued: _AtMostEvery[int] = _AtMostEvery(QUEUED_EVERY_S, clock)
        self.running: _AtMostEvery[int] = _AtMostEvery(QUEUED_EVERY_S, clock)


@dataclass
class DispatchStats:
    messages: int = 0
    objects: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    oversize: int = 0  # refused by their events' size
    runs_created: int = 0
    run_errors: int = 0
    flow_run_ids: list[str] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)


class Dispatcher(LoopService[DispatchStats]):
    """One consumer of the ingest queue. `step()` is one poll; `run()` loops until stopped."""

    log = log
    stopping_note = "finishing pending batches and stopping"

    def __init__(
        self,
        sqs: SQSClient,
        prefect: SyncPrefectClient,
        storage: StorageSettings,
        settings: DispatchSettings,
        deployment: str,
        clock: Any = time.monotonic,
        run_slots: int = 1,
        crash_flag: Path | None = None,
        lanes: LaneSettings | None = None,
        tenants: TenantSettings | None = None,
        s3: S3Client | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """`deployment`: the runs' deployment, FLOW_NAME/DEPLOYMENT_NAME. `run_slots`: the
        flow runs the pool can hold at once at its largest (max hosts × slots per host × runs
        per slot); an adaptive batch spreads a backlog over as many. `crash_flag`: fault
        injection (`faults.dispatcher_crash_flag`). `lanes`, `tenants`: where each upload
        goes (off unless enabled); either on, each upload's metadata is read with `s3`.
        `max_bytes`: an upload whose event names a larger size is refused (its run records
        the failure without reading it; `limits.max_bytes`)."""
        super().__init__(clock)
        self.sqs = sqs
        self.deployment = deployment
        self.crash_flag = crash_flag
        self.prefect = prefect
        self.settings = settings
        self.upload_buckets = storage.upload_buckets
        self.queue_url = sqs.get_queue_url(QueueName=storage.ingest_queue)["QueueUrl"]
        self.dlq_url = sqs.get_queue_url(QueueName=storage.dead_letter_queue)["QueueUrl"]
        self.run_slots = max(1, run_slots)
        self.max_bytes = max_bytes
        self.lanes = lanes or LaneSettings()
        self.tenants = tenants or TenantSettings()
        self.placer: Placer | None = None
        if reads_metadata(self.lanes, self.tenants):
            if s3 is None:
                raise ValueError("lanes or tenants need an S3 client to read uploads' metadata")
            self.placer = Placer(s3, self.lanes, self.tenants)
        has_quotas = self.tenants.quota_per_hour or self.tenants.default_quota_per_hour
        self.quotas = Quotas(prefect, self.lanes, self.tenants) if has_quotas else None
        self.batcher = Batcher(
            min(settings.base_batch, settings.max_batch),
            settings.max_wait_s,
            settings.dedup_window,
            weight=self.tenants.weight if self.tenants.enabled else None,
        )
        self.plan: BatchPlan | None = None
        # Each lane's flow (lanes off: one, keyed None), highest priority first.
        names: list[str | None] = list(self.lanes.names()) if self.lanes.enabled else [None]
        self._flows = {lane: _LaneFlow(clock) for lane in names}
        # Due runs are made highest lane first: one for people waiting is not made behind
        # bulk runs.
        self._lane_rank = {lane: i for i, lane in enumerate(names)}
        self._image_s_read: _AtMostEvery[float] = _AtMostEvery(IMAGE_S_EVERY_S, clock)
        # The queue's depth: every round on its own; in a loop, see `started`.
        self._depth: _AtMostEvery[int] = _AtMostEvery(0.0, clock)
        self.stats = DispatchStats()
        self._deployment_id: UUID | None = None
        self._retry_after = 0.0
        # Runs claimed, heard on the events stream (`run_claims`), once the deployment is
        # known; a failed start is tried again after CLAIMS_RETRY_S.
        self.claims: RunClaims | None = None
        self._claims_at = -1e9
        self._listening = False  # from `started()`: a loop of rounds, not a step on its own
        # In a loop of rounds, messages are received in a thread of their own (`receiving`);
        # an arrival, a run claim heard or a stop wakes the round's wait (`_wake`). A step
        # on its own receives in the step.
        self.receiver: Receiver | None = None
        self._wake = threading.Event()
        # Tenants' turns over a backlog (see `_fair_room`): the dispatcher holds it.
        self.fair_hold = self.tenants.enabled and settings.adaptive

    # -- the loop ---------------------------------------------------------------------------

    def started(self) -> None:
        self._listening = True
        self.receiver = Receiver(
            self._receive_one, self.settings.poll_wait_s, self._room, self._wake, log
        ).start()
        # Rounds now come with each receive: the queue's depth is read at most every
        # DEPTH_EVERY_S (the receiving thread keeps the queue drained meanwhile).
        self._depth.every_s = DEPTH_EVERY_S
        log.info(
            "dispatching from %s to deployment %s (%s, %.1f s wait)",
            self.queue_url,
            self.deployment,
            f"batches of {self.batcher.max_batch} at low load, up to {self.settings.max_batch} "
            f"under a backlog over {self.run_slots} run slots"
            if self.settings.adaptive
            else f"batches of {self.batcher.max_batch}",
            self.settings.max_wait_s,
        )

    def round(self) -> None:
        self.step()

    def finished(self) -> DispatchStats:
        """Take what the receiving thread still holds, then dispatch every pending object
        before the process exits."""
        if self.receiver is not None:
            if not self.receiver.stop():
                log.warning("a receive was still out at the stop: its messages reappear")
            self._take_in(self.receiver.take())
        self.flush()
        if self.claims is not None:
            self.claims.stop()
        return self.stats

    def stop(self) -> None:
        super().stop()
        self._wake.set()
        if self.claims is not None:
            self.claims.heard.set()  # a wait for a claim ends too

    def step(self) -> None:
        """Receive one round of messages (long-polling up to the next batch deadline; in
        a loop, what the receiving thread brought, waiting for it up to then), then
        dispatch every batch that is due."""
        self._wake.clear()  # what happens from here on ends this round's wait
        self._listen_for_claims()
        depth = self._replan()
        self._renew_held()
        due_in = self.batcher.next_due_in(self.clock())
        wait: float = (
            self.settings.poll_wait_s if due_in is None else min(self.settings.poll_wait_s, due_in)
        )
        # Holding a backlog for tenants' turns with more of it in the queue: the rest is
        # taken in at once, not waited for (the turns are taken among what is held), up to
        # what may be held (`_room`).
        taking_all = (
            self.fair_hold and depth > 0 and self.batcher.pending_count < self.tenants.max_held
        )
        if self.settings.adaptive and self.batcher.pending_count:
            # Holding images: look again within a second whether the pool can take them.
            wait = min(wait, 1.0)
            queued = any(f.queued.value for f in self._flows.values())
            if (
                wait > 0
                and queued
                and self.claims
                and self.claims.connected
                and not taking_all
                and self.receiver is None
            ):
                # Held because runs wait for a slot: the moment that changes is one of them
                # being claimed, which the stream tells (the next round plans again). A
                # long poll would not wake for it: wait for a claim a little at a time,
                # then receive without waiting, so what arrives meanwhile is not held up.
                # (With the receiving thread, a claim wakes the round's wait as an arrival
                # does.)
                self.claims.heard.wait(min(wait, CLAIM_PAUSE_S))
                wait = 0
        if depth and (not self.batcher.full() or taking_all) and self.receiver is None:
            # A backlog is there: fill the batch as fast as SQS gives it (the receiving
            # thread does, and wakes the round with each receive).
            wait = 0
        if self.fair_hold and self.batcher.pending_count >= self.tenants.max_held:
            self._dispatch_due(flush=False)
            self.wait(min(wait, 1.0) if wait else 0.2)  # hold no more: let runs go first
            return
        self._take_in(self._next(wait))
        self._dispatch_due(flush=False)

    def _next(self, wait: float) -> list[Received]:
        """This round's messages: what the receiving thread brought, waiting up to `wait`
        for it (a claim heard or a stop ends the wait too); without the thread, what the
        round has room for (`_room`), the first receive long-polling up to `wait`."""
        if self.receiver is not None:
            if wait > 0 and not self.receiver.ready and not self.stopped:
                self._wake.wait(wait)
            return self.receiver.take()
        if 0 < wait < 1:
            # SQS waits whole seconds: sleep to the deadline here rather than spin on
            # zero-second receives (or overshoot it by up to a second).
            self.wait(wait)
            wait = 0
        messages = self._receive(int(wait), self._room(0))
        at = datetime.now(UTC)
        return [Received(message, at) for message in messages]

    def _room(self, unsettled: int) -> int:
        """Messages a round takes in at most (the receiving thread: may bring now, with
        `unsettled` received and not yet in its batches): one receive's 10;
        RECEIVES_HOLDING receives' while the dispatcher holds a backlog for tenants'
        turns, never past `tenants.max_held`."""
        most = 10 * (RECEIVES_HOLDING if self.fair_hold else 1) - unsettled
        if self.fair_hold:
            most = min(most, self.tenants.max_held - self.batcher.pending_count - unsettled)
        return most

    def _take_in(self, got: list[Received]) -> None:
        """Take a round's messages: each upload placed and added to its batch, what is
        not to be dispatched deleted; people's lane planned again when its uploads came."""
        now = self.clock()
        deletable: list[str] = []
        placed = self._place_round([r.message for r in got])
        first = self.lanes.first if self.lanes.enabled else None
        people = self.batcher.pending_in(first) if first is not None else 0
        for received in got:
            deletable += self._take(received.message, now, placed, received.at)
        if first is not None and self.batcher.pending_in(first) > people:
            # People's uploads came in this round: their lane is planned again now, so
            # they may leave in this round rather than after the next receive.
            self.batcher.resize(self._plan_lane(first, self._flows[first], 0), first)
        if self.receiver is not None:
            self.receiver.settled()
        self._delete(deletable)

    def _replan(self) -> int:
        """Choose the next batch's size from what waits (adaptive only), each lane's from
        its own uploads and runs; returns the queue's depth (0 when not adaptive or not
        known)."""
        if not self.settings.adaptive:
            return 0
        depth = self._depth.get(lambda _: self._read_depth())
        if self.claims is not None and self.claims.heard.is_set():
            self.claims.heard.clear()  # a claim since the last count: count again
            for flow in self._flows.values():
                flow.queued.forget()
        first = next(iter(self._flows))
        for lane, flow in self._flows.items():
            # The queue's backlog is not the first lane's: what it holds is mostly the
            # lower lanes' bulk (an interactive upload is one of few, and waits for none).
            seen = 0 if lane is not None and lane == first else depth
            plan = self._plan_lane(lane, flow, seen)
            if lane is None:
                if plan != self.plan:
                    log.debug("next batch: %d images: %s", plan.size, plan.reason)
                self.plan = plan
            self.batcher.resize(plan, lane)
        return depth or 0

    def _read_depth(self) -> int | None:
        """The messages visible in the queue; None when it cannot be read (advisory: the
        batch is sized from what is in hand)."""
        try:
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            return int(attrs["ApproximateNumberOfMessages"])
        except Exception as exc:
            log.debug("could not read the queue's depth: %s", exc)
            return None

    def _flow_of(self, lane: str | None) -> _LaneFlow:
        """A lane's flow (lanes off: the one flow)."""
        return self._flows.get(lane) or next(iter(self._flows.values()))

    def _plan_lane(self, lane: str | None, flow: _LaneFlow, depth: int | None) -> BatchPlan:
        since, taken = flow.since_batch
        rate = taken / max(self.clock() - since, 1e-3)
        in_hand = self.batcher.pending_in(lane)
        base = min(self.settings.base_batch, self.settings.max_batch)
        # Whether runs wait for a slot matters once anything is in hand (it may leave at
        # once) or more than a base batch waits: one count a second at most, none while
        # nothing waits at all.
        waits = in_hand or (depth or 0) > base
        queued = flow.queued.get(lambda _: self._count_queued(lane)) if waits else None
        # What a run's images cost on a slot only matters once a steady rate would fill
        # more than a base batch in max_wait_s (none read at low load).
        image_s = self._image_s() if rate * self.settings.max_wait_s > base else None
        plan = plan_batch(self.settings, in_hand, depth, rate, self.run_slots, queued, image_s)
        if self.fair_hold:
            plan = self._fair_room(lane, flow, plan, queued, in_hand + (depth or 0) > base)
        if lane is not None and lane == self.lanes.first:
            # The first lane's uploads are people waiting: while the pool can take its run
            # they leave at once (no window to gather more: each round's arrivals go as
            # one run anyway); while its runs wait for a place, what comes is still sent
            # within max_wait_s, not held to fill a bigger run.
            if queued == 0 and in_hand:
                plan = BatchPlan(plan.size, 0.0, f"{plan.reason}; people waiting: at once")
            elif plan.hold_s > self.settings.max_wait_s:
                plan = BatchPlan(plan.size, self.settings.max_wait_s, plan.reason)
        if lane is not None:
            log.debug("next %s batch: %d images: %s", lane, plan.size, plan.reason)
        return plan

    def _fair_room(
        self, lane: str | None, flow: _LaneFlow, plan: BatchPlan, queued: int | None, backlog: bool
    ) -> BatchPlan:
        """Tenants on: room for a new run only while fewer than one, plus one per two
        running, of the lane's runs wait for a slot, and under a backlog runs of at most
        `tenants.fair_run_s` of work on a slot. What is not in a run stays held here, where
        each batch gives the tenants waiting their turns; in runs it would wait in arrival
        order (a tenant arriving behind another's burst would wait for all of it). The
        first lane (lanes on) is not held: its uploads are people waiting, and its batches
        still take turns."""
        if lane is not None and lane == self.lanes.first:
            self.batcher.room(lane, None)
            return plan
        if queued is None and not backlog:
            self.batcher.room(lane, None)  # nothing held, nothing waits: no count needed
            return plan
        running = flow.running.get(lambda known: self._count_running(lane) or known) or 0
        ahead = 1 + running // 2
        self.batcher.room(lane, max(0, ahead - (queued or 0)))
        if not backlog:
            return plan
        image_s = self._image_s()
        base = min(self.settings.base_batch, self.settings.max_batch)
        cap = base
        if image_s:
            cap = max(base, math.floor(self.tenants.fair_run_s / image_s + 1e-9))
        if plan.size <= cap:
            return plan
        return BatchPlan(
            cap,
            plan.hold_s,
            f"{plan.reason}; tenants take turns: runs of {cap} (~{self.tenants.fair_run_s:g} s "
            f"on a slot), {ahead} waiting at most ({queued or 0} now), the rest held",
        )

    def _renew_held(self) -> None:
        """Extend the visibility of the messages held for longer than half the visibility
        (a backlog held for tenants' turns), so they do not reappear meanwhile: at most
        RENEWALS_PER_ROUND a round, the longest held first, so a large backlog's renewals
        spread over the rounds instead of stalling one."""
        after = max(1.0, self.settings.visibility_timeout_s / 2)
        due = self.batcher.renewals(self.clock(), after, RENEWALS_PER_ROUND)
        for start in range(0, len(due), 10):
            chunk = due[start : start + 10]
            try:
                result = self.sqs.change_message_visibility_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {
                            "Id": str(i),
                            "ReceiptHandle": handle,
                            "VisibilityTimeout": self.settings.visibility_timeout_s,
                        }
                        for i, (_, handle) in enumerate(chunk)
                    ],
                )
            except Exception as exc:  # it reappears and is recognised as a duplicate then
                log.warning("could not extend the visibility of %d messages: %s", len(chunk), exc)
                continue
            for failed in result.get("Failed", []):
                log.warning("could not extend a message's visibility: %s", json.dumps(failed))

    def _listen_for_claims(self) -> None:
        """Start hearing the deployment's runs claimed (adaptive, `claim_events`), once its
        id is known; a start that fails is tried again after CLAIMS_RETRY_S."""
        if self.claims is not None or not self._listening:
            return
        if not (self.settings.adaptive and self.settings.claim_events):
            return
        if self.clock() - self._claims_at < CLAIMS_RETRY_S:
            return
        self._claims_at = self.clock()
        try:
            self.claims = RunClaims(self._deployment(), log, wake=self._wake).start()
        except Exception as exc:  # advisory: the count is read once a second meanwhile
            log.debug("cannot listen for run claims yet: %s", exc)

    def _count_queued(self, lane: str | None = None) -> int | None:
        """The pipeline's runs waiting for a slot (scheduled, due, or pending), of `lane`'s
        work queue (None: every queue); None when it cannot be read."""
        return self._count_runs(lane, ("SCHEDULED", "PENDING"), due_only=True)

    def _count_running(self, lane: str | None) -> int | None:
        """The lane's runs running now (None when it cannot be read)."""
        return self._count_runs(lane, ("RUNNING",), due_only=False)

    def _count_runs(
        self, lane: str | None, states: tuple[str, ...], *, due_only: bool
    ) -> int | None:
        """The deployment's runs in `states` of `lane`'s work queue (None: every queue),
        those due by now only if `due_only`; None when they cannot be counted (advisory)."""
        from datetime import datetime

        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterDeploymentId,
            FlowRunFilterExpectedStartTime,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterWorkQueueName,
        )
        from prefect.client.schemas.objects import StateType

        queue = FlowRunFilterWorkQueueName(any_=[lane]) if lane is not None else None
        due = FlowRunFilterExpectedStartTime(before_=datetime.now(UTC)) if due_only else None
        try:
            return int(
                self.prefect.count_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        deployment_id=FlowRunFilterDeploymentId(any_=[self._deployment()]),
                        state=FlowRunFilterState(
                            type=FlowRunFilterStateType(any_=[StateType(s) for s in states])
                        ),
                        expected_start_time=due,
                        work_queue_name=queue,
                    )
                )
            )
        except Exception as exc:
            log.debug("could not count the runs %s of lane %s: %s", states, lane, exc)
            return None

    def _image_s(self) -> float | None:
        """Seconds an image adds to a run on its slot, from the deployment's last completed
        runs (`seconds_per_image`), read at most every IMAGE_S_EVERY_S; the last value
        known when they cannot be read."""
        return self._image_s_read.get(lambda known: self._read_image_s() or known)

    def _read_image_s(self) -> float | None:
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterDeploymentId,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.sorting import FlowRunSort

        try:
            runs = self.prefect.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[self._deployment()]),
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.COMPLETED])
                    ),
                    # The dispatchers' own runs (a recovery's split halves keep their
                    # parent's name but not its images).
                    tags=FlowRunFilterTags(all_=[DISPATCH_TAG]),
                ),
                sort=FlowRunSort.END_TIME_DESC,
                limit=RECENT_RUNS,
            )
            return seconds_per_image([(r.name, r.total_run_time.total_seconds()) for r in runs])
        except Exception as exc:  # advisory: keep what was known
            log.debug("could not read the recent runs: %s", exc)
            return None

    def flush(self) -> None:
        """Dispatch every pending object now (on shutdown)."""
        self._retry_after = 0.0
        self._dispatch_due(flush=True)

    # -- parts --------------------------------------------------------------------------------

    def _receive(self, wait_s: int, most: int) -> list[Any]:
        """Up to `most` messages in receives of 10 (more than one while taking in a
        backlog held for tenants' turns, so a round's fixed costs are shared), stopping at
        the first that comes back short."""
        messages: list[Any] = []
        while len(messages) < most:
            want = min(10, most - len(messages))
            # Only the first receive long-polls: the rest take what is already there.
            got = self._receive_one(0 if messages else wait_s, want)
            messages += got
            if len(got) < want:
                break
        return messages

    def _receive_one(self, wait_s: int, most: int) -> list[Any]:
        """One receive of up to `most` (≤ 10) messages, long-polling up to `wait_s`."""
        return self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=most,
            WaitTimeSeconds=wait_s,
            VisibilityTimeout=self.settings.visibility_timeout_s,
        ).get("Messages", [])

    def _place_round(self, messages: list[Any]) -> dict[str, ObjectRef]:
        """Every upload of a round's messages placed at once (their HEADs side by side, not
        one message after another), by identity; empty when nothing is placed."""
        if self.placer is None:
            return {}
        refs: list[ObjectRef] = []
        for message in messages:
            try:
                refs += parse_message(message.get("Body", "")).objects
            except InvalidEvent:
                continue  # dead-lettered when taken
        accepted, _ = self._screen(refs)
        fits = [ref for ref in accepted if self._oversize(ref) is None]
        return {ref.identity: ref for ref in self.placer.place_all(fits)}

    def _take(
        self, message: Any, now: float, placed: dict[str, ObjectRef], received: datetime
    ) -> list[str]:
        self.stats.messages += 1
        try:
            parsed = parse_message(message.get("Body", ""))
        except InvalidEvent as exc:
            self._dead_letter(message, str(exc))
            return [message["ReceiptHandle"]]
        for reason in parsed.skipped:
            log.info("skipped message %s: %s", message["MessageId"], reason)
            self.stats.skipped += 1
        accepted, refused = self._screen(
            [ref.model_copy(update={"received_at": received}) for ref in parsed.objects]
        )
        if refused:
            self._dead_letter(message, "; ".join(refused))
        accepted = [self._refuse_oversize(ref) for ref in accepted]
        if self.placer is not None:
            accepted = [
                ref
                if ref.refused is not None
                else ref.model_copy(update=_placement(placed[ref.identity]))
                if ref.identity in placed
                else self.placer.place_one(ref)
                for ref in accepted
            ]
        if self.quotas is not None:
            accepted = self.quotas.apply(accepted)
        self.stats.objects += len(accepted)
        for ref in accepted:
            flow = self._flow_of(ref.lane)
            since, taken = flow.since_batch
            flow.since_batch = (since, taken + 1)
        return self.batcher.add(message["MessageId"], message["ReceiptHandle"], accepted, now)

    def _screen(self, objects: list[ObjectRef]) -> tuple[list[ObjectRef], list[str]]:
        """Objects this pipeline takes, and why it refuses the others (another bucket, or a
        key unsafe to build outcome keys from)."""
        accepted: list[ObjectRef] = []
        refused: list[str] = []
        for ref in objects:
            if ref.bucket not in self.upload_buckets:
                refused.append(
                    f"s3://{ref.bucket}/{ref.key[:200]}: bucket {ref.bucket!r} is not an upload "
                    f"bucket of this pipeline (accepted: {', '.join(sorted(self.upload_buckets))})"
                )
            elif (reason := unsafe_key_reason(ref)) is not None:
                refused.append(f"s3://{ref.bucket}: {reason}")
            else:
                accepted.append(ref)
        return accepted, refused

    def _oversize(self, ref: ObjectRef) -> str | None:
        return None if self.max_bytes is None else oversize_reason(ref.size, self.max_bytes)

    def _refuse_oversize(self, ref: ObjectRef) -> ObjectRef:
        """`ref`, refused (its run records the failure, reading nothing) when its event
        names a size over the limit: a multi-GB upload is never copied or read whole."""
        reason = self._oversize(ref)
        if reason is None:
            return ref
        log.warning("%s refused: %s", ref.uri, reason)
        self.stats.oversize += 1
        return refused(ref, reason, self.lanes, self.tenants)

    def _dead_letter(self, message: Any, reason: str) -> None:
        log.error(
            "message %s moved to the dead-letter queue: %s",
            message["MessageId"],
            reason,
        )
        self.sqs.send_message(
            QueueUrl=self.dlq_url,
            MessageBody=message.get("Body", "") or "<empty>",
            MessageAttributes={
                "reason": {"DataType": "String", "StringValue": reason[:1000]},
                "source_message_id": {"DataType": "String", "StringValue": message["MessageId"]},
            },
        )
        self.stats.dead_lettered += 1

    def _dispatch_due(self, flush: bool) -> None:
        now = self.clock()
        if now < self._retry_after:
            return
        due = self.batcher.due(now, flush=flush)
        for batch in sorted(due, key=lambda b: self._lane_rank.get(b.lane, 0)):
            try:
                run_id = self._create_run(batch)
            except Exception as exc:  # the server may be restarting: keep and retry
                self.stats.run_errors += 1
                log.warning(
                    "could not create a flow run for %d objects (will retry in %.0f s): %s",
                    len(batch.objects),
                    RETRY_BACKOFF_S,
                    exc,
                )
                self.batcher.released(batch, self.clock())
                self._retry_after = self.clock() + RETRY_BACKOFF_S
                return  # the other due batches stay pending and go after the backoff
            self.stats.runs_created += 1
            # The new run waits for a slot until a worker claims it: counted as queued until
            # the next count says otherwise.
            flow = self._flow_of(batch.lane)
            flow.queued.value = (flow.queued.value or 0) + 1
            self.stats.flow_run_ids.append(run_id)
            self.stats.batch_sizes.append(len(batch.objects))
            flow.since_batch = (self.clock(), 0)
            self._maybe_crash()
            self._delete(self.batcher.dispatched(batch))

    def _maybe_crash(self) -> None:
        """Fault injection: die between creating a run and deleting its messages."""
        flag = self.crash_flag
        if flag is not None and flag.exists():
            flag.unlink(missing_ok=True)
            log.error("fault injection (%s): killing the dispatcher now", flag)
            os.kill(os.getpid(), signal.SIGKILL)

    def _deployment(self) -> UUID:
        if self._deployment_id is None:
            self._deployment_id = self.prefect.read_deployment_by_name(self.deployment).id
        return self._deployment_id

    def _create_run(self, batch: Batch) -> str:
        run = self.prefect.create_flow_run_from_deployment(
            self._deployment(),
            parameters={"objects": [o.as_parameter() for o in batch.objects]},
            idempotency_key=batch.idempotency_key,
            name=run_name(batch.objects),
            tags=[DISPATCH_TAG],
            work_queue_name=batch.lane,
        )
        log.info(
            "flow run %s for %d objects (key %s)%s",
            run.id,
            len(batch.objects),
            batch.idempotency_key,
            f" in lane {batch.lane}" if batch.lane else "",
        )
        return str(run.id)

    def _delete(self, receipt_handles: list[str]) -> None:
        for start in range(0, len(receipt_handles), 10):
            chunk = receipt_handles[start : start + 10]
            result = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)],
            )
            for failed in result.get("Failed", []):
                # The message will reappear and be recognised as a duplicate then.
                log.warning("could not delete a message: %s", json.dumps(failed))

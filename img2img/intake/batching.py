"""Micro-batching of uploads for the dispatcher: pure state, no I/O, time passed in.

Like Lambda's SQS event source: a batch closes when it holds its size in images or when its
oldest image has waited its hold time. Each SQS message is deleted only once every object it
carried is in a created flow run (or was a duplicate of one).

The size is chosen per batch from what is waiting (`plan_batch`): at low load the base size
and `max_wait_s`, as a fixed batch would; under a backlog, the waiting images spread over
the runs the pool can hold at once, up to `max_batch`, so a flow run's fixed cost to Prefect
is shared by many images without leaving any host the autoscaler may add without a run;
under a steady rate, a batch holds what arrives in `max_wait_s` (no image waits longer for
its batch than at low load, and the Prefect server's cost per image falls as the rate
rises), as long as a run of that size stays within `max_run_s` on its slot, judged from the
recent runs' seconds per image (`seconds_per_image`).
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from img2img.config.dispatch import DispatchSettings
from img2img.intake.events import ObjectRef
from img2img.intake.fair_share import FairShare
from img2img.intake.idempotency import batch_key


@dataclass
class Batch:
    objects: list[ObjectRef]
    lane: str | None = None  # its objects' lane (lanes on): the run's work queue

    @property
    def idempotency_key(self) -> str:
        return batch_key(self.objects)


# The dispatcher names each run for its size and first key: `batch-<images>-<key>`.
_RUN_NAME = re.compile(r"^batch-(\d+)-")


def run_name(objects: list[ObjectRef], kind: str = "batch") -> str:
    """A pipeline run's name: who made it (`batch`: the dispatcher; `reconcile`, `upscale`),
    its image count, then the first object's file name."""
    first = objects[0].key.rsplit("/", 1)[-1][:40] if objects else ""
    return f"{kind}-{len(objects)}-{first}"


def seconds_per_image(runs: list[tuple[str, float]]) -> float | None:
    """A slot's seconds per image in a run, from the dispatcher's recent completed runs as
    (name, seconds in Running): the median (runs named otherwise are left out); None when
    none is known.

    A run's time includes its waits for the device behind the slot's other runs, so this is
    what an image adds to its run's length under load, not the device's bare time."""
    rates = []
    for name, seconds in runs:
        match = _RUN_NAME.match(name)
        if match and int(match.group(1)) > 0 and seconds > 0:
            rates.append(seconds / int(match.group(1)))
    return statistics.median(rates) if rates else None


@dataclass(frozen=True)
class BatchPlan:
    """The next batch's size, how long its oldest image may wait for it, and why."""

    size: int
    hold_s: float
    reason: str


def plan_batch(
    settings: DispatchSettings,
    in_hand: int,
    queue_depth: int | None,
    rate: float,
    run_slots: int,
    queued_runs: int | None = None,
    image_s: float | None = None,
) -> BatchPlan:
    """Size the next batch from what waits for it.

    Args:
        in_hand: objects received and not yet in a run.
        queue_depth: messages visible in the queue (each at least one object; None: not
            known).
        rate: objects received per second since the last batch.
        run_slots: flow runs the pool can hold at once when it is at its largest (hosts ×
            slots × runs per slot): a backlog is spread over that many runs at least.
        queued_runs: the pipeline's runs waiting for a slot now (None: not known). While
            there are some, the slots are all taken: a new run would only wait behind
            them, so the batch fills (up to `max_batch`, for up to the hold) instead of
            adding a run's fixed cost for a few images. With none (0) and nothing more in
            the queue, the pool can take a run now: what is in hand leaves after a window
            that grows with `rate` (none for a lone upload; `max_wait_s` from
            `full_window_rate` up: a run costs the server the same whatever it holds, so
            runs per second fall as the rate rises) instead of waiting out `max_wait_s`;
            batches also grow from backpressure, out of what arrives while runs wait.
        image_s: seconds an image adds to a run on its slot (`seconds_per_image`; None:
            not known yet). Known, a steady rate fills each batch with what arrives in
            `max_wait_s`, up to what a run does in `max_run_s`; unknown, batches keep to
            the share above (a first run of many slow images would set the latency).
    """
    base = min(settings.base_batch, settings.max_batch)
    if not settings.adaptive:
        return BatchPlan(base, settings.max_wait_s, f"fixed batches of {base}")
    depth = max(queue_depth or 0, 0)
    waiting = in_hand + depth + rate * settings.max_wait_s
    share = math.ceil(waiting / max(run_slots, 1) - 1e-9)
    paced = 0
    if image_s is not None and image_s > 0:
        arriving = math.ceil(rate * settings.max_wait_s - 1e-9)
        paced = min(arriving, math.floor(settings.max_run_s / image_s + 1e-9))
    size = max(base, min(settings.max_batch, max(share, paced)))
    longest = max(settings.max_wait_s, min(settings.max_hold_s, settings.visibility_timeout_s - 30))
    if queued_runs and waiting > base:
        return BatchPlan(
            settings.max_batch,
            longest,
            f"backlog at the pool: {queued_runs} runs wait for a slot; filling up to "
            f"{settings.max_batch} for up to {longest:.1f} s ({waiting:.0f} waiting: "
            f"{in_hand} in hand, {depth} queued, {rate:.1f}/s)",
        )
    if queued_runs == 0 and depth == 0 and in_hand > 0:
        window = settings.max_wait_s * min(1.0, rate / settings.full_window_rate)
        when = "at once" if window <= 0 else f"within {window:.2f} s (the window at this rate)"
        return BatchPlan(
            size,
            window,
            f"the pool can take a run now (no run waits, nothing more queued): {in_hand} in "
            f"hand leave {when} ({rate:.1f}/s)",
        )
    if size <= base:
        return BatchPlan(
            base,
            settings.max_wait_s,
            f"low load: {waiting:.0f} waiting ({in_hand} in hand, {depth} queued, "
            f"{rate:.1f}/s) over {run_slots} run slots is at most the base {base}",
        )
    if paced > share and depth == 0:
        # A steady rate, no backlog: one run per max_wait_s. The batch fills in about the
        # wait an image has at low load anyway.
        assert image_s is not None
        capped = " (max_batch)" if size == settings.max_batch and paced > size else ""
        return BatchPlan(
            size,
            settings.max_wait_s,
            f"steady load: {rate:.1f}/s brings {math.ceil(rate * settings.max_wait_s)} in "
            f"{settings.max_wait_s:g} s; {size} per run{capped} (~{size * image_s:.1f} s on a "
            f"slot at {image_s * 1000:.0f} ms/image, max_run_s {settings.max_run_s:g})",
        )
    # More is there to receive: let the batch fill, within the visibility.
    hold = longest if depth > 0 else settings.max_wait_s
    capped = " (max_batch)" if size == settings.max_batch and share > size else ""
    return BatchPlan(
        size,
        hold,
        f"backlog: {waiting:.0f} waiting ({in_hand} in hand, {depth} queued, {rate:.1f}/s) "
        f"over {run_slots} run slots: {size} per run{capped}, hold up to {hold:.1f} s",
    )


@dataclass
class _Message:
    receipt_handle: str
    remaining: set[str] = field(default_factory=set)
    seen: float = 0.0  # when its handle was received or its visibility last extended


@dataclass
class _Pending:
    ref: ObjectRef
    first_seen: float
    messages: set[str] = field(default_factory=set)


class Batcher:
    """Groups objects from SQS messages into batches and says which messages may go.

    With lanes, each lane batches on its own (its size and hold from its own plan), so an
    interactive upload never waits for a bulk batch to fill; with tenants (`weight`), a
    batch taken from a backlog gives the tenants waiting their weighted turns (deficit round
    robin, `img2img.intake.fair_share`) instead of arrival order; and a lane may be given
    `room` for a number of batches only (the rest of its backlog stays here, where tenants
    take turns, rather than in runs that wait in arrival order)."""

    def __init__(
        self,
        max_batch: int,
        max_wait_s: float,
        dedup_window: int,
        weight: Callable[[str], float] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.dedup_window = dedup_window
        self.weight = weight
        self._lane_plans: dict[str, tuple[int, float]] = {}
        self._room: dict[str | None, int] = {}  # lane → batches it may send (absent: any)
        self._fair: dict[str | None, FairShare] = {}
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        # Pending objects per lane, kept as they come and go (read every round).
        self._in_lane: Counter[str | None] = Counter()
        self._messages: dict[str, _Message] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0

    def resize(self, plan: BatchPlan, lane: str | None = None) -> None:
        """Use `plan`'s size and hold time from now on (see `plan_batch`), for `lane`'s
        objects (None: objects without a lane, and any lane without a plan of its own)."""
        if lane is None:
            self.max_batch = max(1, plan.size)
            self.max_wait_s = plan.hold_s
        else:
            self._lane_plans[lane] = (max(1, plan.size), plan.hold_s)

    def room(self, lane: str | None, batches: int | None) -> None:
        """Let `lane` send at most `batches` batches from now (None: any number); held ones
        wait, however long they have waited, until it has room again."""
        if batches is None:
            self._room.pop(lane, None)
        else:
            self._room[lane] = max(0, batches)

    def renewals(
        self, now: float, after_s: float, limit: int | None = None
    ) -> list[tuple[str, str]]:
        """(message id, receipt handle) of the messages held `after_s` or more since they
        were received or last renewed (their visibility is to be extended), the longest
        held first and at most `limit` of them (a large backlog's renewals spread over
        rounds); each counts as renewed now."""
        held = [(msg.seen, mid) for mid, msg in self._messages.items() if now - msg.seen >= after_s]
        held.sort()
        due = []
        for _, message_id in held[:limit]:
            msg = self._messages[message_id]
            msg.seen = now
            due.append((message_id, msg.receipt_handle))
        return due

    def _plan_of(self, lane: str | None) -> tuple[int, float]:
        if lane is not None and lane in self._lane_plans:
            return self._lane_plans[lane]
        return self.max_batch, self.max_wait_s

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def pending_in(self, lane: str | None) -> int:
        return self._in_lane[lane]

    def full(self) -> bool:
        """Whether some lane holds a whole batch."""
        return any(count >= self._plan_of(lane)[0] for lane, count in self._in_lane.items())

    def _by_lane(self) -> dict[str | None, list[_Pending]]:
        lanes: dict[str | None, list[_Pending]] = {}
        for pending in self._pending.values():
            lanes.setdefault(pending.ref.lane, []).append(pending)
        return lanes

    def add(
        self, message_id: str, receipt_handle: str, objects: list[ObjectRef], now: float
    ) -> list[str]:
        """Take one message's objects. Returns receipt handles that can be deleted now
        (messages with nothing left to dispatch: duplicates, test events)."""
        msg = self._messages.get(message_id)
        if msg is None:
            msg = self._messages[message_id] = _Message(receipt_handle, seen=now)
        else:
            msg.receipt_handle = receipt_handle  # a redelivery: only the newest handle works
            msg.seen = now
        for ref in objects:
            ident = ref.identity
            if ident in self._recent:
                self.duplicates += 1
                continue
            pending = self._pending.get(ident)
            if pending is None:
                pending = self._pending[ident] = _Pending(ref, now)
                self._in_lane[ref.lane] += 1
            elif message_id not in pending.messages:
                self.duplicates += 1
            pending.messages.add(message_id)
            msg.remaining.add(ident)
        if not msg.remaining:
            del self._messages[message_id]
            return [receipt_handle]
        return []

    def next_due_in(self, now: float) -> float | None:
        """Seconds until the oldest pending batch must close, or None with nothing pending."""
        if not self._pending:
            return None
        due = []
        for lane, waiting in self._by_lane().items():
            if self._room.get(lane, 1) == 0:
                continue  # held until the lane has room (the dispatcher looks every second)
            size, wait_s = self._plan_of(lane)
            if len(waiting) >= size:
                return 0.0
            due.append(min(p.first_seen for p in waiting) + wait_s - now)
        return max(0.0, min(due)) if due else None

    def due(self, now: float, flush: bool = False) -> list[Batch]:
        """Batches that should be dispatched now (every pending object with `flush`), each
        of one lane.

        Objects stay pending until `dispatched` or `released` is called for their batch;
        call one of them for every batch before asking again.
        """
        batches: list[Batch] = []
        for lane, waiting in self._by_lane().items():
            size, wait_s = self._plan_of(lane)
            room = None if flush else self._room.get(lane)
            sent = 0
            while len(waiting) >= size and (room is None or sent < room):
                chosen = self._take(lane, waiting, size)
                batches.append(Batch([p.ref for p in chosen], lane))
                taken = {id(p) for p in chosen}
                waiting = [p for p in waiting if id(p) not in taken]
                sent += 1
            if room is not None and sent >= room:
                continue
            if waiting and (flush or now - min(p.first_seen for p in waiting) >= wait_s):
                batches.append(Batch([p.ref for p in waiting], lane))
        return batches

    def _take(self, lane: str | None, waiting: list[_Pending], size: int) -> list[_Pending]:
        """A whole batch out of more than one: in arrival order, or by tenants' turns."""
        if self.weight is None:
            return waiting[:size]
        fair = self._fair.setdefault(lane, FairShare(self.weight))
        return fair.take([(p.ref.tenant or "", p) for p in waiting], size)

    def dispatched(self, batch: Batch) -> list[str]:
        """The batch's flow run exists: returns receipt handles of messages now complete."""
        done: list[str] = []
        for ref in batch.objects:
            ident = ref.identity
            pending = self._pending.pop(ident, None)
            self._remember(ident)
            if pending is None:
                continue
            self._in_lane[pending.ref.lane] -= 1
            for message_id in pending.messages:
                msg = self._messages.get(message_id)
                if msg is None:
                    continue
                msg.remaining.discard(ident)
                if not msg.remaining:
                    done.append(msg.receipt_handle)
                    del self._messages[message_id]
        return done

    def released(self, batch: Batch, now: float) -> None:
        """Creating the batch's run failed: its objects wait to be tried again."""
        for ref in batch.objects:
            pending = self._pending.get(ref.identity)
            if pending is not None:
                pending.first_seen = now

    def _remember(self, ident: str) -> None:
        if self.dedup_window <= 0:
            return
        self._recent[ident] = None
        self._recent.move_to_end(ident)
        while len(self._recent) > self.dedup_window:
            self._recent.popitem(last=False)

"""Micro-batching of uploads for the dispatcher: pure state, no I/O, time passed in.

Like Lambda's SQS event source: a batch closes when it holds `max_batch` images or when its
oldest image has waited `max_wait_s`. Each SQS message is deleted only once every object it
carried is in a created flow run (or was a duplicate of one).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from img2img.events import ObjectRef
from img2img.idempotency import batch_key


@dataclass
class Batch:
    objects: list[ObjectRef]

    @property
    def idempotency_key(self) -> str:
        return batch_key(self.objects)


@dataclass
class _Message:
    receipt_handle: str
    remaining: set[str] = field(default_factory=set)


@dataclass
class _Pending:
    ref: ObjectRef
    first_seen: float
    messages: set[str] = field(default_factory=set)


class Batcher:
    """Groups objects from SQS messages into batches and says which messages may go."""

    def __init__(self, max_batch: int, max_wait_s: float, dedup_window: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.dedup_window = dedup_window
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._messages: dict[str, _Message] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def add(
        self, message_id: str, receipt_handle: str, objects: list[ObjectRef], now: float
    ) -> list[str]:
        """Take one message's objects. Returns receipt handles that can be deleted now
        (messages with nothing left to dispatch: duplicates, test events)."""
        msg = self._messages.get(message_id)
        if msg is None:
            msg = self._messages[message_id] = _Message(receipt_handle)
        else:
            msg.receipt_handle = receipt_handle  # a redelivery: only the newest handle works
        for ref in objects:
            ident = ref.identity
            if ident in self._recent:
                self.duplicates += 1
                continue
            pending = self._pending.get(ident)
            if pending is None:
                pending = self._pending[ident] = _Pending(ref, now)
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
        if len(self._pending) >= self.max_batch:
            return 0.0
        oldest = min(p.first_seen for p in self._pending.values())
        return max(0.0, oldest + self.max_wait_s - now)

    def due(self, now: float, flush: bool = False) -> list[Batch]:
        """Batches that should be dispatched now (every pending object with `flush`).

        Objects stay pending until `dispatched` or `released` is called for their batch;
        call one of them for every batch before asking again.
        """
        waiting = list(self._pending.values())
        batches: list[Batch] = []
        while len(waiting) >= self.max_batch:
            batches.append(Batch([p.ref for p in waiting[: self.max_batch]]))
            waiting = waiting[self.max_batch :]
        if waiting and (flush or now - min(p.first_seen for p in waiting) >= self.max_wait_s):
            batches.append(Batch([p.ref for p in waiting]))
        return batches

    def dispatched(self, batch: Batch) -> list[str]:
        """The batch's flow run exists: returns receipt handles of messages now complete."""
        done: list[str] = []
        for ref in batch.objects:
            ident = ref.identity
            pending = self._pending.pop(ident, None)
            self._remember(ident)
            if pending is None:
                continue
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

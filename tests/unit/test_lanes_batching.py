"""Lanes and tenants in the dispatcher's batches, and room by lane on a host (pure)."""

from __future__ import annotations

from collections import Counter

from img2img.config.lanes import LaneSettings
from img2img.intake.batching import Batcher, BatchPlan
from img2img.intake.events import ObjectRef
from img2img.slots.lane_room import admit, is_first_lane, places, reserve_of


def _ref(key: str, lane: str | None = None, tenant: str | None = None) -> ObjectRef:
    return ObjectRef(bucket="b", key=key, etag="e", lane=lane, tenant=tenant)


def test_each_lane_batches_on_its_own_plan() -> None:
    """A bulk lane filling batches of 100 for 10 s does not hold an interactive upload,
    which leaves at once on its own plan, in a batch of its own lane."""
    batcher = Batcher(8, 2.0, 1000)
    batcher.resize(BatchPlan(100, 10.0, "backlog"), "bulk")
    batcher.resize(BatchPlan(8, 0.0, "the pool can take a run"), "interactive")
    bulk = [_ref(f"bulk/{i}", "bulk") for i in range(150)]
    batcher.add("m1", "h1", bulk, now=0.0)
    batcher.add("m2", "h2", [_ref("app/one", "interactive")], now=0.5)
    due = batcher.due(now=0.5)
    assert [(b.lane, len(b.objects)) for b in due] == [("bulk", 100), ("interactive", 1)]
    assert batcher.pending_in("bulk") == 150 and batcher.full()
    for batch in due:
        batcher.dispatched(batch)
    assert batcher.next_due_in(now=0.5) == 9.5  # the bulk rest: its own 10 s hold
    assert [(b.lane, len(b.objects)) for b in batcher.due(now=10.0)] == [("bulk", 50)]


def test_with_tenants_a_full_batch_takes_their_turns_not_arrival_order() -> None:
    batcher = Batcher(10, 60.0, 1000, weight=lambda t: 1.0)
    batcher.add("m1", "h1", [_ref(f"a/{i}", tenant="a") for i in range(500)], now=0.0)
    batcher.add("m2", "h2", [_ref(f"b/{i}", tenant="b") for i in range(3)], now=1.0)
    first = batcher.due(now=1.0)[0]
    assert Counter(r.tenant for r in first.objects) == {"a": 7, "b": 3}
    # Without tenants (no weight), arrival order, as before.
    plain = Batcher(10, 60.0, 1000)
    plain.add("m1", "h1", [_ref(f"a/{i}", tenant="a") for i in range(500)], now=0.0)
    plain.add("m2", "h2", [_ref(f"b/{i}", tenant="b") for i in range(3)], now=1.0)
    assert {r.tenant for r in plain.due(now=1.0)[0].objects} == {"a"}


def test_a_message_is_deleted_only_once_every_lane_s_part_of_it_is_in_a_run() -> None:
    batcher = Batcher(8, 0.0, 1000)
    batcher.add("m1", "h1", [_ref("x", "interactive"), _ref("y", "bulk")], now=0.0)
    batches = {b.lane: b for b in batcher.due(now=0.0)}
    assert batcher.dispatched(batches["interactive"]) == []
    assert batcher.dispatched(batches["bulk"]) == ["h1"]


LANES = LaneSettings(enabled=True)


def test_the_reserve_keeps_places_for_the_first_lane_never_all_of_a_slot() -> None:
    assert reserve_of(LANES, 3) == 1
    assert reserve_of(LANES, 1) == 0  # a slot of one place takes bulk too
    assert reserve_of(LaneSettings(), 3) == 0  # lanes off
    assert places(inflight=2, runs_per_slot=3, reserve=1, first=False) == 0
    assert places(inflight=2, runs_per_slot=3, reserve=1, first=True) == 1
    assert is_first_lane(LANES, "interactive") and not is_first_lane(LANES, "bulk")
    assert is_first_lane(LANES, "default") and is_first_lane(LANES, None)
    assert is_first_lane(LaneSettings(), "bulk")  # lanes off: every run


def test_a_poll_admits_bulk_only_into_places_not_kept_for_interactive() -> None:
    offered = ["i1", "b1", "b2", "b3", "i2"]

    def first(run: str) -> bool:
        return run.startswith("i")

    # Two slots of 3, one run each: 4 free, 2 of them for bulk; i1 fills one of those.
    assert admit(offered, first, free=4, free_other=2) == ["i1", "b1", "i2"]
    # Interactive runs use the reserved places first-come; bulk never takes the last ones.
    assert admit(["b1", "b2", "i1"], first, free=1, free_other=0) == ["i1"]
    assert admit(["i1", "i2", "b1"], first, free=2, free_other=2) == ["i1", "i2"]
    # One slot of 3, empty: after two interactive runs, a bulk run would take the reserve.
    assert admit(["i1", "i2", "b1"], first, free=3, free_other=2) == ["i1", "i2"]
    assert admit(["i1", "b1", "b2"], first, free=3, free_other=2) == ["i1", "b1"]


def test_a_lane_without_room_holds_its_backlog_where_a_later_tenant_gets_its_turns() -> None:
    """Room for one batch: one run of tenant a's burst goes, the rest is held (however long
    it waits) and, once tenant b arrives, the next batch gives both their turns."""
    batcher = Batcher(10, 1.0, 1000, weight=lambda t: 1.0)
    batcher.resize(BatchPlan(10, 1.0, "backlog"), "bulk")
    batcher.room("bulk", 1)
    batcher.add("m1", "h1", [_ref(f"a/{i}", "bulk", "a") for i in range(100)], now=0.0)
    sent = batcher.due(now=0.0)
    assert [len(b.objects) for b in sent] == [10]  # not ten batches of a's at once
    batcher.dispatched(sent[0])
    batcher.room("bulk", 0)
    assert batcher.due(now=500.0) == [] and batcher.next_due_in(now=500.0) is None
    batcher.add("m2", "h2", [_ref(f"b/{i}", "bulk", "b") for i in range(100)], now=30.0)
    batcher.room("bulk", 1)
    (turns,) = batcher.due(now=31.0)
    assert Counter(r.tenant for r in turns.objects) == {"a": 5, "b": 5}
    # Shutting down sends everything held, room or not: nothing is left behind.
    batcher.dispatched(turns)
    batcher.room("bulk", 0)
    assert sum(len(b.objects) for b in batcher.due(now=31.0, flush=True)) == 180
    # No room limit (None): every full batch at once, as without tenants.
    free = Batcher(10, 1.0, 1000)
    free.add("m", "h", [_ref(f"c/{i}", "bulk") for i in range(50)], now=0.0)
    free.room("bulk", 2)
    free.room("bulk", None)
    assert len(free.due(now=0.0)) == 5


def test_held_messages_are_renewed_before_their_visibility_ends() -> None:
    batcher = Batcher(10, 1.0, 1000)
    batcher.add("m1", "h1", [_ref("x/1", "bulk")], now=0.0)
    batcher.add("m2", "h2", [_ref("x/2", "bulk")], now=50.0)
    assert batcher.renewals(now=80.0, after_s=90.0) == []
    assert batcher.renewals(now=90.0, after_s=90.0) == [("m1", "h1")]
    # A redelivered message's newest handle is the one renewed, from when it came again.
    batcher.add("m2", "h2-again", [_ref("x/2", "bulk")], now=100.0)
    assert batcher.renewals(now=185.0, after_s=90.0) == [("m1", "h1")]
    assert batcher.renewals(now=190.0, after_s=90.0) == [("m2", "h2-again")]
    # A large backlog: the longest held first, a few a round.
    many = Batcher(10, 1.0, 1000)
    for i in range(5):
        many.add(f"m{i}", f"h{i}", [_ref(f"y/{i}", "bulk")], now=float(10 - i))
    assert many.renewals(now=100.0, after_s=60.0, limit=2) == [("m4", "h4"), ("m3", "h3")]
    assert [m for m, _ in many.renewals(now=100.0, after_s=60.0, limit=9)] == ["m2", "m1", "m0"]

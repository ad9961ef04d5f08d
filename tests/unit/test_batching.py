from __future__ import annotations

import pytest

from img2img.intake.batching import Batcher
from img2img.intake.events import ObjectRef


def ref(i: int, etag: str = "e") -> ObjectRef:
    return ObjectRef(bucket="b", key=f"{i}.png", etag=etag)


def test_a_full_batch_is_due_at_once_and_the_rest_waits_for_the_window() -> None:
    batcher = Batcher(max_batch=3, max_wait_s=5.0, dedup_window=100)
    for i in range(4):
        assert batcher.add(f"m{i}", f"h{i}", [ref(i)], now=0.0) == []
    [batch] = batcher.due(now=0.1)
    assert [o.key for o in batch.objects] == ["0.png", "1.png", "2.png"]
    assert sorted(batcher.dispatched(batch)) == ["h0", "h1", "h2"]
    assert batcher.due(now=4.9) == []
    due_in = batcher.next_due_in(4.9)
    assert due_in is not None and abs(due_in - 0.1) < 1e-9
    [late] = batcher.due(now=5.0)
    assert [o.key for o in late.objects] == ["3.png"]


def test_flush_dispatches_everything_pending() -> None:
    batcher = Batcher(max_batch=10, max_wait_s=60.0, dedup_window=100)
    batcher.add("m", "h", [ref(1), ref(2)], now=0.0)
    [batch] = batcher.due(now=0.0, flush=True)
    assert len(batch.objects) == 2


def test_a_message_is_deletable_only_when_all_its_objects_are_dispatched() -> None:
    batcher = Batcher(max_batch=1, max_wait_s=0.0, dedup_window=100)
    batcher.add("m", "h", [ref(1), ref(2)], now=0.0)
    first, second = batcher.due(now=0.0)
    assert batcher.dispatched(first) == []
    assert batcher.dispatched(second) == ["h"]


def test_duplicates_pending_or_dispatched_are_recognised() -> None:
    batcher = Batcher(max_batch=5, max_wait_s=1.0, dedup_window=100)
    batcher.add("m1", "h1", [ref(1)], now=0.0)
    batcher.add("m2", "h2", [ref(1)], now=0.0)  # same upload, second notification
    assert batcher.pending_count == 1
    [batch] = batcher.due(now=1.0)
    assert sorted(batcher.dispatched(batch)) == ["h1", "h2"]
    # A redelivery after dispatch is deletable at once and dispatches nothing.
    assert batcher.add("m3", "h3", [ref(1)], now=2.0) == ["h3"]
    assert batcher.due(now=10.0, flush=True) == []
    assert batcher.duplicates == 2
    # A new upload to the same key (new ETag) is not a duplicate.
    batcher.add("m4", "h4", [ref(1, etag="other")], now=3.0)
    assert batcher.pending_count == 1


def test_redelivery_replaces_the_receipt_handle() -> None:
    batcher = Batcher(max_batch=5, max_wait_s=1.0, dedup_window=100)
    batcher.add("m1", "old", [ref(1)], now=0.0)
    batcher.add("m1", "new", [ref(1)], now=0.5)
    [batch] = batcher.due(now=1.0)
    assert batcher.dispatched(batch) == ["new"]


def test_released_batches_wait_again_and_empty_messages_go_at_once() -> None:
    batcher = Batcher(max_batch=5, max_wait_s=1.0, dedup_window=100)
    assert batcher.add("t", "ht", [], now=0.0) == ["ht"]
    batcher.add("m", "h", [ref(1)], now=0.0)
    [batch] = batcher.due(now=1.0)
    batcher.released(batch, now=1.0)
    assert batcher.due(now=1.5) == []
    assert len(batcher.due(now=2.0)) == 1


def test_dedup_window_is_bounded() -> None:
    batcher = Batcher(max_batch=1, max_wait_s=0.0, dedup_window=2)
    for i in range(3):
        batcher.add(f"m{i}", f"h{i}", [ref(i)], now=0.0)
        for batch in batcher.due(now=0.0):
            batcher.dispatched(batch)
    assert batcher.add("again", "h", [ref(0)], now=1.0) == []  # forgotten: dispatched again


def test_at_low_load_a_batch_is_the_base_size_and_leaves_after_max_wait() -> None:
    from img2img.config.dispatch import DispatchSettings
    from img2img.intake.batching import plan_batch

    settings = DispatchSettings()
    plan = plan_batch(settings, in_hand=3, queue_depth=0, rate=1.0, run_slots=12)
    assert (plan.size, plan.hold_s) == (8, settings.max_wait_s)
    assert plan.reason.startswith("low load")
    fixed = settings.model_copy(update={"adaptive": False})
    assert plan_batch(fixed, in_hand=3, queue_depth=5000, rate=50.0, run_slots=1).size == 8


def test_a_backlog_is_spread_over_the_pools_run_slots_up_to_the_ceiling() -> None:
    from img2img.config.dispatch import DispatchSettings
    from img2img.intake.batching import plan_batch

    settings = DispatchSettings()
    # 1,000 waiting over 4 hosts × 1 slot × 3 runs: 84 per run, filled for up to max_hold_s.
    plan = plan_batch(settings, in_hand=10, queue_depth=990, rate=0.0, run_slots=12)
    assert plan.size == 84 and plan.hold_s == settings.max_hold_s
    assert "backlog" in plan.reason and "990 queued" in plan.reason
    # One host's worth of slots and a deep queue: the ceiling.
    deep = plan_batch(settings, in_hand=10, queue_depth=100_000, rate=0.0, run_slots=3)
    assert deep.size == settings.max_batch and "(max_batch)" in deep.reason
    # Everything is in hand (the queue is empty): no reason to hold longer than max_wait_s.
    drained = plan_batch(settings, in_hand=300, queue_depth=0, rate=0.0, run_slots=3)
    assert drained.size == 100 and drained.hold_s == settings.max_wait_s
    # A fast arrival rate counts as what will be there within the wait.
    busy = plan_batch(settings, in_hand=0, queue_depth=0, rate=300.0, run_slots=12)
    assert busy.size == 50


def test_the_hold_never_outlasts_the_visibility_timeout_and_a_small_ceiling_caps_the_base() -> None:
    from img2img.config.dispatch import DispatchSettings
    from img2img.intake.batching import plan_batch

    tight = DispatchSettings(visibility_timeout_s=35, max_hold_s=60)
    plan = plan_batch(tight, in_hand=10, queue_depth=1000, rate=0.0, run_slots=1)
    assert plan.hold_s == 5.0  # 35 s − 30 s of margin
    small = DispatchSettings(max_batch=4)
    assert plan_batch(small, in_hand=2, queue_depth=0, rate=0.0, run_slots=1).size == 4
    assert plan_batch(small, in_hand=2, queue_depth=900, rate=0.0, run_slots=1).size == 4


def test_a_resized_batcher_cuts_batches_of_the_new_size() -> None:
    from img2img.intake.batching import BatchPlan

    batcher = Batcher(max_batch=8, max_wait_s=2.0, dedup_window=1000)
    for i in range(150):
        batcher.add(f"m{i}", f"h{i}", [ref(i)], now=0.0)
    batcher.resize(BatchPlan(size=100, hold_s=10.0, reason="backlog"))
    assert [len(b.objects) for b in batcher.due(now=1.0)] == [100]  # 50 wait to fill
    assert [len(b.objects) for b in batcher.due(now=10.0)] == [100, 50]


def test_while_runs_wait_for_a_slot_the_batch_fills_instead_of_adding_runs() -> None:
    from img2img.config.dispatch import DispatchSettings
    from img2img.intake.batching import plan_batch

    settings = DispatchSettings()
    # 40 waiting over 12 run slots would be batches of 8; but 5 runs already wait for a slot.
    plan = plan_batch(settings, in_hand=40, queue_depth=0, rate=16.0, run_slots=12, queued_runs=5)
    assert (plan.size, plan.hold_s) == (settings.max_batch, settings.max_hold_s)
    assert "5 runs wait for a slot" in plan.reason
    # No run waits: the pool takes runs now, so what is in hand leaves after the window
    # of its rate (2 s x 16/s / 100/s), not the backlog's hold.
    free = plan_batch(settings, in_hand=40, queue_depth=0, rate=16.0, run_slots=12, queued_runs=0)
    assert free.size == 8 and free.hold_s == pytest.approx(0.32)
    # A few images while runs wait: the batch grows for the usual window (backpressure).
    low = plan_batch(settings, in_hand=2, queue_depth=0, rate=0.5, run_slots=12, queued_runs=3)
    assert low.size == 8 and low.hold_s == settings.max_wait_s


def test_a_lone_upload_leaves_at_once_only_when_the_pool_can_take_it() -> None:
    from img2img.config.dispatch import DispatchSettings
    from img2img.intake.batching import plan_batch

    settings = DispatchSettings()
    idle = plan_batch(settings, in_hand=1, queue_depth=0, rate=0.0, run_slots=4, queued_runs=0)
    assert idle.hold_s == 0 and "at once" in idle.reason
    # Not known whether runs wait (the count failed, or nothing was read): the window.
    unknown = plan_batch(settings, in_hand=1, queue_depth=0, rate=0.0, run_slots=4)
    assert unknown.hold_s == settings.max_wait_s
    # More messages are in the queue: take them into this batch first.
    queue = plan_batch(settings, in_hand=1, queue_depth=3, rate=0.0, run_slots=4, queued_runs=0)
    assert queue.hold_s > 0
    # Nothing in hand: nothing to send.
    empty = plan_batch(settings, in_hand=0, queue_depth=0, rate=0.0, run_slots=4, queued_runs=0)
    assert empty.hold_s == settings.max_wait_s
    # Fixed batches keep their window.
    fixed = DispatchSettings(adaptive=False)
    assert plan_batch(fixed, 1, 0, 0.0, 4, queued_runs=0).hold_s == fixed.max_wait_s


def test_while_the_pool_can_take_a_run_the_window_grows_with_the_rate() -> None:
    """None for a lone upload, max_wait_s x rate / full_window_rate, all of max_wait_s from
    full_window_rate up: runs per second (the server's cost) fall as the rate rises."""
    from img2img.config.dispatch import DispatchSettings
    from img2img.intake.batching import plan_batch

    s = DispatchSettings(full_window_rate=20.0)  # max_wait_s 2

    def window(rate: float) -> float:
        return plan_batch(s, 3, 0, rate, 4, queued_runs=0).hold_s

    assert window(0.0) == 0.0
    assert window(1.0) == pytest.approx(0.1)
    assert window(10.0) == pytest.approx(1.0)
    assert window(20.0) == window(200.0) == s.max_wait_s
    runs_per_s = [rate / (rate * window(rate)) for rate in (5.0, 10.0, 20.0)]
    assert runs_per_s == sorted(runs_per_s, reverse=True)
    plan = plan_batch(s, 3, 0, 10.0, 4, queued_runs=0)
    assert plan.reason == (
        "the pool can take a run now (no run waits, nothing more queued): 3 in hand leave "
        "within 1.00 s (the window at this rate) (10.0/s)"
    )
    wider = s.model_copy(update={"full_window_rate": 40.0})
    assert plan_batch(wider, 3, 0, 10.0, 4, queued_runs=0).hold_s == pytest.approx(0.5)


def test_a_steady_rate_fills_a_run_per_wait_up_to_what_a_run_does_in_max_run_s() -> None:
    from img2img.config.dispatch import DispatchSettings
    from img2img.intake.batching import plan_batch

    settings = DispatchSettings()  # max_wait_s 2, max_run_s 30
    # 16 images/s bring 32 in the 2 s an image waits at low load anyway: one run of 32,
    # where spreading over 6 run slots would make runs of the base 8.
    fast = plan_batch(settings, in_hand=5, queue_depth=0, rate=16.0, run_slots=6, image_s=0.01)
    assert (fast.size, fast.hold_s) == (32, settings.max_wait_s)
    assert fast.reason.startswith("steady load") and "10 ms/image" in fast.reason
    # A slow device: a run of 32 would take 64 s; 15 images is what a run does in 30 s.
    slow = plan_batch(settings, in_hand=5, queue_depth=0, rate=16.0, run_slots=6, image_s=2.0)
    assert slow.size == 15 and "~30.0 s on a slot" in slow.reason
    # Not known yet (no run completed): the share of the run slots, as before.
    unknown = plan_batch(settings, in_hand=5, queue_depth=0, rate=16.0, run_slots=6)
    assert unknown.size == 8 and unknown.reason.startswith("low load")
    # Low load: the base batch whatever the device.
    low = plan_batch(settings, in_hand=1, queue_depth=0, rate=1.0, run_slots=6, image_s=0.01)
    assert low.size == 8 and low.reason.startswith("low load")
    # Very fast arrivals stop at the ceiling and say so.
    flood = plan_batch(settings, in_hand=0, queue_depth=0, rate=900.0, run_slots=6, image_s=0.001)
    assert flood.size == settings.max_batch and "(max_batch)" in flood.reason
    # A backlog in the queue keeps the backlog rule (spread over the run slots) when it
    # asks for more than the steady rate would.
    backlog = plan_batch(
        settings, in_hand=10, queue_depth=990, rate=16.0, run_slots=12, image_s=0.01
    )
    assert backlog.size == 86 and backlog.reason.startswith("backlog")


def test_seconds_per_image_is_learned_from_the_dispatchers_own_runs() -> None:
    from img2img.intake.batching import run_name, seconds_per_image

    assert run_name([ref(1), ref(2)]) == "batch-2-1.png"
    runs = [
        ("batch-8-a.png", 4.0),  # 0.5 s per image
        ("batch-16-b.png", 16.0),  # 1.0
        ("batch-4-c.png", 8.0),  # 2.0
        ("reconcile-4-c.png", 100.0),  # not the dispatcher's: left out
        ("batch-2-d.png", 0.0),  # no time recorded
    ]
    assert seconds_per_image(runs) == 1.0
    assert seconds_per_image([("reconcile-x", 3.0)]) is None
    assert seconds_per_image([]) is None


def test_each_plan_says_why_with_its_figures() -> None:
    """The reasons the dispatcher logs, exactly, at each rule's boundary (defaults: base 8,
    max_batch 512, max_wait_s 2, max_run_s 30, max_hold_s 10)."""
    from img2img.config.dispatch import DispatchSettings
    from img2img.intake.batching import plan_batch

    s = DispatchSettings()
    # 300 queued over 2 run slots: 150 each, held up to max_hold_s while more arrive.
    assert plan_batch(s, 0, 300, 0.0, 2).reason == (
        "backlog: 300 waiting (0 in hand, 300 queued, 0.0/s) over 2 run slots: 150 per run, "
        "hold up to 10.0 s"
    )
    # 3000 queued: capped at max_batch, and it says so.
    capped = plan_batch(s, 0, 3000, 0.0, 2)
    assert (capped.size, capped.hold_s) == (512, 10.0)
    assert "512 per run (max_batch), hold up to 10.0 s" in capped.reason
    # 40/s at 50 ms an image: 80 arrive in 2 s, a run of 80 takes 4 s (< 30 s).
    steady = plan_batch(s, 0, 0, 40.0, 6, image_s=0.05)
    assert (steady.size, steady.hold_s) == (80, 2.0)
    assert steady.reason == (
        "steady load: 40.0/s brings 80 in 2 s; 80 per run (~4.0 s on a slot at 50 ms/image, "
        "max_run_s 30)"
    )
    fast = plan_batch(s, 0, 0, 1000.0, 6, image_s=0.001)
    assert fast.size == 512 and "512 per run (max_batch) (~0.5 s" in fast.reason
    assert plan_batch(s, 10, 0, 0.0, 1, queued_runs=2).reason == (
        "backlog at the pool: 2 runs wait for a slot; filling up to 512 for up to 10.0 s "
        "(10 waiting: 10 in hand, 0 queued, 0.0/s)"
    )
    fixed = plan_batch(s.model_copy(update={"adaptive": False}), 0, 0, 0.0, 1)
    assert fixed == type(fixed)(8, 2.0, "fixed batches of 8")


def test_the_plan_at_each_rules_boundary() -> None:
    from img2img.config.dispatch import DispatchSettings
    from img2img.intake.batching import plan_batch

    s = DispatchSettings()
    # What arrives equals one slot's share: no steady-rate rule, a batch of it all.
    even = plan_batch(s, 0, 0, 40.0, 1, image_s=0.05)
    assert (even.size, even.hold_s) == (80, 2.0) and even.reason.startswith("backlog: 80")
    # Exactly the base waiting with runs queued: still low load, not a pool backlog.
    assert plan_batch(s, 8, 0, 0.0, 1, queued_runs=3).reason.startswith("low load")
    # No run slot known counts as one; one queued message is a backlog to hold for.
    assert plan_batch(s, 20, 0, 0.0, 0).size == 20
    assert plan_batch(s, 20, 1, 0.0, 1).hold_s == 10.0
    # A learned time of 0 is no figure: the share rule alone.
    assert plan_batch(s, 0, 0, 40.0, 6, image_s=0.0).size == 14  # ceil(80 / 6)


def test_seconds_per_image_takes_every_sized_run_that_took_time() -> None:
    from img2img.intake.batching import seconds_per_image

    assert seconds_per_image([("batch-1-a.png", 2.0)]) == 2.0
    assert seconds_per_image([("batch-4-a.png", 0.5)]) == 0.125
    assert seconds_per_image([("batch-4-a.png", 0.0), ("batch-0-a.png", 3.0)]) is None


def test_a_run_is_named_for_its_maker_size_and_first_file() -> None:
    from img2img.intake.batching import run_name

    objects = [ObjectRef(bucket="b", key="a/b/c.png"), ObjectRef(bucket="b", key="d.png")]
    assert run_name(objects) == "batch-2-c.png"
    assert run_name(objects, "reconcile") == "reconcile-2-c.png"
    assert run_name([ObjectRef(bucket="b", key="x" * 50)]) == f"batch-1-{'x' * 40}"
    assert run_name([]) == "batch-0-"


def test_the_batchers_edges() -> None:
    import pytest

    from img2img.intake.batching import BatchPlan

    with pytest.raises(ValueError, match="max_batch must be at least 1, got 0"):
        Batcher(max_batch=0, max_wait_s=1.0, dedup_window=10)
    batcher = Batcher(max_batch=2, max_wait_s=5.0, dedup_window=0)
    # Exactly a full batch is due at once.
    batcher.add("m1", "h1", [ref(1), ref(2)], now=0.0)
    assert batcher.next_due_in(0.0) == 0.0
    (full,) = batcher.due(0.0)
    assert batcher.dispatched(full) == ["h1"]
    # A window of 0 remembers nothing: the same upload again is new work.
    batcher.add("m2", "h2", [ref(1)], now=1.0)
    assert batcher.pending_count == 1 and batcher.duplicates == 0
    # Each duplicate counts; a message of a duplicate and a new one keeps the new one.
    remembering = Batcher(max_batch=5, max_wait_s=5.0, dedup_window=1)
    remembering.add("a", "ha", [ref(1)], now=0.0)
    (one,) = remembering.due(0.0, flush=True)
    remembering.dispatched(one)
    assert remembering.add("b", "hb", [ref(1), ref(2)], now=1.0) == []
    remembering.add("c", "hc", [ref(2)], now=1.0)
    assert remembering.duplicates == 2 and remembering.pending_count == 1
    # A batch holding an upload no longer pending still completes the others' messages.
    (two,) = remembering.due(1.0, flush=True)
    ghost = type(two)([ref(9), *two.objects])
    assert sorted(remembering.dispatched(ghost)) == ["hb", "hc"]
    # A plan of size 0 still cuts batches of one.
    remembering.resize(BatchPlan(0, 1.0, "test"))
    assert remembering.max_batch == 1 and remembering.max_wait_s == 1.0

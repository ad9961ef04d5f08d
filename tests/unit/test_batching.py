from __future__ import annotations

from img2img.batching import Batcher
from img2img.events import ObjectRef


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

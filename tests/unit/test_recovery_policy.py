"""The recovery policy (retry, split, give up) and orphan detection, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from img2img.config.recovery import RecoverySettings
from img2img.delivery.recovery import (
    GiveUp,
    Retry,
    Split,
    inherited_crashes,
    orphan_reason,
    plan,
    split_tags,
)
from img2img.intake.events import ObjectRef

POLICY = RecoverySettings(max_attempts=3, split_after=2, backoff_s=5, max_backoff_s=30)


def refs(n: int) -> list[ObjectRef]:
    return [ObjectRef(bucket="b", key=f"k{i}", etag="e") for i in range(n)]


def test_a_first_crash_is_retried_with_backoff_that_doubles_up_to_the_cap() -> None:
    first = plan(1, refs(8), POLICY)
    assert isinstance(first, Retry) and first.delay_s == 5
    single = [plan(c, refs(1), POLICY) for c in (1, 2)]
    assert [a.delay_s for a in single if isinstance(a, Retry)] == [5, 10]
    capped = plan(5, refs(1), RecoverySettings(max_attempts=9, backoff_s=5, max_backoff_s=30))
    assert isinstance(capped, Retry) and capped.delay_s == 30


def test_a_batch_that_crashes_again_is_split_in_two_halves_keeping_every_upload() -> None:
    batch = refs(7)
    action = plan(2, batch, POLICY)
    assert isinstance(action, Split)
    left, right = action.halves
    assert (len(left), len(right)) == (4, 3) and left + right == batch


def test_a_poison_image_ends_alone_with_a_failure_after_log2_splits() -> None:
    """Follow the policy as the service applies it: every run with the poison crashes."""
    poison = refs(8)[5]
    runs = [(refs(8), 0)]  # (objects, inherited crashes)
    splits = gave_up = 0
    for _ in range(50):  # bounded
        if not runs:
            break
        objects, inherited = runs.pop()
        if poison not in objects:
            continue  # completes: no crash
        crashes = inherited + 1
        while True:
            action = plan(crashes, objects, POLICY)
            if isinstance(action, Retry):
                crashes += 1  # crashes again
                continue
            break
        if isinstance(action, Split):
            splits += 1
            runs += [(half, crashes) for half in action.halves]
        else:
            assert isinstance(action, GiveUp) and objects == [poison]
            gave_up += 1
    assert gave_up == 1 and splits == 3 and not runs


def test_zero_crashes_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        plan(0, refs(1), POLICY)


def test_split_children_carry_the_crash_count_in_a_tag() -> None:
    assert inherited_crashes(split_tags(3)) == 3
    assert inherited_crashes(["img2img", "s3-event"]) == 0
    assert inherited_crashes(["img2img-crashes:x"]) == 0


NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def orphan(**kw: Any) -> str | None:
    args = {
        "state_name": "Running",
        "state_since": NOW - timedelta(seconds=300),
        "worker": "host-1@ab",
        "last_heartbeat": NOW - timedelta(seconds=5),
        "now": NOW,
        "orphan_after_s": 20.0,
    }
    return orphan_reason(**{**args, **kw})


def test_a_run_whose_worker_heartbeats_is_not_orphaned() -> None:
    assert orphan() is None


def test_a_run_whose_worker_went_silent_or_away_is_orphaned() -> None:
    assert "no heartbeat for 60 s" in str(orphan(last_heartbeat=NOW - timedelta(seconds=60)))
    assert "gone from the work pool" in str(orphan(last_heartbeat=None))


def test_a_run_that_just_changed_state_is_never_orphaned() -> None:
    # A new worker has just claimed a re-run: its label may still name the dead worker.
    assert orphan(state_since=NOW - timedelta(seconds=3), last_heartbeat=None) is None


def test_pending_without_any_worker_is_orphaned_but_a_hand_run_is_not() -> None:
    assert "no worker took it" in str(orphan(state_name="Pending", worker=None))
    # ... but only after three windows: a worker labels what it claims a little later.
    assert (
        orphan(state_name="Pending", worker=None, state_since=NOW - timedelta(seconds=50)) is None
    )
    assert orphan(state_name="Running", worker=None) is None


def test_a_label_left_by_a_worker_that_was_already_silent_is_not_the_claimant() -> None:
    """A re-run of an orphaned run, claimed by a new worker that has not relabelled it yet
    (seconds, under load): the label still names the dead worker, which fell silent before
    the run became Pending again. That is an unlabelled claim (three windows), not a second
    orphan."""
    dead = NOW - timedelta(seconds=60)
    assert (
        orphan(state_name="Pending", state_since=NOW - timedelta(seconds=25), last_heartbeat=dead)
        is None
    )
    # Still unlabelled after three windows: orphaned, and it says why.
    reason = orphan(
        state_name="Pending",
        state_since=NOW - timedelta(seconds=61),
        last_heartbeat=NOW - timedelta(seconds=200),
    )
    assert "no worker took it" in str(reason)
    # The worker that was alive when the run entered its state and then fell silent is.
    assert "no heartbeat" in str(
        orphan(state_since=NOW - timedelta(seconds=100), last_heartbeat=NOW - timedelta(seconds=90))
    )


@pytest.mark.parametrize("size", [8, 128, 512])
def test_a_poison_image_in_a_large_run_is_isolated_within_log2_of_its_size_crashes(
    size: int,
) -> None:
    """Follow the poison image through the policy: each crash of the run that holds it is
    retried, split (the half with the poison crashes again, inheriting the count) or given
    up. It ends alone, as one failure record, after log₂(size) + 2 crashes at most; the
    other half of every split never crashes again."""
    import math

    poison = size // 3
    batch, inherited, crashes, runs = refs(size), 0, 0, 1
    own = 0
    while True:
        crashes += 1
        own += 1
        action = plan(own + inherited, batch, POLICY)
        if isinstance(action, GiveUp):
            break
        if isinstance(action, Split):
            runs += 2
            inherited, own = inherited + own, 0
            batch = next(h for h in action.halves if any(r.key == f"k{poison}" for r in h))
    assert batch == [refs(size)[poison]]
    assert crashes <= math.log2(size) + 2, crashes
    assert runs == 2 * math.ceil(math.log2(size)) + 1  # the run and two per split


def test_the_policy_says_exactly_what_it_decided_at_each_boundary() -> None:
    """Each action's reason as operators read it in the run's state, and the boundaries:
    split from `split_after` crashes with two images, give up at exactly `max_attempts`."""
    assert plan(1, refs(2), POLICY) == Retry(5, "crash 1: re-run in 5 s")
    assert plan(2, refs(2), POLICY) == Split(
        (refs(2)[:1], refs(2)[1:]), "crashed 2 times with 2 images: split into 1 + 1"
    )
    five = plan(2, refs(5), POLICY)
    assert isinstance(five, Split) and five.reason.endswith("split into 3 + 2")
    # One image: retried until max_attempts, given up at exactly it.
    assert plan(2, refs(1), POLICY) == Retry(10, "crash 2: re-run in 10 s")
    assert plan(3, refs(1), POLICY) == GiveUp("crashed 3 times (max_attempts 3)")
    assert plan(4, refs(1), POLICY) == GiveUp("crashed 4 times (max_attempts 3)")
    # Nothing left unfinished counts as one image.
    assert isinstance(plan(3, [], POLICY), GiveUp)


def test_a_give_up_record_names_the_stage_a_hang_stopped_in() -> None:
    from img2img.delivery.recovery import give_up_record

    hang = "slot 0 (pid 9) hung: no progress for 31 s during upscale; the slot is being replaced"
    assert give_up_record(hang, "crashed 3 times") == (
        "upscale",
        "hung: no progress for 31 s during upscale; its flow run crashed 3 times; "
        f"last crash: {hang}",
    )
    silent = "slot 0 hung: no progress for 40 s"
    assert give_up_record(silent, "r")[0] == "hung"
    assert give_up_record("exited with code 1", "r") == (
        "crashed",
        "its flow run r; last crash: exited with code 1",
    )
    assert give_up_record("", "r") == ("crashed", "its flow run r; last crash: ")


def test_inherited_crashes_are_never_negative() -> None:
    assert inherited_crashes(["img2img-crashes:-2"]) == 0
    assert inherited_crashes(["img2img-crashes:0", "img2img-crashes:5"]) == 0


def test_orphan_windows_start_at_exactly_their_bound() -> None:
    twenty = timedelta(seconds=20)
    # In its state for exactly the window: judged (a silent worker is an orphan).
    assert orphan(state_since=NOW - twenty, last_heartbeat=NOW - twenty) is not None
    assert orphan(state_since=NOW - twenty + timedelta(seconds=1)) is None
    # Silent for exactly the window: orphaned; a second less: not.
    assert orphan(last_heartbeat=NOW - twenty) == (
        "its worker host-1@ab sent no heartbeat for 20 s (host lost?)"
    )
    assert orphan(last_heartbeat=NOW - twenty + timedelta(seconds=1)) is None
    # A label whose worker was silent exactly the window before the state began is stale.
    stale = orphan(
        state_name="Pending",
        state_since=NOW - timedelta(seconds=60),
        last_heartbeat=NOW - timedelta(seconds=80),
    )
    assert stale == "Pending for 60 s and no worker took it"
    # An unlabelled claim gets exactly three windows.
    unlabelled = {"state_name": "Pending", "worker": None}
    assert orphan(**unlabelled, state_since=NOW - 3 * twenty) == (
        "Pending for 60 s and no worker took it"
    )
    assert orphan(**unlabelled, state_since=NOW - 3 * twenty + timedelta(seconds=1)) is None

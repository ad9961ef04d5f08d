"""Lanes, tenants, fair share and quotas: the pure policies."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from pydantic import ValidationError

from img2img.config.lanes import Lane, LaneSettings, TenantSettings
from img2img.intake.fair_share import FairShare
from img2img.intake.placement import BadPlacement, lane_of, place, reads_metadata, tenant_of

LANES = LaneSettings(
    enabled=True,
    prefix_rules={"catalogue/": "bulk", "catalogue/urgent/": "interactive"},
    bucket_rules={"imports": "bulk"},
)
TENANTS = TenantSettings(enabled=True)


# -- lanes --------------------------------------------------------------------------------------


def test_the_metadata_names_the_lane_before_any_rule() -> None:
    assert lane_of({"lane": "bulk"}, "uploads", "a.png", LANES) == ("bulk", "metadata")
    assert lane_of({"lane": " Interactive "}, "imports", "catalogue/a.png", LANES)[0] == (
        "interactive"
    )


def test_rules_place_what_the_metadata_does_not_longest_prefix_first() -> None:
    assert lane_of({}, "uploads", "catalogue/a.png", LANES) == ("bulk", "prefix 'catalogue/'")
    assert lane_of({}, "uploads", "catalogue/urgent/a.png", LANES)[0] == "interactive"
    assert lane_of({}, "imports", "a.png", LANES) == ("bulk", "bucket 'imports'")
    assert lane_of({}, "uploads", "a.png", LANES) == ("interactive", "default")


def test_an_unknown_lane_is_bad_input_that_names_the_lanes() -> None:
    with pytest.raises(
        BadPlacement,
        match=r"x-amz-meta-lane is 'urgent', not one of the lanes: "
        r"interactive, bulk",
    ):
        lane_of({"lane": "urgent"}, "uploads", "a.png", LANES)


def test_lane_settings_refuse_names_they_do_not_know() -> None:
    with pytest.raises(ValidationError, match=r"lanes\.default is 'fast'"):
        LaneSettings(default="fast")
    with pytest.raises(ValidationError, match=r"prefix_rules\['x/'\] is 'slow'"):
        LaneSettings(prefix_rules={"x/": "slow"})
    with pytest.raises(ValidationError, match="names a lane twice"):
        LaneSettings(lanes=[Lane(name="a", priority=1), Lane(name="a", priority=2)], default="a")
    three = LaneSettings(
        lanes=[
            Lane(name="paid", priority=1),
            Lane(name="free", priority=5),
            Lane(name="bulk", priority=9),
        ],
        default="free",
    )
    assert three.names() == ["paid", "free", "bulk"] and three.first == "paid"


# -- tenants ------------------------------------------------------------------------------------


def test_the_tenant_comes_from_the_metadata_else_the_key_else_the_default() -> None:
    assert tenant_of({"tenant": "acme"}, "other/a.png", TENANTS) == "acme"
    assert tenant_of({}, "acme/photos/a.png", TENANTS) == "acme"
    assert tenant_of({}, "a.png", TENANTS) == "default"
    assert tenant_of({}, "acme/a.png", TENANTS.model_copy(update={"from_key": False})) == "default"
    # A first segment that is no tenant name (spaces) is not taken for one.
    assert tenant_of({}, "my photos/a.png", TENANTS) == "default"


def test_a_bad_tenant_in_the_metadata_is_bad_input() -> None:
    for bad in ("", "a b", "-x", "x" * 65, "ten\u202eant"):
        with pytest.raises(BadPlacement, match="x-amz-meta-tenant is"):
            tenant_of({"tenant": bad}, "a.png", TENANTS)


def test_with_both_off_nothing_is_placed_and_no_metadata_is_read() -> None:
    off, no = LaneSettings(), TenantSettings()
    assert place({"lane": "nonsense"}, "b", "k", off, no).lane is None
    assert not reads_metadata(off, no)
    assert reads_metadata(LANES, no) and reads_metadata(off, TENANTS)
    both = place({"tenant": "acme"}, "imports", "k.png", LANES, TENANTS)
    assert (both.lane, both.tenant, both.lane_from) == ("bulk", "acme", "bucket 'imports'")


# -- fair share ---------------------------------------------------------------------------------


def _backlog(counts: dict[str, int]) -> list[tuple[str, str]]:
    """Each tenant's images, in arrival order: all of the first tenant's, then the next's."""
    return [(t, f"{t}{i}") for t, n in counts.items() for i in range(n)]


def test_a_burst_does_not_starve_a_tenant_that_arrived_after_it() -> None:
    fair = FairShare(lambda _t: 1.0)
    waiting = _backlog({"a": 2000, "b": 10})
    batch = fair.take(waiting, 8)
    assert Counter(item[0] for item in batch) == {"a": 4, "b": 4}
    assert [i for i in batch if i.startswith("b")] == ["b0", "b1", "b2", "b3"]  # in order


def test_shares_follow_the_weights_across_small_batches() -> None:
    """Batches of 3 (smaller than a round): the turn and the deficits carry over, so the
    shares over many batches are still 3:1:1."""
    fair = FairShare(lambda t: 3.0 if t == "paid" else 1.0)
    waiting = _backlog({"free": 500, "paid": 500, "other": 500})
    taken: list[str] = []
    for _ in range(100):
        batch = fair.take(waiting, 3)
        taken += batch
        waiting = [(t, i) for t, i in waiting if i not in set(batch)]
    shares = Counter(item.rstrip("0123456789") for item in taken)
    assert shares == {"paid": 180, "free": 60, "other": 60}


def test_a_fractional_weight_waits_rounds_for_its_turn_and_an_idle_tenant_saves_nothing() -> None:
    fair = FairShare(lambda t: 0.5 if t == "slow" else 1.0)
    batch = fair.take(_backlog({"slow": 10, "fast": 10}), 6)
    assert Counter(i[:4] for i in batch) == {"fast": 4, "slow": 2}
    # "fast" empties; when it comes back it starts from nothing, not from saved credit.
    fair.take(_backlog({"slow": 8}), 2)
    again = fair.take(_backlog({"slow": 6, "fast": 10}), 6)
    assert Counter(i[:4] for i in again) == {"fast": 4, "slow": 2}


def test_each_backlogged_tenant_gets_its_weighted_share_within_one_round() -> None:
    """Randomised: whatever the weights and batch sizes, while every tenant has work
    waiting, the images taken per tenant stay within one round of weight × rounds."""
    rng = random.Random(7)
    for _ in range(30):
        weights = {f"t{i}": rng.choice([0.5, 1.0, 2.0, 3.0]) for i in range(rng.randint(2, 5))}
        fair = FairShare(lambda t, w=weights: w[t])  # type: ignore[misc]
        waiting = [(t, f"{t}-{i}") for t in weights for i in range(400)]
        rng.shuffle(waiting)
        taken: Counter[str] = Counter()
        total = 0
        # While every tenant still has work waiting after the batch (the backlog).
        while all(taken[t] + 40 < 400 for t in weights):
            batch = fair.take(waiting, rng.randint(1, 40))
            gone = set(batch)
            waiting = [(t, i) for t, i in waiting if i not in gone]
            taken.update(i.split("-")[0] for i in batch)
            total += len(batch)
        assert total > 300
        whole = sum(weights.values())
        for tenant, weight in weights.items():
            assert abs(taken[tenant] - total * weight / whole) <= 2 * max(weights.values()) + 1, (
                weights,
                taken,
            )


def test_nothing_is_taken_twice_or_made_up() -> None:
    fair = FairShare(lambda _t: 1.0)
    waiting = _backlog({"a": 3, "b": 1})
    assert sorted(fair.take(waiting, 100)) == ["a0", "a1", "a2", "b0"]
    assert fair.take([], 5) == []


# -- quotas -------------------------------------------------------------------------------------


def test_quota_settings_are_checked() -> None:
    tenants = TenantSettings(quota_per_hour={"free": 100}, default_quota_per_hour=1000)
    assert tenants.quota("free") == 100 and tenants.quota("other") == 1000
    assert TenantSettings().quota("any") is None
    with pytest.raises(ValidationError, match="at least 1"):
        TenantSettings(quota_per_hour={"free": 0})
    with pytest.raises(ValidationError, match=r"within 0\.01\.\.1000"):
        TenantSettings(weights={"paid": 0})

"""The device-batch rules: grouping, the cheapest cut into calls, padding."""

from __future__ import annotations

import pytest

from img2img.pipeline.device_batches import Call, CallCost, cut, group_by, plan_calls, split_shares


def sizes_of(calls: list[Call]) -> list[tuple[int, int]]:
    return [(c.images, c.size) for c in calls]


def test_eager_calls_hold_any_count_up_to_the_largest_and_never_pad() -> None:
    assert sizes_of(plan_calls(11, [4], exact=True)) == [(4, 4), (4, 4), (3, 3)]
    assert sizes_of(plan_calls(3, [8], exact=True)) == [(3, 3)]
    assert plan_calls(0, [4], exact=True) == []


def test_compiled_sizes_pad_the_last_call_when_one_call_is_cheaper() -> None:
    # 3 images, compiled for 1, 2, 4: one padded call of 4 (2 + 4 = 6) beats 2 + 1
    # (2 + 2 + 2 + 1 = 7).
    assert sizes_of(plan_calls(3, [1, 2, 4])) == [(3, 4)]
    # With no fixed cost a padded slot is pure waste: 2 + 1, no padding.
    assert sizes_of(plan_calls(3, [1, 2, 4], CallCost(fixed=0.0))) == [(2, 2), (1, 1)]
    # 9 images on 1, 2, 4, 8: 8 + 1 (10 + 3), not 8 + a padded 2 (10 + 4) or 4 + 4 + 1 (15).
    assert sizes_of(plan_calls(9, [1, 2, 4, 8])) == [(8, 8), (1, 1)]


def test_only_one_compiled_size_means_padding_the_rest() -> None:
    assert sizes_of(plan_calls(5, [4])) == [(4, 4), (1, 4)]
    assert sum(c.padding for c in plan_calls(5, [4])) == 3


def test_every_image_is_in_exactly_one_call() -> None:
    for count in range(0, 40):
        for sizes in ([1], [1, 2, 4, 8], [2, 8], [4]):
            calls = plan_calls(count, sizes)
            assert sum(c.images for c in calls) == count
            assert all(c.size in sizes and 1 <= c.images <= c.size for c in calls)


def test_bad_arguments_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="no call size"):
        plan_calls(3, [0])
    with pytest.raises(ValueError, match="at least 0"):
        plan_calls(-1, [1])
    with pytest.raises(ValueError, match="do not fit"):
        cut([1, 2, 3], [Call(2, 2)])


def test_groups_keep_first_order_and_cut_follows_the_calls() -> None:
    items = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)]
    assert group_by(items, lambda i: i[0]) == [
        [("a", 1), ("a", 3)],
        [("b", 2), ("b", 5)],
        [("c", 4)],
    ]
    assert cut([1, 2, 3, 4, 5], [Call(4, 4), Call(1, 2)]) == [[1, 2, 3, 4], [5]]
    assert split_shares(90.0, 3) == [30.0, 30.0, 30.0]

"""Device batches: which of a run's images share one device call, and in what call sizes.

Pure: no torch, no I/O. A stage call takes one value of the parameters that shape the whole
call (the step count, the guidance scale, img2img's strength, the upscaler's noise level)
and a list of the rest (prompts, images, one generator per image), so images are grouped by
the first kind (`group_key`) and each group is cut into calls (`plan_calls`).

The call sizes come from what the backend can run: any size up to `stages.device_batch`
on the eager and simulated backends, the sizes the artifacts were compiled for on the
compiled ones (a frozen graph runs only its own batch: a short call is padded). Which cut
is cheapest follows a call's cost, `fixed + per_image × size` (padding costs as much as an
image), by dynamic programming over the group's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class CallCost:
    """What one device call of `size` images costs, in any unit (ms): `fixed + per_image ×
    size`. Only the ratio matters: the default says one more image adds a third of a lone
    call's time (the simulated device's default, `stages.simulated.image_share`)."""

    fixed: float = 2.0
    per_image: float = 1.0

    def of(self, size: int) -> float:
        return self.fixed + self.per_image * size


@dataclass(frozen=True)
class Call:
    """One device call: `images` real images run at compiled size `size` (padded when
    `size > images`)."""

    images: int
    size: int

    @property
    def padding(self) -> int:
        return self.size - self.images


def plan_calls(
    count: int, sizes: Sequence[int], cost: CallCost = CallCost(), exact: bool = False
) -> list[Call]:
    """The cheapest cut of `count` images into calls of the given sizes.

    `exact` (eager): a call may hold any number of images up to the largest size, so
    nothing is padded. Otherwise (compiled): a call runs at one of `sizes`, and a call with
    fewer images is padded up to it when that costs less than smaller calls (one call of 4
    for 3 images beats a call of 2 and a call of 1 when a call's fixed cost is more than an
    image's). Ties go to fewer calls; the calls come largest first.
    """
    if count < 0:
        raise ValueError(f"count must be at least 0, got {count}")
    if count == 0:
        return []
    allowed = sorted({s for s in sizes if s >= 1})
    if not allowed:
        raise ValueError(f"no call size to run with: {list(sizes)}")
    if exact:
        allowed = list(range(1, allowed[-1] + 1))
    # best[n] = (cost, calls, the call that starts the plan) for n images left.
    none: Call | None = None
    best: list[tuple[float, int, Call | None]] = [(0.0, 0, none)] + [(math.inf, 0, none)] * count
    for n in range(1, count + 1):
        for size in allowed:
            images = min(size, n)
            if exact and images < size:
                continue
            rest = best[n - images]
            option = (rest[0] + cost.of(size), rest[1] + 1)
            if option < best[n][:2]:
                best[n] = (option[0], option[1], Call(images, size))
    calls: list[Call] = []
    n = count
    while n > 0:
        call = best[n][2]
        assert call is not None
        calls.append(call)
        n -= call.images
    return sorted(calls, key=lambda c: (-c.size, -c.images))


def group_by(items: Sequence[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """Items with the same key together, groups and items in their first order."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


def cut(items: Sequence[T], calls: Sequence[Call]) -> list[list[T]]:
    """`items` split into consecutive chunks of each call's image count."""
    if sum(c.images for c in calls) != len(items):
        raise ValueError(f"{len(items)} items do not fit calls of {[c.images for c in calls]}")
    chunks, start = [], 0
    for call in calls:
        chunks.append(list(items[start : start + call.images]))
        start += call.images
    return chunks


def split_shares(total: float, count: int) -> list[float]:
    """A call's time shared among its real images (padding is charged to them)."""
    if count < 1:
        raise ValueError(f"a call holds at least one image, got {count}")
    return [total / count] * count

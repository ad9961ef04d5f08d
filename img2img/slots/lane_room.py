"""Room by lane on a host (pure): which waiting runs a host with some free run places may
claim.

Each slot holds up to `runs_per_slot` runs. With lanes, `bulk_reserve` of each slot's places
are kept for the highest-priority lane: a slot full of bulk runs still takes an interactive
run at once, and its device calls go first (`img2img.slots.device_turns`), so an interactive
image waits for one bulk device call, not for a bulk run. The reserve is never all of a
slot's places (a slot of one place takes bulk too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from img2img.config.lanes import LaneSettings

T = TypeVar("T")


def reserve_of(lanes: LaneSettings, runs_per_slot: int) -> int:
    """The places of each slot kept for the first lane (0: lanes off)."""
    if not lanes.enabled:
        return 0
    return max(0, min(lanes.bulk_reserve, runs_per_slot - 1))


def is_first_lane(lanes: LaneSettings, queue: str | None) -> bool:
    """Whether a run of work queue `queue` may use the reserved places: lanes off, the first
    lane's queue, or a queue that is no lane (the deployment's own: runs made before lanes
    were on, or by hand)."""
    if not lanes.enabled or queue is None:
        return True
    names = lanes.names()
    return queue == names[0] or queue not in names


def places(inflight: int, runs_per_slot: int, reserve: int, first: bool) -> int:
    """Free places of one slot for a run of the first lane (`first`) or of another."""
    return max(0, runs_per_slot - (0 if first else reserve) - inflight)


def admit(runs: Sequence[T], first: Callable[[T], bool], free: int, free_other: int) -> list[T]:
    """The runs, in the order offered (Prefect's: queue priority, then time), that fit `free`
    places of which `free_other` may hold runs of the other lanes: a run of another lane
    only where `bulk_reserve` places stay free after it, as a slot admits it."""
    taken: list[T] = []
    for run in runs:
        if free <= 0:
            break
        if first(run):
            taken.append(run)
            free -= 1
            free_other = max(0, free_other - 1)  # a slot's runs of any lane fill its places
        elif free_other > 0:
            taken.append(run)
            free -= 1
            free_other -= 1
    return taken

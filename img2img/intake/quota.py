"""Tenants' quotas (pure): images in any hour, counted in one-minute buckets.

`QuotaWindow.admit(tenant, count, now)` says how many of `count` new uploads fit the
tenant's quota over the hour ending now and counts those; the rest are over quota (moved to
the bulk lane or failed, as `tenants.over_quota` says, never dropped).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

HOUR_S = 3600.0
BUCKET_S = 60.0


@dataclass
class _Count:
    buckets: deque[tuple[int, int]] = field(default_factory=deque)  # (minute, images)
    total: int = 0

    def expire(self, minute: int) -> None:
        horizon = minute - int(HOUR_S // BUCKET_S) + 1
        while self.buckets and self.buckets[0][0] < horizon:
            self.total -= self.buckets.popleft()[1]

    def add(self, minute: int, images: int) -> None:
        if self.buckets and self.buckets[-1][0] == minute:
            last = self.buckets.pop()
            self.buckets.append((minute, last[1] + images))
        else:
            self.buckets.append((minute, images))
        self.total += images


class QuotaWindow:
    """Images each tenant has had admitted over the last hour (to the minute)."""

    def __init__(self, quota: Callable[[str], int | None]) -> None:
        self.quota = quota
        self._counts: dict[str, _Count] = {}

    def admit(self, tenant: str, count: int, now: float) -> int:
        """How many of `count` uploads of `tenant` at `now` (seconds) fit its quota; those
        are counted. A tenant without a quota is admitted whole and not counted."""
        limit = self.quota(tenant)
        if limit is None or count <= 0:
            return max(count, 0)
        minute = int(now // BUCKET_S)
        held = self._counts.setdefault(tenant, _Count())
        held.expire(minute)
        admitted = max(0, min(count, limit - held.total))
        if admitted:
            held.add(minute, admitted)
        if not held.buckets:
            del self._counts[tenant]
        return admitted

    def used(self, tenant: str, now: float) -> int:
        """Images counted against `tenant` over the hour ending `now`."""
        held = self._counts.get(tenant)
        if held is None:
            return 0
        held.expire(int(now // BUCKET_S))
        return held.total

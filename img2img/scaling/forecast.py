"""A daily forecast of the pool's arrivals, from its own history, for the scaling policy.

A pool whose load follows the clock (an app's day) arrives tomorrow about as it arrived at
the same time on the last few days. The forecast reads the arrivals of the last `days` days
in buckets at this time of day: the bucket that ends now (to check the forecast against what
is arriving) and the buckets of the next `lead_s` (what is coming). Per bucket it takes the
median over the days, so one odd day does not move it.

It is safe by construction, as the policy uses it (`img2img.scaling.policy.decide`):

- it is *trusted* only with `min_days` days of history and while its figure for now agrees
  with the rate arriving now (within `tolerance` plus three standard deviations of a
  Poisson count of that size); a holiday, a launch, a pool that changed, and the policy is
  purely reactive again at its normal target;
- it can only add hosts ahead of a rise (one beyond the noise of a count that size), and
  only when the reactive part holds or scales out, not within a scale-in cooldown of the
  reactive part releasing hosts: it never keeps a host the reactive part releases;
- while trusted, the reactive part may run at a higher utilisation target
  (`target_utilization`): the normal target's headroom covers both the randomness of
  arrivals and their growth during a host's start, and the forecast now covers the growth.

The history lives where the autoscaler already looks, the work pool's flow runs in Prefect
(kept `retention.runs_days`, 14 days by default); nothing new runs or stores anything.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from img2img.config.scaling import ForecastSettings

DAY_S = 86_400.0


@dataclass(frozen=True)
class Forecast:
    """What the history says, in runs per second, and whether the policy may act on it."""

    rate_now: float  # median over days of the bucket that ends at this time of day
    rate_ahead: float  # the highest median bucket within the lead
    days: int  # days that had arrivals
    trusted: bool
    reason: str
    rising: bool = False  # the lead holds a rise beyond the noise of a count this size


def forecast(
    settings: ForecastSettings, counts_by_day: Sequence[Sequence[float]], observed_rate: float
) -> Forecast:
    """The forecast from `counts_by_day`: for each past day, the arrivals in the bucket
    ending at this time of day, then in each bucket of the lead (`1 + buckets_ahead` counts).
    `observed_rate` is the rate that arrived over the last bucket's width (runs per second;
    the autoscaler's last interval), to check the history against."""
    width = 1 + settings.buckets_ahead
    for index, counts in enumerate(counts_by_day):
        if len(counts) != width:
            raise ValueError(
                f"day {index + 1} of the history has {len(counts)} buckets, expected {width} "
                f"(1 for now + {settings.buckets_ahead} ahead)"
            )
    days = [list(c) for c in counts_by_day if sum(c) > 0]
    if not days:
        return Forecast(0.0, 0.0, 0, False, "no history")
    per_bucket = [statistics.median(day[i] for day in days) for i in range(width)]
    now_count, ahead_count = per_bucket[0], max(per_bucket[1:])
    rate_now = now_count / settings.bucket_s
    rate_ahead = ahead_count / settings.bucket_s
    if len(days) < settings.min_days:
        return Forecast(
            rate_now,
            rate_ahead,
            len(days),
            False,
            f"{len(days)} days of history, {settings.min_days} needed",
        )
    allowed = settings.tolerance * now_count + chance(now_count)
    seen = observed_rate * settings.bucket_s
    if abs(seen - now_count) > allowed:
        return Forecast(
            rate_now,
            rate_ahead,
            len(days),
            False,
            f"{seen:.0f} arrivals a bucket now, the last {len(days)} days had {now_count:.0f}",
        )
    return Forecast(
        rate_now,
        rate_ahead,
        len(days),
        True,
        f"{now_count:.0f} then up to {ahead_count:.0f} arrivals a bucket within "
        f"{settings.lead_s:.0f} s on the last {len(days)} days",
        rising=ahead_count - now_count > chance(now_count),
    )


def chance(count: float) -> float:
    """How far a Poisson count of about this size strays by chance alone: three standard
    deviations (of at least a count of 1). Beyond it, the load changed."""
    return 3.0 * math.sqrt(max(count, 1.0))


def day_offsets(settings: ForecastSettings) -> list[float]:
    """Seconds back to the same time of day on each past day read."""
    return [d * DAY_S for d in range(1, settings.days + 1)]


def history_counts(intervals: Sequence[dict[str, Any]], buckets: int) -> list[float]:
    """Runs per bucket from Prefect's run history (`POST /flow_runs/history`: one entry per
    interval, its runs counted by state), padded to `buckets` (the server stops at the
    end it was asked for)."""
    counts = [
        float(sum(int(s.get("count_runs", 0)) for s in i.get("states", []))) for i in intervals
    ]
    return (counts + [0.0] * buckets)[:buckets]

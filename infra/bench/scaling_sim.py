"""A discrete-event simulation that replays request traces through a scaler.

Requests arrive, wait in a FIFO queue (the work pool), and are served one per slot for a
fixed service time. Hosts take `host_start_s` from launch to their first request, are paid
for from launch to termination, and are never terminated while serving (scale-in
protection): a host chosen for scale-in drains first. Every `interval_s` of the scaler it
sees the queue, the running count and the ready hosts, as the live autoscaler does, and
sets the size. The scaler is this project's policy or one of the peers users would pick
instead (`peer_policies.py`); all run on the same arrivals.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from img2img.scaling import ScalingSettings
from img2img.timing import percentile
from infra.bench.peer_policies import Img2ImgPolicy, Scaler, View

RATE_WINDOW_S = 60.0


@dataclass(frozen=True)
class Trace:
    name: str
    duration_s: float
    rate: Callable[[float], float]  # requests per second at time t
    description: str


def _lyrebird(t: float) -> float:
    return 300.0 if t < 1200 else 0.0  # 18,000 requests a minute for 20 minutes


def _spike(t: float) -> float:
    return 80.0 if 300 <= t < 900 else 0.0  # a campaign from zero: 10 minutes at 80/s


def _steady(t: float) -> float:
    return 40.0 if t < 1800 else 0.0


def _diurnal(t: float) -> float:
    # One day: a night trough near 2/s, an evening peak near 60/s.
    hours = t / 3600.0
    return max(0.0, 31.0 - 29.0 * math.cos(2 * math.pi * (hours - 3.0) / 24.0))


TRACES: dict[str, Trace] = {
    "steady": Trace("steady", 1800 + 600, _steady, "40 req/s for 30 min, then idle"),
    "spike": Trace("spike", 1500, _spike, "idle 5 min, 80 req/s for 10 min, idle"),
    "diurnal": Trace("diurnal", 24 * 3600, _diurnal, "a day curve, 2 to 60 req/s"),
    "lyrebird": Trace(
        "lyrebird",
        1200 + 600,
        _lyrebird,
        "18,000 req/min for 20 min from zero (Lyrebird's load test)",
    ),
}


@dataclass(eq=False)
class _Host:
    ready_at: float
    launched_at: float
    busy: int = 0
    served: int = 0
    draining: bool = False
    available: bool = False  # ready, not draining, with a free slot, and listed as such
    terminated_at: float | None = None


@dataclass
class SimResult:
    trace: str
    requests: int
    waits: list[float] = field(default_factory=list)
    host_seconds: float = 0.0
    service_seconds: float = 0.0
    scale_events: int = 0
    cold_start_to_first_result_s: float | None = None
    max_hosts_seen: int = 0
    protected_scale_ins: int = 0  # hosts asked to go while serving: drained, not killed
    idle_launches: int = 0  # hosts launched that served no request before they went
    policy: str = "img2img"
    # (time, arrivals per second, hosts, p95 wait of the requests served) per sample period
    timeline: list[tuple[float, float, int, float]] = field(default_factory=list)

    def summary(
        self, host_start_s: float, slots_per_host: int, price_per_hour: float = 0.0
    ) -> dict[str, Any]:
        min_hours = self.service_seconds / slots_per_host / 3600.0
        return {
            "trace": self.trace,
            "policy": self.policy,
            "requests": self.requests,
            "p50_wait_s": round(percentile(self.waits, 50), 2),
            "p95_wait_s": round(percentile(self.waits, 95), 2),
            "p99_wait_s": round(percentile(self.waits, 99), 2),
            "host_start_s": host_start_s,
            "host_hours": round(self.host_seconds / 3600.0, 2),
            "min_host_hours": round(min_hours, 2),
            "host_hours_ratio": round(self.host_seconds / 3600.0 / min_hours, 3)
            if min_hours
            else None,
            "cost_usd": round(self.host_seconds / 3600.0 * price_per_hour, 2),
            "cost_per_1k_images_usd": round(
                self.host_seconds / 3600.0 * price_per_hour / self.requests * 1000, 4
            )
            if self.requests
            else None,
            "scale_events": self.scale_events,
            "idle_launches": self.idle_launches,
            "max_hosts": self.max_hosts_seen,
            "cold_start_to_first_result_s": None
            if self.cold_start_to_first_result_s is None
            else round(self.cold_start_to_first_result_s, 1),
        }


def arrivals(trace: Trace, seed: int) -> list[float]:
    """Poisson arrivals following `trace.rate`, second by second."""
    rng = random.Random(seed)
    times: list[float] = []
    for second in range(int(trace.duration_s)):
        rate = trace.rate(second)
        if rate <= 0:
            continue
        t = float(second)
        while True:
            t += rng.expovariate(rate)
            if t >= second + 1:
                break
            times.append(t)
    return times


def simulate(
    trace: Trace,
    policy: Scaler | ScalingSettings,
    service_s: float,
    host_start_s: float,
    seed: int = 7,
    slots_per_host: int | None = None,
    sample_s: float = 0.0,
    arrivals_at: list[float] | None = None,
) -> SimResult:
    """Replay `trace` through `policy` (a `ScalingSettings` runs this project's policy).

    Args:
        slots_per_host: requests a host serves at once (default: the settings' value).
        sample_s: record a timeline point every this many seconds (0: none), for charts.
        arrivals_at: the arrival times, when the caller reuses them across scalers.
    """
    scaler: Scaler
    if isinstance(policy, ScalingSettings):
        slots = slots_per_host or policy.slots_per_host
        scaler = Img2ImgPolicy(policy)
    else:
        slots = slots_per_host or 1
        scaler = policy
    if arrivals_at is None:
        arrivals_at = arrivals(trace, seed)
    result = SimResult(trace=trace.name, requests=len(arrivals_at), policy=scaler.name)
    events: list[tuple[float, int, str, Any]] = []  # (time, order, kind, payload)
    order = 0
    interval_s = scaler.interval_s

    def push(t: float, kind: str, payload: Any = None) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (t, order, kind, payload))

    for t in arrivals_at:
        push(t, "arrive")
    end = trace.duration_s + 6 * 3600  # room to drain and scale to zero
    push(0.0, "tick")
    if sample_s > 0:
        push(sample_s, "sample")
    sample_waits: list[float] = []
    sample_arrivals = 0

    live: set[_Host] = set()
    available: list[_Host] = []  # hosts with a free slot (may hold stale entries)
    queue: deque[float] = deque()
    desired = 0
    running = 0
    cold_first: float | None = None  # arrival time of the first request after zero hosts
    done = 0
    arrived_since_tick = 0
    rate_window: deque[tuple[float, int]] = deque()  # (tick time, arrivals since the last)

    def serve(host: _Host, now: float) -> None:
        nonlocal running
        arrived = queue.popleft()
        result.waits.append(now - arrived)
        if sample_s > 0:
            sample_waits.append(now - arrived)
        host.busy += 1
        host.served += 1
        running += 1
        result.service_seconds += service_s
        push(now + service_s, "done", (host, arrived))

    def offer(host: _Host, now: float) -> None:
        """Give a ready host work from the queue; list it if slots stay free."""
        while host.busy < slots and queue:
            serve(host, now)
        if host.busy < slots and not host.available:
            host.available = True
            available.append(host)

    def next_available() -> _Host | None:
        while available:
            host = available[-1]
            if host.terminated_at is None and not host.draining and host.busy < slots:
                return host
            host.available = False
            available.pop()
        return None

    def terminate(host: _Host, now: float) -> None:
        host.terminated_at = now
        live.discard(host)
        result.host_seconds += now - host.launched_at
        if host.served == 0:
            result.idle_launches += 1

    def resize(now: float, target: int) -> None:
        current = [h for h in live if not h.draining]
        if target > len(current):
            for _ in range(target - len(current)):
                host = _Host(ready_at=now + host_start_s, launched_at=now)
                live.add(host)
                push(host.ready_at, "ready", host)
        elif target < len(current):
            # Booting hosts first, then idle ones; busy ones drain (scale-in protection).
            victims = sorted(current, key=lambda h: (h.ready_at <= now, h.busy))
            for host in victims[: len(current) - target]:
                if host.busy:
                    host.draining = True
                    result.protected_scale_ins += 1
                else:
                    terminate(host, now)
        result.max_hosts_seen = max(result.max_hosts_seen, len(live))

    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "arrive":
            if not live and cold_first is None:
                cold_first = now
            queue.append(now)
            arrived_since_tick += 1
            sample_arrivals += 1
            host = next_available()
            if host is not None:
                serve(host, now)
        elif kind == "done":
            host, arrived = payload
            host.busy -= 1
            running -= 1
            done += 1
            if (
                cold_first is not None
                and arrived == cold_first
                and result.cold_start_to_first_result_s is None
            ):
                result.cold_start_to_first_result_s = now - arrived
            if host.draining:
                if host.busy == 0:
                    terminate(host, now)
            else:
                offer(host, now)
        elif kind == "ready":
            host = payload
            if host.terminated_at is None and not host.draining:
                offer(host, now)
        elif kind == "tick":
            # Arrival rate over the last minute, as the live autoscaler measures it.
            rate_window.append((now, arrived_since_tick))
            arrived_since_tick = 0
            while rate_window and rate_window[0][0] <= now - RATE_WINDOW_S:
                rate_window.popleft()
            span = min(now, RATE_WINDOW_S)
            rate = sum(c for _, c in rate_window) / span if span > 0 else None
            view = View(
                now=now,
                queued=len(queue),
                running=running,
                desired=desired,
                ready=sum(1 for h in live if h.ready_at <= now and not h.draining),
                recent_run_s=service_s if done else None,
                arrival_rate=rate,
            )
            wanted = scaler.decide(view)
            if wanted != desired:
                result.scale_events += 1
                desired = wanted
                resize(now, desired)
            if (done < len(arrivals_at) or live) and now < end:
                push(now + interval_s, "tick")
        elif kind == "sample":
            result.timeline.append(
                (
                    now,
                    sample_arrivals / sample_s,
                    len(live),
                    percentile(sample_waits, 95) if sample_waits else 0.0,
                )
            )
            sample_waits, sample_arrivals = [], 0
            if (done < len(arrivals_at) or live) and now < end:
                push(now + sample_s, "sample")
    for host in list(live):
        terminate(host, end)
    return result

"""A discrete-event simulation that replays request traces through a scaler.

Requests arrive, wait in a FIFO queue (the work pool), and are served one per slot for a
fixed service time. With lanes (`lower_at`: the arrivals of the lower lane, bulk), each lane
waits in a queue of its own; a host with a free slot serves the first lane's queue first,
and a first-lane request that finds every slot busy takes one from a bulk request, which
goes back to the head of its queue with the service it has left (the warm worker keeps a
place per slot for the first lane and its slot hands the device over between two calls);
the scaler sees the bulk part of the queue apart (the policy's `lower`).

Hosts take `host_start_s` from launch to their first request, are paid
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

from img2img.config.scaling import ForecastSettings, ScalingSettings
from img2img.observe.timing import percentile
from img2img.scaling.forecast import DAY_S, Forecast, day_offsets, forecast
from infra.bench.peer_policies import Img2ImgPolicy, Scaler, View

RATE_WINDOW_S = 60.0


@dataclass(frozen=True)
class Trace:
    name: str
    duration_s: float
    rate: Callable[[float], float]  # requests per second at time t
    description: str
    # With lanes: the lower lane's (bulk) requests per second at time t; `rate` is then the
    # first lane's (interactive).
    bulk: Callable[[float], float] | None = None


def _lyrebird(t: float) -> float:
    return 300.0 if t < 1200 else 0.0  # 18,000 requests a minute for 20 minutes


def _spike(t: float) -> float:
    return 80.0 if 300 <= t < 900 else 0.0  # a campaign from zero: 10 minutes at 80/s


def _steady(t: float) -> float:
    return 40.0 if t < 1800 else 0.0


def _interactive(t: float) -> float:
    return 5.0 if t < 2400 else 0.0  # people at screens: 5 uploads/s for 40 min


def _catalogue(t: float) -> float:
    return 500.0 if 600 <= t < 660 else 0.0  # a customer's 30,000 product shots in a minute


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

# Two lanes: not in "all" (the one-line traces), run by `img2img bench scaling --trace lanes`.
LANE_TRACES: dict[str, Trace] = {
    "lanes": Trace(
        "lanes",
        2400 + 600,
        _interactive,
        "interactive 5 req/s for 40 min; at 10 min a bulk catalogue of 30,000 in one minute",
        bulk=_catalogue,
    ),
}


@dataclass(frozen=True)
class HostStart:
    """Where a host's start goes, in the parts the real warm worker logs (`start parts` in
    its log): boot, fetching the compiled artifacts from S3, loading them onto the Neuron
    cores, warm-up calls. An EC2 Auto Scaling warm pool keeps `warm_pool` instances
    stopped with the artifacts already on their disks: they resume instead of booting and
    fetch nothing, and cost only their disks while stopped.

    The defaults are estimates for an inf2.48xlarge with the Neuron DLAMI and SD 1.5 + the
    x4 upscaler compiled (about 4 GB per stage); check them against a real host's log.
    """

    boot_s: float = 40.0  # launch → user data done (DLAMI)
    artifact_gb: float = 8.0  # both stages' compiled parts
    s3_gb_per_s: float = 0.5  # S3 → instance
    load_s: float = 24.0  # Neuron runtime load of both stages
    warmup_s: float = 10.0  # first calls at the compiled shapes
    warm_pool: int = 0  # stopped instances kept ready (0: no warm pool)
    resume_s: float = 20.0  # a stopped instance → running, its disk already warm
    disk_gb: float = 200.0  # each instance's EBS volume (gp3)
    disk_usd_per_gb_month: float = 0.08  # gp3, us-east-1

    @property
    def fetch_s(self) -> float:
        return self.artifact_gb / self.s3_gb_per_s

    @property
    def cold_s(self) -> float:
        return self.boot_s + self.fetch_s + self.load_s + self.warmup_s

    @property
    def warm_s(self) -> float:
        return self.resume_s + self.load_s + self.warmup_s

    @property
    def stopped_usd_per_hour(self) -> float:
        return self.disk_gb * self.disk_usd_per_gb_month / 730.0

    def parts(self) -> dict[str, float]:
        return {
            "boot_s": self.boot_s,
            "fetch_s": round(self.fetch_s, 1),
            "load_s": self.load_s,
            "warmup_s": self.warmup_s,
            "cold_s": round(self.cold_s, 1),
            "warm_s": round(self.warm_s, 1),
        }


@dataclass(eq=False)
class _Host:
    ready_at: float
    launched_at: float
    busy: int = 0
    # With lanes: the lower lane's requests in service, token → (arrival, end of service).
    bulk: dict[int, tuple[float, float]] = field(default_factory=dict)
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
    # (time, hosts asked for) at each change: what a pool after this one sees of it.
    desired_log: list[tuple[float, int]] = field(default_factory=list)
    protected_scale_ins: int = 0  # hosts asked to go while serving: drained, not killed
    idle_launches: int = 0  # hosts launched that served no request before they went
    policy: str = "img2img"
    warm_pool: int = 0
    warm_starts: int = 0  # hosts that came from the warm pool
    stopped_seconds: float = 0.0  # instance-seconds spent stopped in the warm pool
    refill_seconds: float = 0.0  # running time of replacements booting into the pool
    stopped_usd_per_hour: float = 0.0
    # (time, arrivals per second, hosts, p95 wait of the requests served) per sample period
    timeline: list[tuple[float, float, int, float]] = field(default_factory=list)
    # With lanes: the waits of the lower lane's requests (`waits` holds every request's).
    bulk_waits: list[float] = field(default_factory=list)
    first_waits: list[float] = field(default_factory=list)
    first_arrived: list[float] = field(default_factory=list)  # beside `first_waits`
    bulk_started: list[float] = field(default_factory=list)  # each bulk request's first start

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
            "cost_usd": round(self.cost(price_per_hour), 2),
            "cost_per_1k_images_usd": round(self.cost(price_per_hour) / self.requests * 1000, 4)
            if self.requests
            else None,
            "warm_pool": self.warm_pool,
            "warm_starts": self.warm_starts,
            "scale_events": self.scale_events,
            "idle_launches": self.idle_launches,
            "max_hosts": self.max_hosts_seen,
            "cold_start_to_first_result_s": None
            if self.cold_start_to_first_result_s is None
            else round(self.cold_start_to_first_result_s, 1),
        }

    def cost(self, price_per_hour: float) -> float:
        """Running instances at `price_per_hour`, stopped warm-pool instances at their
        disks' price."""
        running = self.host_seconds / 3600.0 * price_per_hour
        return running + self.stopped_seconds / 3600.0 * self.stopped_usd_per_hour


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 50:  # the normal approximation, close enough at this size
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


@dataclass(frozen=True)
class PastDays:
    """The pool's history for the daily forecast: the same trace on each past day (a day
    curve repeats; a shorter trace happens at the same time each day), with fresh Poisson
    counts per bucket, as Prefect's run history would return them."""

    trace: Trace
    settings: ForecastSettings
    seed: int

    def _rate(self, t: float) -> float:
        of_day = t % DAY_S
        return self.trace.rate(of_day) if of_day < self.trace.duration_s else 0.0

    def counts(self, now: float) -> list[list[float]]:
        """Per past day, the arrivals in the bucket that ends at this time of day, then in
        each bucket of the lead (as the live autoscaler asks Prefect's run history)."""
        width = self.settings.bucket_s
        rng = random.Random(
            self.seed * 1_000_003 + int(now)
            # a simulation's draws, not security (bandit B311)
        )  # nosec B311

        def count(start: float) -> float:
            return float(_poisson(rng, sum(self._rate(start + i) for i in range(int(width)))))

        return [
            [count(now - back - width + b * width) for b in range(1 + self.settings.buckets_ahead)]
            for back in day_offsets(self.settings)
        ]

    def at(self, now: float, observed_rate: float) -> Forecast:
        return forecast(self.settings, self.counts(now), observed_rate)


def arrivals(
    trace: Trace, seed: int, rate_of: Callable[[float], float] | None = None
) -> list[float]:
    """Poisson arrivals following `trace.rate` (or `rate_of`), second by second."""
    # a simulation's draws, not security (bandit B311)
    rng = random.Random(seed)  # nosec B311
    times: list[float] = []
    for second in range(int(trace.duration_s)):
        rate = (rate_of or trace.rate)(second)
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
    starts: HostStart | None = None,
    past: PastDays | None = None,
    upstream: Callable[[float], tuple[int, float]] | None = None,
    lower_at: list[float] | None = None,
    one_line: bool = False,
) -> SimResult:
    """Replay `trace` through `policy` (a `ScalingSettings` runs this project's policy).

    Args:
        slots_per_host: requests a host serves at once (default: the settings' value).
        sample_s: record a timeline point every this many seconds (0: none), for charts.
        arrivals_at: the arrival times, when the caller reuses them across scalers.
        starts: the start model with its parts and warm pool (None: every host starts in
            `host_start_s`, no warm pool).
        past: the pool's past days, for a scaler that forecasts (None: no history).
        upstream: for the second pool of a split topology, the requests in the first pool
            at a time and their arrival rate there (None: this pool is the first).
        lower_at: the arrival times of the lower lane (bulk), beside `arrivals_at` (the
            first lane's); None: one lane.
        one_line: the lanes' requests in one FIFO queue, seen as one by the scaler (what the
            same arrivals get without lanes); their waits are still told apart.
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
    bulk_at = lower_at or []
    laned = lower_at is not None and not one_line
    result = SimResult(
        trace=trace.name, requests=len(arrivals_at) + len(bulk_at), policy=scaler.name
    )
    cold_s = starts.cold_s if starts is not None else host_start_s
    pool_size = starts.warm_pool if starts is not None else 0
    result.warm_pool = pool_size
    result.stopped_usd_per_hour = starts.stopped_usd_per_hour if starts is not None else 0.0
    pool = pool_size  # stopped instances ready to resume
    refilling = 0  # instances being launched into the pool
    pool_since = 0.0
    host_model = starts or HostStart()
    events: list[tuple[float, int, str, Any]] = []  # (time, order, kind, payload)
    order = 0
    interval_s = scaler.interval_s
    # A scaler may look more often while it holds no host (a first request waits for it).
    zero_interval_s = getattr(scaler, "zero_interval_s", interval_s)

    def push(t: float, kind: str, payload: Any = None) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (t, order, kind, payload))

    for t in arrivals_at:
        push(t, "arrive", 0)
    for t in bulk_at:
        push(t, "arrive", 1)
    end = trace.duration_s + 6 * 3600  # room to drain and scale to zero
    push(0.0, "tick")
    if sample_s > 0:
        push(sample_s, "sample")
    sample_waits: list[float] = []
    sample_arrivals = 0

    # Launch order, not a set: a set iterates by memory address, and ties in the scale-in
    # order then made two runs of the same seed differ by a few cents.
    live: dict[_Host, None] = {}
    available: list[_Host] = []  # hosts with a free slot (may hold stale entries)
    # The first lane's queue (every request's in one line), the lower lane's: (arrival,
    # lane, service left: None for a request not yet started).
    queue: deque[tuple[float, int, float | None]] = deque()
    bulk_queue: deque[tuple[float, int, float | None]] = deque()
    bulk_running = 0
    bulk_window: deque[float] = deque()
    bulk_since_tick = 0
    preempted: set[int] = set()  # tokens of services cut short (their "done" is void)
    tokens = iter(range(1, 1 << 62))
    desired = 0
    running = 0
    cold_first: float | None = None  # arrival time of the first request after zero hosts
    done = 0
    window_times: deque[float] = deque()  # arrivals within the rate window
    arrived_since_tick, last_tick = 0, 0.0  # arrivals since the previous decision

    def serve(host: _Host, now: float, line: deque[tuple[float, int, float | None]]) -> None:
        nonlocal running, bulk_running
        arrived, lane, left = line.popleft()
        if left is None:  # its first start: the wait ends (a resumed one has waited)
            result.waits.append(now - arrived)
            (result.bulk_waits if lane else result.first_waits).append(now - arrived)
            if lane:
                result.bulk_started.append(now)
            else:
                result.first_arrived.append(arrived)
            if sample_s > 0:
                sample_waits.append(now - arrived)
            host.served += 1
        took = service_s if left is None else left
        host.busy += 1
        running += 1
        token = next(tokens)
        if lane and laned:
            host.bulk[token] = (arrived, now + took)
            bulk_running += 1
        result.service_seconds += took
        push(now + took, "done", (host, arrived, lane, token))

    def preempt(now: float) -> _Host | None:
        """A ready host serving a bulk request, that request stopped and put back at the
        head of its queue with the service it has left (lanes only)."""
        nonlocal running, bulk_running
        host = next((h for h in live if h.bulk and h.ready_at <= now and not h.draining), None)
        if host is None:
            return None
        token, (arrived, end) = next(iter(host.bulk.items()))
        del host.bulk[token]
        preempted.add(token)
        host.busy -= 1
        running -= 1
        bulk_running -= 1
        result.service_seconds -= end - now
        bulk_queue.appendleft((arrived, 1, end - now))
        return host

    def offer(host: _Host, now: float) -> None:
        """Give a ready host work from the queues (the first lane's first); list it if slots
        stay free."""
        while host.busy < slots and (queue or bulk_queue):
            serve(host, now, queue if queue else bulk_queue)
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

    def pool_changes(now: float, delta: int) -> None:
        nonlocal pool, pool_since
        result.stopped_seconds += pool * (now - pool_since)
        pool, pool_since = pool + delta, now

    def terminate(host: _Host, now: float) -> None:
        nonlocal refilling
        host.terminated_at = now
        live.pop(host, None)
        result.host_seconds += now - host.launched_at
        if host.served == 0:
            result.idle_launches += 1
        if pool + refilling < pool_size:
            pool_changes(now, +1)  # the warm pool takes it back, stopped (reuse on scale-in)

    def resize(now: float, target: int) -> None:
        nonlocal refilling
        current = [h for h in live if not h.draining]
        if target > len(current):
            for _ in range(target - len(current)):
                start = cold_s
                if pool > 0:
                    pool_changes(now, -1)
                    start = host_model.warm_s
                    result.warm_starts += 1
                    # The group launches a replacement into the pool: it boots and fetches
                    # the artifacts (paid as running), then stops.
                    refilling += 1
                    prep = host_model.boot_s + host_model.fetch_s
                    result.host_seconds += prep
                    result.refill_seconds += prep
                    push(now + prep, "refilled")
                new = _Host(ready_at=now + start, launched_at=now)
                live[new] = None
                push(new.ready_at, "ready", new)
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
            window_times.append(now)
            arrived_since_tick += 1
            sample_arrivals += 1
            if payload and laned:
                bulk_queue.append((now, payload, None))
                bulk_window.append(now)
                bulk_since_tick += 1
                host = next_available()
                if host is not None:
                    serve(host, now, bulk_queue)
            else:
                queue.append((now, payload, None))
                host = next_available()
                if host is None and laned:
                    host = preempt(now)
                if host is not None:
                    serve(host, now, queue)
        elif kind == "done":
            host, arrived, lane, token = payload
            if token in preempted:
                preempted.discard(token)
                continue
            host.busy -= 1
            running -= 1
            if lane and laned:
                del host.bulk[token]
                bulk_running -= 1
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
        elif kind == "refilled":
            refilling -= 1
            if pool + refilling < pool_size:
                pool_changes(now, +1)
        elif kind == "ready":
            host = payload
            if host.terminated_at is None and not host.draining:
                offer(host, now)
        elif kind == "tick":
            # Arrivals over the last minute and since the previous decision, as the live
            # autoscaler counts them (runs created in the window ÷ its length).
            while window_times and window_times[0] <= now - RATE_WINDOW_S:
                window_times.popleft()
            while bulk_window and bulk_window[0] <= now - RATE_WINDOW_S:
                bulk_window.popleft()
            rate = len(window_times) / RATE_WINDOW_S if now > 0 else None
            since = now - last_tick if now > 0 else None
            recent = arrived_since_tick / since if since else None
            bulk_recent = bulk_since_tick / since if since else None
            arrived_since_tick, bulk_since_tick, last_tick = 0, 0, now
            ahead, ahead_rate = upstream(now) if upstream is not None else (0, None)
            view = View(
                now=now,
                queued=len(queue) + len(bulk_queue),
                running=running,
                desired=desired,
                ready=sum(1 for h in live if h.ready_at <= now and not h.draining),
                warm=pool,
                recent_run_s=service_s if done else None,
                arrival_rate=rate,
                recent_arrival_rate=recent,
                recent_window_s=since,
                forecast=past.at(now, recent or 0.0) if past is not None else None,
                upstream=ahead,
                upstream_rate=ahead_rate,
                lower=(
                    len(bulk_queue),
                    bulk_running,
                    len(bulk_window) / RATE_WINDOW_S,
                    bulk_recent,
                )
                if laned
                else None,
            )
            wanted = scaler.decide(view)
            if wanted != desired:
                result.scale_events += 1
                result.desired_log.append((now, wanted))
                desired = wanted
                resize(now, desired)
            if (done < result.requests or live) and now < end:
                push(now + (zero_interval_s if desired == 0 else interval_s), "tick")
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
            if (done < result.requests or live) and now < end:
                push(now + sample_s, "sample")
    for leftover in list(live):
        terminate(leftover, end)
    pool_changes(max(trace.duration_s, pool_since), 0)
    return result

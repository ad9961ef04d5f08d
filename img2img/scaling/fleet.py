"""The fleet's figures over a rolling window (pure, no I/O).

Fed by the control host: each finished batch's `img2img.batch.*` event (counts and
per-image timings) and each autoscaler tick's hosts and runs. `FleetWindow.sample` turns
them into one `FleetSample`: throughput, end-to-end percentiles, queue, hosts, duty cycle
and cost per image.

Cost per image = the host's hourly price × the host-hours paid in the window ÷ the images
that got an outcome in it. With lanes or tenants, the same figures by lane and for the
busiest tenants (the rest as one group, `OTHER`), and the window's host cost attributed to
each by its images' device time (idle and start-up time shared the same way), so the
shares add up to the host cost. Host-hours count every host the pool holds (booting, idle or
busy): that is what the bill counts. A published Stable Diffusion on Inf2 case study
computed $0.000425 per image offline; here it is measured live.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from img2img.observe.timing import percentile

# A published reference: AWS's case study of SD on Inf2 (for Monks), computed offline.
PUBLISHED_COST_PER_IMAGE_USD = 0.000425
# The group of the tenants not shown by name (beyond `tenants.top`); a tenant's name cannot
# start with '(' (`img2img.config.lanes.TENANT_NAME`), so it never clashes with one.
OTHER = "(other)"
# Slot recycles in the window that the view calls out (the alert's threshold too): a slot
# with flat memory is never recycled for memory, so a few of them mean a leak came back.
FREQUENT_RECYCLES = 3


@dataclass(frozen=True)
class PlacedDigest:
    """One (lane, tenant) group of a batch (`report.placed_groups`)."""

    lane: str | None
    tenant: str | None
    completed: int
    failed: int
    handed_off: int
    e2e_ms: tuple[float, ...]
    device_ms: float

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> PlacedDigest:
        lane, tenant = payload.get("lane"), payload.get("tenant")
        return cls(
            lane=str(lane) if lane is not None else None,
            tenant=str(tenant) if tenant is not None else None,
            completed=int(payload.get("completed", 0)),
            failed=int(payload.get("failed", 0)),
            handed_off=int(payload.get("handed_off", 0)),
            e2e_ms=tuple(float(v) for v in payload.get("e2e_ms", ())),
            device_ms=float(payload.get("device_ms", 0.0)),
        )

    @property
    def images(self) -> int:
        return self.completed + self.failed + self.handed_off


@dataclass(frozen=True)
class BatchDigest:
    """What the fleet needs from one batch event."""

    at: float  # epoch seconds the batch finished
    completed: int
    failed: int
    e2e_ms: tuple[float, ...] = ()
    stage_ms: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    failed_at: Mapping[str, int] = field(default_factory=dict)
    stale_events: int = 0
    # Split topology: images whose stage 1 this batch did and handed to the stage-2 pool
    # (work done by this pool; their outcome is the other pool's).
    handed_off: int = 0
    groups: tuple[PlacedDigest, ...] = ()  # with lanes or tenants

    @classmethod
    def from_payload(cls, at: float, payload: Mapping[str, Any]) -> BatchDigest:
        """From an `img2img.batch.*` event payload (see report.batch_event); fields it lacks
        count as empty, so an older or hand-made event cannot stop the fleet view."""
        return cls(
            at=at,
            completed=int(payload.get("completed", 0)),
            failed=int(payload.get("failed", 0)),
            e2e_ms=tuple(float(v) for v in payload.get("e2e_ms", ())),
            stage_ms={
                str(k): tuple(float(v) for v in vs)
                for k, vs in (payload.get("stage_ms") or {}).items()
            },
            failed_at={str(k): int(v) for k, v in (payload.get("failed_at") or {}).items()},
            stale_events=int(payload.get("stale_events", 0)),
            handed_off=int(payload.get("handed_off", 0)),
            groups=tuple(
                PlacedDigest.from_payload(g)
                for g in payload.get("groups") or ()
                if isinstance(g, Mapping)
            ),
        )

    @property
    def images(self) -> int:
        """Images this batch's pool finished its part of."""
        return self.completed + self.failed + self.handed_off


@dataclass(frozen=True)
class Share:
    """A lane's or a tenant's part of the fleet over the window."""

    name: str
    images: int
    failed: int
    images_per_min: float
    e2e_p50_s: float | None
    e2e_p95_s: float | None
    device_s: float
    cost_usd: float  # the window's host cost × its share of the device time
    cost_per_image_usd: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class FleetSample:
    at: datetime
    window_s: float  # the span the figures cover (shorter than the window just after start)
    images: int
    failed: int
    images_per_min: float
    e2e_p50_s: float | None
    e2e_p95_s: float | None
    queued_runs: int
    queued_messages: int | None  # uploads waiting in SQS for the dispatcher
    dead_letters: int | None
    hosts: int  # the hosts paid for (the backend's size)
    hosts_online: int | None  # hosts with a worker online
    duty_cycle: float  # busy slots ÷ slots held, time-weighted
    host_hours: float
    cost_usd: float
    cost_per_image_usd: float | None
    price_per_hour: float
    stale_events: int
    idle_launches: int = 0  # hosts that left without serving a run, in the policy's window
    unhealthy_hosts: int = 0  # hosts whose worker lost every slot, not yet replaced
    slot_recycles: int = 0  # slots replaced by the recycle rule, in the policy's window
    # With lanes or tenants: each lane's part (highest priority first, as the batches name
    # them), the busiest tenants' and the rest's (`OTHER`); empty when both are off.
    lanes: tuple[Share, ...] = ()
    tenants: tuple[Share, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("at", "lanes", "tenants")}
        out["at"] = self.at.isoformat(timespec="seconds")
        out["lanes"] = [s.as_dict() for s in self.lanes]
        out["tenants"] = [s.as_dict() for s in self.tenants]
        return out


@dataclass
class _Interval:
    start: float
    end: float
    hosts: int
    running: int


class FleetWindow:
    """Batches and host samples of the last `window_s` seconds."""

    def __init__(
        self,
        window_s: float,
        price_per_hour: float,
        slots_per_host: int,
        top_tenants: int = 10,
        lane_order: tuple[str, ...] = (),
    ) -> None:
        self.window_s = window_s
        self.top_tenants = top_tenants
        self.lane_order = lane_order
        self.price_per_hour = price_per_hour
        self.slots_per_host = slots_per_host
        self.batches: deque[BatchDigest] = deque()
        self.intervals: deque[_Interval] = deque()
        self._last: tuple[float, int, int] | None = None  # (at, hosts, running runs)
        self.first_at: float | None = None
        self.queued_runs = 0
        self.queued_messages: int | None = None
        self.dead_letters: int | None = None
        self.hosts_online: int | None = None
        self.idle_launches = 0
        self.unhealthy_hosts = 0
        self.slot_recycles = 0

    def add_batch(self, batch: BatchDigest) -> None:
        self.batches.append(batch)

    def add_hosts(self, at: float, hosts: int, running_runs: int, queued_runs: int) -> None:
        """One tick of the autoscaler: the pool's size and runs now. The size holds until
        the next tick (a step function)."""
        if self.first_at is None:
            self.first_at = at
        if self._last is not None and at > self._last[0]:
            t, h, r = self._last
            self.intervals.append(_Interval(t, at, h, r))
        self._last = (at, hosts, running_runs)
        self.queued_runs = queued_runs

    def sample(self, now: float) -> FleetSample:
        start = now - self.window_s
        if self.first_at is not None:
            start = max(start, self.first_at)
        self._trim(now - self.window_s)
        if self._last is not None and now > self._last[0]:
            t, h, r = self._last
            open_interval = [_Interval(t, now, h, r)]
        else:
            open_interval = []
        host_s = busy_slot_s = 0.0
        for iv in [*self.intervals, *open_interval]:
            overlap = min(iv.end, now) - max(iv.start, start)
            if overlap > 0:
                host_s += iv.hosts * overlap
                busy_slot_s += min(iv.running, iv.hosts * self.slots_per_host) * overlap
        batches = [b for b in self.batches if start <= b.at <= now]
        images = sum(b.images for b in batches)
        e2e = [v / 1000.0 for b in batches for v in b.e2e_ms]
        span = max(now - start, 1.0)
        host_hours = host_s / 3600.0
        cost = host_hours * self.price_per_hour
        slots_s = host_s * self.slots_per_host
        return FleetSample(
            at=datetime.fromtimestamp(now, UTC),
            window_s=round(span, 1),
            images=images,
            failed=sum(b.failed for b in batches),
            images_per_min=images * 60.0 / span,
            e2e_p50_s=percentile(e2e, 50) if e2e else None,
            e2e_p95_s=percentile(e2e, 95) if e2e else None,
            queued_runs=self.queued_runs,
            queued_messages=self.queued_messages,
            dead_letters=self.dead_letters,
            hosts=self._last[1] if self._last is not None else 0,
            hosts_online=self.hosts_online,
            duty_cycle=busy_slot_s / slots_s if slots_s > 0 else 0.0,
            host_hours=host_hours,
            cost_usd=cost,
            cost_per_image_usd=cost / images if images else None,
            price_per_hour=self.price_per_hour,
            stale_events=sum(b.stale_events for b in batches),
            idle_launches=self.idle_launches,
            unhealthy_hosts=self.unhealthy_hosts,
            slot_recycles=self.slot_recycles,
            lanes=self._shares(batches, "lane", span, cost),
            tenants=self._shares(batches, "tenant", span, cost),
        )

    def _shares(
        self, batches: list[BatchDigest], by: str, span: float, cost: float
    ) -> tuple[Share, ...]:
        """Each lane's (`by` "lane") or tenant's part of the window's batches, the window's
        host `cost` attributed by device time (by images where no image used the device);
        tenants beyond `top_tenants` (the busiest by images) as one `OTHER` share."""
        groups: dict[str, list[PlacedDigest]] = {}
        for batch in batches:
            for group in batch.groups:
                name = group.lane if by == "lane" else group.tenant
                if name is not None:
                    groups.setdefault(name, []).append(group)
        if not groups:
            return ()
        images = {name: sum(g.images for g in gs) for name, gs in groups.items()}
        if by == "lane":
            rank = {name: i for i, name in enumerate(self.lane_order)}
            names = sorted(groups, key=lambda n: (rank.get(n, len(rank)), n))
            merged = {name: groups[name] for name in names}
        else:
            busiest = sorted(groups, key=lambda n: (-images[n], n))
            merged = {name: groups[name] for name in busiest[: self.top_tenants]}
            rest = [g for name in busiest[self.top_tenants :] for g in groups[name]]
            if rest:
                merged[OTHER] = rest
        device = {name: sum(g.device_ms for g in gs) / 1000.0 for name, gs in merged.items()}
        total_device = sum(device.values())
        total_images = sum(sum(g.images for g in gs) for gs in merged.values())
        shares = []
        for name, gs in merged.items():
            done = sum(g.images for g in gs)
            if total_device > 0:
                part = device[name] / total_device
            else:
                part = done / total_images if total_images else 0.0
            e2e = [v / 1000.0 for g in gs for v in g.e2e_ms]
            shares.append(
                Share(
                    name=name,
                    images=done,
                    failed=sum(g.failed for g in gs),
                    images_per_min=done * 60.0 / span,
                    e2e_p50_s=percentile(e2e, 50) if e2e else None,
                    e2e_p95_s=percentile(e2e, 95) if e2e else None,
                    device_s=device[name],
                    cost_usd=cost * part,
                    cost_per_image_usd=cost * part / done if done else None,
                )
            )
        return tuple(shares)

    def _trim(self, before: float) -> None:
        while self.batches and self.batches[0].at < before:
            self.batches.popleft()
        while self.intervals and self.intervals[0].end < before:
            self.intervals.popleft()


def markdown(sample: FleetSample, pool: str, instance: str, chart: str | None) -> str:
    """The fleet artifact: the figures an operator asks for first, then the chart."""

    def money(v: float | None) -> str:
        return f"${v:.6f}" if v is not None else "– (no images)"

    def secs(v: float | None) -> str:
        return f"{v:.1f} s" if v is not None else "–"

    problems = []
    if sample.failed:
        problems.append(f"{sample.failed} image(s) failed")
    if sample.dead_letters:
        problems.append(f"{sample.dead_letters} message(s) in the dead-letter queue")
    if sample.hosts and sample.hosts_online == 0:
        problems.append("hosts wanted but no worker online")
    if sample.unhealthy_hosts:
        problems.append(f"{sample.unhealthy_hosts} unhealthy host(s) being replaced")
    if sample.idle_launches > 1:
        problems.append(f"{sample.idle_launches} hosts launched that served no run")
    if sample.slot_recycles >= FREQUENT_RECYCLES:
        problems.append(
            f"{sample.slot_recycles} slots recycled lately (their memory grew past "
            "worker.recycle_growth_mb, or recycle_after_runs)"
        )
    health = "healthy" if not problems else "ATTENTION: " + "; ".join(problems)
    minutes = sample.window_s / 60.0
    rows = [
        ("throughput", f"**{sample.images_per_min:.1f} images/min** ({sample.images} images)"),
        ("upload → result p50 / p95", f"{secs(sample.e2e_p50_s)} / {secs(sample.e2e_p95_s)}"),
        ("queued runs / messages", f"{sample.queued_runs} / {_opt(sample.queued_messages)}"),
        ("hosts paid / online", f"{sample.hosts} / {_opt(sample.hosts_online)}"),
        ("idle launches / unhealthy hosts", f"{sample.idle_launches} / {sample.unhealthy_hosts}"),
        ("slot recycles (lately)", str(sample.slot_recycles)),
        ("duty cycle (busy slots ÷ slots)", f"{100 * sample.duty_cycle:.0f}%"),
        ("cost per image", f"**{money(sample.cost_per_image_usd)}**"),
        ("host cost", f"{sample.host_hours:.3f} host-h × ${sample.price_per_hour:.4f}/h"),
        (
            "price basis",
            f"{instance} on-demand (a published Inf2 case study: "
            f"${PUBLISHED_COST_PER_IMAGE_USD:.6f}/image)",
        ),
        ("failed images", str(sample.failed)),
        ("dead-letter messages", _opt(sample.dead_letters)),
    ]
    lines = [
        f"## img2img fleet, pool `{pool}`: {health}",
        "",
        f"Last {minutes:.0f} min, at {sample.at:%Y-%m-%d %H:%M:%S} UTC.",
        "",
        "| figure | value |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in rows),
    ]
    for title, shares in (("By lane", sample.lanes), ("Busiest tenants", sample.tenants)):
        if shares:
            lines += ["", *share_table(title, shares)]
    if sample.stale_events:
        lines += [
            "",
            f"{sample.stale_events} image(s) had an implausible S3 event time (replayed or "
            "hand-made messages): left out of the latency figures.",
        ]
    if chart is not None:
        lines += ["", f"![the fleet over time]({chart})"]
    return "\n".join(lines)


def share_table(title: str, shares: tuple[Share, ...]) -> list[str]:
    """A markdown table of lanes' or tenants' parts (cost by device time)."""

    def secs(v: float | None) -> str:
        return f"{v:.1f}" if v is not None else "–"

    rows = [
        f"| {s.name} | {s.images_per_min:.1f} | {secs(s.e2e_p50_s)} / {secs(s.e2e_p95_s)} | "
        f"{s.device_s:.1f} | ${s.cost_usd:.4f} | "
        f"{f'${s.cost_per_image_usd:.6f}' if s.cost_per_image_usd is not None else '–'} |"
        for s in shares
    ]
    return [
        f"### {title}",
        "",
        "| | images/min | p50 / p95 s | device s | host cost (by device time) | per image |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
    ]


def _opt(v: int | None) -> str:
    return "–" if v is None else str(v)

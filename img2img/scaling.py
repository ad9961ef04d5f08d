"""The scaling policy of the Inf2 work pool, as a pure function of what it observes.

Target tracking on a usage rate, as Monks did on SageMaker (requests ÷ capacity, target 0.75,
scale-out cooldown 60 s, scale-in 120 s, scale to zero), but fed straight from the work
pool's queue, so it reacts in seconds instead of after CloudWatch's metric delay:

    keep_up = arrival rate × run time    (Little's law; the running runs when no rate is known)
    backlog = queued runs × run time ÷ drain target
    needed  = ceil(max(keep_up ÷ (slots per host × target utilisation),
                       (keep_up + backlog) ÷ slots per host))

`keep_up` is the slots that keep pace with arrivals, with the target's headroom for their
randomness; `backlog` is the slots that clear the queued runs (scheduled, late, pending)
within the drain target, without headroom: that work is already known, and it uses the
headroom slots first (idle while arrivals stay at their mean), so hosts are added for it
only where the headroom does not clear it in time. Counting a backlog
by the time it takes rather than one slot per queued run keeps a burst that queued while
hosts were starting from launching ten times the hosts it needs; counting arrivals lets the
first scale-out from zero be the right size.

- Leaving zero: as soon as demand reaches the activation threshold, no cooldown.
- Scaling out: to `needed` at once (the backlog counts in demand, so one step drains it),
  then not again for the scale-out cooldown.
- Scaling in: only to the highest arrival need seen during the last scale-in cooldown (a
  stabilisation window, which smooths the noisy part) plus the backlog need now (observed
  directly: a cleared backlog is gone), and not within the scale-in cooldown of any scale
  event; this is what keeps it from flapping under steady or noisy load.
- Going to zero: after `idle_to_zero_s` with no demand at all.
- Always within [min_hosts, max_hosts].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from pydantic import BaseModel, Field, model_validator


class ScalingSettings(BaseModel):
    """Bounds and pace of the autoscaler."""

    min_hosts: int = Field(0, ge=0, le=10_000, description="Fewest hosts (0 scales to zero).")
    max_hosts: int = Field(4, ge=1, le=10_000, description="Most hosts.")
    slots_per_host: int = Field(
        1, ge=1, le=64, description="Runs a host serves at once (its warm worker's slots)."
    )
    target_utilization: float = Field(
        0.75, gt=0.0, le=1.0, description="Demand ÷ capacity the policy steers to."
    )
    scale_out_cooldown_s: float = Field(60.0, ge=0, description="Between two scale-outs.")
    scale_in_cooldown_s: float = Field(
        120.0,
        ge=0,
        description="After any scale event before scaling in; also the "
        "stabilisation window of scale-in.",
    )
    idle_to_zero_s: float = Field(
        120.0, ge=0, description="No demand for this long scales to min_hosts."
    )
    activation_threshold: int = Field(
        1, ge=1, description="Demand that starts the first host from zero, at once."
    )
    drain_target_s: float = Field(
        120.0,
        gt=0,
        le=86_400,
        description="Time within which the backlog should clear (about a host's start time).",
    )
    expected_run_s: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="Run duration assumed until recent runs say otherwise.",
    )
    interval_s: float = Field(15.0, gt=0, le=3600, description="Seconds between decisions.")
    scale_in_tolerance: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Scale in only when the stable need is at least this fraction below the "
        "current size (hysteresis against noise).",
    )

    @model_validator(mode="after")
    def _bounds(self) -> ScalingSettings:
        if self.min_hosts > self.max_hosts:
            raise ValueError(
                f"scaling.min_hosts ({self.min_hosts}) must not exceed scaling.max_hosts "
                f"({self.max_hosts})"
            )
        return self


@dataclass(frozen=True)
class Observation:
    """What the autoscaler saw at `now` (seconds, any monotonic origin)."""

    now: float
    queued: int  # scheduled (late included) and pending runs
    running: int
    current_desired: int
    live_hosts: int = 0  # hosts whose workers answer (informational)
    recent_run_s: float | None = None  # median duration of recent runs, if known
    arrival_rate: float | None = None  # runs created per second lately, if known


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between decisions; start with `PolicyState()`."""

    last_scale_out: float = -math.inf
    last_scale_in: float = -math.inf
    idle_since: float | None = None
    recommendations: tuple[tuple[float, float], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    usage: float  # demand ÷ capacity of the current desired size (inf with none)
    needed: int
    demand: int

    @property
    def changed(self) -> bool:
        return not self.reason.startswith("hold")


def decide(
    settings: ScalingSettings, obs: Observation, state: PolicyState
) -> tuple[Decision, PolicyState]:
    """The new desired host count, why, and the state to pass to the next call."""
    demand = obs.queued + obs.running
    run_s = obs.recent_run_s if obs.recent_run_s else settings.expected_run_s
    backlog_slots = obs.queued * min(1.0, run_s / settings.drain_target_s)
    # Running runs that drain a backlog are not new load: with a known arrival rate they
    # are not counted twice.
    keep_up = obs.arrival_rate * run_s if obs.arrival_rate is not None else float(obs.running)
    # Headroom (the target utilisation) is for the randomness of arrivals; a backlog that is
    # already here is known work and gets exactly the slots that clear it in time.
    keep_hosts = keep_up / (settings.slots_per_host * settings.target_utilization)
    # The backlog may first use the headroom slots, which are idle while arrivals stay at
    # their mean: hosts are added for it only where the headroom does not clear it in time.
    backlog_hosts = max(0.0, (keep_up + backlog_slots) / settings.slots_per_host - keep_hosts)
    needed = (
        _clamp(settings, math.ceil(keep_hosts + backlog_hosts - 1e-9))
        if demand
        else settings.min_hosts
    )
    capacity = obs.current_desired * settings.slots_per_host
    usage = demand / capacity if capacity else (math.inf if demand else 0.0)
    window_start = obs.now - settings.scale_in_cooldown_s
    # The window smooths the noisy part, the arrival rate; the backlog is counted directly.
    recs = (
        *tuple(r for r in state.recommendations if r[0] >= window_start),
        (obs.now, keep_hosts if demand else 0.0),
    )
    idle_since = None if demand else (state.idle_since if state.idle_since is not None else obs.now)
    state = replace(state, recommendations=recs, idle_since=idle_since)
    current = obs.current_desired

    def result(desired: int, reason: str) -> tuple[Decision, PolicyState]:
        new_state = state
        if desired > current:
            new_state = replace(state, last_scale_out=obs.now)
        elif desired < current:
            new_state = replace(state, last_scale_in=obs.now)
        return Decision(desired, reason, usage, needed, demand), new_state

    if current < settings.min_hosts:
        return result(settings.min_hosts, f"raise to min_hosts {settings.min_hosts}")
    if current > settings.max_hosts:
        return result(settings.max_hosts, f"lower to max_hosts {settings.max_hosts}")

    if current == 0:
        if demand >= settings.activation_threshold:
            return result(max(needed, 1), f"activate from zero: demand {demand}")
        return result(0, "hold at zero: no demand")

    if demand == 0:
        idle_for = obs.now - (idle_since if idle_since is not None else obs.now)
        if idle_for >= settings.idle_to_zero_s and current > settings.min_hosts:
            return result(
                settings.min_hosts, f"idle for {idle_for:.0f} s: scale to {settings.min_hosts}"
            )
        return result(current, f"hold: idle for {idle_for:.0f} s")

    if needed > current:
        if obs.now - state.last_scale_out >= settings.scale_out_cooldown_s:
            return result(
                needed,
                f"scale out: {needed} hosts needed, {current} running (demand {demand}: "
                f"{keep_up:.1f} slots to keep up at target {settings.target_utilization:.2f} "
                f"+ {backlog_slots:.1f} to clear the backlog, {settings.slots_per_host} per "
                "host)",
            )
        return result(current, "hold: scale-out cooldown")

    stable = _clamp(settings, math.ceil(max(n for _, n in recs) + backlog_hosts - 1e-9))
    if stable < current and (
        stable <= current * (1 - settings.scale_in_tolerance) or stable == settings.min_hosts
    ):
        since_event = obs.now - max(state.last_scale_out, state.last_scale_in)
        if since_event >= settings.scale_in_cooldown_s:
            return result(
                stable,
                f"scale in: at most {stable} hosts needed over the last "
                f"{settings.scale_in_cooldown_s:.0f} s, {current} running (demand {demand}: "
                f"{keep_up:.1f} slots to keep up at target {settings.target_utilization:.2f} "
                f"+ {backlog_slots:.1f} for the backlog)",
            )
        return result(current, "hold: scale-in cooldown")
    if needed < current:
        return result(
            current,
            f"hold: scale-in window (needed {needed} now, {stable} within "
            f"the last {settings.scale_in_cooldown_s:.0f} s)",
        )
    return result(current, f"hold: usage {usage:.2f}")


def _clamp(settings: ScalingSettings, hosts: int) -> int:
    return max(settings.min_hosts, min(settings.max_hosts, hosts))

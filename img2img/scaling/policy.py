"""The scaling policy of the Inf2 work pool, as a pure function of what it observes.

Target tracking on a usage rate, as AWS's published SageMaker case study for SD on Inf2 does
(requests ÷ capacity, target 0.75, scale-out cooldown 60 s, scale-in 120 s, scale to zero),
but fed straight from the work pool's queue, so it reacts in seconds instead of after
CloudWatch's metric delay:

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
- Not launching in vain: a host is started only if work will be left for it when it is
  ready (`host_start_s`, or `warm_start_s` while the warm pool holds stopped instances):
  the queue and what keeps arriving, less what the hosts there start before then; from
  zero, no more hosts than the queued runs can occupy. Otherwise it would find an empty
  queue, be paid for its start and leave again. Arrivals that keep coming at the rate
  that needs more hosts still scale out at once.
- Going to zero: after `idle_to_zero_s` with no demand at all.
- Never scaling in below the hosts that are running runs (`busy_hosts`): a busy host asked
  to go drains and is paid for all the same, and its runs would count again as demand.
- Leaving zero for queued runs only: runs still running with no host wanted are held by
  hosts on their way out (draining, hung, lost); a new host cannot take them until they
  are released (re-queued), and starting one for them is a launch in vain.
- Backing off after idle launches: a host that left without serving a run was paid for
  nothing; after `idle_launch_limit` of them within `idle_launch_window_s`, no host is
  started for `idle_launch_backoff_s` after the last one, doubled for each one beyond the
  limit (`launch_backoff`), so a demand no new host can serve does not launch hosts for
  ever.
- With a trusted daily forecast (`img2img.scaling.forecast`): the reactive part runs at the
  forecast's target, and the forecast may add hosts ahead of a rise when the reactive part
  holds or scales out; it never keeps hosts the reactive part releases.
- With lanes (`Observation.lower`): the first lane (interactive) is sized on its own, at
  the target, as if alone; all the work together may size the pool only up to
  `lower_lanes_max_hosts` (a cost cap for bulk). The pool is the larger of the two: bulk
  fills what the first lane leaves idle, a bulk backlog alone keeps at most the cap, and an
  interactive rise is never held back by it. Empty lanes still go to zero.
- Always within [min_hosts, max_hosts].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from img2img.config.scaling import ScalingSettings
from img2img.scaling.forecast import Forecast, chance


@dataclass(frozen=True)
class LowerLanes:
    """The part of an observation's runs in lanes below the first (bulk): queued, running,
    and arriving per second over the rate window and since the previous decision."""

    queued: int = 0
    running: int = 0
    arrival_rate: float = 0.0
    recent_arrival_rate: float | None = None


@dataclass(frozen=True)
class Observation:
    """What the autoscaler saw at `now` (seconds, any monotonic origin)."""

    now: float
    queued: int  # scheduled (late included) and pending runs
    running: int
    current_desired: int
    live_hosts: int = 0  # hosts whose workers answer (ready to serve)
    recent_run_s: float | None = None  # median duration of recent runs, if known
    arrival_rate: float | None = None  # runs created per second lately, if known
    recent_arrival_rate: float | None = None  # the same since the previous decision
    recent_window_s: float | None = None  # the time that rate is over (None: interval_s)
    rate_window_s: float = 60.0  # the window `arrival_rate` is counted over
    warm: int = 0  # stopped instances waiting in the warm pool
    forecast: Forecast | None = None  # what the pool's past days say (None: not asked)
    busy_hosts: int | None = None  # hosts running runs now (None: not known)
    # When (on the `now` clock) hosts left without having served a run, oldest first.
    idle_launches: tuple[float, ...] = ()
    # Split topology, the stage-2 pool: runs queued or running in the pool before this one
    # (each becomes a run here), and their arrival rate there: work on its way, seen a
    # stage ahead, so this pool starts its hosts while stage 1 runs, not after.
    upstream: int = 0
    upstream_rate: float | None = None
    # With lanes: the runs above that are in lanes below the first (None: lanes off).
    lower: LowerLanes | None = None


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between decisions; start with `PolicyState()`."""

    last_scale_out: float = -math.inf
    last_scale_in: float = -math.inf
    idle_since: float | None = None
    last_idle: float | None = None  # the last decision that saw no demand at all
    last_recent_rate: float | None = None  # the previous decision's last-interval rate
    last_pre_scale: float = -math.inf  # the last hosts added on the forecast
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
    run_s = obs.recent_run_s if obs.recent_run_s else settings.expected_run_s
    trusted = _trusted(settings, obs)
    target = settings.forecast.target_utilization if trusted else settings.target_utilization
    decision, new_state, releasing = _reactive(settings, obs, state, run_s, target)
    current = obs.current_desired
    if trusted is None or releasing or decision.desired < current:
        return decision, new_state
    # The forecast only adds: ahead of a rise, never against a scale-in.
    ahead = _clamp(
        settings,
        math.ceil(trusted.rate_ahead * run_s / (settings.slots_per_host * target) - 1e-9),
    )
    cooled = (
        current == 0 or obs.now - state.last_scale_out >= settings.scale_out_cooldown_s
    ) and obs.now - state.last_scale_in >= settings.scale_in_cooldown_s
    # Beyond the scale-in tolerance only: the forecast's noise does not add a host a time.
    wanted = max(decision.desired, current) + settings.scale_in_tolerance * current
    if not trusted.rising or ahead <= wanted or not cooled:
        return decision, new_state
    reason = (
        f"pre-scale: forecast {trusted.reason}, {trusted.rate_ahead * run_s:.1f} slots at "
        f"target {target:.2f}; the reactive part {decision.reason}"
    )
    # No scale-out cooldown from a pre-scale: as the rise comes into the lead, the
    # forecast may raise its figure at the next decision.
    return replace(decision, desired=ahead, reason=reason), replace(
        new_state, last_pre_scale=obs.now
    )


def _trusted(settings: ScalingSettings, obs: Observation) -> Forecast | None:
    if settings.forecast.enabled and obs.forecast is not None and obs.forecast.trusted:
        return obs.forecast
    return None


def _reactive(
    settings: ScalingSettings, obs: Observation, state: PolicyState, run_s: float, target: float
) -> tuple[Decision, PolicyState, bool]:
    """The reactive policy: its decision, its state, and whether it is releasing hosts (a
    scale-in decided, or held only by its cooldown)."""
    demand = obs.queued + obs.running + obs.upstream
    # Work upstream is this pool's backlog too: it arrives as fast as stage 1 clears it.
    backlog_slots = (obs.queued + obs.upstream) * min(1.0, run_s / settings.drain_target_s)
    # Running runs that drain a backlog are not new load: with a known arrival rate they
    # are not counted twice.
    rate = _arrival_rate(settings, obs, state)
    if obs.upstream_rate and (rate is None or obs.upstream_rate > rate):
        rate = obs.upstream_rate  # what arrives upstream now arrives here a stage later
    keep_up = rate * run_s if rate is not None else float(obs.running)
    previous_recent = state.last_recent_rate  # the state is updated below
    keep_hosts, backlog_hosts = _hosts(settings, keep_up, backlog_slots, target)
    capped_by_lanes = ""
    if obs.lower is not None:
        keep_hosts, backlog_hosts, capped_by_lanes = _by_lane(
            settings, obs, state, obs.lower, run_s, target, (keep_hosts, backlog_hosts)
        )
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
    state = replace(
        state,
        recommendations=recs,
        idle_since=idle_since,
        last_idle=state.last_idle if demand else obs.now,
        last_recent_rate=obs.recent_arrival_rate,
    )
    current = obs.current_desired

    def result(
        desired: int, reason: str, releasing: bool = False, capped: bool = False
    ) -> tuple[Decision, PolicyState, bool]:
        new_state = state
        # A scale-out held back to the work in sight starts no cooldown: if the load goes
        # on, the next decision adds what it needs at once.
        if desired > current and not capped:
            new_state = replace(state, last_scale_out=obs.now)
        elif desired < current:
            new_state = replace(state, last_scale_in=obs.now)
        return Decision(desired, reason, usage, needed, demand), new_state, releasing

    if current < settings.min_hosts:
        return result(settings.min_hosts, f"raise to min_hosts {settings.min_hosts}")
    if current > settings.max_hosts:
        return result(settings.max_hosts, f"lower to max_hosts {settings.max_hosts}")

    backoff = launch_backoff(settings, obs.idle_launches, obs.now)
    idle = sum(1 for t in obs.idle_launches if obs.now - t < settings.idle_launch_window_s)
    backing_off = (
        f"{idle} hosts left without serving a run in the last "
        f"{settings.idle_launch_window_s:.0f} s: no host started for {backoff:.0f} s more"
    )
    if current == 0:
        # Runs running with no host wanted are held by hosts on their way out; only queued
        # runs are work a new host can take.
        if obs.queued + obs.upstream >= settings.activation_threshold:
            if backoff > 0:
                return result(0, f"hold at zero: {backing_off} (queued {obs.queued})")
            cap, _ = _worth_starting(settings, obs, previous_recent, run_s, target)
            hosts = max(1, needed if cap is None else min(needed, cap))
            return result(hosts, f"activate from zero: demand {demand}", capped=hosts < needed)
        if demand:
            return result(0, f"hold at zero: {obs.running} runs held by hosts on their way out")
        return result(0, "hold at zero: no demand")

    if demand == 0:
        # Idle since the demand went, or since the last scale-out if later (hosts started
        # ahead of a forecast rise get the same idle time as any other).
        idle_from = max(
            idle_since if idle_since is not None else obs.now,
            state.last_scale_out,
            state.last_pre_scale,
        )
        idle_for = obs.now - idle_from
        if idle_for >= settings.idle_to_zero_s and current > settings.min_hosts:
            return result(
                settings.min_hosts, f"idle for {idle_for:.0f} s: scale to {settings.min_hosts}"
            )
        return result(current, f"hold: idle for {idle_for:.0f} s")

    if needed > current:
        if obs.now - state.last_scale_out < settings.scale_out_cooldown_s:
            return result(current, "hold: scale-out cooldown")
        if backoff > 0:
            return result(current, f"hold: {backing_off}")
        cap, why = _worth_starting(settings, obs, previous_recent, run_s, target)
        if cap is not None and cap <= current:
            return result(current, f"hold: {why} left ({needed} needed to drain in time)")
        if cap is not None and cap < needed:
            return result(
                cap, f"scale out to {cap}, not {needed}: {why} left for new hosts", capped=True
            )
        return result(
            needed,
            f"scale out: {needed} hosts needed, {current} running (demand {demand}: "
            f"{keep_up:.1f} slots to keep up at target {target:.2f} "
            f"+ {backlog_slots:.1f} to clear the backlog, {settings.slots_per_host} per "
            f"host{capped_by_lanes})",
        )

    stable = _clamp(settings, math.ceil(max(n for _, n in recs) + backlog_hosts - 1e-9))
    if obs.busy_hosts is not None:
        stable = max(stable, min(obs.busy_hosts, current))  # busy hosts stay
    if stable < current and (
        stable <= current * (1 - settings.scale_in_tolerance) or stable == settings.min_hosts
    ):
        since_event = obs.now - max(state.last_scale_out, state.last_scale_in, state.last_pre_scale)
        if since_event >= settings.scale_in_cooldown_s:
            return result(
                stable,
                f"scale in: at most {stable} hosts needed over the last "
                f"{settings.scale_in_cooldown_s:.0f} s, {current} running (demand {demand}: "
                f"{keep_up:.1f} slots to keep up at target {target:.2f} "
                f"+ {backlog_slots:.1f} for the backlog)",
            )
        return result(current, "hold: scale-in cooldown", releasing=True)
    if needed < current:
        return result(
            current,
            f"hold: scale-in window (needed {needed} now, {stable} within "
            f"the last {settings.scale_in_cooldown_s:.0f} s)",
        )
    return result(current, f"hold: usage {usage:.2f}")


def _hosts(
    settings: ScalingSettings, keep_up: float, backlog_slots: float, target: float
) -> tuple[float, float]:
    """Hosts (fractional) that keep up with arrivals at the target, and the hosts beyond
    them that clear the backlog in time."""
    # Headroom (the target utilisation) is for the randomness of arrivals; a backlog that is
    # already here is known work and gets exactly the slots that clear it in time.
    keep_hosts = keep_up / (settings.slots_per_host * target)
    # The backlog may first use the headroom slots, which are idle while arrivals stay at
    # their mean: hosts are added for it only where the headroom does not clear it in time.
    backlog_hosts = max(0.0, (keep_up + backlog_slots) / settings.slots_per_host - keep_hosts)
    return keep_hosts, backlog_hosts


def _by_lane(
    settings: ScalingSettings,
    obs: Observation,
    state: PolicyState,
    lower: LowerLanes,
    run_s: float,
    target: float,
    all_work: tuple[float, float],
) -> tuple[float, float, str]:
    """With lanes: the hosts to keep up and to clear the backlog, the larger of the first
    lane's own need and all the work's need up to `lower_lanes_max_hosts`; and a note for
    the reason where the cap holds bulk back."""
    queued = max(0, obs.queued - lower.queued)
    running = max(0, obs.running - lower.running)

    def less(total: float | None, part: float | None) -> float | None:
        return None if total is None else max(0.0, total - (part or 0.0))

    # The first lane's arrivals, read as the whole pool's are (window, or a step since the
    # previous decision): a bulk burst is not taken for a step in the first lane's load.
    first = replace(
        obs,
        arrival_rate=less(obs.arrival_rate, lower.arrival_rate),
        recent_arrival_rate=less(obs.recent_arrival_rate, lower.recent_arrival_rate),
    )
    first_rate = _arrival_rate(settings, first, state)
    if obs.upstream_rate and (first_rate is None or obs.upstream_rate > first_rate):
        first_rate = obs.upstream_rate  # a stage ahead, lanes are not told apart
    first_keep_up = first_rate * run_s if first_rate is not None else float(running)
    backlog = (queued + obs.upstream) * min(1.0, run_s / settings.drain_target_s)
    first_keep, first_backlog = _hosts(settings, first_keep_up, backlog, target)
    all_keep, all_backlog = all_work
    cap = float(settings.lower_lanes_max_hosts or settings.max_hosts)
    keep = max(first_keep, min(all_keep, cap))
    total = max(first_keep + first_backlog, min(all_keep + all_backlog, cap))
    note = ""
    if all_keep + all_backlog > total + 1e-9:
        note = (
            f"; lanes: the first lane needs {first_keep + first_backlog:.1f} hosts, "
            f"the lower lanes' work is held to {cap:.0f}"
        )
    return keep, total - keep, note


def upstream_rate(
    rates: tuple[float | None, ...], hosts: int, upstream: ScalingSettings, run_s: float
) -> float:
    """The rate work will come out of the pool before this one (split topology): the higher
    of its arrival rates (`rates`: its window's, its last interval's) and what the hosts it
    asked for finish at their target utilisation. The second leads: leaving zero, or
    clearing a backlog, the pool before sizes for the work it holds, and it all comes here
    one stage later; in steady state it is the arrival rate again (within a host's
    rounding)."""
    capacity = hosts * upstream.slots_per_host * upstream.target_utilization / run_s
    return max([capacity, *(r for r in rates if r is not None)])


def _arrival_rate(settings: ScalingSettings, obs: Observation, state: PolicyState) -> float | None:
    """Runs arriving per second: the window's rate, which is smooth, unless the count
    since the previous decision shows it moved beyond chance, or the pool is leaving zero."""
    rate = obs.arrival_rate
    if rate is None:
        return obs.recent_arrival_rate
    since_idle = obs.now - state.last_idle if state.last_idle is not None else math.inf
    if obs.current_desired == 0 and 0 < since_idle < obs.rate_window_s:
        # Leaving zero: everything in the window came since the pool was last idle, so the
        # rate is over that time, not the whole window (which would size the first step for
        # a fraction of the load and leave the rest to wait a cooldown and a host start).
        return rate * obs.rate_window_s / since_idle
    recent = obs.recent_arrival_rate
    if recent is not None:
        # The window lags a step in the load by up to its length; a count since the last
        # decision more than three standard deviations from the window's rate is a step.
        span = obs.recent_window_s or settings.interval_s
        expected = rate * span
        if abs(recent * span - expected) > chance(expected):
            return recent
    return rate


def _worth_starting(
    settings: ScalingSettings,
    obs: Observation,
    previous_recent: float | None,
    run_s: float,
    target: float,
) -> tuple[int | None, str]:
    """The most hosts worth having once new ones are ready (None: no limit), and why.

    A new host starts serving after `host_start_s` (`warm_start_s` while stopped instances
    wait in the warm pool). A host is worth starting only if work will be left for it
    then: the queue and what keeps arriving, less what the hosts already there start
    before it is ready. Without that, a burst the running slots clear launches hosts that
    serve nothing. Arrivals still coming at a rate that needs more hosts at the target are
    load, not a burst: then there is no limit.
    """
    start = settings.warm_start_s if obs.warm > 0 else settings.host_start_s
    # What keeps arriving: the lower of the rates since the last two decisions (a burst
    # fills one; load fills both). Without them, the window's arrivals less those still
    # queued (a burst that just came is queued, and counted there).
    recents = [r for r in (obs.recent_arrival_rate, previous_recent) if r is not None]
    if len(recents) == 2:
        going_on = min(recents)
    else:
        going_on = max(0.0, (obs.arrival_rate or 0.0) - obs.queued / obs.rate_window_s)
    # What arrives upstream keeps arriving here, a stage later (split topology).
    going_on = max(going_on, obs.upstream_rate or 0.0)
    current = obs.current_desired
    if going_on * run_s / (settings.slots_per_host * target) > current + 1e-9:
        return None, ""
    # Runs the hosts there start before a new host is ready: ready slots, after their
    # running runs (half done on average), and each one more as it comes free just before;
    # hosts still starting serve for about half of that time.
    ready = min(obs.live_hosts, current)
    slot_s = settings.slots_per_host * (ready * start + (current - ready) * start / 2)
    started = 0.0
    if current:
        started = (slot_s - obs.running * run_s / 2) / run_s + 0.5 * ready * settings.slots_per_host
    arriving = going_on * start
    left = obs.queued + obs.upstream + arriving - started
    # A new host is worth it for at least one run left; beyond that, one more host per
    # host's worth of runs (its slots) left.
    extra = math.ceil(left / settings.slots_per_host - 1e-9) if left >= 1.0 else 0
    return current + extra, (
        f"the {current} hosts start the {obs.queued} queued + {arriving:.0f} arriving runs "
        f"within a new host's start ({start:.0f} s) but {max(0.0, left):.0f}"
    )


def launch_backoff(
    settings: ScalingSettings, idle_launches: tuple[float, ...], now: float
) -> float:
    """Seconds before the policy may start a host again (0: now), after idle launches.

    With n idle launches within the window and n ≥ `idle_launch_limit`, none is started
    for `idle_launch_backoff_s` × 2^(n − limit) (at most the window) after the last one.
    """
    recent = [t for t in idle_launches if now - t < settings.idle_launch_window_s]
    over = len(recent) - settings.idle_launch_limit
    if over < 0:
        return 0.0
    wait = min(settings.idle_launch_backoff_s * 2**over, settings.idle_launch_window_s)
    return max(0.0, max(recent) + wait - now)


def _clamp(settings: ScalingSettings, hosts: int) -> int:
    return max(settings.min_hosts, min(settings.max_hosts, hosts))

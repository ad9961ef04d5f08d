"""This project's scaling policy against the peers users would pick, on the same arrivals.

For each trace, every policy runs at its documented defaults; with `grid`, each peer also
runs over a small grid of its own settings, and its best setting is reported: the fewest
host-hours among the settings whose p95 wait is no higher than this project's default
policy's on that trace (else the lowest p95). So the comparison is against each peer at
its best on the question that matters here, not against a straw man.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from img2img.config.scaling import ForecastSettings, ScalingSettings
from img2img.observe.timing import percentile
from infra.bench.peer_policies import Img2ImgPolicy, KedaSqs, RayServe, SageMakerAsync, Scaler
from infra.bench.scaling_sim import HostStart, PastDays, SimResult, Trace, arrivals, simulate

PEERS = ("keda", "sagemaker", "ray")
POLICIES = ("img2img", *PEERS)

# Small grids around each peer's defaults: its target per replica and its delays.
GRIDS: dict[str, list[dict[str, float]]] = {
    "keda": [
        {"queue_length": q, "cooldown_period_s": c, "stabilization_down_s": c}
        for q in (6.0, 12.0, 24.0, 48.0, 96.0)
        for c in (60.0, 300.0)
    ],
    "sagemaker": [
        {"target": t, "scale_in_cooldown_s": c, "scale_out_cooldown_s": c}
        for t in (6.0, 12.0, 24.0, 48.0, 96.0)
        for c in (60.0, 300.0)
    ],
    "ray": [
        {"target_ongoing_requests": t, "downscale_delay_s": d, "upscale_delay_s": u}
        for t in (6.0, 12.0, 24.0, 48.0)
        for d in (60.0, 600.0)
        for u in (0.0, 30.0)
    ],
}


def make_scaler(name: str, settings: ScalingSettings, **overrides: float) -> Scaler:
    """A fresh scaler by name: `img2img` with `settings`, or a peer with its defaults
    (and `overrides`), bounded by the same `max_hosts`."""
    if name == "img2img":
        return Img2ImgPolicy(settings.model_copy(update=overrides))
    builders: dict[str, Callable[..., Scaler]] = {
        "keda": KedaSqs,
        "sagemaker": SageMakerAsync,
        "ray": RayServe,
    }
    if name not in builders:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {name!r}")
    return builders[name](max_hosts=settings.max_hosts, **overrides)


@dataclass(frozen=True)
class Bench:
    """The host and price model every policy runs under."""

    service_s: float
    starts: HostStart
    slots_per_host: int
    price_per_hour: float
    seed: int = 7
    sample_s: float = 0.0
    forecast: ForecastSettings | None = None  # also run img2img with its daily forecast

    @property
    def host_start_s(self) -> float:
        return self.starts.cold_s


def run(
    trace: Trace,
    name: str,
    settings: ScalingSettings,
    bench: Bench,
    times: list[float],
    overrides: dict[str, float] | None = None,
    past: PastDays | None = None,
) -> SimResult:
    """One simulated run of `name` (with a peer's `overrides`), fed `past` days if given
    (for this project's policy with its forecast on)."""
    scaler = make_scaler(name, settings, **(overrides or {}))
    return simulate(
        trace,
        scaler,
        bench.service_s,
        bench.host_start_s,
        slots_per_host=bench.slots_per_host,
        sample_s=bench.sample_s,
        arrivals_at=times,
        starts=bench.starts,
        past=past,
    )


def with_forecast(settings: ScalingSettings, forecast: ForecastSettings) -> ScalingSettings:
    """This project's policy with its daily forecast on, validated as the service's
    settings are: a lead the reactive part would cut short is refused (ValueError)."""
    on = forecast.model_copy(update={"enabled": True})
    return ScalingSettings.model_validate({**settings.model_dump(), "forecast": on.model_dump()})


def row(result: SimResult, bench: Bench, setting: str, params: dict[str, float]) -> dict[str, Any]:
    out = result.summary(bench.host_start_s, bench.slots_per_host, bench.price_per_hour)
    out["setting"] = setting
    out["start_parts_s"] = bench.starts.parts()
    if params:
        out["params"] = params
    return out


def best_of(rows: list[dict[str, Any]], p95_bound: float) -> dict[str, Any]:
    """The fewest host-hours at a p95 wait within the bound, else the lowest p95."""
    within = [r for r in rows if r["p95_wait_s"] <= p95_bound + 1e-6]
    if within:
        return min(within, key=lambda r: (r["host_hours"], r["p95_wait_s"]))
    return min(rows, key=lambda r: (r["p95_wait_s"], r["host_hours"]))


def compare(
    trace: Trace,
    policies: list[str],
    settings: ScalingSettings,
    bench: Bench,
    grid: bool = False,
    on_result: Callable[[str, SimResult], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per policy at its defaults, and with `grid` one more per peer at its best
    setting. `on_result(label, result)` sees every default run (for charts)."""
    times = arrivals(trace, bench.seed)
    rows: list[dict[str, Any]] = []
    own_p95: float | None = None
    for name in policies:
        result = run(trace, name, settings, bench, times)
        if on_result is not None:
            on_result(name, result)
        rows.append(row(result, bench, "default", {}))
        if name == "img2img":
            own_p95 = rows[-1]["p95_wait_s"]
            if bench.forecast is not None:
                forecasting = with_forecast(settings, bench.forecast)
                past = PastDays(trace, forecasting.forecast, bench.seed)
                result = run(trace, name, forecasting, bench, times, past=past)
                if on_result is not None:
                    on_result("img2img forecast", result)
                rows.append(row(result, bench, "forecast", {}))
    if grid:
        if own_p95 is None:
            own = run(trace, "img2img", settings, bench, times)
            own_p95 = own.summary(bench.host_start_s, bench.slots_per_host)["p95_wait_s"]
        for name in policies:
            if name not in GRIDS:
                continue
            tried = [
                row(run(trace, name, settings, bench, times, params), bench, "grid", params)
                for params in GRIDS[name]
            ]
            best = dict(best_of(tried, own_p95))
            best["setting"] = "best"
            rows.append(best)
    return rows


def ahead(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """Per peer row (`<policy>/<setting>`): is this project's default ahead of it, that is
    no more host-hours at no higher p95 wait?"""
    own = next(r for r in rows if r["policy"] == "img2img" and r["setting"] == "default")
    verdict = {}
    for r in rows:
        if r["policy"] == "img2img":
            continue
        verdict[f"{r['policy']}/{r['setting']}"] = (
            own["host_hours"] <= r["host_hours"] + 1e-9
            and own["p95_wait_s"] <= r["p95_wait_s"] + 1e-9
        )
    return verdict


def compare_lanes(
    trace: Trace,
    settings: ScalingSettings,
    bench: Bench,
    on_result: Callable[[str, SimResult], None] | None = None,
) -> list[dict[str, Any]]:
    """A two-lane trace through this project's policy twice, on the same arrivals: in one
    line (no lanes: one FIFO queue, one count, no cap) and with lanes (the first lane
    first, taking a slot from bulk where none is free, the bulk part counted apart and held
    to `settings.lower_lanes_max_hosts`). One row each, with each lane's waits, and the
    first lane's while bulk work waits (from the first bulk arrival to the last bulk
    request's start)."""
    if trace.bulk is None:
        raise ValueError(f"trace {trace.name!r} has one lane")
    first = arrivals(trace, bench.seed)
    bulk = arrivals(trace, bench.seed + 1, trace.bulk)
    one_line = settings.model_copy(update={"lower_lanes_max_hosts": None})
    rows = []
    for label, policy, line in (("one line", one_line, True), ("lanes", settings, False)):
        result = simulate(
            trace,
            make_scaler("img2img", policy),
            bench.service_s,
            bench.host_start_s,
            slots_per_host=bench.slots_per_host,
            sample_s=bench.sample_s,
            arrivals_at=first,
            starts=bench.starts,
            lower_at=bulk,
            one_line=line,
        )
        if on_result is not None:
            on_result(label, result)
        out = row(result, bench, label, {})
        out["interactive_requests"] = len(result.first_waits)
        out["bulk_requests"] = len(result.bulk_waits)
        for lane, waits in (("interactive", result.first_waits), ("bulk", result.bulk_waits)):
            out[f"{lane}_p50_wait_s"] = round(percentile(waits, 50), 2)
            out[f"{lane}_p95_wait_s"] = round(percentile(waits, 95), 2)
            out[f"{lane}_max_wait_s"] = round(max(waits, default=0.0), 2)
        backlog = (bulk[0], max(result.bulk_started)) if bulk else (0.0, 0.0)
        during = [
            w
            for a, w in zip(result.first_arrived, result.first_waits, strict=True)
            if backlog[0] <= a <= backlog[1]
        ]
        out["interactive_during_bulk"] = len(during)
        out["interactive_p95_wait_during_bulk_s"] = round(percentile(during, 95), 2)
        out["interactive_max_wait_during_bulk_s"] = round(max(during, default=0.0), 2)
        out["lower_lanes_max_hosts"] = None if line else settings.lower_lanes_max_hosts
        rows.append(out)
    return rows

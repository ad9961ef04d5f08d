"""The control host's composition root: which autoscalers it runs, for where the pools' hosts
are (an EC2 Auto Scaling group, an ECS service, or a target plugged in by name), with their
fleet views and /metrics. The command line and the autoscale flow call it.

Nothing here imports the development stack: the `local` scale target (warm worker processes
on this machine) is registered by the local stack under the `img2img.scale_targets` entry
point group (`pyproject.toml`) and loaded only when `autoscaler.target` names it.
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import entry_points
from itertools import pairwise
from typing import TYPE_CHECKING

from deployments.services.autoscaler import Autoscaler
from deployments.services.fleet_view import FleetView
from deployments.services.loop import LoopService
from deployments.services.metrics_endpoint import PrometheusMetrics
from deployments.services.scale_targets import (
    AsgTarget,
    CloudWatchMetrics,
    EcsTarget,
    ScaleTarget,
)
from img2img.aws.clients import service_client
from img2img.config.settings import Settings
from img2img.pipeline.topology import check_pool_groups, pools
from img2img.scaling.policy import Decision

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

log = logging.getLogger("img2img.autoscaler")


def build_target(settings: Settings, pool: str | None = None) -> ScaleTarget:
    """The target named by `settings.autoscaler`, for `pool` (None: the first pool): on
    AWS its group is `autoscaler.pool_groups[pool]`, else the one group named."""
    auto = settings.autoscaler
    group = auto.pool_groups.get(pool) if pool is not None else None
    if auto.target == "asg":
        name = group or auto.asg_name
        assert name is not None  # the settings validate it
        return AsgTarget(service_client(settings.aws, "autoscaling"), name)
    if auto.target == "ecs":
        service = group or auto.ecs_service
        assert auto.ecs_cluster is not None and service is not None
        return EcsTarget(service_client(settings.aws, "ecs"), auto.ecs_cluster, service)
    return plugged_target(auto.target, settings, pool)


PLUGIN_GROUP = "img2img.scale_targets"


def plugged_target(name: str, settings: Settings, pool: str | None) -> ScaleTarget:
    """The scale target registered as `name` in the `img2img.scale_targets` entry point
    group: a callable `(settings, pool) -> ScaleTarget`."""
    found = [ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name == name]
    if not found:
        known = sorted(ep.name for ep in entry_points(group=PLUGIN_GROUP))
        raise ValueError(
            f"autoscaler.target={name!r} is not a registered scale target (registered in "
            f"the {PLUGIN_GROUP!r} entry point group: {known or 'none'}; built in: asg, ecs)"
        )
    factory = found[0].load()
    target: ScaleTarget = factory(settings, pool)
    return target


def _prometheus(settings: Settings, pool: str) -> PrometheusMetrics | None:
    """The /metrics endpoint, serving `pool`'s figures (and, through `for_pool`, the other
    pools'); None when it is off or its port is taken."""
    monitor = settings.monitor
    if not monitor.metrics_port:
        return None
    prometheus = PrometheusMetrics(pool)
    try:
        port = prometheus.serve(monitor.metrics_host, monitor.metrics_port)
    except OSError as exc:
        # Scaling matters more than its figures: a port taken (another autoscaler on
        # this host, one on its way out) leaves /metrics off, not the pool unscaled.
        log.error(
            "cannot serve Prometheus metrics on %s:%d (%s): /metrics is off; set "
            "IMG2IMG_MONITOR__METRICS_PORT to a free port (0 picks one)",
            monitor.metrics_host,
            monitor.metrics_port,
            exc,
        )
        return None
    log.info("serving Prometheus metrics on http://%s:%d/metrics", monitor.metrics_host, port)
    return prometheus


def build_fleet_view(
    settings: Settings,
    prefect: SyncPrefectClient,
    cloudwatch: CloudWatchMetrics | None,
    pool: str,
    prometheus: PrometheusMetrics | None,
    slots_per_host: int,
    reads_queue: bool,
) -> FleetView:
    """The fleet view of `pool` the autoscaler keeps; `reads_queue`: the pool the uploads
    enter (the ingest queue and its dead letters are its figures)."""
    return FleetView(
        prefect,
        pool,
        settings.monitor,
        slots_per_host,
        sqs=service_client(settings.aws, "sqs") if reads_queue else None,
        storage=settings.storage if reads_queue else None,
        sinks=[cloudwatch] if cloudwatch is not None else [],
        prometheus=prometheus,
        idle_launch_limit=settings.scaling.idle_launch_limit,
        top_tenants=settings.tenants.top,
        lane_order=tuple(settings.lanes.names()),
    )


def build_autoscalers(settings: Settings, prefect: SyncPrefectClient) -> PoolScalers:
    """One autoscaler per pool of the topology (one, or one per stage when split), each
    sizing its pool from its own queue, with one /metrics endpoint for all of them."""
    check_pool_groups(settings)
    roles = pools(settings.topology, settings.autoscaler.pool)
    shared: PrometheusMetrics | None = None
    scalers = []
    for index, role in enumerate(roles):
        metrics = None
        if settings.autoscaler.cloudwatch_namespace:
            metrics = CloudWatchMetrics(
                service_client(settings.aws, "cloudwatch"),
                settings.autoscaler.cloudwatch_namespace,
                role.pool,
            )
        slots = settings.autoscaler.pool_slots.get(role.pool, settings.scaling.slots_per_host)
        policy = settings.scaling.model_copy(update={"slots_per_host": slots})
        if index == 0:
            prometheus = shared = _prometheus(settings, role.pool)
        else:
            prometheus = shared.for_pool(role.pool) if shared is not None else None
        scalers.append(
            Autoscaler(
                prefect,
                role.pool,
                policy,
                build_target(settings, role.pool if len(roles) > 1 else None),
                metrics,
                settings.autoscaler.rate_window_s,
                fleet=build_fleet_view(
                    settings, prefect, metrics, role.pool, prometheus, slots, index == 0
                ),
                lower_lanes=tuple(settings.lanes.names()[1:]) if settings.lanes.enabled else (),
            )
        )
    for before, after in pairwise(scalers):
        after.upstream = before  # the stage-2 pool sees stage 1's work on its way
    return PoolScalers(scalers)


class PoolScalers(LoopService[None]):
    """The autoscalers of every pool, each in its own thread, stopped together."""

    log = log
    stopping_note = "stopping the autoscalers (hosts are left as they are)"

    def __init__(self, scalers: list[Autoscaler]) -> None:
        super().__init__()
        self.scalers = scalers

    def step(self) -> list[Decision]:
        return [scaler.step() for scaler in self.scalers]

    def run(self, stop_after_s: float | None = None) -> None:
        """Each pool's autoscaler in a thread of its own (one: in this one), until stopped."""
        if len(self.scalers) == 1:
            self.scalers[0].run(stop_after_s)
            return
        threads = [
            threading.Thread(target=s.run, args=(stop_after_s,), name=f"scale-{s.pool}")
            for s in self.scalers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def stop(self) -> None:
        super().stop()
        for scaler in self.scalers:
            scaler.stop()

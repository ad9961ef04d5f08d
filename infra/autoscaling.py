"""Builds the autoscaler for where the pool's hosts are: this machine's local stack, an EC2
Auto Scaling group or an ECS service. The services in `deployments/` know none of them by
name; this is the one place that picks (the command line and the autoscale flow call it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from deployments.autoscaler import Autoscaler
from deployments.fleet_view import FleetView
from deployments.metrics_endpoint import PrometheusMetrics
from deployments.scaling_backends import (
    AsgBackend,
    CloudWatchMetrics,
    EcsBackend,
    ScalingBackend,
)
from img2img.aws import service_client
from img2img.settings import Settings
from infra.local_stack import LocalStack

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

log = logging.getLogger("img2img.autoscaler")


class LocalBackend:
    """Warm worker processes on this machine (the embedded default)."""

    name = "local"

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack

    def warm(self) -> int:
        return 0  # a local worker starts from this machine's disk: there is nothing to resume

    def current(self) -> int:
        self.stack.reap()  # workers that exited (drained or killed) leave no <defunct> child
        return len(self.stack.running_workers())

    def apply(self, desired: int, busy: set[str]) -> str:
        workers = self.stack.running_workers()  # [(index, worker name)]
        if desired > len(workers):
            for _ in range(desired - len(workers)):
                self.stack.start_worker()
        elif desired < len(workers):
            # Idle workers first, newest first; a busy one drains before it exits.
            order = sorted(workers, key=lambda w: (w[1] in busy, -w[0]))
            for index, _name in order[: len(workers) - desired]:
                self.stack.drain_worker(index)
        return f"local: {desired} warm worker(s)"

    def replace(self, host: str, reason: str) -> str:
        """Kill the worker and its slots (its process group): the next decision starts a new
        one if there is work."""
        for index, name in self.stack.running_workers():
            if name == host:
                self.stack.kill_worker(index)
                return f"local: {name} killed ({reason})"
        return f"local: {host} is already gone"


def build_backend(settings: Settings) -> ScalingBackend:
    """The backend named by `settings.autoscaler`."""
    auto = settings.autoscaler
    if auto.backend == "asg":
        assert auto.asg_name is not None  # the settings validate it
        return AsgBackend(service_client(settings.aws, "autoscaling"), auto.asg_name)
    if auto.backend == "ecs":
        assert auto.ecs_cluster is not None and auto.ecs_service is not None
        return EcsBackend(service_client(settings.aws, "ecs"), auto.ecs_cluster, auto.ecs_service)
    return LocalBackend(LocalStack(settings))


def build_fleet_view(
    settings: Settings, prefect: SyncPrefectClient, cloudwatch: CloudWatchMetrics | None
) -> FleetView:
    """The fleet view the autoscaler keeps; serves /metrics when `monitor.metrics_port` is
    set."""
    monitor = settings.monitor
    prometheus = None
    if monitor.metrics_port:
        prometheus = PrometheusMetrics(settings.autoscaler.pool)
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
            prometheus = None
        else:
            log.info(
                "serving Prometheus metrics on http://%s:%d/metrics", monitor.metrics_host, port
            )
    return FleetView(
        prefect,
        settings.autoscaler.pool,
        monitor,
        settings.scaling.slots_per_host,
        sqs=service_client(settings.aws, "sqs"),
        storage=settings.storage,
        sinks=[cloudwatch] if cloudwatch is not None else [],
        prometheus=prometheus,
        idle_launch_limit=settings.scaling.idle_launch_limit,
    )


def build_autoscaler(settings: Settings, prefect: SyncPrefectClient) -> Autoscaler:
    """The autoscaler the settings describe: backend, CloudWatch metrics, policy, and the
    fleet view it keeps."""
    metrics = None
    if settings.autoscaler.cloudwatch_namespace:
        metrics = CloudWatchMetrics(
            service_client(settings.aws, "cloudwatch"),
            settings.autoscaler.cloudwatch_namespace,
            settings.autoscaler.pool,
        )
    return Autoscaler(
        prefect,
        settings.autoscaler.pool,
        settings.scaling,
        build_backend(settings),
        metrics,
        settings.autoscaler.rate_window_s,
        fleet=build_fleet_view(settings, prefect, metrics),
    )

"""The embedded local stack: Prefect server, moto, resources, deployments, worker, dispatcher,
autoscaler, recovery service and the supervisor that keeps them up.

This module says which services there are and brings them up and down; the jobs it uses live
beside it: `local_env` (the children's environment), `processes` (PID files, start, reap,
terminate), `local_provision` (moto resources, Prefect blocks and `prefect deploy`).
Everything binds to loopback; state, logs and PIDs live in `local.state_dir`. `up` starts
only what is not already running and answering; `down` stops only what `up` started (it
checks each PID's command line before signalling it).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from img2img.config.retention import prefect_server_env
from img2img.config.settings import Settings
from img2img.pipeline.topology import ROLES, PoolRole, pools
from infra.local import cluster as server_cluster
from infra.local.env import (
    CREDENTIALS_BLOCK,
    LOCAL_AWS_KEY,
    LOCAL_RECOVERY,
    LOCAL_SCALING,
    POOL,
    PROJECT_DIR,
    child_env,
    dispatcher_name,
    supervised,
    worker_env,
)
from infra.local.postgres import (
    Cluster,
    accepting,
    cluster_for,
    ensure_database,
    ensure_initialised,
)
from infra.local.processes import ProcessTable, Service, alive, http_ok, tcp_open, terminate
from infra.local.provision import provision

__all__ = [
    "CREDENTIALS_BLOCK",
    "LOCAL_AWS_KEY",
    "LOCAL_RECOVERY",
    "LOCAL_SCALING",
    "POOL",
    "LocalStack",
    "Service",
    "alive",
    "describe",
]

log = logging.getLogger(__name__)

# The cluster's parts (ha): the balancer at the API's address, the background services,
# Redis, and the API replicas `prefect-api-<i>`.
LB = "prefect-lb"
SERVICES = "prefect-services"
REPLICA = "prefect-api"
SERVER_PARTS = ("prefect-server", LB, SERVICES, "redis")


class LocalStack:
    def __init__(self, settings: Settings, extra_env: dict[str, str] | None = None) -> None:
        """`extra_env` is added to every child process (benchmarks set the backend there)."""
        self.settings = settings
        self.extra_env = dict(extra_env or {})
        self.state = settings.local.state_dir.resolve()
        self.procs = ProcessTable(self.state, PROJECT_DIR)
        self.pids = self.procs.pids
        self.logs = self.procs.logs
        # The topology the running stack was brought up with, unless this one names its own.
        marker = self.state / "topology"
        if "topology" not in settings.model_fields_set and marker.exists():
            settings.topology = "split" if marker.read_text().strip() == "split" else "single"
        self.roles = pools(settings.topology)

    def role(self, pool: str | None = None) -> PoolRole:
        """The stack's pool named `pool` (None: the one uploads enter first)."""
        if pool is None:
            return self.roles[0]
        for role in self.roles:
            if role.pool == pool:
                return role
        raise ValueError(
            f"pool {pool!r} is not one of this stack's ({', '.join(r.pool for r in self.roles)})"
        )

    # -- environment shared by every child process ----------------------------------------

    def child_env(self) -> dict[str, str]:
        return child_env(self.settings, self.state, self.extra_env)

    def worker_env(self) -> dict[str, str]:
        return worker_env(self.settings, self.state, self.extra_env)

    # -- services -----------------------------------------------------------------------------

    def postgres(self) -> Cluster:
        local = self.settings.local
        return cluster_for(self.state, local.host, local.postgres_port)

    def uses_postgres(self) -> bool:
        """On PostgreSQL: as set, or as an earlier `up` left it running (a cluster always)."""
        return (
            self.settings.local.database == "postgres"
            or self.uses_ha()
            or self.procs.pidfile("postgres").exists()
        )

    def uses_ha(self) -> bool:
        """The Prefect server as a cluster: as set, or as an earlier `up --ha` left it."""
        return self.settings.local.ha or self.procs.pidfile(LB).exists()

    @property
    def front(self) -> str:
        """The service at the Prefect API's address: the server, or the cluster's balancer."""
        return LB if self.uses_ha() else "prefect-server"

    def _server_services(self) -> list[Service]:
        """The Prefect server: one process, or (ha) Redis, the API replicas, the background
        services and the balancer in front of the replicas (`infra.local.cluster`)."""
        local = self.settings.local
        py, at = sys.executable, ["--host", local.host, "--port", str(local.prefect_port)]
        api = Service(
            "prefect-server",
            [py, "-m", "prefect", "server", "start", *at],
            "server",
            lambda: http_ok(f"{local.prefect_api_url}/health"),
        )
        if not self.uses_ha():
            return [api]
        host, redis_port = local.host, local.redis_port
        parts = [
            Service(
                "redis",
                server_cluster.redis_argv(local.host, local.redis_port),
                "redis-server",
                lambda: tcp_open(host, redis_port),
            )
        ]
        for i, port in enumerate(local.replica_ports):
            url = f"http://{local.host}:{port}/api/health"
            parts.append(
                Service(
                    f"{REPLICA}-{i}",
                    server_cluster.replica_argv(local.host, port),
                    "--no-services",
                    lambda url=url: http_ok(url),  # type: ignore[misc]
                )
            )
        parts.append(Service(SERVICES, server_cluster.services_argv(), "services", lambda: True))
        parts.append(
            Service(
                LB,
                server_cluster.haproxy_argv(str(self.state / "haproxy.cfg")),
                "haproxy",
                lambda: http_ok(f"{local.prefect_api_url}/health"),
            )
        )
        return parts

    def services(self) -> list[Service]:
        local = self.settings.local
        py = sys.executable
        services = []
        if self.uses_postgres():
            cluster = self.postgres()
            services.append(
                Service(
                    "postgres",
                    cluster.server_argv(),
                    "postgres",
                    lambda: accepting(cluster),
                    user=cluster.user,
                )
            )
        services.append(
            Service(
                "moto",
                [py, "-m", "moto.server", "-H", local.host, "-p", str(local.moto_port)],
                "moto.server",
                lambda: http_ok(f"{local.moto_url}/moto-api/"),
            )
        )
        services += self._server_services()
        services += [
            self.worker_service(i, role.pool) for role in self.roles for i in range(local.workers)
        ]
        services += [
            Service(dispatcher_name(i), [py, "-m", "cli", "dispatch"], "dispatch", lambda: True)
            for i in range(local.dispatchers)
        ]
        if local.autoscaler:
            services.append(
                Service("autoscaler", [py, "-m", "cli", "autoscale"], "autoscale", lambda: True)
            )
        services.append(Service("recovery", [py, "-m", "cli", "recover"], "recover", lambda: True))
        # Last, so `down` (which goes in reverse) stops it before what it would restart.
        services.append(
            Service(
                "supervisor",
                [py, "-m", "cli", "local", "supervise"],
                "supervise",
                lambda: True,
            )
        )
        return services

    def worker_service(self, index: int, pool: str | None = None) -> Service:
        """Worker `index` of `pool` (None: the first pool): `worker-<index>` on the first,
        `upscale-worker-<index>` on the split topology's stage-2 pool."""
        local = self.settings.local
        role = self.role(pool)
        argv = [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            role.pool,
            "--name",
            f"local-{role.worker_prefix}-{index}",
            "--type",
            local.worker_type,
        ]
        if local.worker_type == "process":
            # The stock worker would start every run at once; one device serves one run
            # at a time per slot, so it gets the same number of slots.
            argv += ["--limit", str(self.settings.worker.slot_count())]
        return Service(f"{role.worker_prefix}-{index}", argv, "worker", lambda: True)

    # -- workers the autoscaler adds and removes ---------------------------------------------

    def running_workers(self, pool: str | None = None) -> list[tuple[int, str]]:
        """(index, worker name) of `pool`'s workers running and not draining (None: the
        first pool's)."""
        prefix = self.role(pool).worker_prefix
        found = []
        if self.pids.exists():
            for f in self.pids.glob(f"{prefix}-*.pid"):
                suffix = f.stem.removeprefix(f"{prefix}-")
                if not suffix.isdigit():
                    continue  # draining
                index = int(suffix)
                if self.pid_of(self.worker_service(index, pool)) is not None:
                    found.append((index, f"local-{prefix}-{index}"))
        return sorted(found)

    def all_workers(self) -> list[tuple[str, int, str]]:
        """(pool, index, worker name) of every pool's running, not draining, workers."""
        return [(r.pool, i, name) for r in self.roles for i, name in self.running_workers(r.pool)]

    def draining_workers(self) -> list[int]:
        """PIDs of the workers (of any pool) that were asked to drain and are still running."""
        pids = []
        if self.pids.exists():
            for f in self.pids.glob("*worker-*.draining.pid"):
                name = f.name.removesuffix(".pid")
                pid = self.pid_of(Service(name, [], "worker", lambda: True))
                if pid is not None and alive(pid):
                    pids.append(pid)
        return pids

    def start_worker(self, pool: str | None = None) -> int:
        prefix = self.role(pool).worker_prefix
        used = {i for i, _ in self.running_workers(pool)}
        used |= {
            int(f.stem.removeprefix(f"{prefix}-").split(".")[0])
            for f in self.pids.glob(f"{prefix}-*.pid")
        }
        index = next(i for i in range(len(used) + 1) if i not in used)
        self._start(self.worker_service(index, pool), self.worker_env())
        return index

    def drain_worker(self, index: int, pool: str | None = None) -> None:
        """SIGTERM a worker (it finishes its runs, then exits) and mark it as leaving."""
        service = self.worker_service(index, pool)
        pid = self.pid_of(service)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        self.procs.mark_draining(service.name, pid)
        log.info("draining %s (pid %d)", service.name, pid)

    def kill_worker(self, index: int, pool: str | None = None) -> None:
        """SIGKILL a worker's whole process group, its slots with it (a slot that is stopped
        or stuck cannot see its worker go)."""
        service = self.worker_service(index, pool)
        pid = self.pid_of(service)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        log.info("killed %s (pid %d) and its slots", service.name, pid)

    def reap(self) -> list[str]:
        """Collect the exit status of the processes this object started (no `<defunct>`
        children) and forget the PID files of those that ended; returns their names."""
        return self.procs.reap()

    def pid_of(self, service: Service) -> int | None:
        """PID of a running process that this stack started for `service`."""
        return self.procs.pid_of(service)

    def _start(self, service: Service, env: dict[str, str]) -> None:
        self.procs.start(service, env)

    # -- up / down / status -----------------------------------------------------------------

    def up(self, say: Callable[[str], None] = log.info) -> None:
        env = self.child_env()
        services = {s.name: s for s in self.services()}
        server_env = self._database(services, env, say)
        self._start_healthy(services["moto"], env, say)
        if self.uses_ha():
            self._cluster_up(services, server_env, env, say)
        else:
            self._start_healthy(services["prefect-server"], server_env, say)
        provision(self.settings, self.state, env, say)
        self._restart_on_backend_change(say)
        for name, service in services.items():
            if name in ("postgres", "moto", "supervisor") or name in SERVER_PARTS:
                continue
            if name.startswith(REPLICA):
                continue
            if self.pid_of(service) is not None:
                say(f"{name}: already running")
                continue
            say(f"{name}: starting")
            self._start(service, self.worker_env() if "worker" in name else env)
        supervisor = services["supervisor"]
        if self.pid_of(supervisor) is None:
            say("supervisor: starting (restarts the dispatcher, autoscaler and recovery service)")
            self._start(supervisor, env)
        else:
            say("supervisor: already running")

    def _start_healthy(
        self,
        service: Service,
        env: dict[str, str],
        say: Callable[[str], None],
        supervisor_restarts: bool = False,
    ) -> None:
        """Start `service` unless it runs and answers already; wait until it answers. With
        `supervisor_restarts` (a part of the cluster while the supervisor runs), a part that
        died is the supervisor's to restart: `up` waits for it rather than racing it."""
        name = service.name
        if self.pid_of(service) is not None and service.healthy():
            say(f"{name}: already running")
            return
        if supervisor_restarts and self.pid_of(service) is None:
            say(f"{name}: down; waiting for the supervisor to restart it")
            self.procs.wait_healthy(service, self.settings.local.start_timeout_s)
            return
        if service.healthy():
            raise RuntimeError(
                f"{name}: something else already answers on its port; stop it or change the "
                "port setting (IMG2IMG_LOCAL__PREFECT_PORT / IMG2IMG_LOCAL__MOTO_PORT / "
                "IMG2IMG_LOCAL__REDIS_PORT / IMG2IMG_LOCAL__API_PORTS)"
            )
        if self.procs.start_unless_running(service, env):
            say(f"{name}: starting")
        else:
            say(f"{name}: started meanwhile (by the supervisor)")
        self.procs.wait_healthy(service, self.settings.local.start_timeout_s)

    def _cluster_up(
        self,
        services: dict[str, Service],
        server_env: dict[str, str],
        env: dict[str, str],
        say: Callable[[str], None],
    ) -> None:
        """Redis, the schema migrated once, the API replicas one after the other (each
        registers Prefect's block types as it starts: at once they would race), the
        background services, then the balancer."""
        local = self.settings.local
        supervisor = self.pid_of(services["supervisor"]) is not None
        self._start_healthy(services["redis"], dict(env), say, supervisor)
        replicas = [services[f"{REPLICA}-{i}"] for i in range(local.api_replicas)]
        if all(self.pid_of(r) is None for r in replicas):
            say("prefect: migrating the database (once, before the replicas start)")
            # argv built by the stack, no shell (bandit B603)
            done = subprocess.run(  # nosec B603
                server_cluster.migrate_argv(), env=server_env, capture_output=True, text=True
            )
            if done.returncode != 0:
                raise RuntimeError(f"prefect database migration failed: {done.stderr[-2000:]}")
        for replica in replicas:
            self._start_healthy(replica, server_env, say, supervisor)
        services_process = services[SERVICES]
        if supervisor and self.pid_of(services_process) is None:
            say(f"{SERVICES}: down; the supervisor restarts it")
        elif self.procs.start_unless_running(services_process, server_env):
            say(f"{SERVICES}: starting (the scheduler, triggers and other loop services)")
        else:
            say(f"{SERVICES}: already running")
        config = self.state / "haproxy.cfg"
        config.write_text(
            server_cluster.haproxy_config(local.host, local.prefect_port, local.replica_ports)
        )
        self._start_healthy(services[LB], env, say, supervisor)

    def server_env(self) -> dict[str, str]:
        """The environment of the Prefect server's processes, once the stack is up (the
        supervisor restarts them with it)."""
        env = {**self.child_env(), **prefect_server_env(self.settings.retention)}
        if self.uses_postgres():
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.postgres().url()
        if self.uses_ha():
            env.update(server_cluster.cluster_env(self.settings.local.redis_url))
        return env

    def _database(
        self, services: dict[str, Service], env: dict[str, str], say: Callable[[str], None]
    ) -> dict[str, str]:
        """Start the PostgreSQL server when the stack uses it; returns the Prefect server's
        environment (with its database URL, which only that process gets)."""
        chosen = "postgres" if self.uses_ha() else self.settings.local.database
        marker = self.state / "database"
        before = marker.read_text().strip() if marker.exists() else None
        server_running = self.pid_of(services[self.front]) is not None
        # Not chosen: what the running stack uses, else SQLite.
        wanted = chosen or (before if server_running and before else "sqlite")
        if before is not None and before != wanted and server_running:
            raise RuntimeError(
                f"the local stack runs on {before}; stop it first (img2img local down), "
                f"then bring it up with --database {wanted}"
            )
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(wanted)
        env = {**env, **prefect_server_env(self.settings.retention)}
        if self.uses_ha():
            env.update(server_cluster.cluster_env(self.settings.local.redis_url))
        if wanted != "postgres":
            return env
        cluster = self.postgres()
        service = services["postgres"]
        if self.pid_of(service) is not None and service.healthy():
            say("postgres: already running")
        else:
            if service.healthy():
                raise RuntimeError(
                    "postgres: something else already answers on its port; stop it or change "
                    "IMG2IMG_LOCAL__POSTGRES_PORT"
                )
            if ensure_initialised(cluster):
                say(f"postgres: new cluster in {cluster.data}")
            say("postgres: starting")
            self._start(service, {k: v for k, v in env.items() if not k.startswith("PREFECT_")})
            self.procs.wait_healthy(service, self.settings.local.start_timeout_s)
        ensure_database(cluster)
        return {**env, "PREFECT_API_DATABASE_CONNECTION_URL": cluster.url()}

    def supervise(self, stop: Callable[[], bool], interval_s: float = 2.0) -> None:
        """Keep the dispatcher, the autoscaler and the recovery service running: restart
        any that died, and reap what ended. Returns when `stop()` is true."""
        env = self.child_env()
        services = {s.name: s for s in self.services() if supervised(s.name)}
        # The cluster's parts too (ha): a replica, the services process, Redis, the balancer.
        parts = {
            s.name: s
            for s in self.services()
            if self.uses_ha() and (s.name in SERVER_PARTS or s.name.startswith(REPLICA))
        }
        server_env = self.server_env() if parts else {}
        while not stop():
            self.reap()
            for name, service in services.items():
                if self.pid_of(service) is None:
                    log.warning("%s is not running; restarting it", name)
                    self._start(service, env)
            for name, service in parts.items():
                if self.pid_of(service) is None:
                    part_env = env if name in (LB, "redis") else server_env
                    if self.procs.start_unless_running(service, part_env):
                        log.warning("%s was not running; restarted it", name)
            time.sleep(interval_s)
        self.reap()

    def _restart_on_backend_change(self, say: Callable[[str], None]) -> None:
        """Workers keep the backend they started with, the services their topology; a new
        `stages.backend` restarts the services that run or start workers, a new topology
        every pipeline service (the server, moto and their data stay)."""
        marker = self.state / "stages-backend"
        stages = self.settings.stages
        backend: str = stages.backend
        if stages.simulated.crash_marker:
            backend += f" (crash marker {stages.simulated.crash_marker!r})"
        before = marker.read_text().strip() if marker.exists() else backend
        shape = self.state / "topology"
        topology = self.settings.topology
        was = shape.read_text().strip() if shape.exists() else topology
        if was != topology:
            say(f"topology changed from {was} to {topology}: restarting the pipeline services")
            self.stop(["supervisor", "autoscaler", "recovery", "dispatcher*", "*worker*"], say)
        elif before != backend:
            say(f"stages.backend changed from {before} to {backend}: restarting the pipeline")
            self.stop(["supervisor", "autoscaler", "*worker*"], say)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(backend)
        shape.write_text(topology)

    def stop(self, names: list[str], say: Callable[[str], None] = log.info) -> None:
        """Stop the named services (for example the worker and dispatcher, to restart them
        with other settings) and leave the rest running, in `_stop_order`."""
        listed = self.services() + self._extra_services()
        for service in _stop_order(listed):
            if any(fnmatch.fnmatchcase(service.name, n) for n in names):
                self._stop(service, say)

    def _forget(self, name: str, pid: int | None) -> None:
        """Remove `name`'s PID file unless it names another process than `pid` by now (the
        supervisor may have restarted the service meanwhile: that one stays tracked)."""
        pidfile = self.procs.pidfile(name)
        with contextlib.suppress(OSError, ValueError):
            if pid is None or int(pidfile.read_text().strip()) == pid:
                pidfile.unlink()

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def down(self, say: Callable[[str], None] = log.info) -> None:
        """Stop every service, in `_stop_order`; the workers are looked for again once the
        services that start them have stopped (an autoscaler may have started one since
        the first listing)."""
        listed = self.services() + self._extra_services()
        for service in _stop_order(listed):
            if service.marker in STARTERS:
                self._stop(service, say)
        for service in _stop_order(self.services() + self._extra_services()):
            self._stop(service, say)

    def _stop(self, service: Service, say: Callable[[str], None]) -> None:
        pid = self.pid_of(service)
        if pid is not None:
            say(f"{service.name}: stopping (pid {pid})")
            terminate(pid)
        self._forget(service.name, pid)

    def _extra_services(self) -> list[Service]:
        """Workers and dispatcher replicas started beyond the configured count (by the
        autoscaler, or by an earlier, larger `up`)."""
        known = {s.name for s in self.services()}
        extra = []
        if self.pids.exists():
            for f in self.pids.glob("*.pid"):
                worker = any(f.stem.startswith(f"{r.worker_prefix}-") for r in ROLES)
                if f.stem not in known and (worker or f.stem.startswith("dispatcher")):
                    extra.append(
                        Service(f.stem, [], "worker" if worker else "dispatch", lambda: True)
                    )
        return extra

    def status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for service in self.services() + self._extra_services():
            pid = self.pid_of(service)
            out[service.name] = {
                "running": pid is not None,
                "pid": pid,
                "healthy": pid is not None and service.healthy(),
            }
        return out


# The services that start workers or send them work, in the order they stop: the supervisor
# (it restarts the others), the autoscaler (it starts workers), recovery, the dispatchers.
STARTERS = ("supervise", "autoscale", "recover", "dispatch")


def _stop_order(services: list[Service]) -> list[Service]:
    """The order to stop `services` in: the starters first (none starts a worker or sends it
    work again while the workers drain), then the rest in the reverse of their start order
    (workers before the servers they use)."""

    def rank(service: Service) -> int:
        return STARTERS.index(service.marker) if service.marker in STARTERS else len(STARTERS)

    return sorted(reversed(services), key=rank)


def describe(status: dict[str, dict[str, object]]) -> str:
    return json.dumps(status, indent=2)

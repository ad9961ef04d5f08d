"""The embedded local stack: Prefect server, moto, resources, deployments, worker, dispatcher.

Everything binds to loopback; state, logs and PIDs live in `local.state_dir`. `up` starts
only what is not already running and answering; `down` stops only what `up` started (it
checks each PID's command line before signalling it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from img2img.aws import clients_from_settings
from img2img.settings import Settings

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent.parent
CREDENTIALS_BLOCK = "img2img-local"
POOL = "inf2"
LOCAL_SCALING = {
    "IMG2IMG_SCALING__MAX_HOSTS": "2",
    "IMG2IMG_SCALING__INTERVAL_S": "2",
    "IMG2IMG_SCALING__SCALE_OUT_COOLDOWN_S": "10",
    "IMG2IMG_SCALING__SCALE_IN_COOLDOWN_S": "30",
    "IMG2IMG_SCALING__IDLE_TO_ZERO_S": "300",
    "IMG2IMG_SCALING__EXPECTED_RUN_S": "10",
    "IMG2IMG_SCALING__DRAIN_TARGET_S": "30",
}
# Recovery on a laptop's time scale: workers heartbeat every 5 s, a worker silent for 20 s
# is gone (the bound is 2 minutes), crashed runs are looked at every 2 s.
LOCAL_RECOVERY = {
    "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
    "IMG2IMG_RECOVERY__INTERVAL_S": "2",
    "IMG2IMG_RECOVERY__ORPHAN_AFTER_S": "20",
    "IMG2IMG_RECOVERY__BACKOFF_S": "1",
    "IMG2IMG_RECOVERY__RECONCILE_INTERVAL_S": "60",
    "IMG2IMG_RECOVERY__RECONCILE_OLDER_THAN_S": "180",
}
# The services the supervisor keeps running (restarted when they die).
SUPERVISED = ("dispatcher", "autoscaler", "recovery")
# Fixed, non-secret credentials for the local emulator only.
LOCAL_AWS_KEY = "local-stack"


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    marker: str  # a string that must be in the process's command line to be ours
    healthy: Callable[[], bool]


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    # urlopen raises for 4xx and 5xx, so a status it returns is a success or a redirect.
    return 200 <= _http_status(url, timeout) < 400


class LocalStack:
    def __init__(self, settings: Settings, extra_env: dict[str, str] | None = None) -> None:
        """`extra_env` is added to every child process (benchmarks set the backend there)."""
        self.settings = settings
        self.extra_env = dict(extra_env or {})
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        local = settings.local
        self.state = local.state_dir.resolve()
        self.pids = self.state / "pids"
        self.logs = self.state / "logs"

    # -- environment shared by every child process ----------------------------------------

    def child_env(self) -> dict[str, str]:
        local = self.settings.local
        env = dict(os.environ)
        env.update(
            {
                "PREFECT_API_URL": local.prefect_api_url,
                "PREFECT_HOME": str(self.state / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_API_HOST": local.host,
                "PREFECT_SERVER_API_PORT": str(local.prefect_port),
                "PREFECT_UI_API_URL": local.prefect_api_url,
                # Pick up new runs within a second instead of the default 10 s.
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_LOGGING_LEVEL": "INFO",
                "AWS_ACCESS_KEY_ID": LOCAL_AWS_KEY,
                "AWS_SECRET_ACCESS_KEY": LOCAL_AWS_KEY,
                "AWS_DEFAULT_REGION": self.settings.aws.region,
                "IMG2IMG_PROJECT_DIR": str(PROJECT_DIR),
                "IMG2IMG_LOCAL__WORKER_TYPE": local.worker_type,
                "IMG2IMG_LOCAL__STATE_DIR": str(self.state),
                "IMG2IMG_AWS__ENDPOINT_URL": local.moto_url,
                "IMG2IMG_AWS__EXPRESS_SESSION_AUTH": "false",
                "IMG2IMG_STAGES__MODEL_CACHE_DIR": str(
                    self.settings.stages.model_cache_dir.resolve()
                ),
                "TOKENIZERS_PARALLELISM": "false",
                # A laptop-sized autoscaler: decide every 2 s, react within seconds.
                **{k: os.environ.get(k, v) for k, v in LOCAL_SCALING.items()},
                **{k: os.environ.get(k, v) for k, v in LOCAL_RECOVERY.items()},
                "OMP_NUM_THREADS": str(self.settings.stages.torch_threads),
            }
        )
        env.update(self.extra_env)
        return env

    def worker_env(self) -> dict[str, str]:
        env = self.child_env()
        # Flows take their AWS clients from the prefect-aws block, as on AWS.
        env["IMG2IMG_AWS__CREDENTIALS_BLOCK"] = CREDENTIALS_BLOCK
        return env

    # -- services -----------------------------------------------------------------------------

    def services(self) -> list[Service]:
        local = self.settings.local
        py = sys.executable
        services = [
            Service(
                "moto",
                [py, "-m", "moto.server", "-H", local.host, "-p", str(local.moto_port)],
                "moto.server",
                lambda: _http_ok(f"{local.moto_url}/moto-api/"),
            ),
            Service(
                "prefect-server",
                [
                    py,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    local.host,
                    "--port",
                    str(local.prefect_port),
                ],
                "server",
                lambda: _http_ok(f"{local.prefect_api_url}/health"),
            ),
        ]
        services += [self.worker_service(i) for i in range(local.workers)]
        services.append(
            Service("dispatcher", [py, "-m", "cli", "dispatch"], "dispatch", lambda: True)
        )
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

    def worker_service(self, index: int) -> Service:
        local = self.settings.local
        argv = [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            POOL,
            "--name",
            f"local-worker-{index}",
            "--type",
            local.worker_type,
        ]
        if local.worker_type == "process":
            # The stock worker would start every run at once; one device serves one run
            # at a time per slot, so it gets the same number of slots.
            argv += ["--limit", str(self.settings.worker.slot_count())]
        return Service(f"worker-{index}", argv, "worker", lambda: True)

    # -- workers the autoscaler adds and removes ---------------------------------------------

    def running_workers(self) -> list[tuple[int, str]]:
        """(index, worker name) of the workers running and not draining."""
        found = []
        if self.pids.exists():
            for f in self.pids.glob("worker-*.pid"):
                suffix = f.stem.removeprefix("worker-")
                if not suffix.isdigit():
                    continue  # draining
                index = int(suffix)
                if self.pid_of(self.worker_service(index)) is not None:
                    found.append((index, f"local-worker-{index}"))
        return sorted(found)

    def start_worker(self) -> int:
        used = {i for i, _ in self.running_workers()}
        used |= {int(f.stem.split("-")[1].split(".")[0]) for f in self.pids.glob("worker-*.pid")}
        index = next(i for i in range(len(used) + 1) if i not in used)
        self._start(self.worker_service(index), self.worker_env())
        return index

    def drain_worker(self, index: int) -> None:
        """SIGTERM a worker (it finishes its runs, then exits) and mark it as leaving."""
        service = self.worker_service(index)
        pid = self.pid_of(service)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        self._pidfile(service.name).rename(self.pids / f"worker-{index}.draining.pid")
        proc = self._procs.pop(service.name, None)
        if proc is not None:
            self._procs[f"worker-{index}.draining"] = proc
        log.info("draining worker-%d (pid %d)", index, pid)

    def reap(self) -> list[str]:
        """Collect the exit status of the processes this object started (no `<defunct>`
        children) and forget the PID files of those that ended; returns their names."""
        ended = []
        for name, proc in list(self._procs.items()):
            if proc.poll() is None:
                continue
            del self._procs[name]
            ended.append(name)
            for pidfile in (self._pidfile(name), self.pids / f"{name}.draining.pid"):
                with contextlib.suppress(OSError, ValueError):
                    if int(pidfile.read_text().strip()) == proc.pid:
                        pidfile.unlink()
        return ended

    def _pidfile(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def pid_of(self, service: Service) -> int | None:
        """PID of a running process that this stack started for `service`."""
        try:
            pid = int(self._pidfile(service.name).read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return None
        return pid if service.marker in cmdline else None

    def _start(self, service: Service, env: dict[str, str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)
        log_file = open(self.logs / f"{service.name}.log", "ab")  # noqa: SIM115 (child owns it)
        proc = subprocess.Popen(
            service.argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=PROJECT_DIR,
            start_new_session=True,
        )
        self._pidfile(service.name).write_text(str(proc.pid))
        self._procs[service.name] = proc
        log.info(
            "started %s (pid %d), log %s", service.name, proc.pid, self.logs / f"{service.name}.log"
        )

    def _wait_healthy(self, service: Service) -> None:
        deadline = time.monotonic() + self.settings.local.start_timeout_s
        while time.monotonic() < deadline:
            if service.healthy():
                return
            proc = self._procs.get(service.name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"{service.name} exited while starting; see {self.logs / service.name}.log"
                )
            time.sleep(0.5)
        raise TimeoutError(
            f"{service.name} did not answer within {self.settings.local.start_timeout_s} s; "
            f"see {self.logs / service.name}.log"
        )

    # -- up / down / status -----------------------------------------------------------------

    def up(self, say: Callable[[str], None] = log.info) -> None:
        env = self.child_env()
        services = {s.name: s for s in self.services()}
        for name in ("moto", "prefect-server"):
            service = services[name]
            if self.pid_of(service) is not None and service.healthy():
                say(f"{name}: already running")
                continue
            if service.healthy():
                raise RuntimeError(
                    f"{name}: something else already answers on its port; stop it or change "
                    "the port setting (IMG2IMG_LOCAL__PREFECT_PORT / IMG2IMG_LOCAL__MOTO_PORT)"
                )
            say(f"{name}: starting")
            self._start(service, env)
            self._wait_healthy(service)
        self._provision(env, say)
        self._restart_on_backend_change(say)
        for name, service in services.items():
            if name in ("moto", "prefect-server", "supervisor"):
                continue
            if self.pid_of(service) is not None:
                say(f"{name}: already running")
                continue
            say(f"{name}: starting")
            self._start(service, self.worker_env() if name.startswith("worker") else env)
        supervisor = services["supervisor"]
        if self.pid_of(supervisor) is None:
            say("supervisor: starting (restarts the dispatcher, autoscaler and recovery service)")
            self._start(supervisor, env)
        else:
            say("supervisor: already running")

    def supervise(self, stop: Callable[[], bool], interval_s: float = 2.0) -> None:
        """Keep the dispatcher, the autoscaler and the recovery service running: restart
        any that died, and reap what ended. Returns when `stop()` is true."""
        env = self.child_env()
        services = {s.name: s for s in self.services() if s.name in SUPERVISED}
        while not stop():
            self.reap()
            for name, service in services.items():
                if self.pid_of(service) is None:
                    log.warning("%s is not running; restarting it", name)
                    self._start(service, env)
            time.sleep(interval_s)
        self.reap()

    def _restart_on_backend_change(self, say: Callable[[str], None]) -> None:
        """Workers keep the backend they started with; a new `stages.backend` restarts the
        services that run or start them (the server, moto and their data stay)."""
        marker = self.state / "stages-backend"
        stages = self.settings.stages
        backend: str = stages.backend
        if stages.simulated_crash_marker:
            backend += f" (crash marker {stages.simulated_crash_marker!r})"
        before = marker.read_text().strip() if marker.exists() else backend
        if before != backend:
            say(f"stages.backend changed from {before} to {backend}: restarting the pipeline")
            self.stop(["supervisor"], say)  # first, or it would restart the others
            self.stop(["autoscaler", "worker*"], say)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(backend)

    def _provision(self, env: dict[str, str], say: Callable[[str], None]) -> None:
        from infra.resources import ensure_resources

        aws = self.settings.aws.model_copy(
            update={"endpoint_url": self.settings.local.moto_url, "express_session_auth": False}
        )
        os.environ.setdefault("AWS_ACCESS_KEY_ID", LOCAL_AWS_KEY)
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", LOCAL_AWS_KEY)
        ensure_resources(
            clients_from_settings(aws), self.settings.storage, self.settings.dispatch, aws.region
        )
        say("aws: buckets, queue, dead-letter queue and notifications ready")
        self._prefect_setup(env, say)

    def _prefect_setup(self, env: dict[str, str], say: Callable[[str], None]) -> None:
        py = sys.executable
        self._run([py, "-m", "infra.local_blocks"], env)
        fingerprint = _deploy_fingerprint() + self.settings.local.worker_type
        stamp = self.state / "deployed.sha"
        if stamp.exists() and stamp.read_text() == fingerprint and self._deployment_exists(env):
            say("prefect: work pool and deployments up to date")
            return
        self._run([py, "-m", "prefect", "--no-prompt", "deploy", "--all"], env)
        stamp.write_text(fingerprint)
        say("prefect: work pool, credentials block and deployments applied (prefect deploy)")

    def _deployment_exists(self, env: dict[str, str]) -> bool:
        url = env["PREFECT_API_URL"] + "/deployments/name/img2img-pipeline/inf2"
        return _http_status(url) == 200

    def _run(self, argv: list[str], env: dict[str, str]) -> None:
        out = subprocess.run(
            argv, env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[2:])} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
            )

    def stop(self, names: list[str], say: Callable[[str], None] = log.info) -> None:
        """Stop the named services (for example the worker and dispatcher, to restart them
        with other settings) and leave the rest running."""
        for service in self.services() + self._extra_workers():
            if service.name in names or any(
                n.endswith("*") and service.name.startswith(n[:-1]) for n in names
            ):
                pid = self.pid_of(service)
                if pid is not None:
                    say(f"{service.name}: stopping (pid {pid})")
                    _terminate(pid)
                self._pidfile(service.name).unlink(missing_ok=True)

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def down(self, say: Callable[[str], None] = log.info) -> None:
        for service in reversed(self.services() + self._extra_workers()):
            pid = self.pid_of(service)
            if pid is None:
                self._pidfile(service.name).unlink(missing_ok=True)
                continue
            say(f"{service.name}: stopping (pid {pid})")
            _terminate(pid)
            self._pidfile(service.name).unlink(missing_ok=True)

    def _extra_workers(self) -> list[Service]:
        """Workers started beyond the configured count (by an earlier, larger `up`)."""
        known = {s.name for s in self.services()}
        extra = []
        if self.pids.exists():
            for f in self.pids.glob("worker-*.pid"):
                if f.stem not in known:
                    extra.append(Service(f.stem, [], "worker", lambda: True))
        return extra

    def status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for service in self.services() + self._extra_workers():
            pid = self.pid_of(service)
            out[service.name] = {
                "running": pid is not None,
                "pid": pid,
                "healthy": pid is not None and service.healthy(),
            }
        return out


def _http_status(url: str, timeout: float = 5.0) -> int:
    """The HTTP status of a GET of `url`, 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def _terminate(pid: int, grace_s: float = 60.0) -> None:
    """SIGTERM the service's main process only (a warm worker then drains its slots), wait
    for it, then SIGKILL whatever is left of its process group."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if this process started it


def _alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped by its parent) is not alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _deploy_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted([PROJECT_DIR / "prefect.yaml", *PROJECT_DIR.glob("flows/*.py")]):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def describe(status: dict[str, dict[str, object]]) -> str:
    return json.dumps(status, indent=2)

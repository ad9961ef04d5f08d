"""Processes the local stack starts and supervises: PID files whose command lines are
checked before any signal, log files, health checks, reaping, and termination."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("infra.local.stack")
# How long a process just started may still show its parent's command line.
EXEC_GRACE_S = 0.5


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    marker: str  # a string that must be in the process's command line to be ours
    healthy: Callable[[], bool]
    user: str | None = None  # the OS user it runs as (None: this process's own)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    # urlopen raises for 4xx and 5xx, so a status it returns is a success or a redirect.
    return 200 <= http_status(url, timeout) < 400


def tcp_open(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether something accepts connections on `host`:`port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 5.0) -> int:
    """The HTTP status of a GET of `url`, 0 when nothing answers."""
    try:
        with urllib.request.urlopen(
            url,
            timeout=timeout,
            # the stack's own loopback http URLs (bandit B310)
        ) as response:  # nosec B310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


class ProcessTable:
    """The processes started from one state folder: `<state>/pids/<name>.pid` and
    `<state>/logs/<name>.log`. Popen handles of the processes this object started are kept,
    so they can be reaped."""

    def __init__(self, state: Path, cwd: Path) -> None:
        self.state = state
        self.cwd = cwd
        self.pids = state / "pids"
        self.logs = state / "logs"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def reap(self) -> list[str]:
        """Collect the exit status of the processes this object started (no `<defunct>`
        children) and forget the PID files of those that ended; returns their names."""
        ended = []
        for name, proc in list(self._procs.items()):
            if proc.poll() is None:
                continue
            del self._procs[name]
            ended.append(name)
            for pidfile in (self.pidfile(name), self.pids / f"{name}.draining.pid"):
                with contextlib.suppress(OSError, ValueError):
                    if int(pidfile.read_text().strip()) == proc.pid:
                        pidfile.unlink()
        return ended

    def pidfile(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def pid_of(self, service: Service) -> int | None:
        """PID of a running process that this stack started for `service`.

        A process started a moment ago may not have exec'd its command yet (its command
        line is still its parent's): one this object started is known by its handle, and
        another's command line is read again for up to `EXEC_GRACE_S` before it is taken
        for someone else's (a PID reused after ours ended)."""
        try:
            pid = int(self.pidfile(service.name).read_text().strip())
        except (OSError, ValueError):
            return None
        own = self._procs.get(service.name)
        if own is not None and own.pid == pid and own.poll() is None:
            return pid
        deadline = time.monotonic() + EXEC_GRACE_S
        while True:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                return None
            if service.marker in cmdline.decode(errors="replace"):
                return pid
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def start(self, service: Service, env: dict[str, str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)
        log_file = open(self.logs / f"{service.name}.log", "ab")  # noqa: SIM115 (child owns it)
        # argv built by the stack, no shell (bandit B603)
        proc = subprocess.Popen(  # nosec B603
            service.argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
            user=service.user,
            group=service.user,
        )
        self.pidfile(service.name).write_text(str(proc.pid))
        self._procs[service.name] = proc
        log.info(
            "started %s (pid %d), log %s", service.name, proc.pid, self.logs / f"{service.name}.log"
        )

    def start_unless_running(self, service: Service, env: dict[str, str]) -> bool:
        """Start `service` unless a process of it runs; False when one does. Checked and
        started under a lock of its own, so `up` and the supervisor, both seeing it gone,
        do not start it twice (two API replicas racing for one port, one left behind)."""
        from filelock import FileLock

        self.pids.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.pids / f"{service.name}.lock"), timeout=60):
            if self.pid_of(service) is not None:
                return False
            self.start(service, env)
            return True

    def wait_healthy(self, service: Service, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
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
            f"{service.name} did not answer within {timeout_s} s; "
            f"see {self.logs / service.name}.log"
        )

    def mark_draining(self, name: str, pid: int) -> None:
        """`name` is on its way out: its PID file and handle move to `<name>.draining`."""
        self.pidfile(name).rename(self.pids / f"{name}.draining.pid")
        proc = self._procs.pop(name, None)
        if proc is not None:
            self._procs[f"{name}.draining"] = proc


def terminate(pid: int, grace_s: float = 60.0) -> None:
    """SIGTERM the service's main process only (a warm worker then drains its slots), wait
    for it, then SIGKILL whatever is left of its process group."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if this process started it


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped by its parent) is not alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"

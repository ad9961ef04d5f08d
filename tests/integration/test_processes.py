"""The local stack's process table knows the processes it starts, from the first moment on,
and never takes a stranger for one of them (real processes)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from infra.local.processes import EXEC_GRACE_S, ProcessTable, Service, terminate


def sleeper(name: str, marker: str) -> Service:
    code = "import time; time.sleep(30)  # img2img-test-sleeper"
    return Service(name, [sys.executable, "-c", code], marker, lambda: True)


def test_a_process_is_ours_from_its_start_and_a_stranger_never_is(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path, tmp_path)
    service = sleeper("sleeper", "img2img-test-sleeper")
    # Asked at once, before the child may have exec'd its command: known by its handle.
    table.start(service, {})
    pid = table.pid_of(service)
    assert pid is not None and pid == int(table.pidfile("sleeper").read_text())
    try:
        # Another table on the same folder (the supervisor, `local down`) sees it too.
        time.sleep(0.5)
        assert ProcessTable(tmp_path, tmp_path).pid_of(service) == pid
        # A PID file naming a process whose command line is not the service's: not ours,
        # after the grace a just-started process gets.
        stranger = sleeper("stranger", "not-in-its-command-line")
        table.pidfile("stranger").write_text(str(pid))
        started = time.monotonic()
        assert ProcessTable(tmp_path, tmp_path).pid_of(stranger) is None
        assert time.monotonic() - started >= EXEC_GRACE_S * 0.9
    finally:
        terminate(pid)
    assert ProcessTable(tmp_path, tmp_path).pid_of(service) is None  # gone: no PID

"""A warm slot: a long-lived process that owns a share of the device, loads the stage models
once, and runs flow runs in threads, as many as the worker hands it (pipelining).

Protocol over a multiprocessing pipe (dicts):
    worker → slot: {"kind": "run", "run_id"}, {"kind": "cancel", "run_id"}, {"kind": "stop"}
    slot → worker: {"kind": "ready", "pid", "loads", "load_s"},
                   {"kind": "load_failed", "reason"},
                   {"kind": "done", "run_id", "state", "error"}
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any
from uuid import UUID

log = logging.getLogger("img2img.slot")


def slot_main(conn: Connection, index: int, env: dict[str, str]) -> None:
    """Entry point of a slot process."""
    os.environ.update(env)
    # A terminal's Ctrl-C reaches the whole process group; the worker decides when slots stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s slot-{index} %(levelname)s %(message)s"
    )
    for noisy in ("httpx", "httpcore", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    send_lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        with send_lock:
            conn.send(message)

    try:
        from tasks.runtime import get_runtime

        start = time.perf_counter()
        rt = get_runtime()
        rt.models.warm_up(rt.settings.stages, rt.clients.s3)
    except Exception as exc:
        send({"kind": "load_failed", "reason": f"{type(exc).__name__}: {exc}"})
        return
    send(
        {
            "kind": "ready",
            "pid": os.getpid(),
            "loads": rt.models.loads,
            "load_s": round(time.perf_counter() - start, 3),
        }
    )

    from img2img.cancel import registry

    threads: list[threading.Thread] = []
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break  # the worker went away
        kind = message.get("kind")
        if kind == "run":
            thread = threading.Thread(
                target=_execute,
                args=(message["run_id"], send),
                name=f"run-{message['run_id'][:8]}",
                daemon=True,
            )
            thread.start()
            threads = [t for t in threads if t.is_alive()] + [thread]
        elif kind == "cancel":
            registry().request(message["run_id"])
        elif kind == "stop":
            break
    for thread in threads:
        thread.join()


def _execute(run_id: str, send: Any) -> None:
    """Run one flow run in this process, with the models already resident."""
    from prefect.flow_engine import load_flow, load_flow_run, run_flow

    try:
        flow_run = load_flow_run(UUID(run_id))
        flow = load_flow(flow_run)
        state = run_flow(flow, flow_run=flow_run, return_type="state")
        send(
            {
                "kind": "done",
                "run_id": run_id,
                "state": str(state.type.value),  # type: ignore[union-attr]
                "error": None,
            }
        )
    except BaseException as exc:
        log.exception("flow run %s raised out of the engine", run_id)
        send(
            {
                "kind": "done",
                "run_id": run_id,
                "state": "CRASHED",
                "error": f"{type(exc).__name__}: {exc}",
            }
        )

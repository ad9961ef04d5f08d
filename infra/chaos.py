"""`img2img chaos`: fault-injection scenarios on the local stack, with real processes.

Each scenario uploads images, injects one fault, waits until every upload has an outcome,
then until the autoscaler has taken the pool back to zero hosts, and reports:

    {"scenario", "uploads", "results", "failure_records", "lost", "duplicated",
     "recovery_s", "hosts_after_idle", "hosts_started", "idle_launches"}

`lost` counts uploads with no outcome by the deadline; `duplicated`, uploads with more than
one (a result and a failure record). `recovery_s` runs from the fault to the last outcome.
`hosts_started` counts the warm workers that registered with the pool during the scenario,
`idle_launches` those of them that ran no flow run (a host paid for in vain).

`slot-hang` stops the slot of a running run with SIGSTOP and never resumes it: the process
lives on, its worker heartbeats, nothing moves, as with a hung device.
The stages run on the simulated backend (a fixed device time, no CPU), with a crash marker
for the poison scenario.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote_plus

from img2img.aws import clients_from_settings
from img2img.events import ObjectRef
from img2img.keys import keys_for
from img2img.settings import Settings

SCENARIOS = (
    "slot-kill",
    "slot-hang",
    "worker-kill",
    "dispatcher-kill",
    "server-restart",
    "s3-errors",
    "redelivery",
    "poison",
)
POISON_MARKER = "img2img-chaos-poison"
# Scenarios whose fault waits for a run to be running: their recovery is timed from it.
WAITS_FOR_A_RUN = ("slot-kill", "slot-hang", "worker-kill", "server-restart", "s3-errors")
SIM_ENV = {
    "IMG2IMG_STAGES__BACKEND": "simulated",
    "IMG2IMG_STAGES__SIMULATED_CRASH_MARKER": POISON_MARKER,
    "IMG2IMG_STAGES__SIMULATED_IMG2IMG_MS": "300",
    "IMG2IMG_STAGES__SIMULATED_UPSCALE_MS": "200",
    "IMG2IMG_STAGES__SIMULATED_LOAD_S": "1",
}
POLL_S = 0.5


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (40, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def notification(ref: ObjectRef) -> str:
    """The S3 ObjectCreated notification of an upload, as S3 sends it to the queue (a
    redelivery looks exactly like this)."""
    record = {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": ref.bucket},
            "object": {"key": quote_plus(ref.key), "eTag": ref.etag},
        },
    }
    return json.dumps({"Records": [record]})


def _wait(predicate: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL_S)
    return None


class Chaos:
    """One scenario against a running local stack (`LocalStack`)."""

    def __init__(self, settings: Settings, say: Callable[[str], None]) -> None:
        from infra.local_stack import LOCAL_AWS_KEY, LocalStack

        for key, value in SIM_ENV.items():
            os.environ[key] = value  # the stack's children read their settings from here
        settings.stages.backend = "simulated"
        settings.stages.simulated_crash_marker = POISON_MARKER
        flag = settings.local.state_dir.resolve() / "chaos-dispatcher-crash"
        os.environ["IMG2IMG_DISPATCH__CRASH_FLAG"] = str(flag)
        self.crash_flag = flag
        self._burst: Any = None
        self._serving: set[str] = set()
        self.settings = settings
        self.say = say
        self.stack = LocalStack(settings)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", LOCAL_AWS_KEY)
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", LOCAL_AWS_KEY)
        aws = settings.aws.model_copy(
            update={"endpoint_url": settings.local.moto_url, "express_session_auth": False}
        )
        self.clients = clients_from_settings(aws)
        os.environ["PREFECT_API_URL"] = settings.local.prefect_api_url

    # -- the pieces ------------------------------------------------------------------------

    def upload(self, scenario: str, images: int) -> list[ObjectRef]:
        bucket = self.settings.storage.uploads_bucket
        prefix = f"chaos/{scenario}/{uuid.uuid4().hex[:8]}"
        body = _png()
        refs = []
        for i in range(images):
            prompt = POISON_MARKER if scenario == "poison" and i == images // 2 else "chaos"
            meta = {"prompt": prompt, "steps": "4", "strength": "0.5", "upscale-steps": "2"}
            got = self.clients.s3.put_object(
                Bucket=bucket, Key=f"{prefix}/{i}.png", Body=body, Metadata=meta
            )
            refs.append(
                ObjectRef(bucket=bucket, key=f"{prefix}/{i}.png", etag=got["ETag"].strip('"'))
            )
        return refs

    def outcomes(self, refs: list[ObjectRef]) -> tuple[int, int, int, int]:
        """(results, failure records, lost, duplicated) right now."""
        from img2img.storage import exists

        bucket = self.settings.storage.results_bucket
        results = failures = lost = duplicated = 0
        for ref in refs:
            keys = keys_for(ref)
            has_result = exists(self.clients.s3, bucket, keys.result_meta)
            has_failure = exists(self.clients.s3, bucket, keys.failure)
            results += has_result
            failures += has_failure
            lost += not (has_result or has_failure)
            duplicated += has_result and has_failure
        return results, failures, lost, duplicated

    def running_run(self, timeout_s: float = 120) -> Any:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        with get_client(sync_client=True) as client:

            def find() -> Any:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        state=FlowRunFilterState(
                            type=FlowRunFilterStateType(any_=[StateType.RUNNING])
                        )
                    ),
                    limit=5,
                )
                return next((r for r in runs if r.infrastructure_pid), None)

            return _wait(find, timeout_s)

    def redeliver(self, refs: list[ObjectRef]) -> None:
        """Send every upload's notification once more, as S3 may."""
        queue = self.clients.sqs.get_queue_url(QueueName=self.settings.storage.ingest_queue)
        for ref in refs:
            self.clients.sqs.send_message(QueueUrl=queue["QueueUrl"], MessageBody=notification(ref))

    def inject(self, scenario: str, refs: list[ObjectRef]) -> None:
        if scenario == "slot-kill":
            run = self.running_run()
            if run is None:
                raise RuntimeError("no run started within 120 s: nothing to kill")
            self.say(f"SIGKILL slot pid {run.infrastructure_pid} (flow run {run.name})")
            os.kill(int(run.infrastructure_pid), signal.SIGKILL)
        elif scenario == "slot-hang":
            run = self.running_run()
            if run is None:
                raise RuntimeError("no run started within 120 s: nothing to stop")
            self.say(f"SIGSTOP slot pid {run.infrastructure_pid} (flow run {run.name}), for good")
            os.kill(int(run.infrastructure_pid), signal.SIGSTOP)
        elif scenario == "worker-kill":
            if self.running_run() is None:
                raise RuntimeError("no run started within 120 s: nothing to kill")
            workers = self.stack.running_workers()
            for index, _name in workers:
                pid = self.stack.pid_of(self.stack.worker_service(index))
                if pid is not None:
                    self.say(f"SIGKILL worker-{index} pid {pid} (its slots must follow)")
                    os.kill(pid, signal.SIGKILL)
        elif scenario == "server-restart":
            if self.running_run() is None:
                raise RuntimeError("no run started within 120 s")
            self.say("stopping the Prefect server mid-stream, then starting it again")
            self.stack.stop(["prefect-server"], self.say)
            time.sleep(2)
            self.stack.up(self.say)
        elif scenario == "s3-errors":
            if self.running_run() is None:
                raise RuntimeError("no run started within 120 s")
            self.say("one burst of S3 throttling (3 s of 503 SlowDown)")
            self._burst.start_burst(3.0)
        elif scenario == "redelivery":
            self.redeliver(refs)
            self.say(f"sent {len(refs)} duplicate notifications")

    # -- a whole scenario ------------------------------------------------------------------

    def drain_workers(self, timeout_s: float = 120) -> None:
        """Let the running workers finish and exit (the next ones start on demand)."""
        for index, _name in self.stack.running_workers():
            self.stack.drain_worker(index)
        _wait(lambda: not any(self.stack.draining_workers()), timeout_s)

    def run(self, scenario: str, images: int, timeout_s: float) -> dict[str, Any]:
        self.say(f"chaos {scenario}: bringing the local stack up (simulated backend)")
        self.stack.up(self.say)
        if scenario == "s3-errors":
            return self._through_fault_proxy(images, timeout_s)
        return self._run(scenario, images, timeout_s)

    def _through_fault_proxy(self, images: int, timeout_s: float) -> dict[str, Any]:
        """S3 answers 503 SlowDown or 500 on 5% of the workers' requests, plus one burst of
        throttling: the workers reach moto through the fault proxy for this scenario."""
        from infra.faultproxy import FaultProxy
        from infra.local_blocks import save_credentials_block

        moto = self.settings.local.moto_url
        self.drain_workers()  # the next workers build their clients through the proxy
        proxy = FaultProxy(moto, error_rate=0.05).start()
        save_credentials_block(proxy.url)
        try:
            self._burst = proxy
            result = self._run("s3-errors", images, timeout_s)
        finally:
            save_credentials_block(moto)
            self.drain_workers()
            proxy.stop()
        self.say(f"fault proxy: {proxy.injected} S3 errors injected, {proxy.forwarded} forwarded")
        return {**result, "s3_errors_injected": proxy.injected, "s3_requests": proxy.forwarded}

    def _run(self, scenario: str, images: int, timeout_s: float) -> dict[str, Any]:
        if scenario == "dispatcher-kill":
            self.crash_flag.parent.mkdir(parents=True, exist_ok=True)
            self.crash_flag.write_text("kill the dispatcher after its next run\n")
        refs = self.upload(scenario, images)
        self.say(f"uploaded {len(refs)} images")
        since = datetime.now(timezone.utc)
        started = time.monotonic()
        self.inject(scenario, refs)
        if scenario in WAITS_FOR_A_RUN:
            started = time.monotonic()  # the fault is now, once a run was running
        if scenario == "dispatcher-kill":
            _wait(lambda: not self.crash_flag.exists(), 60)
            self.say("the dispatcher killed itself after creating a run, before deleting")
        last_change = time.monotonic()
        seen = -1
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            self._note_serving()
            results, failures, lost, _ = self.outcomes(refs)
            if results + failures != seen:
                seen, last_change = results + failures, time.monotonic()
            if lost == 0:
                break
            time.sleep(1.0)
        results, failures, lost, duplicated = self.outcomes(refs)
        recovery_s = round(last_change - started, 1)
        idle_wait = stack_idle_to_zero_s() + 120
        self.say(f"every upload has an outcome; waiting up to {idle_wait:.0f} s for zero hosts")

        def at_zero() -> bool:
            self._note_serving()
            return not self.stack.running_workers() and not self.stack.draining_workers()

        _wait(at_zero, idle_wait)
        started_hosts, idle = self.launches(since)
        return {
            "scenario": scenario,
            "uploads": len(refs),
            "results": results,
            "failure_records": failures,
            "lost": lost,
            "duplicated": duplicated,
            "recovery_s": recovery_s,
            "hosts_after_idle": len(self.stack.running_workers())
            + len(self.stack.draining_workers()),
            "hosts_started": started_hosts,
            "idle_launches": idle,
        }

    def _note_serving(self) -> None:
        """Remember which workers hold running runs now: a re-run takes the label of the
        worker that runs it last, so the final records alone would hide the first."""
        from prefect.client.orchestration import get_client

        from deployments.pool_runs import pool_runs
        from infra.local_env import POOL

        try:
            with get_client(sync_client=True) as client:
                running = pool_runs(client, POOL, ["RUNNING"])
        except Exception:  # the server may be down in this very scenario
            return
        self._serving |= {str(r.labels["prefect.worker.name"]) for r in running if r.labels}

    def launches(self, since: datetime) -> tuple[int, int]:
        """(workers that registered with the pool since `since`, those that ran no flow
        run), from Prefect's own worker and run records and the running runs seen during
        the scenario."""
        from prefect.client.orchestration import get_client

        from deployments.pool_runs import PAGE, pool_filter
        from infra.local_env import POOL

        with get_client(sync_client=True) as client:
            workers = client.read_workers_for_work_pool(POOL, limit=PAGE)
            runs: list[Any] = []
            while len(runs) < 50 * PAGE:  # bounded: a scenario makes far fewer runs
                page = client.read_flow_runs(
                    work_pool_filter=pool_filter(POOL), limit=PAGE, offset=len(runs)
                )
                runs += page
                if len(page) < PAGE:
                    break
        served = self._serving | {
            str(r.labels.get("prefect.worker.name")) for r in runs if r.labels
        }
        new = [w.name for w in workers if w.created is not None and w.created >= since]
        return len(new), sum(1 for name in new if name not in served)


def stack_idle_to_zero_s() -> float:
    """The idle time the local stack's autoscaler scales to zero after: the environment's,
    else the stack's own default (not the bare settings': the stack keeps a host 300 s)."""
    from infra.local_env import LOCAL_SCALING

    key = "IMG2IMG_SCALING__IDLE_TO_ZERO_S"
    return float(os.environ.get(key, LOCAL_SCALING[key]))


def run_scenario(
    scenario: str,
    settings: Settings,
    images: int = 8,
    say: Callable[[str], None] = print,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    return Chaos(settings, say).run(scenario, images, timeout_s)

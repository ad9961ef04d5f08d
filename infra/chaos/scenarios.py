"""`img2img chaos`: fault-injection scenarios on the local stack, with real processes.

Each scenario uploads images, injects one fault, waits until every upload has an outcome,
then until the autoscaler has taken the pool back to zero hosts, and reports:

    {"scenario", "uploads", "results", "failure_records", "lost", "duplicated",
     "recovery_s", "hosts_after_idle", "hosts_started", "idle_launches"}

`results`, `failure_records`, `lost` and `duplicated` come from the exactly-once audit
(`infra/local/audit.py`), read after the idle wait: `duplicated` counts uploads with a result and
a failure record, an outcome object written twice, or more than one completion message;
`audit` carries its other figures (`wasted_device_runs`: a stage's device work run again
for an upload, by its stage outputs' versions; `runs_max`: the most runs that held one
upload). `recovery_s` runs from the fault to the last outcome.
`hosts_started` counts the warm workers that registered with the pool during the scenario,
`idle_launches` those of them that ran no flow run (a host paid for in vain).

`slot-hang` stops the slot of a running run with SIGSTOP and never resumes it: the process
lives on, its worker heartbeats, nothing moves, as with a hung device.

`backlog-worker-kill` builds a backlog first (the dispatcher is stopped while the images are
uploaded, at least `BACKLOG_MIN` of them), so the dispatcher's adaptive batching puts them
in one large run (one run slot: one host, one run per slot), then kills the worker once that
run is running; the line adds `largest_batch`, the most images a run held.

`upscale-worker-kill` needs the split topology (`--topology split`): it SIGKILLs the stage-2
pool's worker once a stage-2 run is running on it; the line adds `generate_reruns` (stage-1
runs run more than once: 0 when the kill cost stage 1 nothing) and `handoff_p50_ms` (stage-1
outputs of the batch written → stage-2 run started, from the result documents).
`lanes-worker-kill` runs the dispatcher, the autoscaler and the workers with lanes and
tenants on (`LANES_ENV`, each device call in 10 steps: bulk calls hand the device to
interactive ones between two), uploads a mix (every third upload interactive, the rest bulk, two
tenants) and SIGKILLs the worker once a run is running; the line adds `by_lane`, the
outcomes by the lane their documents name (each upload must keep its lane through the
recovery).

The stages run on the simulated backend (a fixed device time, no CPU), with a crash marker
for the poison scenario.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from img2img.config.settings import Settings
from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for
from img2img.pipeline.topology import GENERATE_POOL, UPSCALE_POOL
from infra.local.env import local_clients

# Faults of the Prefect server as a cluster (`img2img local up --ha`): one API replica
# SIGKILLed, the background-services process SIGKILLed, Redis and PostgreSQL restarted.
CLUSTER_SCENARIOS = ("api-replica-kill", "services-kill", "redis-restart", "postgres-restart")
SCENARIOS = (
    "slot-kill",
    "slot-hang",
    "worker-kill",
    "dispatcher-kill",
    "server-restart",
    "s3-errors",
    "redelivery",
    "poison",
    "backlog-worker-kill",
    "upscale-worker-kill",
    "lanes-worker-kill",
    *CLUSTER_SCENARIOS,
)
POISON_MARKER = "img2img-chaos-poison"
# Scenarios whose fault waits for a run to be running: their recovery is timed from it.
WAITS_FOR_A_RUN = (
    "slot-kill",
    "slot-hang",
    "worker-kill",
    "server-restart",
    "s3-errors",
    "backlog-worker-kill",
    "upscale-worker-kill",
    "lanes-worker-kill",
    *CLUSTER_SCENARIOS,
)
# The lanes scenario's services: lanes and tenants on (each lane a work queue, a place per
# slot kept for the interactive lane, the dispatcher holding bulk for tenants' turns), each
# device call cut into steps, so that bulk calls hand the device over between two of them
# when the kill comes.
LANES_ENV = {
    "IMG2IMG_LANES__ENABLED": "true",
    "IMG2IMG_TENANTS__ENABLED": "true",
    "IMG2IMG_STAGES__SIMULATED__STEPS": "10",
}
# The backlog scenario: the fewest uploads it takes (a run of at least this many is killed),
# and the services' settings while it runs: one run slot, so the whole backlog is one run;
# a hold long enough to receive the whole backlog on a loaded machine (under a backlog the
# batch waits at most min(max_hold_s, visibility_timeout_s − 30 s): with a suite's 35 s
# visibility that was 5 s, and a slow receive cut the backlog into runs of fewer than
# BACKLOG_MIN); and a fast simulated device, so a run of 160 takes seconds, not minutes.
BACKLOG_MIN = 128
BACKLOG_PARTIAL = 1  # results written before the worker is killed
BACKLOG_ENV = {
    "IMG2IMG_SCALING__MAX_HOSTS": "1",
    "IMG2IMG_WORKER__RUNS_PER_SLOT": "1",
    "IMG2IMG_DISPATCH__ADAPTIVE": "true",
    "IMG2IMG_DISPATCH__MAX_BATCH": "512",
    "IMG2IMG_DISPATCH__MAX_HOLD_S": "60",
    "IMG2IMG_DISPATCH__VISIBILITY_TIMEOUT_S": "120",
    "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": "20",
    "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": "10",
}
# The services whose settings the backlog scenario changes.
INTAKE = ["dispatcher*", "autoscaler"]
SIM_ENV = {
    "IMG2IMG_STAGES__BACKEND": "simulated",
    "IMG2IMG_STAGES__SIMULATED__CRASH_MARKER": POISON_MARKER,
    "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": "300",
    "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": "200",
    "IMG2IMG_STAGES__SIMULATED__LOAD_S": "1",
}
POLL_S = 0.5
# The audit's figures that the line carries at its top level (the rest go under "audit").
AUDIT_TOP = ("uploads", "results", "failure_records", "lost", "duplicated")


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


def _wait(predicate: Callable[[], Any], timeout_s: float, poll_s: float = POLL_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    return None


class Chaos:
    """One scenario against a running local stack (`LocalStack`)."""

    def __init__(self, settings: Settings, say: Callable[[str], None]) -> None:
        from infra.local.stack import LocalStack

        for key, value in SIM_ENV.items():
            os.environ[key] = value  # the stack's children read their settings from here
        settings.stages.backend = "simulated"
        settings.stages.simulated.crash_marker = POISON_MARKER
        flag = settings.local.state_dir.resolve() / "chaos-dispatcher-crash"
        os.environ["IMG2IMG_FAULTS__DISPATCHER_CRASH_FLAG"] = str(flag)
        self.crash_flag = flag
        self._burst: Any = None
        self._serving: set[str] = set()
        self._largest = 0
        self._before_kill = 0
        self._refs: list[ObjectRef] = []
        self._since = datetime.now(UTC)
        self.settings = settings
        self.say = say
        self.stack = LocalStack(settings)
        self.clients = local_clients(settings)
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
            if scenario == "lanes-worker-kill":
                meta |= {"lane": "bulk" if i % 3 else "interactive", "tenant": f"t{i % 2}"}
            got = self.clients.s3.put_object(
                Bucket=bucket, Key=f"{prefix}/{i}.png", Body=body, Metadata=meta
            )
            refs.append(
                ObjectRef(bucket=bucket, key=f"{prefix}/{i}.png", etag=got["ETag"].strip('"'))
            )
        return refs

    def outcomes(self, refs: list[ObjectRef], known: set[str] | None = None) -> tuple[int, int]:
        """(uploads with an outcome, uploads without one) right now: the progress a scenario
        waits on (the audit judges them at the end). With `known`, uploads found with an
        outcome before are not asked again (a large scenario polls less)."""
        from img2img.delivery.outcomes import outcome_key

        bucket = self.settings.storage.results_bucket
        done = lost = 0
        for ref in refs:
            if known is not None and ref.identity in known:
                done += 1
            elif outcome_key(self.clients.s3, bucket, ref) is not None:
                done += 1
                if known is not None:
                    known.add(ref.identity)
            else:
                lost += 1
        return done, lost

    def running_run(
        self, timeout_s: float = 120, min_images: int = 0, flow: str | None = None
    ) -> Any:
        """A running flow run with a slot process (and at least `min_images` uploads; of
        the flow named `flow`, when given), or None after `timeout_s`."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowFilter,
            FlowFilterName,
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
                    flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])) if flow else None,
                    limit=5,
                )
                for r in runs:
                    self._largest = max(self._largest, len(r.parameters.get("objects", [])))
                return next(
                    (
                        r
                        for r in runs
                        if r.infrastructure_pid
                        and len(r.parameters.get("objects", [])) >= min_images
                    ),
                    None,
                )

            return _wait(find, timeout_s)

    def _results_listed(self, refs: list[ObjectRef]) -> int:
        """How many of `refs` have their result document, from one listing of their
        folder (cheap enough to poll every few milliseconds)."""
        bucket = self.settings.storage.results_bucket
        folder = refs[0].key.rsplit("/", 1)[0]
        prefix = f"results/{refs[0].bucket}/{folder}/"
        pages = self.clients.s3.get_paginator("list_objects_v2")
        return sum(
            1
            for page in pages.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
            if item["Key"].endswith(".json")
        )

    def _first_results(self, refs: list[ObjectRef], timeout_s: float = 120) -> None:
        """Wait until the large run writes its first results: the worker is then killed in
        the middle of writing them, so some images are done and the rest are not."""
        _wait(lambda: self._results_listed(refs) >= BACKLOG_PARTIAL or None, timeout_s, 0.02)

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
        elif scenario in ("worker-kill", "backlog-worker-kill", "lanes-worker-kill"):
            least = BACKLOG_MIN if scenario == "backlog-worker-kill" else 0
            if self.running_run(min_images=least) is None:
                raise RuntimeError(
                    f"no run of at least {least} images started within 120 s (the largest "
                    f"seen running held {self._largest}): nothing to kill"
                )
            if scenario == "backlog-worker-kill":
                self._first_results(refs)
            self._kill_workers(self.stack.role().pool, "")
            if scenario == "backlog-worker-kill":
                time.sleep(1.0)  # the slots die with their worker: what is written now stays
                self._before_kill = self._results_listed(refs)
                self.say(f"{self._before_kill} of {len(refs)} results written before the kill")
        elif scenario == "upscale-worker-kill":
            upscale = UPSCALE_POOL
            if self.settings.topology != "split":
                raise RuntimeError(
                    "upscale-worker-kill needs the split topology (--topology split)"
                )
            run = self.running_run(flow=upscale.flow)
            if run is None:
                raise RuntimeError("no stage-2 run started within 120 s: nothing to kill")
            self._kill_workers(upscale.pool, f" under stage-2 run {run.name}")
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
        elif scenario in CLUSTER_SCENARIOS:
            if not self.stack.uses_ha():
                raise RuntimeError(
                    f"{scenario} needs the Prefect server as a cluster: img2img local up --ha "
                    "(or IMG2IMG_LOCAL__HA=true)"
                )
            if self.running_run() is None:
                raise RuntimeError("no run started within 120 s")
            self._cluster_fault(scenario)

    def _cluster_fault(self, scenario: str) -> None:
        """SIGKILL an API replica or the services process (the supervisor restarts it), or
        restart Redis (stopped; the supervisor starts it again) or PostgreSQL (stopped,
        then `up` starts it again)."""
        parts = {s.name: s for s in self.stack.services()}
        target = {
            "api-replica-kill": "prefect-api-0",
            "services-kill": "prefect-services",
            "redis-restart": "redis",
            "postgres-restart": "postgres",
        }[scenario]
        pid = self.stack.pid_of(parts[target])
        if pid is None:
            raise RuntimeError(f"{target} is not running: nothing to fault")
        if scenario.endswith("-kill"):
            self.say(f"SIGKILL {target} (pid {pid}) mid-stream")
            os.kill(pid, signal.SIGKILL)
            return
        self.say(f"restarting {target} (pid {pid}) mid-stream")
        self.stack.stop([target], self.say)
        time.sleep(2)
        self.stack.up(self.say)

    def _kill_workers(self, pool: str, why: str) -> None:
        """SIGKILL every running worker of `pool`, the worker process alone: its slots must
        see it go and stop by themselves."""
        for index, _name in self.stack.running_workers(pool):
            service = self.stack.worker_service(index, pool)
            pid = self.stack.pid_of(service)
            if pid is not None:
                self.say(f"SIGKILL {service.name} pid {pid}{why} (its slots must follow)")
                os.kill(pid, signal.SIGKILL)

    # -- a whole scenario ------------------------------------------------------------------

    def drain_workers(self, timeout_s: float = 120) -> None:
        """Let the running workers finish and exit (the next ones start on demand)."""
        for pool, index, _name in self.stack.all_workers():
            self.stack.drain_worker(index, pool)
        _wait(lambda: not any(self.stack.draining_workers()), timeout_s)

    def run(self, scenario: str, images: int, timeout_s: float) -> dict[str, Any]:
        self.say(f"chaos {scenario}: bringing the local stack up (simulated backend)")
        self.stack.up(self.say)
        if scenario == "s3-errors":
            return self._through_fault_proxy(images, timeout_s)
        if scenario == "backlog-worker-kill":
            return self._at_a_backlog(images, timeout_s)
        if scenario == "lanes-worker-kill":
            result = self._with_env(LANES_ENV, scenario, images, timeout_s)
            return {**result, "by_lane": self._by_lane(self._refs)}
        result = self._run(scenario, images, timeout_s)
        if scenario == "upscale-worker-kill":
            result.update(self._split_figures(self._refs))
        return result

    def _split_figures(self, refs: list[ObjectRef]) -> dict[str, Any]:
        """Stage-1 runs run more than once since the scenario began (the stage-2 kill must
        cost stage 1 nothing), and the hand-off p50 from the result documents."""
        from prefect.client.orchestration import get_client

        from img2img.delivery.recovery import SPLIT_TAG
        from img2img.observe.timing import percentile

        with get_client(sync_client=True) as client:
            runs = _every_run(client, GENERATE_POOL.pool)
        # A run re-run in place counts its runs; one split by the recovery service is a
        # new run with the split tag.
        reruns = sum(
            max(r.run_count - 1, 0) + (SPLIT_TAG in (r.tags or []))
            for r in runs
            if r.created is not None and r.created >= self._since
        )
        handoffs = []
        for ref in refs:
            try:
                body = self.clients.s3.get_object(
                    Bucket=self.settings.storage.results_bucket, Key=keys_for(ref).result_meta
                )["Body"].read()
            # A failure record instead: no hand-off time to read (bandit B112).
            except Exception:  # nosec B112
                continue
            ms = json.loads(body).get("timings_ms", {}).get("handoff")
            if ms is not None:
                handoffs.append(float(ms))
        return {
            "generate_reruns": reruns,
            "handoff_p50_ms": round(percentile(handoffs, 50), 1) if handoffs else None,
        }

    def _stop_intake(self) -> None:
        """Stop the dispatchers and the autoscaler, and the supervisor (or it would restart
        them with its own settings)."""
        self.stack.stop(["supervisor", *INTAKE], self.say)
        services = {s.name: s for s in self.stack.services()}
        left = [
            name
            for name, service in services.items()
            if (name == "autoscaler" or name.startswith("dispatcher"))
            and self.stack.pid_of(service) is not None
        ]
        if left:
            raise RuntimeError(f"still running after being stopped: {', '.join(left)}")

    def _with_env(
        self, env: dict[str, str], scenario: str, images: int, timeout_s: float
    ) -> dict[str, Any]:
        """The dispatcher, the autoscaler and the workers run with `env` for `scenario`, and
        with the stack's own settings again after it."""
        self.drain_workers()  # the next workers start with the scenario's settings
        self._stop_intake()
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            if scenario != "backlog-worker-kill":  # that one takes its backlog in at once
                self.stack.up(self.say)  # the intake again, with the scenario's settings
            return self._run(scenario, images, timeout_s)
        finally:
            self._stop_intake()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self.drain_workers()
            self.stack.up(self.say)

    def _by_lane(self, refs: list[ObjectRef]) -> dict[str, int]:
        """Outcomes by the lane their documents name (result or failure record)."""
        from img2img.delivery.outcomes import outcome_key

        bucket = self.settings.storage.results_bucket
        lanes: dict[str, int] = {}
        for ref in refs:
            key = outcome_key(self.clients.s3, bucket, ref)
            if key is None:
                continue
            body = self.clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            lane = str(json.loads(body).get("lane"))
            lanes[lane] = lanes.get(lane, 0) + 1
        return lanes

    def _at_a_backlog(self, images: int, timeout_s: float) -> dict[str, Any]:
        """The dispatcher, the autoscaler and the workers run with `BACKLOG_ENV` for this
        scenario, and with the stack's own settings again after it."""
        if images < BACKLOG_MIN:
            raise ValueError(
                f"backlog-worker-kill needs at least {BACKLOG_MIN} images (--images), "
                f"got {images}: its point is a run that large"
            )
        result = self._with_env(BACKLOG_ENV, "backlog-worker-kill", images, timeout_s)
        return {
            **result,
            "largest_batch": self._largest,
            "results_before_kill": self._before_kill,
            "skipped_as_done": self._skipped_as_done(self._since),
        }

    def _skipped_as_done(self, since: datetime) -> int:
        """Images the pool's runs since `since` found already done (their result written by
        an earlier attempt), from the runs' final state messages."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.sorting import FlowRunSort

        from deployments.services.pool_runs import PAGE, pool_filter

        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                work_pool_filter=pool_filter(self.stack.roles[-1].pool),
                sort=FlowRunSort.START_TIME_DESC,
                limit=PAGE,
            )
        found = 0
        for run in runs:
            if run.created is None or run.created < since or run.state is None:
                continue
            match = re.search(r"(\d+) already processed", run.state.message or "")
            found += int(match.group(1)) if match else 0
        return found

    def _through_fault_proxy(self, images: int, timeout_s: float) -> dict[str, Any]:
        """S3 answers 503 SlowDown or 500 on 5% of the workers' requests, plus one burst of
        throttling: the workers reach moto through the fault proxy for this scenario."""
        from infra.chaos.faultproxy import FaultProxy
        from infra.local.blocks import save_credentials_block

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
        refs = self._refs = self.upload(scenario, images)
        self.say(f"uploaded {len(refs)} images")
        if scenario == "backlog-worker-kill":  # the backlog is in the queue: take it now
            self.stack.up(self.say)
        since = self._since = datetime.now(UTC)
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
        known: set[str] = set()
        while time.monotonic() < deadline:
            self._note_serving()
            done, lost = self.outcomes(refs, known)
            if done != seen:
                seen, last_change = done, time.monotonic()
            if lost == 0:
                break
            time.sleep(1.0)
        recovery_s = round(last_change - started, 1)
        idle_wait = stack_idle_to_zero_s() + 120
        self.say(f"every upload has an outcome; waiting up to {idle_wait:.0f} s for zero hosts")

        def at_zero() -> bool:
            self._note_serving()
            return not self.stack.all_workers() and not self.stack.draining_workers()

        _wait(at_zero, idle_wait)
        started_hosts, idle = self.launches(since)
        # Audited after the idle wait, so a late second message (a writer's grace run out)
        # is on the app's queue by then.
        counts = self.audit(refs)
        return {
            "scenario": scenario,
            "uploads": len(refs),
            "results": counts["results"],
            "failure_records": counts["failure_records"],
            "lost": counts["lost"],
            "duplicated": counts["duplicated"],
            "audit": {k: v for k, v in counts.items() if k not in AUDIT_TOP},
            "recovery_s": recovery_s,
            "hosts_after_idle": len(self.stack.all_workers()) + len(self.stack.draining_workers()),
            "hosts_started": started_hosts,
            "idle_launches": idle,
        }

    def audit(self, refs: list[ObjectRef]) -> dict[str, int]:
        """The exactly-once audit of the scenario's uploads (`infra/local/audit.py`): outcome
        versions, stage outputs, every completion message on the app's queue (drained: the
        scenario is its consumer), and the runs that held each upload."""
        from infra.local.audit import audit_local_stack

        return audit_local_stack(
            self.clients.s3,
            self.clients.sqs,
            self.settings,
            [role.pool for role in self.stack.roles],
            refs,
            self.say,
        )

    def _note_serving(self) -> None:
        """Remember which workers hold running runs now: a re-run takes the label of the
        worker that runs it last, so the final records alone would hide the first."""
        from prefect.client.orchestration import get_client

        from deployments.services.pool_runs import pool_runs

        try:
            with get_client(sync_client=True) as client:
                running = [
                    run
                    for role in self.stack.roles
                    for run in pool_runs(client, role.pool, ["RUNNING"])
                ]
        except Exception:  # the server may be down in this very scenario
            return
        self._serving |= {str(r.labels["prefect.worker.name"]) for r in running if r.labels}

    def launches(self, since: datetime) -> tuple[int, int]:
        """(workers that registered with the pool since `since`, those that ran no flow
        run), from Prefect's own worker and run records and the running runs seen during
        the scenario."""
        from prefect.client.orchestration import get_client

        from deployments.services.pool_runs import PAGE

        workers: list[Any] = []
        runs: list[Any] = []
        with get_client(sync_client=True) as client:
            for role in self.stack.roles:
                workers += client.read_workers_for_work_pool(role.pool, limit=PAGE)
                runs += _every_run(client, role.pool)
        served = self._serving | {
            str(r.labels.get("prefect.worker.name")) for r in runs if r.labels
        }
        new = [w.name for w in workers if w.created is not None and w.created >= since]
        return len(new), sum(1 for name in new if name not in served)


def _every_run(client: Any, pool: str) -> list[Any]:
    """Every run of `pool`, in any state."""
    from prefect.client.schemas.objects import StateType

    from deployments.services.pool_runs import pool_runs

    return pool_runs(client, pool, [t.value for t in StateType])


def stack_idle_to_zero_s() -> float:
    """The idle time the local stack's autoscaler scales to zero after: the environment's,
    else the stack's own default (not the bare settings': the stack keeps a host 300 s)."""
    from infra.local.env import LOCAL_SCALING

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

"""The recovery service: crashed and orphaned flow runs of the pipeline pool run again,
bounded, until every upload has its one outcome.

Signals (Prefect's own, chosen for cost at scale):
- a slot that dies: its warm worker sees the process end and marks the run Crashed;
- a worker or host that dies: its runs stay Pending or Running, labelled with the worker's
  name (`prefect.worker.name`); the worker's heartbeats to the work pool stop. One read of
  the pool's workers per tick finds them, where flow-run heartbeats would add an event per
  run every 30 s or more to the server. A warm worker's name is unique per process, so a
  host that restarts its worker under the same base name does not hide the old runs.

Each Crashed run is handled once, by the policy in `img2img.delivery.recovery`: re-run (same run,
same idempotency key, back-off), split in two new runs, or give up with failure records
(stage `crashed`, retryable). Handling moves the run out of the `Crashed` state name it is
found by, so two replicas or a restart never handle a crash twice; a split's child runs
have idempotency keys derived from the parent, so a repeated split creates nothing new.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from deployments.services.loop import LoopService
from deployments.services.pool_runs import PAGE, pool_runs
from img2img.config.settings import Settings
from img2img.delivery import recovery
from img2img.delivery.announce import Announcer
from img2img.delivery.outcomes import outcome_key, write_failure
from img2img.errors import is_retryable
from img2img.intake.events import ObjectRef
from img2img.intake.idempotency import split_key
from img2img.intake.placement import queue_of

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

log = logging.getLogger("img2img.recovery")

CRASHED_NAME = "Crashed"
SPLIT_NAME = "Split"


@dataclass
class RecoveryStats:
    orphaned: int = 0
    retried: int = 0
    split: int = 0
    gave_up: int = 0
    finished: int = 0
    failure_records: int = 0
    actions: list[str] = field(default_factory=list)


class RunRecovery:
    """One pass (`step`) finds orphaned runs, marks them Crashed, and recovers every
    Crashed run of the pool."""

    def __init__(
        self,
        prefect: SyncPrefectClient,
        s3: S3Client,
        settings: Settings,
        pool: str,
        announcer: Announcer | None = None,
    ) -> None:
        self.prefect = prefect
        self.s3 = s3
        # Sends the completion message of the failure records written here, and of outcomes
        # whose run crashed after writing them but before announcing them.
        self.announcer = announcer
        self.settings = settings
        self.policy = settings.recovery
        self.pool = pool
        self.stats = RecoveryStats()

    # -- one pass ---------------------------------------------------------------------------

    def step(self) -> RecoveryStats:
        self.mark_orphans()
        for run in self._runs(["CRASHED"], names=[CRASHED_NAME]):
            try:
                self.recover(run)
            except Exception as exc:  # one bad run must not stop the others
                log.warning("could not recover flow run %s (will retry): %s", run.id, exc)
        return self.stats

    def _runs(self, types: list[str], names: list[str] | None = None) -> list[FlowRun]:
        return pool_runs(self.prefect, self.pool, types, names)

    # -- orphans ----------------------------------------------------------------------------

    def mark_orphans(self) -> int:
        """Mark Crashed every Pending or Running run whose worker stopped heartbeating."""
        from prefect.states import Crashed

        now = datetime.now(UTC)
        workers = {
            w.name: w.last_heartbeat_time
            for w in self.prefect.read_workers_for_work_pool(self.pool, limit=PAGE)
        }
        held: set[str] = set()
        count = 0
        for run in self._runs(["PENDING", "RUNNING"]):
            if run.state is None or run.state.timestamp is None:
                continue
            worker = (run.labels or {}).get("prefect.worker.name")
            worker = str(worker) if worker else None
            if worker:
                held.add(worker)
            reason = recovery.orphan_reason(
                state_name=run.state.name or run.state.type.value,
                state_since=run.state.timestamp,
                worker=worker,
                last_heartbeat=workers.get(worker) if worker else None,
                now=now,
                orphan_after_s=self.policy.orphan_after_s,
            )
            if reason is None:
                continue
            message = f"orphaned while {run.state.name}: {reason}"
            log.warning("flow run %s (%s) %s", run.id, run.name, message)
            self.prefect.set_flow_run_state(run.id, Crashed(message=message), force=True)
            self.stats.orphaned += 1
            count += 1
        self._forget_dead_workers(workers, held, now)
        return count

    def _forget_dead_workers(
        self, workers: dict[str, datetime | None], held: set[str], now: datetime
    ) -> None:
        """Remove long-silent workers that hold no run, so the pool's worker list (one entry
        per worker process) does not grow without end."""
        stale = timedelta(seconds=10 * self.policy.orphan_after_s)
        for name, beat in workers.items():
            if name in held or (beat is not None and now - beat < stale):
                continue
            response = self.prefect.request(
                "DELETE",
                "/work_pools/{work_pool_name}/workers/{name}",
                path_params={"work_pool_name": self.pool, "name": name},
            )
            if response.status_code < 300:
                log.info("forgot worker %s (silent since %s)", name, beat)

    # -- crashed runs ---------------------------------------------------------------------------

    def recover(self, run: FlowRun) -> str:
        """Apply the recovery policy to one Crashed run; returns what was done."""
        from prefect.client.schemas.objects import StateType
        from prefect.states import AwaitingRetry, Completed, Failed, State

        history = self.prefect.read_flow_run_states(run.id)
        own = sum(1 for s in history if s.type == StateType.CRASHED)
        crashes = max(own, 1) + recovery.inherited_crashes(list(run.tags or []))
        objects = [ObjectRef.model_validate(o) for o in (run.parameters or {}).get("objects", [])]
        results = self.settings.storage.results_bucket
        unfinished = [o for o in objects if outcome_key(self.s3, results, o) is None]
        last = run.state.message if run.state is not None else ""
        if not unfinished:
            # The run may have crashed between writing an outcome and announcing it.
            self._announce(objects, {})
            self.prefect.set_flow_run_state(
                run.id,
                Completed(message=f"after a crash ({last}): every upload already has its outcome"),
                force=True,
            )
            return self._did(run, "finished", "every upload already had its outcome")

        action = recovery.plan(crashes, unfinished, self.policy)
        if isinstance(action, recovery.Retry):
            when = datetime.now(UTC) + timedelta(seconds=action.delay_s)
            self.prefect.set_flow_run_state(
                run.id,
                AwaitingRetry(scheduled_time=when, message=f"{action.reason} (crashed: {last})"),
                force=True,
            )
            return self._did(run, "retried", action.reason)
        if isinstance(action, recovery.Split):
            children = [
                self._create_half(run, i, half, crashes) for i, half in enumerate(action.halves)
            ]
            self.prefect.set_flow_run_state(
                run.id,
                State(
                    type=StateType.CRASHED,
                    name=SPLIT_NAME,
                    message=f"{action.reason}: runs {', '.join(children)} (crashed: {last})",
                ),
                force=True,
            )
            return self._did(run, "split", f"{action.reason} → {', '.join(children)}")
        docs: dict[str, dict[str, Any]] = {}
        stage, reason = recovery.give_up_record(last or "", action.reason)
        for ref in unfinished:
            job = write_failure(
                self.s3,
                results,
                ref,
                stage=stage,
                reason=reason,
                retryable=True,
                flow_run_id=str(run.id),
            )
            if job.outcome_doc is not None:
                docs[ref.identity] = job.outcome_doc
        self.stats.failure_records += len(docs)
        # A retryable error here leaves the run Crashed: the next pass finds every outcome
        # written and announces what is still unannounced.
        self._announce(objects, docs)
        self.prefect.set_flow_run_state(
            run.id,
            Failed(
                message=f"{action.reason}: {len(unfinished)} failure record(s) with stage "
                f"{stage!r} (retryable); last crash: {last}"
            ),
            force=True,
        )
        return self._did(run, "gave_up", action.reason)

    def _announce(self, objects: list[ObjectRef], written: dict[str, dict[str, Any]]) -> None:
        """Announce the failure records written now, and any outcome of `objects` that an
        earlier writer left unannounced; a refusal is logged, not raised."""
        if self.announcer is None or not self.announcer.enabled:
            return
        for ref in objects:
            doc = written.get(ref.identity)
            try:
                self.announcer.announce_once(ref, ("failure", doc) if doc is not None else None)
            except Exception as exc:
                if is_retryable(exc):
                    raise
                log.error("completion message for %s not sent: %s", ref.uri, exc)

    def _create_half(self, run: FlowRun, index: int, half: list[ObjectRef], crashes: int) -> str:
        if run.deployment_id is None:
            raise ValueError(f"flow run {run.id} has no deployment to split into")
        # The run's other parameters go with each half as they are (a stage-2 run's hand-off
        # states, keyed by upload, serve either half).
        parameters: dict[str, Any] = {
            **(run.parameters or {}),
            "objects": [o.as_parameter() for o in half],
        }
        child = self.prefect.create_flow_run_from_deployment(
            run.deployment_id,
            parameters=parameters,
            idempotency_key=split_key(str(run.id), index),
            name=f"{run.name}-{'ab'[index]}"[:100],
            tags=recovery.split_tags(crashes),
            # Its lane's queue (lanes on), as the run it splits.
            work_queue_name=queue_of(half),
        )
        return str(child.id)

    def _did(self, run: FlowRun, what: str, detail: str) -> str:
        setattr(self.stats, what, getattr(self.stats, what) + 1)
        line = f"flow run {run.id} ({run.name}) {what.replace('_', ' ')}: {detail}"
        self.stats.actions = [*self.stats.actions, line][-100:]
        log.info("%s", line)
        return what


class RecoveryService(LoopService[RecoveryStats]):
    """The long-running loop on the control host: run recovery every `interval_s`, and the
    upload reconciler every `reconcile_interval_s` (when set)."""

    log = log
    stopping_note = "stopping the recovery service"

    def __init__(
        self,
        runs: RunRecovery | list[RunRecovery],
        reconcile: Any | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        """`runs`: the recovery of each pool of the pipeline (one, or one per stage when
        split); the first one's stats are what `run` returns."""
        super().__init__(clock)
        self.pools = runs if isinstance(runs, list) else [runs]
        self.runs = self.pools[0]
        self.policy = self.runs.policy
        self.reconcile = reconcile
        self._next_reconcile = 0.0

    def started(self) -> None:
        policy = self.policy
        self._next_reconcile = self.clock() + policy.reconcile_interval_s
        log.info(
            "recovering crashed and orphaned runs of pool %s every %.0f s (orphaned after "
            "%.0f s of worker silence; %d attempts, split after %d)",
            ", ".join(r.pool for r in self.pools),
            policy.interval_s,
            policy.orphan_after_s,
            policy.max_attempts,
            policy.split_after,
        )

    def round(self) -> None:
        policy = self.policy
        for runs in self.pools:
            try:
                runs.step()
            except Exception as exc:  # the API may be briefly unavailable
                log.warning("recovery pass of pool %s failed (will retry): %s", runs.pool, exc)
        if (
            self.reconcile is not None
            and policy.reconcile_interval_s > 0
            and self.clock() >= self._next_reconcile
        ):
            self._next_reconcile = self.clock() + policy.reconcile_interval_s
            try:
                self.reconcile()
            except Exception as exc:
                log.warning("reconcile pass failed (will retry): %s", exc)
        self.wait(policy.interval_s)

    def finished(self) -> RecoveryStats:
        return self.runs.stats

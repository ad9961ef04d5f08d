"""What every pipeline flow does with its batch, whichever stages it runs: the steps in
turn (each taking the batch and giving it back, an image that fails marked failed and the
others going on), cancellation between them, then the outcomes, the timing artifacts and
the run's final state."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from prefect.states import Cancelled, Completed, Failed, State

from img2img.intake.events import ObjectRef
from img2img.pipeline.jobs import ImageJob
from img2img.slots.cancel import RunCancelled, registry
from tasks.artifacts import Progress, publish_timings
from tasks.policy import run_step
from tasks.postprocess import postprocess
from tasks.runtime import get_runtime

Step = tuple[str, Callable[[list[ImageJob]], list[ImageJob]]]


def unique(objects: list[ObjectRef]) -> list[ObjectRef]:
    seen: dict[str, ObjectRef] = {}
    for ref in objects:
        seen.setdefault(ref.identity, ref)
    return list(seen.values())


@dataclass
class BatchRun:
    """One flow run's batch: `call` runs a step as a task run or a plain call
    (`monitor.task_runs`)."""

    jobs: list[ImageJob]
    run_id: str | None
    started: datetime
    clock: float
    call: Callable[..., Any]
    progress: Progress | None = None
    step_count: int = 0

    @classmethod
    def begin(cls, jobs: list[ImageJob], run_id: str | None, started: datetime) -> BatchRun:
        monitor = get_runtime().settings.monitor
        return cls(
            jobs,
            run_id,
            started,
            time.perf_counter(),
            partial(run_step, task_run=monitor.task_runs),
        )

    def steps(self, steps: list[Step]) -> bool:
        """Run `steps` in turn; returns whether the run was cancelled (its unfinished images
        then fail with stage 'cancelled')."""
        monitor = get_runtime().settings.monitor
        cancels = registry()
        progress = Progress(self.jobs, len(steps) + 1, steps[0][0], enabled=monitor.run_progress)
        self.progress, self.step_count = progress, len(steps)
        cancelled = False
        for done, (stage, step) in enumerate(steps):
            if done:
                progress.update(self.jobs, done, stage)
            if cancels.requested(self.run_id):
                cancelled = True
            if not cancelled:
                self.jobs, finished = _guarded(self.jobs, stage, step)
                cancelled = not finished
            if cancelled:
                for job in self.jobs:
                    if job.active:
                        job.fail("cancelled", RunCancelled(f"run cancelled before {stage}"))
                break
        return cancelled

    def finish(
        self, cancelled: bool, run_start: float | None = None, links: list[str] | None = None
    ) -> State[Any]:
        """Write the outcomes (results, failure records, completion messages), publish the
        timing artifacts (`links`: lines about the run's other half, for its summary) and
        return the run's final state. `run_start`: where the images' timelines start (epoch
        s; this run's start unless an earlier run began them)."""
        jobs = self.jobs
        assert self.progress is not None, "finish() comes after steps()"
        self.progress.update(jobs, self.step_count, "writing outcomes")
        jobs = self.call(postprocess, jobs, self.run_id)
        self.progress.update(jobs, self.step_count + 1, "done")
        wall = time.perf_counter() - self.clock
        origin = self.started.timestamp() if run_start is None else run_start
        report = self.call(publish_timings, jobs, wall, origin, links or [])
        if self.run_id is not None:
            registry().clear(self.run_id)
        unannounced = [j for j in jobs if j.announce_error is not None]
        handed = [j for j in jobs if j.status == "handed_off"]
        result: dict[str, Any] = {
            "completed": report.completed,
            "failed": report.failed,
            "skipped": report.skipped,
            "unannounced": len(unannounced),
            "outcomes": {j.ref.identity: j.result_uri for j in jobs},
        }
        message = (
            f"{report.completed} completed, {report.failed} failed, "
            f"{report.skipped} already processed, of {len(jobs)}"
        )
        if handed:
            result["handed_off"] = len(handed)
            result["upscale_run"] = handed[0].linked_run
            message = (
                f"{len(handed)} handed to stage 2 (flow run {handed[0].linked_run}), {message}"
            )
        if unannounced:
            # Every image has its outcome, but the app was not told: another run of the same
            # uploads (a redelivery, or this run retried from the UI) sends what is missing.
            message += (
                f"; {len(unannounced)} completion message(s) not sent: "
                f"{unannounced[0].announce_error}"
            )
        if cancelled:
            return Cancelled(
                message=f"cancelled: {message}; unfinished images have failure "
                "records (stage 'cancelled')",
                data=result,
            )
        if report.failed:
            # A partial failure fails the run, so it shows in the UI and in alerts; every
            # failed image has its failure record, so nothing is lost.
            message = f"{report.failed} of {len(jobs)} images failed: {message}"
        if report.failed or unannounced:
            return Failed(message=message, data=result)
        return Completed(message=message, data=result)


def _guarded(
    jobs: list[ImageJob], stage: str, step: Callable[[list[ImageJob]], list[ImageJob]]
) -> tuple[list[ImageJob], bool]:
    """Run a task on the batch; returns the batch it gives back and False if the run was
    cancelled. When the task fails for good (retries spent), its still-active images fail
    instead of the whole batch, so each ends as a failure record."""
    try:
        return step(jobs), True
    except RunCancelled:
        return jobs, False
    except Exception as exc:
        for job in jobs:
            if job.active:
                job.fail(stage, exc)
    return jobs, True

"""What to do with a flow run whose slot or host died: the pure policy, no I/O.

Prefect 3.8 does not re-run Crashed runs (flow `retries` skip them, PrefectHQ/prefect#10211)
and an automation that sets every Crashed run back to Scheduled has no bound. The recovery
service applies this policy instead, once per crash:

- **retry** the run itself (same id, same idempotency key) after a back-off that doubles,
  while it has crashed fewer than `split_after` times (one image: `max_attempts`);
- **split** a batch of several images that keeps crashing into two halves, each a new run
  that inherits the crash count, so an image that kills its slot every time ends up alone
  (Lambda's `BisectBatchOnFunctionError`, applied to a batch of uploads);
- **give up** on a single image that has crashed `max_attempts` times: it gets a failure
  record with stage `crashed` and `retryable: true`.

Uploads that already have an outcome are never part of a retry's new work: the pipeline
skips them, and a split or a give-up leaves them out.

Orphan detection is here too: a Pending or Running run is orphaned when the worker that
holds it has stopped heartbeating (Prefect's worker heartbeats, every
PREFECT_WORKER_HEARTBEAT_SECONDS to the work pool).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from img2img.config.recovery import RecoverySettings
from img2img.intake.events import ObjectRef

CRASHES_TAG = "img2img-crashes:"
SPLIT_TAG = "img2img-split"
# How a warm worker words a slot it killed for a hang (`img2img.slots.progress.hung_reason`).
_HUNG = re.compile(r"hung: no progress for \d+ s(?: during (?P<stage>\w+))?")


@dataclass(frozen=True)
class Retry:
    delay_s: float
    reason: str


@dataclass(frozen=True)
class Split:
    halves: tuple[list[ObjectRef], list[ObjectRef]]
    reason: str


@dataclass(frozen=True)
class GiveUp:
    reason: str


Action = Retry | Split | GiveUp


def plan(crashes: int, unfinished: list[ObjectRef], settings: RecoverySettings) -> Action:
    """The next step for a run that has crashed `crashes` times in all (its own crashes plus
    those of the batch it was split from), with `unfinished` uploads still without outcome.
    """
    if crashes < 1:
        raise ValueError(f"crashes must be at least 1, got {crashes}")
    images = len(unfinished)
    if images > 1 and crashes >= settings.split_after:
        mid = (images + 1) // 2
        return Split(
            (unfinished[:mid], unfinished[mid:]),
            f"crashed {crashes} times with {images} images: split into {mid} + {images - mid}",
        )
    if images <= 1 and crashes >= settings.max_attempts:
        return GiveUp(f"crashed {crashes} times (max_attempts {settings.max_attempts})")
    delay = min(settings.backoff_s * 2 ** (crashes - 1), settings.max_backoff_s)
    return Retry(delay, f"crash {crashes}: re-run in {delay:.0f} s")


def give_up_record(last_crash: str, reason: str) -> tuple[str, str]:
    """The stage and reason of the failure record of an upload whose run has crashed for the
    last time (`reason`: the policy's), from the last crash's message. A hang names the
    stage the device stopped in and leads with `hung: no progress for N s`; any other crash
    is stage `crashed`."""
    found = _HUNG.search(last_crash or "")
    detail = f"its flow run {reason}; last crash: {last_crash}"
    if found is None:
        return "crashed", detail
    return found.group("stage") or "hung", f"{found.group(0)}; {detail}"


def inherited_crashes(tags: list[str]) -> int:
    """Crashes a run inherits from the batch it was split from (its `img2img-crashes:N` tag)."""
    for tag in tags:
        if tag.startswith(CRASHES_TAG):
            try:
                return max(0, int(tag[len(CRASHES_TAG) :]))
            except ValueError:
                return 0
    return 0


def split_tags(crashes: int) -> list[str]:
    return [SPLIT_TAG, f"{CRASHES_TAG}{crashes}"]


def orphan_reason(
    *,
    state_name: str,
    state_since: datetime,
    worker: str | None,
    last_heartbeat: datetime | None,
    now: datetime,
    orphan_after_s: float,
) -> str | None:
    """Why a Pending or Running run has no live holder, or None while it may still have one.

    A run that entered its state less than `orphan_after_s` ago is never orphaned: a worker
    that has just claimed it may not have labelled it yet.
    """
    if (now - state_since).total_seconds() < orphan_after_s:
        return None
    if (
        worker is not None
        and last_heartbeat is not None
        and (state_since - last_heartbeat).total_seconds() >= orphan_after_s
    ):
        # The labelled worker was already silent when the run entered this state, so it
        # cannot be the one that claimed it: the label is left from an earlier attempt (a
        # re-run of an orphaned run, claimed by a new worker that has not relabelled it yet).
        worker = None
    if worker is None:
        if state_name.lower() == "running":
            return None  # not run by a worker (a flow run started by hand): not ours to judge
        # A worker labels a run a few API calls after claiming it; under load (SQLite locked)
        # that can take seconds, so an unlabelled claim gets three windows.
        waited = (now - state_since).total_seconds()
        if waited < 3 * orphan_after_s:
            return None
        return f"{state_name} for {waited:.0f} s and no worker took it"
    if last_heartbeat is None:
        return f"its worker {worker} is gone from the work pool"
    silent = (now - last_heartbeat).total_seconds()
    if silent >= orphan_after_s:
        return f"its worker {worker} sent no heartbeat for {silent:.0f} s (host lost?)"
    return None

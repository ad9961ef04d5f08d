"""Exactly once, layer by layer: what keeps an upload from getting two outcomes.

S3 notifications are at least once, SQS redelivers, dispatchers compete, runs crash and are
re-run, reconcilers resubmit. Each layer below makes one of those harmless; together they
make "one upload, one outcome" hold whatever repeats. The keys live here; the layers that
use them say so.

1. **Batcher window** (`batching.Batcher`, in memory, per dispatcher): an upload seen in the
   last `dispatch.dedup_window` objects is not batched again. Cheap; lost on restart.
2. **Flow-run idempotency key** (`batch_key`): a batch's run is created with a key derived
   from its uploads' identities, so a redelivered message, a second dispatcher or a
   restarted one gets the existing run back from Prefect instead of a new one. Runs the
   recovery service splits (`split_key`) and runs the reconciler resubmits
   (`reconcile_key`) have keys of their own, derived the same way.
3. **Skip what has an outcome** (`steps.with_outcome_check`): a run looks for each
   upload's result or failure record (beside its copy, not before it) and skips those that
   have one, so a re-run redoes only what is missing, and the recovery service splits only
   unfinished uploads.
4. **Create-once outcomes** (`storage.put_once`): results and failure records are written with
   `If-None-Match: *`; when two runs race, the second write fails as "already there" and the
   upload still has exactly one outcome.

5. **One kind of outcome** (`steps.postprocess`, `outcomes.write_failure_record`): a result
   and a failure record have keys of their own, so create-once alone cannot keep one from
   the other. A run that finishes an image first looks for its failure record (the recovery
   service may have given up on a run it believed dead), and a failure record is not
   written beside a result: the outcome that exists stays the only one. What remains is two
   writers of opposite outcomes within one S3 round trip of each other.

Whether these hold is checked from outside by the exactly-once audit (`img2img.delivery.audit`,
`infra/local/audit.py`), which reads every version of every outcome object and every completion
message, in the tests, the chaos scenarios, the demo and the benchmarks.

What a consumer of the outcomes must still do: nothing for the outcome objects (one per
upload); Prefect events about images are at least once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from img2img.intake.events import ObjectRef


def _digest(objects: Iterable[ObjectRef]) -> str:
    return hashlib.sha256("\n".join(sorted(o.identity for o in objects)).encode()).hexdigest()


def batch_key(objects: Iterable[ObjectRef]) -> str:
    """The flow-run idempotency key of a batch: the same set of uploads, the same key."""
    return f"img2img-batch-{_digest(objects)[:40]}"


def reconcile_key(objects: Iterable[ObjectRef]) -> str:
    """The key of a run the reconciler creates for uploads the event path lost."""
    return f"reconcile-{batch_key(objects)}"


def split_key(parent_run_id: str, half: int) -> str:
    """The key of one half of a crashed batch the recovery service splits."""
    return f"{parent_run_id}:split:{half}"

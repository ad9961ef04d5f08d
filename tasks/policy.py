"""The one retry policy of the pipeline's tasks: transient errors only, with back-off.

Every task that does I/O is declared with `transient_task(...)`, so the policy (which errors
retry, how often, no result caching) is written once. Bad input (`PermanentError`) is never
retried; throttling, timeouts and device faults are (`img2img.errors.is_retryable`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from img2img.errors import is_retryable

F = TypeVar("F", bound=Callable[..., Any])

IO_DELAYS_S = (1, 4, 10)
DEVICE_DELAYS_S = (2, 10)


def retry_if_transient(task: Any, task_run: Any, state: State[Any]) -> bool:
    """`retry_condition_fn`: retry throttling, timeouts and device faults only."""
    return isinstance(state.data, BaseException) and is_retryable(state.data)


def transient_task(name: str, delays_s: Sequence[int] = IO_DELAYS_S) -> Callable[[F], Any]:
    """`@task` with the pipeline's retry policy: one retry per entry of `delays_s`, only
    for transient errors; no result caching (tasks hand each other S3 keys and in-memory
    images, never pickled results)."""
    return task(
        name=name,
        retries=len(delays_s),
        retry_delay_seconds=list(delays_s),
        retry_condition_fn=retry_if_transient,
        cache_policy=NO_CACHE,
    )


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # outside a flow run (a step called on its own)
        return logging.getLogger("img2img.steps")


def run_step(step: Task[..., Any], *args: Any, task_run: bool = True) -> Any:
    """Run a pipeline step: as a Prefect task run, or (`task_run=False`, the server's cheaper
    path at scale) as a plain call in the flow run with the same policy: the task's retries
    and delays, for transient errors only (`img2img.errors.is_retryable`)."""
    if task_run:
        return step(*args)
    delays = step.retry_delay_seconds
    schedule = list(delays) if isinstance(delays, list) else [delays or 0] * step.retries
    attempt = 0
    while True:
        try:
            return step.fn(*args)
        except Exception as exc:
            if attempt >= step.retries or not is_retryable(exc):
                raise
            delay = float(schedule[min(attempt, len(schedule) - 1)]) if schedule else 0.0
            _logger().warning(
                "%s: retry %d of %d in %.0f s after %s: %s",
                step.name,
                attempt + 1,
                step.retries,
                delay,
                type(exc).__name__,
                exc,
            )
            time.sleep(delay)
            attempt += 1

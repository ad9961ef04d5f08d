"""What every task of a run needs, built once per process: settings, AWS clients, models."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from img2img.aws.clients import AwsClients, clients_from_block, clients_from_settings
from img2img.config.settings import Settings, load_settings
from img2img.models.loaded import ModelCache, configure_torch, process_models
from img2img.slots.cancel import registry


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    clients: AwsClients
    models: ModelCache


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process's runtime, built on first use.

    With `aws.credentials_block` set, clients come from that prefect-aws `AwsCredentials`
    block, so credentials live in Prefect and never in code or flow parameters.
    """
    global _runtime
    with _lock:
        if _runtime is None:
            settings = load_settings()
            configure_torch(settings.stages)
            if settings.aws.credentials_block:
                from prefect_aws import AwsCredentials

                block = AwsCredentials.load(settings.aws.credentials_block)
                clients = clients_from_block(block, settings.aws)
            else:
                clients = clients_from_settings(settings.aws)
            _runtime = Runtime(settings=settings, clients=clients, models=process_models())
        return _runtime


def reset_runtime() -> None:
    """Forget the process's runtime (tests that change settings between runs)."""
    global _runtime
    with _lock:
        _runtime = None


def stop_requested() -> Callable[[], bool]:
    """A check the steps call between images: has this flow run been cancelled?"""
    from prefect.runtime import flow_run

    run_id = str(flow_run.id) if flow_run.id else None
    cancels = registry()
    return lambda: cancels.requested(run_id)


def earlier_attempt() -> bool:
    """Whether this run's images may have stage outputs kept by an earlier attempt: the run
    is running again (a retry, from the recovery service or the UI), is half of a batch the
    recovery service split after crashes, or this task is retrying. On a first attempt
    nothing can have been kept, so the stages look nothing up."""
    from prefect.context import FlowRunContext, TaskRunContext

    from img2img.delivery.recovery import inherited_crashes

    flow_context = FlowRunContext.get()
    if flow_context is None or flow_context.flow_run is None:
        return True  # outside a flow run (a step called on its own): look
    run = flow_context.flow_run
    if run.run_count > 1 or inherited_crashes(list(run.tags or [])) > 0:
        return True
    task_context = TaskRunContext.get()
    return task_context is not None and task_context.task_run.run_count > 1

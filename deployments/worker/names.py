"""What the control host reads of a warm worker: the events it emits and how its name carries
its host. Kept apart from the worker itself so that the autoscaler, which reads them, imports
nothing of the worker's runtime (slots, flows, models)."""

from __future__ import annotations

UNHEALTHY_EVENT = "img2img.worker.unhealthy"
RECYCLED_EVENT = "img2img.slot.recycled"
# A warm worker is named "<host>@<process nonce>"; scale targets match on <host>.
HOST_SEPARATOR = "@"


def host_of(worker_name: str) -> str:
    """The host part of a worker name (the instance id, task id or local worker name)."""
    return worker_name.split(HOST_SEPARATOR, 1)[0]

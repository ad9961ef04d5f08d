"""What a warm worker reads from the Prefect API per run: each deployment once, again when
the events stream says it changed, and at most once a TTL while the stream is down."""

from __future__ import annotations

import anyio
import pytest

from deployments.worker import prefect_internals
from deployments.worker.prefect_internals import DeploymentReads


class Client:
    def __init__(self) -> None:
        self.reads: list[str] = []

    async def read_deployment(self, deployment_id: str) -> str:
        self.reads.append(deployment_id)
        return f"deployment {deployment_id} #{len(self.reads)}"


async def _read(client: Client, name: str) -> str:
    got: str = await client.read_deployment(name)
    return got


def read(client: Client, name: str) -> str:
    return anyio.run(_read, client, name)


def test_while_the_stream_is_up_a_deployment_is_read_again_only_when_it_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(prefect_internals.time, "monotonic", lambda: now[0])
    client = Client()
    reads = DeploymentReads(client, ttl_s=60.0, trusted=lambda: True)
    assert read(client, "a") == "deployment a #1"
    now[0] += 3600.0  # no timer: an hour later, still the same deployment
    assert read(client, "a") == "deployment a #1"
    assert read(client, "b") == "deployment b #2"
    reads.forget("a")  # the stream said `a` was updated
    assert read(client, "a") == "deployment a #3"
    assert read(client, "b") == "deployment b #2"
    reads.forget_all()  # the stream came back: it may have missed a change
    assert read(client, "a") == "deployment a #4" and read(client, "b") == "deployment b #5"
    assert client.reads == ["a", "b", "a", "a", "b"] and reads.reads == 5


def test_while_the_stream_is_down_a_deployment_is_read_at_most_once_a_ttl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    up = [False]
    monkeypatch.setattr(prefect_internals.time, "monotonic", lambda: now[0])
    client, other = Client(), Client()
    DeploymentReads(client, ttl_s=60.0, trusted=lambda: up[0])
    assert read(client, "a") == "deployment a #1"
    now[0] += 59.0
    assert read(client, "a") == "deployment a #1"  # served from the cache
    now[0] += 2.0
    assert read(client, "a") == "deployment a #2"  # past the TTL: read again
    up[0] = True
    now[0] += 600.0
    assert read(client, "a") == "deployment a #2"  # the stream is up: no timer
    # The cache is the client object's own.
    assert read(other, "a") == "deployment a #1" and other.reads == ["a"]

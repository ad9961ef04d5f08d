"""What a warm worker reads from the Prefect API per run."""

from __future__ import annotations

import anyio
import pytest

from deployments.worker import prefect_internals
from deployments.worker.prefect_internals import cache_deployment_reads


def test_a_warm_worker_reads_each_deployment_once_per_ttl() -> None:
    class Reads:
        def __init__(self) -> None:
            self.calls: list[str] = []

        async def read_deployment(self, deployment_id: str) -> str:
            self.calls.append(deployment_id)
            return f"deployment {deployment_id}"

    client = Reads()
    cache_deployment_reads(client, ttl_s=60.0)

    async def runs() -> list[str]:
        return [await client.read_deployment(d) for d in ("a", "a", "b", "a", "b")]

    assert anyio.run(runs) == ["deployment a"] * 2 + [
        "deployment b",
        "deployment a",
        "deployment b",
    ]
    assert client.calls == ["a", "b"]
    cache_deployment_reads(fresh := Reads(), ttl_s=0.0)
    anyio.run(lambda: fresh.read_deployment("a"))
    anyio.run(lambda: fresh.read_deployment("a"))
    assert fresh.calls == ["a", "a"]  # no TTL: every read goes through


def test_deployment_reads_are_cached_per_client_for_the_ttl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Client:
        def __init__(self) -> None:
            self.reads: list[str] = []

        async def read_deployment(self, deployment_id: str) -> str:
            self.reads.append(deployment_id)
            return f"deployment {deployment_id} #{len(self.reads)}"

    now = [100.0]
    monkeypatch.setattr(prefect_internals.time, "monotonic", lambda: now[0])
    client, other = Client(), Client()
    cache_deployment_reads(client, ttl_s=60.0)

    async def read(c: Client, name: str) -> str:
        got: str = await c.read_deployment(name)
        return got

    assert anyio.run(read, client, "a") == "deployment a #1"
    now[0] += 59.0
    assert anyio.run(read, client, "a") == "deployment a #1"  # served from the cache
    assert anyio.run(read, client, "b") == "deployment b #2"  # another deployment: read
    now[0] += 2.0
    assert anyio.run(read, client, "a") == "deployment a #3"  # past the TTL: read again
    assert client.reads == ["a", "b", "a"]
    assert anyio.run(read, other, "a") == "deployment a #1" and other.reads == ["a"]

"""What a warm worker reads from the Prefect API per run."""

from __future__ import annotations


def test_a_warm_worker_reads_each_deployment_once_per_ttl() -> None:
    import anyio

    from deployments.worker.prefect_internals import cache_deployment_reads

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

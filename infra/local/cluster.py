"""The local stack's Prefect server as a cluster (`img2img local up --ha`), the shape
`infra/aws/prefect-server.yaml` deploys: API replicas with `--no-services` behind a load
balancer with health checks, the background services in a process of their own,
PostgreSQL, and Redis for the messaging between them (Prefect's self-hosting guide,
`v3/advanced/self-hosted`). Pure: the environment, the command lines and HAProxy's
configuration; `infra.local.stack` starts them.
"""

from __future__ import annotations

import sys

# What every server process of the cluster (replicas, services, the one-off migration)
# shares besides the database URL: Redis for events, the cache, ordering, leases, the
# worker channel's clean-up queue and Docket; no migration or block registration of its own.
REDIS_MODULES = {
    "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
    "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
    "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
    "PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE": "prefect_redis.cleanup_queue",
}


def cluster_env(redis_url: str) -> dict[str, str]:
    """The environment of the cluster's server processes (the database URL aside)."""
    return {
        **REDIS_MODULES,
        "PREFECT_REDIS_MESSAGING_URL": f"{redis_url}/0",
        "PREFECT_REDIS_WORKER_CLEANUP_QUEUE_URL": f"{redis_url}/0",
        "PREFECT_SERVER_DOCKET_URL": f"{redis_url}/1",
        # Migrated once before the replicas start (`migrate_argv`), not by each of them.
        "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def replica_argv(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "prefect",
        "server",
        "start",
        "--no-services",
        "--host",
        host,
        "--port",
        str(port),
    ]


def services_argv() -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "services", "start"]


def migrate_argv() -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"]


def redis_argv(host: str, port: int) -> list[str]:
    """Redis on loopback, in memory only (the cluster's messages are transient)."""
    return [
        "redis-server",
        "--bind",
        host,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
    ]


def haproxy_argv(config: str) -> list[str]:
    return ["haproxy", "-f", config, "-db"]


def haproxy_config(host: str, port: int, replicas: list[int]) -> str:
    """HAProxy in front of the replicas: round robin, each checked on `/api/health` every
    second (out after 2 failures, back after 1 success), a request to a replica that just
    died before it took the connection retried on another (never a request it may
    have acted on); websockets (the events stream) held open."""
    servers = "\n".join(
        f"  server api-{i} {host}:{replica} check" for i, replica in enumerate(replicas)
    )
    return f"""global
  maxconn 4096

defaults
  mode http
  option redispatch
  retries 2
  retry-on conn-failure
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h

frontend prefect-api
  bind {host}:{port}
  default_backend replicas

backend replicas
  balance roundrobin
  option httpchk GET /api/health
  http-check expect status 200
  default-server inter 1s fall 2 rise 1
{servers}
"""

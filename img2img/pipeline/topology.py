"""Where each inference stage runs: one pool for both (`single`), or a pool per stage
(`split`, an Auto Scaling group per stage, as Lyrebird runs them) handing off through the
directory bucket.

Pure: names only. Everything that knows a pool or a deployment by name (the dispatcher, the
worker, the autoscaler, the recovery service, the reconciler, the local stack) asks here.
"""

from __future__ import annotations

from dataclasses import dataclass

from img2img.config.settings import Settings, Topology
from img2img.config.stages import StageKind

BOTH: tuple[StageKind, ...] = ("generate", "upscale")


@dataclass(frozen=True)
class PoolRole:
    """One work pool of the pipeline: its name, the deployment whose runs it serves, the
    stage models its hosts load, and what the local stack calls its workers."""

    pool: str
    deployment: str  # FLOW_NAME/DEPLOYMENT_NAME
    stages: tuple[StageKind, ...]
    worker_prefix: str  # local stack service names: "<prefix>-<index>"

    @property
    def flow(self) -> str:
        return self.deployment.split("/", 1)[0]


SINGLE_POOL = PoolRole("inf2", "img2img-pipeline/inf2", BOTH, "worker")
GENERATE_POOL = PoolRole("inf2-generate", "img2img-generate/inf2-generate", ("generate",), "worker")
UPSCALE_POOL = PoolRole(
    "inf2-upscale", "img2img-upscale/inf2-upscale", ("upscale",), "upscale-worker"
)
ROLES: tuple[PoolRole, ...] = (SINGLE_POOL, GENERATE_POOL, UPSCALE_POOL)


def pools(topology: Topology, single_pool: str = SINGLE_POOL.pool) -> tuple[PoolRole, ...]:
    """The pipeline's pools, the one the uploads enter first. `single_pool` renames the
    single topology's pool (`autoscaler.pool`)."""
    if topology == "split":
        return (GENERATE_POOL, UPSCALE_POOL)
    if single_pool == SINGLE_POOL.pool:
        return (SINGLE_POOL,)
    return (PoolRole(single_pool, SINGLE_POOL.deployment, BOTH, "worker"),)


def entry_deployment(topology: Topology) -> str:
    """The topology's first deployment: the one the uploads enter."""
    return pools(topology)[0].deployment


def dispatch_target(settings: Settings) -> str:
    """The deployment the dispatcher and the reconciler create runs of: `dispatch.deployment`
    when set, else the topology's first."""
    return settings.dispatch.deployment or entry_deployment(settings.topology)


def check_pool_groups(settings: Settings) -> None:
    """A split topology scaled on AWS (an Auto Scaling group or ECS service per pool) must
    name each pool's own group in `autoscaler.pool_groups`: raises ValueError naming those
    missing."""
    auto = settings.autoscaler
    if settings.topology != "split" or auto.target == "local":
        return
    missing = [r.pool for r in pools("split") if r.pool not in auto.pool_groups]
    if missing:
        raise ValueError(
            f"topology split with autoscaler.target={auto.target} scales each pool's "
            f"own group: autoscaler.pool_groups must name one for {', '.join(missing)}"
        )


def stages_for_pool(pool: str) -> tuple[StageKind, ...]:
    """The stage models a host of `pool` loads: its stage in a split topology, both in any
    other pool (the single topology's, or one an operator named)."""
    for role in (GENERATE_POOL, UPSCALE_POOL):
        if role.pool == pool:
            return role.stages
    return BOTH


def artifact_key(base: str, pool: str) -> str:
    """A per-pool artifact's key: `base-<pool>` for a split topology's pools, so their
    histories never mix; `base` for any other pool (the single topology's, as always)."""
    return f"{base}-{pool}" if pool in (GENERATE_POOL.pool, UPSCALE_POOL.pool) else base

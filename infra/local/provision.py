"""Provisioning the local stack: moto's resources, Prefect's blocks, pools and deployments."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from img2img.config.settings import Settings
from infra.local.env import PROJECT_DIR, local_clients
from infra.local.processes import http_status


def provision(
    settings: Settings, state: Path, env: dict[str, str], say: Callable[[str], None]
) -> None:
    """The buckets, queues and notifications on moto; the credentials block, work pools
    and deployments on the Prefect server (`prefect deploy`, skipped when unchanged)."""
    from infra.local.resources import ensure_notifications, ensure_resources, local_topic_arn

    aws = settings.aws
    clients = local_clients(settings)
    ensure_resources(
        clients, settings.storage, settings.dispatch, aws.region, keep_stage_versions=True
    )
    topic_arn, _ = ensure_notifications(clients)
    if "IMG2IMG_NOTIFY__TOPIC_ARN" not in os.environ and topic_arn != local_topic_arn(aws.region):
        raise RuntimeError(
            f"the completion topic is {topic_arn}, but the stack's processes were told "
            f"{local_topic_arn(aws.region)} (is MOTO_ACCOUNT_ID set?)"
        )
    say("aws: buckets, queues, S3 notifications and the completion topic ready")
    _prefect_setup(settings, state, env, say)


def _prefect_setup(
    settings: Settings, state: Path, env: dict[str, str], say: Callable[[str], None]
) -> None:
    py = sys.executable
    _run([py, "-m", "infra.local.blocks"], env)
    fingerprint = deploy_fingerprint() + settings.local.worker_type
    stamp = state / "deployed.sha"
    if stamp.exists() and stamp.read_text() == fingerprint and _deployment_exists(env):
        say("prefect: work pool and deployments up to date")
        return
    _run([py, "-m", "prefect", "--no-prompt", "deploy", "--all"], env)
    stamp.write_text(fingerprint)
    say("prefect: work pool, credentials block and deployments applied (prefect deploy)")


def _deployment_exists(env: dict[str, str]) -> bool:
    url = env["PREFECT_API_URL"] + "/deployments/name/img2img-pipeline/inf2"
    return http_status(url) == 200


def _run(argv: list[str], env: dict[str, str]) -> None:
    # argv built by the stack, no shell (bandit B603)
    out = subprocess.run(  # nosec B603
        argv, env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[2:])} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
        )


# What `prefect deploy` reads: the deployments and the flows they name.
DEPLOYED = ("prefect.yaml", "flows/*.py", "deployments/services/autoscale_flow.py")


def deploy_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted(p for pattern in DEPLOYED for p in PROJECT_DIR.glob(pattern)):
        digest.update(path.read_bytes())
    return digest.hexdigest()

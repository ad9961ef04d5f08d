"""The local stack's settings for its child processes: one environment, loopback only."""

from __future__ import annotations

import os
from pathlib import Path

from img2img.aws.clients import AwsClients, clients_from_settings
from img2img.config.dev import LocalStackSettings
from img2img.config.settings import Settings
from img2img.pipeline.topology import SINGLE_POOL
from infra.local.resources import local_topic_arn

PROJECT_DIR = Path(__file__).resolve().parents[2]
CREDENTIALS_BLOCK = "img2img-local"
POOL = SINGLE_POOL.pool
LOCAL_SCALING = {
    "IMG2IMG_SCALING__MAX_HOSTS": "2",
    "IMG2IMG_SCALING__INTERVAL_S": "2",
    "IMG2IMG_SCALING__SCALE_OUT_COOLDOWN_S": "10",
    "IMG2IMG_SCALING__SCALE_IN_COOLDOWN_S": "30",
    "IMG2IMG_SCALING__IDLE_TO_ZERO_S": "300",
    "IMG2IMG_SCALING__EXPECTED_RUN_S": "10",
    "IMG2IMG_SCALING__DRAIN_TARGET_S": "30",
    # A local warm worker loads the tiny models in about this long (start to first run).
    "IMG2IMG_SCALING__HOST_START_S": "20",
}
# Recovery on a laptop's time scale: workers heartbeat every 5 s, a worker silent for 20 s
# is gone (docs/delivery.md promises detection within 2 minutes), crashed runs are looked at
# every 2 s.
LOCAL_RECOVERY = {
    "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
    "IMG2IMG_RECOVERY__INTERVAL_S": "2",
    "IMG2IMG_RECOVERY__ORPHAN_AFTER_S": "20",
    "IMG2IMG_RECOVERY__BACKOFF_S": "1",
    "IMG2IMG_RECOVERY__RECONCILE_INTERVAL_S": "60",
    "IMG2IMG_RECOVERY__RECONCILE_OLDER_THAN_S": "180",
}
# The fleet view on a laptop's time scale (a demo lasts a minute or two), and the per-run
# views a person watching one run wants (task runs in the run graph, INFO logs, progress bar,
# waterfall chart).
LOCAL_MONITOR = {
    "IMG2IMG_MONITOR__TASK_RUNS": "true",
    "IMG2IMG_MONITOR__API_LOG_LEVEL": "INFO",
    "IMG2IMG_MONITOR__RUN_PROGRESS": "true",
    "IMG2IMG_MONITOR__RUN_CHART": "true",
    "IMG2IMG_MONITOR__FLEET_INTERVAL_S": "10",
    "IMG2IMG_MONITOR__FLEET_WINDOW_S": "300",
    "IMG2IMG_MONITOR__STARVED_AFTER_S": "60",
}
# The services the supervisor keeps running (restarted when they die); every dispatcher
# replica is one of them.
SUPERVISED = ("dispatcher", "autoscaler", "recovery")


def dispatcher_name(index: int) -> str:
    """The stack's name of dispatcher replica `index` (`dispatcher`, `dispatcher-1`, ...)."""
    return "dispatcher" if index == 0 else f"dispatcher-{index}"


def supervised(name: str) -> bool:
    return name in SUPERVISED or name.startswith("dispatcher-")


# Fixed, non-secret credentials for the local emulator only.
LOCAL_AWS_KEY = "local-stack"


def child_env(
    settings: Settings, state: Path, extra_env: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of every process the local stack starts."""
    local = settings.local
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_API_URL": local.prefect_api_url,
            "PREFECT_HOME": str(state / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": local.host,
            "PREFECT_SERVER_API_PORT": str(local.prefect_port),
            "PREFECT_UI_API_URL": local.prefect_api_url,
            # Pick up new runs within a second instead of the default 10 s (unless the
            # caller chose: a split topology's hand-off waits for one such poll).
            "PREFECT_WORKER_QUERY_SECONDS": os.environ.get("PREFECT_WORKER_QUERY_SECONDS", "1"),
            "PREFECT_LOGGING_LEVEL": "INFO",
            "AWS_ACCESS_KEY_ID": LOCAL_AWS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_AWS_KEY,
            "AWS_DEFAULT_REGION": settings.aws.region,
            "IMG2IMG_PROJECT_DIR": str(PROJECT_DIR),
            # The stack's shape, so that a child reading its own settings (the supervisor,
            # the autoscaler's local scale target) sees the stack its parent started.
            "IMG2IMG_LOCAL__WORKER_TYPE": local.worker_type,
            "IMG2IMG_TOPOLOGY": settings.topology,
            "IMG2IMG_LOCAL__STATE_DIR": str(state),
            "IMG2IMG_LOCAL__PREFECT_PORT": str(local.prefect_port),
            "IMG2IMG_LOCAL__MOTO_PORT": str(local.moto_port),
            "IMG2IMG_LOCAL__POSTGRES_PORT": str(local.postgres_port),
            "IMG2IMG_LOCAL__WORKERS": str(local.workers),
            "IMG2IMG_LOCAL__DISPATCHERS": str(local.dispatchers),
            "IMG2IMG_LOCAL__AUTOSCALER": str(local.autoscaler).lower(),
            "IMG2IMG_AWS__ENDPOINT_URL": local.moto_url,
            "IMG2IMG_AWS__EXPRESS_SESSION_AUTH": "false",
            "IMG2IMG_STAGES__MODEL_CACHE_DIR": str(settings.stages.model_cache_dir.resolve()),
            "TOKENIZERS_PARALLELISM": "false",
            # A laptop-sized autoscaler: decide every 2 s, react within seconds.
            **{k: os.environ.get(k, v) for k, v in LOCAL_SCALING.items()},
            **{k: os.environ.get(k, v) for k, v in LOCAL_RECOVERY.items()},
            **{k: os.environ.get(k, v) for k, v in LOCAL_MONITOR.items()},
            # The autoscaler serves /metrics here (the only process that reads the
            # setting); `img2img top` reads it.
            "IMG2IMG_MONITOR__METRICS_PORT": str(local.metrics_port),
            "IMG2IMG_LOCAL__ALERT_WEBHOOK_URL": local.alert_webhook_url,
            # Completion messages go to the local topic unless the caller chose otherwise
            # (an empty value turns them off).
            "IMG2IMG_NOTIFY__TOPIC_ARN": os.environ.get(
                "IMG2IMG_NOTIFY__TOPIC_ARN", local_topic_arn(settings.aws.region)
            ),
            "OMP_NUM_THREADS": str(settings.stages.torch_threads),
        }
    )
    env.update(extra_env or {})
    return env


def worker_env(
    settings: Settings, state: Path, extra_env: dict[str, str] | None = None
) -> dict[str, str]:
    """A warm worker's environment: flows take their AWS clients from the prefect-aws block,
    as on AWS."""
    env = child_env(settings, state, extra_env)
    env["IMG2IMG_AWS__CREDENTIALS_BLOCK"] = CREDENTIALS_BLOCK
    return env


def stack_beside(
    local: LocalStackSettings, state_dir: Path, port_offset: int, **updates: object
) -> LocalStackSettings:
    """A stack of its own next to `local` (a benchmark's): its state folder, every port
    shifted by `port_offset`, and `updates`."""
    return local.model_copy(
        update={
            "state_dir": state_dir,
            "prefect_port": local.prefect_port + port_offset,
            "moto_port": local.moto_port + port_offset,
            "metrics_port": local.metrics_port + port_offset,
            "postgres_port": local.postgres_port + port_offset,
            "redis_port": local.redis_port + port_offset,
            "api_ports": [port + port_offset for port in local.api_ports],
            **updates,
        }
    )


def local_clients(settings: Settings) -> AwsClients:
    """Clients of the local stack's S3/SQS endpoint (moto), with its fixed non-secret
    credentials unless the environment has its own."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", LOCAL_AWS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", LOCAL_AWS_KEY)
    aws = settings.aws.model_copy(
        update={"endpoint_url": settings.local.moto_url, "express_session_auth": False}
    )
    return clients_from_settings(aws)

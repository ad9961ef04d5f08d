"""Shared fixtures: a real moto server over HTTP, a real Prefect API, tiny real models."""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from prefect.client.orchestration import SyncPrefectClient

from img2img.aws.clients import AwsClients
from img2img.config.settings import Settings

# Set before anything imports torch or tokenizers: one thread per process on small hosts.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def test_env(moto_url: str, model_cache: Path) -> Iterator[dict[str, str]]:
    """Environment of the process under test: AWS → moto, tiny models in a temp cache."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "IMG2IMG_AWS__ENDPOINT_URL": moto_url,
        "IMG2IMG_AWS__EXPRESS_SESSION_AUTH": "false",
        "IMG2IMG_STAGES__MODEL_CACHE_DIR": str(model_cache),
        # A run that finds another's unannounced outcome waits this long for its writer's
        # tag (30 s by default): the tests' writers are dead or done within it.
        "IMG2IMG_NOTIFY__WRITER_GRACE_S": "2",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class AwsEnv(NamedTuple):
    """What the `aws` fixture yields: clients of the moto server, and the settings."""

    clients: AwsClients
    settings: Settings


@pytest.fixture
def aws(test_env: dict[str, str], moto_url: str) -> Iterator[AwsEnv]:
    """Fresh moto state with the pipeline's buckets and queues; yields (clients, settings)."""
    from img2img.aws.clients import clients_from_settings
    from img2img.config.settings import load_settings
    from infra.local.resources import ensure_resources
    from tasks.runtime import reset_runtime

    request = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    settings = load_settings()
    clients = clients_from_settings(settings.aws)
    ensure_resources(
        clients, settings.storage, settings.dispatch, settings.aws.region, keep_stage_versions=True
    )
    reset_runtime()
    yield AwsEnv(clients, settings)
    reset_runtime()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real Prefect API (temporary server with its own SQLite database)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def client(prefect_api: None) -> Iterator[SyncPrefectClient]:
    """A synchronous client of the test Prefect API."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        yield c

"""The main job end to end: `img2img demo` on a fresh local stack, then `local down`.

Starts real processes (moto, Prefect server, a worker, the dispatcher) on free loopback
ports with a private state folder, exactly as `make demo` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow


def img2img(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "img2img.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_on_a_fresh_local_stack(tmp_path: Path, model_cache: Path) -> None:
    env = dict(os.environ)
    for key in [k for k in env if k.startswith(("PREFECT_", "IMG2IMG_"))]:
        del env[key]
    env.update(
        {
            "IMG2IMG_LOCAL__STATE_DIR": str(tmp_path / "state"),
            "IMG2IMG_LOCAL__PREFECT_PORT": str(free_port()),
            "IMG2IMG_LOCAL__MOTO_PORT": str(free_port()),
            "IMG2IMG_STAGES__MODEL_CACHE_DIR": str(model_cache),
        }
    )
    try:
        demo = img2img(["demo", "--images", "3", "--json", "--timeout", "300"], env, 600)
        assert demo.returncode == 0, demo.stderr[-4000:]
        summary = json.loads(demo.stdout.strip().splitlines()[-1])
        assert summary["submitted"] == 3 and summary["completed"] == 3
        assert summary["failed"] == 0
        assert len(summary["results"]) == 3 and summary["flow_runs"]
        for stage in ("copy", "stage1", "stage2", "upload", "total"):
            assert summary["stage_p50_ms"][stage] > 0
        assert "tiny random-weight models" in demo.stderr

        status = json.loads(img2img(["local", "status"], env, 60).stdout)
        again = img2img(["local", "up"], env, 300)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "already running" in again.stderr
        assert json.loads(img2img(["local", "status"], env, 60).stdout) == status
    finally:
        down = img2img(["local", "down"], env, 120)
    assert down.returncode == 0
    final = json.loads(img2img(["local", "status"], env, 60).stdout)
    assert not any(s["running"] for s in final.values())

"""prefect.yaml names every deployment, each on its pool, with an entrypoint that imports."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_deployment_has_a_pool_and_a_real_flow() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    found = {}
    for dep in spec["deployments"]:
        module, _, attr = dep["entrypoint"].rpartition(".")
        flow = getattr(importlib.import_module(module), attr)
        found[f"{flow.name}/{dep['name']}"] = dep["work_pool"]["name"]
    assert found == {
        "img2img-pipeline/inf2": "inf2",
        "img2img-generate/inf2-generate": "inf2-generate",
        "img2img-upscale/inf2-upscale": "inf2-upscale",
        "img2img-autoscaler/hourly": "control",
        "img2img-compile/compile": "compile",
    }

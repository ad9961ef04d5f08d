"""Every third-party package the code imports is declared in `pyproject.toml` (the base
install, an extra, or the dev tools for tests), so a fresh install never works only because
another package happened to bring it along."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL = {"img2img", "deployments", "infra", "flows", "tasks", "cli", "tests"}
# Imported, but installed from elsewhere: torch-neuronx only from the Neuron repository on
# Inf2 hosts (its import is guarded); mypy_boto3_* are typing stubs, imported for type
# checking only and declared through boto3-stubs.
NOT_FROM_PYPI = {"torch_neuronx"}


def imported_top_levels(files: list[Path]) -> set[str]:
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in LOCAL}


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    names = {re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0] for spec in specs}
    return {name.lower().replace("_", "-") for name in names}


def undeclared(files: list[Path]) -> list[str]:
    distributions = packages_distributions()
    known = declared()
    missing = []
    for module in sorted(imported_top_levels(files) - NOT_FROM_PYPI):
        if module.startswith("mypy_boto3_"):
            ok = "boto3-stubs" in known
        else:
            dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
            ok = bool(dists & known)
        if not ok:
            missing.append(module)
    return missing


def test_every_imported_package_is_declared() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert undeclared([ROOT / f for f in tracked]) == []


def test_an_undeclared_import_is_named(tmp_path: Path) -> None:
    code = tmp_path / "m.py"
    code.write_text("import yaml\nimport json\nfrom img2img import errors\nimport not_a_pkg_x\n")
    assert undeclared([code]) == ["not_a_pkg_x"]

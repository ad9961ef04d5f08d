"""The hosts' hash-locked requirements: fresh for pyproject, exact, hashed, and what each
host needs (`infra/release/locks.py`; `make lock` rebuilds them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from infra.release.locks import (
    DIGEST_LINE,
    LOCK_SPECS,
    LOCKS,
    ROOT,
    Lock,
    blocks,
    inputs_digest,
    only_through,
    pinned,
    project_table,
    without,
)

PYPROJECT = (ROOT / "pyproject.toml").read_text()


def _lock(name: str) -> str:
    return (LOCKS / f"{name}.txt").read_text()


@pytest.mark.parametrize("spec", LOCK_SPECS, ids=lambda s: s.name)
def test_each_lock_is_fresh_for_pyproject(spec: Lock) -> None:
    """Changing a dependency in pyproject without `make lock` fails here."""
    text = _lock(spec.name)
    first = text.splitlines()[0]
    assert first == DIGEST_LINE + inputs_digest(PYPROJECT, spec), (
        "pyproject's dependencies changed since the lock was made: run `make lock`"
    )


@pytest.mark.parametrize("spec", LOCK_SPECS, ids=lambda s: s.name)
def test_every_requirement_is_exact_and_hashed(spec: Lock) -> None:
    text = _lock(spec.name)
    found = blocks(text)
    assert len(found) > 10
    for name, block in found.items():
        assert re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==\S+", block), name
        assert "--hash=sha256:" in block, f"{name} has no hash"
    assert "file://" not in text and "@ " not in text  # nothing local, nothing by URL


def test_the_locks_hold_what_pyproject_asks_within_its_ranges() -> None:
    project = project_table(PYPROJECT)
    deps, extras = project["dependencies"], project["optional-dependencies"]
    assert isinstance(deps, list) and isinstance(extras, dict)
    base = [Requirement(str(d)) for d in deps]
    inference = [Requirement(str(d)) for d in extras["inference"]]
    control, infer = pinned(_lock("control")), pinned(_lock("inference"))
    for req in base:
        assert req.specifier.contains(control[req.name.lower()], prereleases=True), req
        assert req.specifier.contains(infer[req.name.lower()], prereleases=True), req
    for req in inference:
        if req.name == "torch":
            continue  # the host's DLAMI venv provides it
        assert req.specifier.contains(infer[req.name.lower()], prereleases=True), req
    # No ML stack on the control host; no torch, CUDA or Triton on the inference hosts
    # (the DLAMI's), nor in the project's venv beside them.
    assert not {"torch", "diffusers", "transformers"} & set(control)
    assert not [n for n in infer if n in ("torch", "triton") or n.startswith("nvidia-")]
    server = pinned(_lock("server"))
    assert "prefect-redis" in server and server["prefect"] == control["prefect"]


LOCK = """\
a==1.0 \\
    --hash=sha256:aa
    # via img2img
torch==2.8.0 \\
    --hash=sha256:bb
    # via
    #   accelerate
    #   img2img
nvidia-cublas==12 \\
    --hash=sha256:cc
    # via torch
sympy==1.14 \\
    --hash=sha256:dd
    # via torch
mpmath==1.3 \\
    --hash=sha256:ee
    # via sympy
filelock==3.20 \\
    --hash=sha256:ff
    # via
    #   img2img
    #   torch
"""


def test_what_only_torch_needs_is_left_to_the_host() -> None:
    gone = only_through(LOCK, "torch")
    assert gone == {"torch", "nvidia-cublas", "sympy", "mpmath"}
    kept = without(LOCK, gone)
    assert set(pinned(kept)) == {"a", "filelock"}
    assert "--hash=sha256:ff" in kept and "    #   torch" in kept


def test_the_wheel_ships_the_locks() -> None:
    """The hosts read their lock from the wheel whose SHA-256 the template checks."""
    import tomllib

    data = tomllib.loads(PYPROJECT)["tool"]["setuptools"]["package-data"]
    assert "locks/*.txt" in data["infra.release"]
    assert Path(LOCKS / "inference.txt").is_file()


def test_the_audit_covers_every_lock_with_hashes_and_names_what_it_ignores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from infra.release import audit

    command = audit.audit_command("python")
    assert command[:3] == ["python", "-m", "pip_audit"]
    assert "--require-hashes" in command and "--strict" in command
    assert [command[i + 1] for i, a in enumerate(command) if a == "-r"] == [
        str(LOCKS / f"{spec.name}.txt") for spec in LOCK_SPECS
    ]
    monkeypatch.setattr(audit, "IGNORED", {"GHSA-xxxx": "not reachable: why"})
    assert audit.audit_command("python")[-2:] == ["--ignore-vuln", "GHSA-xxxx"]
    # Where the service does not answer, it says so, and fails only when required.
    monkeypatch.setattr(audit, "service_reachable", lambda: False)
    monkeypatch.delenv("IMG2IMG_REQUIRE_AUDIT", raising=False)
    assert audit.main() == 0
    monkeypatch.setenv("IMG2IMG_REQUIRE_AUDIT", "1")
    assert audit.main() == 1

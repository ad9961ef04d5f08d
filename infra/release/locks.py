"""Hash-locked requirements for the hosts, generated here and checked fresh by a test.

Every host installs the project's dependencies from a lock with `pip --require-hashes`:
exact versions and the SHA-256 of every file pip may fetch, so a launch installs what was
tested and a replaced file on the registry is refused. The locks are built by
`make lock` (uv, for Python 3.11 on x86_64 Linux) and shipped inside the wheel, whose
own SHA-256 the template checks at boot:

- `control.txt`: the base install (dispatcher, autoscaler, recovery);
- `inference.txt`: base + `inference`, less torch and what only torch needs (the host's
  Neuron or GPU DLAMI provides them: the project's venv sees the DLAMI's);
- `server.txt`: `prefect-redis` for the self-hosted server's image
  (`infra/aws/server-image/Dockerfile`), on the pinned Prefect.

Each lock's first line names the SHA-256 of its inputs (`inputs_digest`): pyproject's
dependencies and this module's settings. A change to either without `make lock` fails
`tests/unit/test_locks.py`.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCKS = Path(__file__).resolve().parent / "locks"
PYTHON = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
# What the DLAMI's venv provides on the inference hosts: torch, and (found from the lock's
# "via" notes) whatever only torch needs.
PROVIDED_ROOT = "torch"
DIGEST_LINE = "# inputs-sha256: "


@dataclass(frozen=True)
class Lock:
    name: str
    extras: tuple[str, ...]
    extra_requirements: tuple[str, ...] = ()
    without_provided: bool = False
    project: bool = True  # the project's own dependencies go in


LOCK_SPECS = (
    Lock("control", ()),
    Lock("inference", ("inference",), without_provided=True),
    Lock("server", (), extra_requirements=("prefect-redis",), project=False),
)


def project_table(pyproject: str) -> dict[str, object]:
    import tomllib

    table: dict[str, object] = tomllib.loads(pyproject)["project"]
    return table


def project_dependencies(pyproject: str, *, prefect_only: bool = False) -> list[str]:
    """pyproject's dependencies (only its prefect pin, for the server image's lock)."""
    deps = project_table(pyproject).get("dependencies") or []
    assert isinstance(deps, list)
    return [str(d) for d in deps if not prefect_only or re.match(r"prefect[<>=]", str(d))]


def inputs_digest(pyproject: str, lock: Lock) -> str:
    """SHA-256 of what a lock is built from: the dependencies it takes from pyproject and
    how it is built. Anything else in pyproject (its version, scripts) does not count."""
    project = project_table(pyproject)
    extras = project.get("optional-dependencies") or {}
    assert isinstance(extras, dict)
    doc = {
        "dependencies": project_dependencies(pyproject, prefect_only=not lock.project),
        "extras": {e: extras.get(e, []) for e in lock.extras},
        "extra_requirements": list(lock.extra_requirements),
        "requires_python": project.get("requires-python"),
        "python": PYTHON,
        "platform": PLATFORM,
        "without_provided": lock.without_provided,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


_REQ = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.M)


def pinned(lock_text: str) -> dict[str, str]:
    """Name (normalised) → version of each requirement in a lock."""
    return {normalise(n): v for n, v in _REQ.findall(lock_text)}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def blocks(lock_text: str) -> dict[str, str]:
    """Each requirement's block (its line, hashes and "via" notes), by name."""
    out: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock_text):
        found = _REQ.match(block)
        if found:
            out[normalise(found.group(1))] = block.rstrip("\n")
    return out


def needed_by(block: str) -> list[str]:
    """The packages a lock block says need it (uv's "# via" notes)."""
    notes = [line.strip().removeprefix("#").strip() for line in block.splitlines()]
    names = [n.removeprefix("via").strip() for n in notes if n and not n.startswith("--")]
    return [normalise(n) for n in names if n and not n.startswith("-r ") and "=" not in n]


def only_through(lock_text: str, root: str) -> set[str]:
    """`root` and every package in the lock that only `root` (or such packages) need."""
    by_name = blocks(lock_text)
    need = {name: needed_by(block) for name, block in by_name.items()}
    found = {normalise(root)}
    grew = True
    while grew:
        grew = False
        for name, by in need.items():
            if name not in found and by and all(b in found for b in by):
                found.add(name)
                grew = True
    return found


def without(lock_text: str, names: set[str]) -> str:
    kept = [block for name, block in blocks(lock_text).items() if name not in names]
    return "\n".join(kept) + "\n"


def compile_lock(lock: Lock, pyproject: str, uv: list[str]) -> str:
    """The lock's text: uv's hashed resolution, less what the host provides, under a header
    that names its inputs."""
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.in"
        lines = [f".[{','.join(lock.extras)}]" if lock.extras else "."] if lock.project else []
        if not lock.project:
            lines += project_dependencies(pyproject, prefect_only=True)
        lines += list(lock.extra_requirements)
        requirements.write_text("\n".join(lines) + "\n")
        out = Path(tmp) / "out.txt"
        # uv with arguments built here, no shell (bandit B603)
        subprocess.run(  # nosec B603
            [
                *uv,
                "pip",
                "compile",
                str(requirements),
                "--quiet",
                "--generate-hashes",
                "--no-header",
                "--python-version",
                PYTHON,
                "--python-platform",
                PLATFORM,
                "--no-emit-package",
                "img2img",
                "-o",
                str(out),
            ],
            cwd=ROOT,
            check=True,
        )
        text = out.read_text()
    if lock.without_provided:
        text = without(text, only_through(text, PROVIDED_ROOT))
    header = (
        f"{DIGEST_LINE}{inputs_digest(pyproject, lock)}\n"
        f"# {lock.name}: `make lock` (infra/release/locks.py); install with\n"
        "# pip install --require-hashes --no-deps -r this file\n"
    )
    return header + text


def main() -> int:
    pyproject = (ROOT / "pyproject.toml").read_text()
    uv = [sys.executable, "-m", "uv"]
    LOCKS.mkdir(exist_ok=True)
    for lock in LOCK_SPECS:
        (LOCKS / f"{lock.name}.txt").write_text(compile_lock(lock, pyproject, uv))
        print(f"wrote {LOCKS / lock.name}.txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

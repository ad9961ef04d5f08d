"""`make lint`'s dependency audit: pip-audit over the hosts' hash-locked requirements.

pip-audit asks PyPI's JSON API (or OSV) about each locked version. Where neither answers
(a registry mirror that serves only the simple index, as on the project's build machines)
the audit cannot be done: it says so loudly and, unless IMG2IMG_REQUIRE_AUDIT=1 (set it
where a release is cut), lets lint go on. A finding is never skipped silently: one that is
accepted goes in IGNORED with its reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

from infra.release.locks import LOCK_SPECS, LOCKS

# Advisory id → why it does not apply here (none yet).
IGNORED: dict[str, str] = {}
# What pip-audit asks: a version's own JSON (with its vulnerabilities).
PROBE = "https://pypi.org/pypi/pip/24.0/json"


def service_reachable(url: str = PROBE, timeout_s: float = 10.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # nosec B310
            return int(response.status) == 200
    except Exception:
        return False


def audit_command(python: str) -> list[str]:
    command = [python, "-m", "pip_audit", "--strict", "--disable-pip", "--require-hashes"]
    for lock in LOCK_SPECS:
        command += ["-r", str(LOCKS / f"{lock.name}.txt")]
    for advisory in sorted(IGNORED):
        command += ["--ignore-vuln", advisory]
    return command


def main() -> int:
    if not service_reachable():
        print(
            f"pip-audit: NOT RUN: PyPI's vulnerability API ({PROBE}) does not answer here; "
            "run `make lint` where it does before a release (IMG2IMG_REQUIRE_AUDIT=1 makes "
            "this an error)",
            file=sys.stderr,
        )
        return 1 if os.environ.get("IMG2IMG_REQUIRE_AUDIT") == "1" else 0
    # The command is built here from the project's own files, no shell (bandit B603).
    return subprocess.run(audit_command(sys.executable), check=False).returncode  # nosec B603


if __name__ == "__main__":
    raise SystemExit(main())

"""A PostgreSQL server for the local stack's Prefect (`img2img local up --database postgres`).

Debian's `postgresql` package (`make install` installs it when missing): its `initdb` and
`postgres` binaries, run on loopback, with the data in the stack's state folder. Prefect
asks for PostgreSQL 14.9 or later and the `pg_trgm` extension; the package has both.

PostgreSQL refuses to run as root. When the stack runs as root (a container, CI), the server
runs as the `postgres` user the package creates, and its data folder is one that user can
reach: `<tmp>/img2img-pg-<hash of the state folder>` (the state folder may sit under a
private parent such as pytest's). Its password is generated once and kept, readable by its
owner only, beside the data.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DATABASE = "prefect"
ROLE = "img2img"
SERVER_USER = "postgres"


@dataclass(frozen=True)
class Cluster:
    data: Path
    password_file: Path
    host: str
    port: int
    user: str | None  # the OS user the server runs as (None: this process's own)

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def url(self) -> str:
        """Prefect's connection URL (it holds the password: never log it)."""
        return f"postgresql+asyncpg://{ROLE}:{self.password}@{self.host}:{self.port}/{DATABASE}"

    def server_argv(self) -> list[str]:
        # No Unix socket: loopback TCP only, with a password.
        return [
            binary("postgres"),
            "-D",
            str(self.data),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-k",
            "",
        ]


def binary(name: str) -> str:
    """A PostgreSQL program: on PATH, else Debian's versioned folder (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if not candidates:
        raise FileNotFoundError(
            f"PostgreSQL's {name} was not found (install Debian's postgresql package: "
            "`make install` does it)"
        )
    return candidates[0]


def cluster_for(state: Path, host: str, port: int) -> Cluster:
    if os.geteuid() != 0:
        base = state / "postgres"
        return Cluster(base / "data", base / "password", host, port, None)
    digest = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:12]
    base = Path(tempfile.gettempdir()) / f"img2img-pg-{digest}"
    return Cluster(base / "data", base / "password", host, port, SERVER_USER)


def ensure_initialised(cluster: Cluster) -> bool:
    """Create the cluster (role, password) once; True when it was created now."""
    if (cluster.data / "PG_VERSION").exists():
        return False
    base = cluster.data.parent
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    if not cluster.password_file.exists():
        cluster.password_file.write_text(secrets.token_urlsafe(24) + "\n")
    os.chmod(cluster.password_file, 0o600)
    if cluster.user is not None:
        owner = pwd.getpwnam(cluster.user)
        for path in (base, cluster.password_file):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    run(
        cluster,
        [
            binary("initdb"),
            "-D",
            str(cluster.data),
            "-U",
            ROLE,
            f"--pwfile={cluster.password_file}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--no-instructions",
        ],
    )
    return True


def ensure_database(cluster: Cluster) -> None:
    """The `prefect` database with `pg_trgm` (what Prefect's migrations expect)."""
    # DATABASE is a constant, never input (bandit B608).
    query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"  # nosec B608
    exists = psql(cluster, "postgres", query)
    if exists.strip() != "1":
        psql(cluster, "postgres", f"CREATE DATABASE {DATABASE}")
    psql(cluster, DATABASE, "CREATE EXTENSION IF NOT EXISTS pg_trgm")


def psql(cluster: Cluster, database: str, sql: str) -> str:
    out = run(
        cluster,
        [
            binary("psql"),
            "-h",
            cluster.host,
            "-p",
            str(cluster.port),
            "-U",
            ROLE,
            "-d",
            database,
            "-tAc",
            sql,
        ],
        env={"PGPASSWORD": cluster.password},
    )
    return out


def accepting(cluster: Cluster) -> bool:
    """Whether the server accepts connections (a TCP connect, then pg_isready)."""
    try:
        with socket.create_connection((cluster.host, cluster.port), timeout=1.0):
            pass
    except OSError:
        return False
    # PostgreSQL's own binaries, argv built here (bandit B603)
    probe = subprocess.run(  # nosec B603
        [binary("pg_isready"), "-h", cluster.host, "-p", str(cluster.port), "-q"],
        check=False,
        timeout=10,
    )
    return probe.returncode == 0


def run(cluster: Cluster, argv: list[str], env: dict[str, str] | None = None) -> str:
    """Run a PostgreSQL program as the server's user; its output, or an error with it."""
    full = {**os.environ, **(env or {})}
    # PostgreSQL's own binaries, argv built here (bandit B603)
    out = subprocess.run(  # nosec B603
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=full,
        user=cluster.user,
        group=cluster.user,
        cwd=tempfile.gettempdir(),
    )
    if out.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed: {out.stderr.strip()[-2000:]}")
    return out.stdout

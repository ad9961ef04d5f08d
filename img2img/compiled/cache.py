"""Compiled artifacts fetched from S3 once per host into a local cache, verified.

The cache folder is named by the SHA-256 of the manifest, so a new compile is a new folder
and a folder, once complete, never changes. One slot downloads while the others wait on a
file lock (`flock`, which also separates threads that open the lock file themselves); the
files land in a temporary folder, are hashed against the manifest, and the folder is renamed
into place whole, so no slot ever loads half an artifact.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from img2img.aws import translate_error
from img2img.compiled.manifest import MANIFEST, Manifest, verify_files
from img2img.errors import ModelLoadError, ObjectMissing

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

LOCK_WAIT_S = 3600.0  # a slot waits this long for another slot's download before giving up


@dataclass(frozen=True)
class Fetched:
    folder: Path
    downloaded: bool  # False: this host already had it (or another slot fetched it)
    seconds: float
    bytes: int


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ModelLoadError(f"{uri!r} is not an s3://bucket/prefix URI")
    return bucket, prefix.strip("/")


def fetch_artifacts(uri: str, cache_dir: Path, s3: S3Client | None, workers: int = 8) -> Fetched:
    """The local folder of the artifacts at `uri` (s3:// or a folder), fetching them once."""
    start = time.perf_counter()
    if not uri.startswith("s3://"):
        return Fetched(Path(uri), False, 0.0, 0)
    if s3 is None:
        raise ModelLoadError(f"compiled artifacts {uri} are on S3 but no S3 client was given")
    bucket, prefix = split_s3_uri(uri)
    manifest_key = f"{prefix}/{MANIFEST}" if prefix else MANIFEST
    try:
        raw = s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read()
    except Exception as exc:
        err = translate_error(exc, f"s3://{bucket}/{manifest_key}")
        if isinstance(err, ObjectMissing):
            raise ModelLoadError(f"{uri} holds no {MANIFEST}: compile there first") from exc
        raise err from exc
    manifest = Manifest.from_json(raw.decode(), f"s3://{bucket}/{manifest_key}")
    folder = cache_dir / "artifacts" / hashlib.sha256(raw).hexdigest()[:20]
    if (folder / MANIFEST).exists():
        return Fetched(folder, False, time.perf_counter() - start, 0)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder.parent / f"{folder.name}.lock"):
        if (folder / MANIFEST).exists():  # another slot fetched it while this one waited
            return Fetched(folder, False, time.perf_counter() - start, 0)
        size = _download(s3, bucket, prefix, raw, manifest, folder, workers)
    took = time.perf_counter() - start
    log.info("fetched %s (%.1f MB) into %s in %.1f s", uri, size / 1e6, folder, took)
    return Fetched(folder, True, took, size)


class exclusive_lock:
    """An exclusive `flock` on `path`, waited for up to LOCK_WAIT_S."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise ModelLoadError(
                        f"waited {LOCK_WAIT_S:.0f} s for {self.path} (another process is "
                        "fetching the same artifacts)"
                    ) from None
                time.sleep(0.2)

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _download(
    s3: S3Client,
    bucket: str,
    prefix: str,
    raw_manifest: bytes,
    manifest: Manifest,
    folder: Path,
    workers: int,
) -> int:
    base = f"{prefix}/" if prefix else ""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
        keys += [item["Key"] for item in page.get("Contents", [])]
    rels = [k[len(base) :] for k in keys if k[len(base) :] and k[len(base) :] != MANIFEST]
    missing = [rec.file for rec in manifest.parts.values() if rec.file not in rels]
    if missing:
        raise ModelLoadError(
            f"s3://{bucket}/{base} lacks {', '.join(missing)} named in its manifest"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:

        def get(rel: str) -> None:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                s3.download_file(bucket, base + rel, str(target))
            except Exception as exc:
                raise translate_error(exc, f"s3://{bucket}/{base}{rel}") from exc

        # Largest first, in parallel: a new host is warm as soon as the biggest file lands.
        sizes = {rec.file: rec.bytes for rec in manifest.parts.values()}
        rels.sort(key=lambda r: -sizes.get(r, 0))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(get, rels))
        (tmp / MANIFEST).write_bytes(raw_manifest)
        verify_files(tmp, manifest, hash_files=True)
        os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

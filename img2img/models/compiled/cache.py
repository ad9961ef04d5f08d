"""Compiled artifacts fetched from S3 once per host into a local cache, verified.

The cache folder is named by the SHA-256 of the manifest, so a new compile is a new folder
and a folder, once complete, never changes. One slot downloads while the others wait
(`img2img.models.buildonce`); the files are hashed against the manifest before the folder is put
in place, so no slot ever loads half an artifact or a damaged one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from img2img.aws.clients import translate_error
from img2img.aws.folders import download_prefix, split_s3_uri
from img2img.errors import ModelLoadError, ObjectMissing
from img2img.models.buildonce import build_once
from img2img.models.compiled.manifest import MANIFEST, Manifest, verify_files

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fetched:
    folder: Path
    downloaded: bool  # False: this host already had it (or another slot fetched it)
    seconds: float
    bytes: int


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
    except Exception as exc:  # mapped onto the error tree
        err = translate_error(exc, f"s3://{bucket}/{manifest_key}")
        if isinstance(err, ObjectMissing):
            raise ModelLoadError(f"{uri} holds no {MANIFEST}: compile there first") from exc
        raise err from exc
    manifest = Manifest.from_json(raw.decode(), f"s3://{bucket}/{manifest_key}")
    folder = cache_dir / "artifacts" / hashlib.sha256(raw).hexdigest()[:20]
    fetched = 0

    def fill(tmp: Path) -> None:
        nonlocal fetched
        required = [rec.file for rec in manifest.parts.values()]
        fetched = download_prefix(
            s3, bucket, prefix, tmp, skip=[MANIFEST], required=required, workers=workers
        )
        (tmp / MANIFEST).write_bytes(raw)  # the exact bytes the folder is named by
        verify_files(tmp, manifest, hash_files=True)

    downloaded = build_once(folder, MANIFEST, fill)
    took = time.perf_counter() - start
    if downloaded:
        log.info("fetched %s (%.1f MB) into %s in %.1f s", uri, fetched / 1e6, folder, took)
    return Fetched(folder, downloaded, took, fetched)

"""Folders of files under an S3 prefix: downloading one (models, compiled artifacts) and
uploading one (compile output), in parallel, with errors on the img2img tree."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from img2img.aws.clients import translate_error
from img2img.errors import ModelLoadError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def split_s3_uri(uri: str) -> tuple[str, str]:
    """("bucket", "prefix/without/slashes/around") of an s3:// URI."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ModelLoadError(f"{uri!r} is not an s3://bucket/prefix URI")
    return bucket, prefix.strip("/")


def _key(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


def download_prefix(
    s3: S3Client,
    bucket: str,
    prefix: str,
    dest: Path,
    *,
    skip: Iterable[str] = (),
    required: Iterable[str] = (),
    workers: int = 8,
) -> int:
    """Download every object under s3://bucket/prefix into `dest`, keeping relative paths;
    returns the bytes fetched.

    The largest files go first, `workers` at a time, so a folder is complete as soon as its
    biggest file lands. `skip` names relative paths not to fetch; a `required` one missing
    from the listing fails before anything is downloaded.
    """
    prefix = prefix.strip("/")
    base = f"{prefix}/" if prefix else ""
    skipped = set(skip)
    sizes: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
        for item in page.get("Contents", []):
            rel = item["Key"][len(base) :]
            if rel and not rel.endswith("/") and rel not in skipped:
                sizes[rel] = item.get("Size", 0)
    missing = sorted(set(required) - set(sizes))
    if missing:
        raise ModelLoadError(f"s3://{bucket}/{base} lacks {', '.join(missing)}")
    if not sizes:
        raise ModelLoadError(f"s3://{bucket}/{base} holds no files")

    def get(rel: str) -> None:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            s3.download_file(bucket, _key(prefix, rel), str(target))
        except Exception as exc:  # mapped onto the error tree
            raise translate_error(exc, f"s3://{bucket}/{_key(prefix, rel)}") from exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(get, sorted(sizes, key=lambda r: -sizes[r])))
    return sum(sizes.values())


def upload_folder(s3: S3Client, folder: Path, bucket: str, prefix: str, last: str = "") -> None:
    """Upload every file of `folder` under s3://bucket/prefix; the file named `last` goes
    after all the others (a manifest, so readers never see it before its files)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(folder).as_posix() == last)
    for path in files:
        s3.upload_file(
            str(path), bucket, _key(prefix.strip("/"), path.relative_to(folder).as_posix())
        )

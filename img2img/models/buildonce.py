"""Local folders built once per host: tiny models, downloaded models, compiled artifacts.

Several slot processes start together and want the same folder. One takes an exclusive
file lock next to it (filelock; an `flock`, which also separates threads of one process) and
fills a temporary sibling; the folder is renamed into place whole once it is complete. The
others wait on the lock, then find the folder done: nothing is fetched or built twice, and no
process ever reads half a folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from img2img.errors import ModelLoadError

LOCK_WAIT_S = 3600.0  # how long a process waits for another one's build before giving up


@contextmanager
def exclusive_lock(path: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """An exclusive file lock on `path` (filelock's `flock`), waited for up to `wait_s`."""
    lock = FileLock(path, timeout=wait_s)
    try:
        lock.acquire()
    except Timeout:
        raise ModelLoadError(
            f"waited {wait_s:.0f} s for {path} (another process is building the same folder)"
        ) from None
    try:
        yield
    finally:
        lock.release()


def build_once(folder: Path, marker: str, fill: Callable[[Path], object]) -> bool:
    """Make sure `folder` exists with `marker` in it, filling it with `fill(tmp)` if not.

    `fill` writes into an empty temporary folder that is then renamed to `folder`. Returns
    True when this call built it, False when it was already there (or another process built
    it while this one waited).
    """
    if (folder / marker).exists():
        return False
    folder.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder.parent / f"{folder.name}.lock"):
        if (folder / marker).exists():
            return False
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            fill(tmp)
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return True

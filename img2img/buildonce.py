"""Local folders built once per host: tiny models, downloaded models, compiled artifacts.

Several slot processes start together and want the same folder. One takes an exclusive
`flock` next to it (which also separates threads that open the lock file themselves) and
fills a temporary sibling; the folder is renamed into place whole once it is complete. The
others wait on the lock, then find the folder done: nothing is fetched or built twice, and no
process ever reads half a folder.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from img2img.errors import ModelLoadError

LOCK_WAIT_S = 3600.0  # how long a process waits for another one's build before giving up


class exclusive_lock:
    """An exclusive `flock` on `path`, waited for up to `wait_s`."""

    def __init__(self, path: Path, wait_s: float = LOCK_WAIT_S) -> None:
        self.path = path
        self.wait_s = wait_s
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise ModelLoadError(
                        f"waited {self.wait_s:.0f} s for {self.path} (another process is "
                        "building the same folder)"
                    ) from None
                time.sleep(0.2)

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


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

"""A slot's malloc arenas bounded (`img2img.slots.memory`), checked in a fresh process: glibc's
own statistics count the arenas that threads allocated from."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from img2img.slots.memory import limit_malloc_arenas, own_rss_mb, rss_mb_of

THREADS = """
import ctypes, sys, threading
from img2img.slots.memory import limit_malloc_arenas
applied = limit_malloc_arenas(int(sys.argv[1]))
keep = []
together = threading.Barrier(8)
def work():
    # Through malloc (above Python's small-object allocator, below glibc's mmap threshold),
    # every thread alive at once, so none hands its arena on to the next.
    keep.append(bytearray(50_000))
    together.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(applied, flush=True)
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def _arenas(limit: int) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", THREADS, str(limit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip(), done.stderr.count("Arena ")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_threads_share_the_bounded_arenas_and_glibc_default_gives_each_its_own() -> None:
    applied, bounded = _arenas(2)
    assert applied == "True" and bounded == 2
    applied, default = _arenas(0)  # 0: glibc's default is left alone
    # The main arena and one per thread, up to glibc's 8 per core.
    assert applied == "False" and default == min(9, 8 * (os.cpu_count() or 1))


def test_rss_is_read_for_this_process_and_none_for_a_gone_one() -> None:
    mine = own_rss_mb()
    assert mine is not None and 10 < mine < 100_000
    assert rss_mb_of(2**22 + 12345) is None  # above Linux's pid_max default
    assert limit_malloc_arenas(-1) is False

"""A process's resident memory, read from /proc (Linux; None elsewhere)."""

from __future__ import annotations


def own_rss_mb() -> float | None:
    """This process's resident memory in MB, from /proc (None where there is no /proc)."""
    return rss_mb_of("self")


def rss_mb_of(pid: int | str) -> float | None:
    """A process's resident memory in MB (VmRSS), or None when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def limit_malloc_arenas(arenas: int) -> bool:
    """Bound the malloc arenas of this process (glibc's `mallopt(M_ARENA_MAX, n)`), for the
    arenas created from now on: call it before the process starts threads. 0 leaves glibc's
    default (8 per core). Whether it was applied (False on another C library)."""
    if arenas <= 0:
        return False
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False

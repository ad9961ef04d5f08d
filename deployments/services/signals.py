"""Graceful stop on SIGTERM / SIGINT for the long-running services."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType


def stop_on_signals(stop: Callable[[], None], logger: logging.Logger, what: str) -> None:
    """Call `stop` on SIGTERM or SIGINT, logging `what` the service does as it stops."""

    def handler(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: %s", signum, what)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)

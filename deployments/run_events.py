"""One subscription to Prefect's events stream, kept open for a process's life: what the
warm worker hears its pool's run starts on (`deployments.worker.run_starts`) and the
dispatcher its runs' claims (`deployments.services.dispatcher`).

The stream is always an addition to a timed read, never a replacement: while it is down the
process does what it did without it, and after each (re)connection `on_connected` lets it
catch up on what it may have missed. Events that occurred before the connection (Prefect's
subscriber replays the last minute) are that catch-up's, so `on_event` gets the instant the
connection opened with each event.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from prefect.events import Event
    from prefect.events.filters import EventFilter

BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # between reconnection attempts, then every 30 s


@dataclass(frozen=True)
class StreamWords:
    """How the log names a stream: `kind` ("run-start": "run-start events unavailable"),
    what it listens `for` ("listening for this pool's run starts on the events stream"),
    and what happens `meanwhile` while it is down."""

    kind: str
    listens_for: str
    meanwhile: str


class RunEventStream:
    """One subscription to the events matching `event_filter`: `on_event(event, since)` for
    each event, `since` being when this connection opened; `on_connected()` after each
    (re)connection. Reconnects with back-off; `connected` says whether it is up now."""

    def __init__(
        self,
        event_filter: EventFilter,
        on_event: Callable[[Event, datetime.datetime], None],
        on_connected: Callable[[], Awaitable[Any]],
        logger: logging.Logger | logging.LoggerAdapter[Any],
        words: StreamWords,
        subscriber: Callable[[EventFilter], Any] | None = None,
    ) -> None:
        self._filter = event_filter
        self._on_event = on_event
        self._on_connected = on_connected
        self._log = logger
        self._words = words
        self._subscriber = subscriber or _prefect_subscriber
        self.connected = False
        self.connections = 0

    async def run(self) -> None:
        """Listen until cancelled."""
        failures = 0
        while True:
            try:
                await self._listen()
                failures = 0  # a clean close: reconnect after the shortest back-off
                await anyio.sleep(BACKOFF_S[0])
            except Exception as exc:
                self.connected = False
                wait = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                log = self._log.warning if failures == 1 else self._log.debug
                log(
                    "%s events unavailable (%s: %s); %s; reconnecting in %.0f s",
                    self._words.kind,
                    type(exc).__name__,
                    exc,
                    self._words.meanwhile,
                    wait,
                )
                await anyio.sleep(wait)

    async def _listen(self) -> None:
        from prefect.types._datetime import now

        since = now("UTC")
        async with self._subscriber(self._filter) as events:
            self.connected = True
            self.connections += 1
            if self.connections > 1:
                self._log.info("%s events back; catching up on what was missed", self._words.kind)
            else:
                self._log.info("listening for %s on the events stream", self._words.listens_for)
            await self._on_connected()
            try:
                async for event in events:
                    self._on_event(event, since)
            finally:
                self.connected = False


def _prefect_subscriber(event_filter: EventFilter) -> Any:
    """Prefect's events subscriber, failing fast: reconnection is `RunEventStream`'s."""
    from prefect.events.clients import get_events_subscriber

    return get_events_subscriber(filter=event_filter, reconnection_attempts=0)

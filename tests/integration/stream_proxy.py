"""A loopback TCP relay in front of the test Prefect API that refuses one thing: connections
whose first request is for the events stream out (`/api/events/out`, the websocket run
starts and cancellations are heard on). Everything else (REST, keep-alive, the events-in
websocket) is relayed byte for byte, so a worker behind it has the API and no stream."""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit

REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class StreamBlocker:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"loopback upstreams only, got {upstream}")
        self._upstream = (parts.hostname, parts.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.5)
        self._stopping = threading.Event()
        self.refused = 0
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}{parts.path}"

    def start(self) -> StreamBlocker:
        threading.Thread(target=self._accept, daemon=True, name="stream-blocker").start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.closing(client):
            client.settimeout(30)
            try:
                first = client.recv(65536)
            except OSError:
                return
            path = first.split(b" ", 2)[1] if first.count(b" ") >= 2 else b""
            if path.split(b"?")[0].endswith(b"/events/out"):
                self.refused += 1
                with contextlib.suppress(OSError):
                    client.sendall(REFUSAL)
                return
            try:
                upstream = socket.create_connection(self._upstream, timeout=30)
            except OSError:
                return
            with contextlib.closing(upstream):
                upstream.sendall(first)
                client.settimeout(None)
                upstream.settimeout(None)
                back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
                back.start()
                _pipe(client, upstream)
                back.join(timeout=5)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes until `source` closes, then close `sink`'s writing side."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)

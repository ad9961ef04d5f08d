"""A webhook receiver on loopback: each POST body becomes one JSON line on a stream. The
local stack's alert block posts here (`img2img alerts listen`); the alert test reads it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any


def serve(host: str, port: int, out: IO[str]) -> ThreadingHTTPServer:
    """Start the receiver in a thread; returns the server (`.server_port`, `.shutdown()`)."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(size).decode("utf-8", "replace")
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw
            with lock:
                out.write(json.dumps({"path": self.path, "body": body}) + "\n")
                out.flush()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server

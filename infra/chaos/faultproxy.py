"""A small fault-injecting HTTP proxy in front of moto, for `img2img chaos --scenario s3-errors`.

It forwards every request to the upstream endpoint unchanged, except that a share of the S3
requests (`error_rate`) are answered with S3's own `503 SlowDown` or `500 InternalError`
instead, and that during a burst (`start_burst(seconds)`) every S3 request is throttled.
SQS requests (JSON protocol, `X-Amz-Target: AmazonSQS.*`, or the query protocol's
`Action=`) pass untouched: the scenario is about S3. Loopback only; boto3 is not patched,
so its retries and the tasks' retries are what is tested.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

ERRORS = (
    (503, "SlowDown", "Please reduce your request rate."),
    (500, "InternalError", "We encountered an internal error. Please try again."),
)


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        error_rate: float = 0.05,
        seed: int = 7,
        only: Callable[[str, str], bool] | None = None,
    ) -> None:
        """`only(method, path)`: which S3 requests may be faulted (None: any)."""
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        parts = urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the fault proxy only fronts a loopback endpoint, got {upstream}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.error_rate = error_rate
        self.only = only
        # fault injection, not security (bandit B311)
        self.random = random.Random(seed)  # nosec B311
        self._lock = threading.Lock()
        self._burst_until = 0.0
        self.forwarded = 0
        self.injected = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def start_burst(self, seconds: float) -> None:
        """Throttle every S3 request for `seconds`."""
        with self._lock:
            self._burst_until = time.monotonic() + seconds

    def _fault(self) -> tuple[int, str, str] | None:
        with self._lock:
            if time.monotonic() < self._burst_until:
                self.injected += 1
                return ERRORS[0]
            if self.random.random() < self.error_rate:
                self.injected += 1
                return ERRORS[self.random.randrange(len(ERRORS))]
            self.forwarded += 1
            return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                return None

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                is_sqs = self.headers.get("X-Amz-Target", "").startswith("AmazonSQS") or (
                    b"Action=" in body[:200] and self.command == "POST"
                )
                chosen = proxy.only is None or proxy.only(self.command, self.path)
                fault = None if is_sqs or not chosen else proxy._fault()
                if fault is not None:
                    status, code, message = fault
                    xml = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>{message}</Message></Error>"
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(xml)
                    return
                conn = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler

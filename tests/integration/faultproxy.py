"""A small HTTP proxy in front of the local tuning service that injects the faults a real
deployment sees: a create that the service performs but whose answer is a 502, an answer that
arrives after the client gave up, and a request that reaches the service late.

Only the create (``POST .../tuningJobs``) is disturbed; every other call passes through, so the
lookups by label that the tuner makes see the service's real state. ``creates_forwarded``
counts the creates that reached the service.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal

Fault = Literal["none", "502_after_create", "answer_late", "request_late"]


@dataclass
class FaultPlan:
    fault: Fault = "none"
    #: Seconds of delay for ``answer_late`` (after the service answered) and ``request_late``
    #: (before the request is forwarded).
    delay_s: float = 0.0
    #: How many creates get the fault; later ones pass through untouched.
    times: int = 1


class FaultProxy:
    def __init__(self, upstream: str, plan: FaultPlan) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan = plan
        self.creates_forwarded = 0
        self._faults_left = plan.times
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                proxy._forward(self, b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                proxy._forward(self, self.rfile.read(length))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take_fault(self, handler: BaseHTTPRequestHandler) -> Fault:
        is_create = handler.command == "POST" and handler.path.split("?", 1)[0].endswith("/tuningJobs")
        if not is_create:
            return "none"
        with self._lock:
            if self._faults_left <= 0:
                return "none"
            self._faults_left -= 1
            return self.plan.fault

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        fault = self._take_fault(handler)
        if fault == "request_late":
            time.sleep(self.plan.delay_s)
        headers = {
            key: value
            for key, value in handler.headers.items()
            if key.lower() not in ("host", "content-length", "connection")
        }
        request = urllib.request.Request(
            self.upstream + handler.path, data=body or None, headers=headers, method=handler.command
        )
        if handler.command == "POST" and handler.path.split("?", 1)[0].endswith("/tuningJobs"):
            with self._lock:
                self.creates_forwarded += 1
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, payload, content_type = (
                    response.status,
                    response.read(),
                    response.headers.get("Content-Type"),
                )
        except urllib.error.HTTPError as exc:
            status, payload, content_type = exc.code, exc.read(), exc.headers.get("Content-Type")
        if fault == "502_after_create":
            status = 502
            payload = b'{"error": {"code": 502, "message": "bad gateway", "status": "UNAVAILABLE"}}'
            content_type = "application/json"
        elif fault == "answer_late":
            time.sleep(self.plan.delay_s)
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type or "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:  # the client gave up before the late answer: what a real timeout looks like
            return

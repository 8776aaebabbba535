"""A Vertex-shaped HTTP endpoint on a free local port, for unit tests that drive the real
google-genai SDK (its requests and parsing) without a network."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    """POST with a JSON body -> :meth:`respond` -> a JSON answer; quiet in the test's output."""

    def respond(self, body: dict[str, Any]) -> Any:
        raise NotImplementedError

    def do_POST(self) -> None:
        payload = json.dumps(
            self.respond(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 in a thread; yields the base URL (with a final slash)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()

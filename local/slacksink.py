"""A Slack stand-in for the local stack: every message it accepts becomes a ``.json`` file.

    python -m local.slacksink --host 127.0.0.1 --port 8026 --dir .sftpipe/run/slack

Prints ``slacksink ready on http://HOST:PORT, writing to DIR`` once it listens (``--port 0``
picks a free port and prints it); ``GET /`` answers 200 ``ok`` as its health check.

- Any other path takes a POST as Slack's incoming webhook does: a JSON body with ``text`` or
  ``blocks`` is stored and answered ``200 ok``; invalid JSON is ``400 invalid_payload``, a body
  with neither is ``400 no_text``. Point ``SFTPIPE_SLACK_WEBHOOK_URL`` at ``http://HOST:PORT/webhook``.
- ``POST /api/chat.postMessage`` answers like the Web API (``{"ok": true, ...}``, or
  ``not_authed`` without a bearer token); the token is never stored.
- ``POST /fail/<status>`` answers that status with Slack's error body, to test error handling.

Files are named ``<nanoseconds>-<random>.json`` (sorted = arrival order) and written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from shared.logging import configure_logging, get_logger

log = get_logger("sftpipe.slacksink")

# Slack's error bodies for the statuses it documents for webhooks.
_WEBHOOK_ERRORS = {
    400: "invalid_payload",
    403: "action_prohibited",
    404: "no_service",
    410: "channel_is_archived",
}


def store(directory: Path, body: dict[str, Any]) -> Path:
    name = f"{time.time_ns()}-{secrets.token_hex(4)}.json"
    partial = directory / f".{name}.partial"
    partial.write_text(json.dumps(body, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(partial, directory / name)
    return directory / name


class SlackSinkHandler(BaseHTTPRequestHandler):
    server: SlackSinkServer
    protocol_version = "HTTP/1.1"

    def _answer(self, status: int, body: str, content_type: str = "text/plain; charset=utf-8") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/":
            self._answer(HTTPStatus.OK, "ok")
        else:
            self._answer(HTTPStatus.NOT_FOUND, "not_found")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/fail/"):
            status = int(self.path.removeprefix("/fail/") or 500)
            self._answer(status, _WEBHOOK_ERRORS.get(status, "internal_error"))
        elif self.path.endswith("/chat.postMessage"):
            self._post_message(raw)
        else:
            self._webhook(raw)

    def _webhook(self, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            self._answer(HTTPStatus.BAD_REQUEST, "invalid_payload")
            return
        if not isinstance(body, dict):
            self._answer(HTTPStatus.BAD_REQUEST, "invalid_payload")
            return
        if not body.get("text") and not body.get("blocks"):
            self._answer(HTTPStatus.BAD_REQUEST, "no_text")
            return
        path = store(self.server.directory, body)
        log.info("webhook message stored", extra={"file": path.name})
        self._answer(HTTPStatus.OK, "ok")

    def _post_message(self, raw: bytes) -> None:
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            self._answer(HTTPStatus.OK, json.dumps({"ok": False, "error": "not_authed"}), "application/json")
            return
        if self.headers.get("Content-Type", "").startswith("application/json"):
            body = json.loads(raw or b"{}")
        else:
            body = dict(parse_qsl(raw.decode()))
        if not body.get("channel"):
            self._answer(
                HTTPStatus.OK, json.dumps({"ok": False, "error": "channel_not_found"}), "application/json"
            )
            return
        path = store(self.server.directory, body)
        log.info("chat.postMessage stored", extra={"file": path.name, "channel": body["channel"]})
        answer = {"ok": True, "channel": body["channel"], "ts": f"{time.time():.6f}", "message": body}
        self._answer(HTTPStatus.OK, json.dumps(answer), "application/json")

    def log_message(self, format: str, *args: Any) -> None:
        # http.server writes every request to stderr; the stored files are the record.
        return


class SlackSinkServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        super().__init__(address, SlackSinkHandler)


def main() -> None:
    parser = argparse.ArgumentParser(description="Local Slack webhook receiver storing each message as JSON.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8026, help="0 picks a free port")
    parser.add_argument("--dir", type=Path, required=True, help="directory that receives the .json files")
    args = parser.parse_args()
    configure_logging()
    server = SlackSinkServer((args.host, args.port), args.dir)
    host, port = server.server_address[:2]
    print(f"slacksink ready on http://{host}:{port}, writing to {args.dir}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

"""JSON logs shaped for Cloud Logging.

Cloud Run turns each JSON line on stdout into a structured entry: ``severity`` and ``message``
are recognised, every other key lands in ``jsonPayload``. Correlation ids (``event_id``,
``dataset_id``, ``job_id``) are bound with :func:`log_context` and added to every line logged
inside it, so one query finds everything that happened to a dataset or a job.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("sftpipe_log_context")
_SEVERITY = {
    "WARNING": "WARNING",
    "CRITICAL": "CRITICAL",
    "ERROR": "ERROR",
    "INFO": "INFO",
    "DEBUG": "DEBUG",
}
# Attributes every LogRecord has; anything else was passed through `extra=`.
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class CloudLoggingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        entry.update(_context.get({}))
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at emit time (test runners and CLIs swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: str = "INFO") -> None:
    """Send JSON lines to stdout (idempotent: safe at every cold start and in tests)."""
    root = logging.getLogger()
    if not any(isinstance(h, _StdoutHandler) for h in root.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(CloudLoggingFormatter())
        root.addHandler(handler)
    root.setLevel(level.upper())
    # The client libraries are chatty at INFO about retries we already log ourselves.
    for noisy in ("urllib3", "google.auth", "httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Bind correlation ids (None values are skipped) to every log line inside the block."""
    merged = {**_context.get({}), **{k: v for k, v in ids.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bind(**ids: Any) -> None:
    """Add ids to the current context (e.g. a job id learned half-way through a handler)."""
    _context.set({**_context.get({}), **{k: v for k, v in ids.items() if v is not None}})


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)

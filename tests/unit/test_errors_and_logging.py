from __future__ import annotations

import contextvars
import functools
import json
import logging
from collections.abc import Callable

import pytest
from google.api_core import exceptions as gexc
from google.genai import errors as genai_errors

from shared.errors import AlreadyInProgressError, InvalidEventError, is_transient
from shared.logging import CloudLoggingFormatter, bind, log_context


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (InvalidEventError("bad", field="data.name"), False),
        (AlreadyInProgressError("held"), True),
        (gexc.ServiceUnavailable("x"), True),
        (gexc.TooManyRequests("x"), True),
        (gexc.Aborted("contention"), True),
        (gexc.NotFound("x"), False),
        (gexc.BadRequest("x"), False),
        (gexc.AlreadyExists("created by another delivery"), False),
        (gexc.PermissionDenied("x"), False),
        (gexc.FailedPrecondition("x"), False),
        (gexc.Cancelled("client gave up"), True),
        (gexc.Unauthenticated("token expired"), True),
        (gexc.DeadlineExceeded("slow"), True),
        (gexc.InternalServerError("x"), True),
        (gexc.RetryError("gave up", cause=None), True),
        (
            genai_errors.ClientError(
                429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}
            ),
            True,
        ),
        (
            genai_errors.ClientError(
                400, {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}
            ),
            False,
        ),
        (
            genai_errors.ServerError(
                503, {"error": {"code": 503, "message": "down", "status": "UNAVAILABLE"}}
            ),
            True,
        ),
        (RuntimeError("unexpected"), True),
    ],
)
def test_transient_classification(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def _format(record_message: str, **extra: object) -> dict:
    record = logging.LogRecord("sftpipe.test", logging.WARNING, __file__, 1, record_message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return json.loads(CloudLoggingFormatter().format(record))


def _in_fresh_context(test: Callable[[], None]) -> Callable[[], None]:
    """Run a test in an empty context: handlers called directly by other tests bind ids too."""

    @functools.wraps(test)
    def run() -> None:
        contextvars.Context().run(test)

    return run


@_in_fresh_context
def test_log_lines_are_cloud_logging_json_with_correlation_ids() -> None:
    with log_context(event_id="e1", dataset_id="d1", job_id=None):
        bind(job_id="j1")
        line = _format("submitted", attempt=2)

    assert line["severity"] == "WARNING"
    assert line["message"] == "submitted"
    assert (line["event_id"], line["dataset_id"], line["job_id"], line["attempt"]) == ("e1", "d1", "j1", 2)


@_in_fresh_context
def test_context_does_not_leak_out_of_its_block() -> None:
    with log_context(dataset_id="inner"):
        pass

    assert "dataset_id" not in _format("after")

"""One error hierarchy for the whole pipeline.

The adapter layer turns these into the two outcomes a Pub/Sub or Eventarc trigger knows:
*raise to retry* (TransientError and anything unexpected) and *return to drop* (PermanentError,
after recording it). Every error that comes from bad input names the field (and line) at fault.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error this project raises on purpose."""

    code: str = "pipeline_error"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "field": self.field, "message": self.message}


class PermanentError(PipelineError):
    """Retrying cannot help: record the failure, acknowledge the event."""

    code = "permanent_error"


class TransientError(PipelineError):
    """A dependency is unavailable or busy: raise so that the event is delivered again."""

    code = "transient_error"


class InvalidEventError(PermanentError):
    """A CloudEvent that does not have the shape its type promises."""

    code = "invalid_event"


class InvalidMessageError(PermanentError):
    """A Pub/Sub message body that is not a known, valid schema."""

    code = "invalid_message"


class ConfigurationError(PermanentError):
    """Settings that cannot work (a missing bucket name, an unknown base model...)."""

    code = "configuration_error"


class AlreadyInProgressError(TransientError):
    """Another delivery of the same event holds the idempotency claim; retry after its lease."""

    code = "already_in_progress"


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the operation that raised ``exc`` may succeed.

    Unknown exceptions count as transient: the subscription's retry policy and dead-letter topic
    bound how often they are retried, and nothing is silently dropped.
    """
    if isinstance(exc, PermanentError):
        return False
    if isinstance(exc, TransientError):
        return True
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):  # data that cannot be valid stays invalid on every retry
        return False
    # google-genai: 4xx except 401 (a token refresh race), 408 and 429 are the caller's fault.
    status = getattr(exc, "code", None)
    if type(exc).__module__.startswith("google.genai") and isinstance(status, int):
        return status in (401, 408, 429) or status >= 500
    if type(exc).__module__.startswith("google.api_core"):
        return _api_core_transient(exc)
    return True


def _api_core_transient(exc: BaseException) -> bool:
    """google-api-core errors, by class: HTTP 409 is both ABORTED (contention, retry) and
    ALREADY_EXISTS (final), and 499 CANCELLED is the client giving up, not a bad request."""
    from google.api_core import exceptions as api

    if isinstance(exc, (api.ServerError, api.RetryError)):
        return True
    retryable = (api.Aborted, api.TooManyRequests, api.Cancelled, api.Unauthorized)
    if isinstance(exc, retryable):
        return True
    if isinstance(exc, api.ClientError):
        return getattr(exc, "code", None) == 408
    return True

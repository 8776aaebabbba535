"""The two delivery rules, written once for every function.

*Raise to retry, return to drop*: a transient failure is re-raised (functions-framework answers
500, Pub/Sub or Eventarc delivers again, bounded by the subscription's retry policy and
dead-letter topic); a permanent failure is logged with its code and field and acknowledged. A
Pub/Sub message that is not a known, valid schema is also handed to ``dead_letter`` (see
``shared.dead_letter``), so that it is kept, with the reason, instead of dropped.
Events older than ``max_event_age_s`` are dropped with a warning, so a poisoned event cannot
retry for days.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from shared.config import Settings, get_settings
from shared.errors import InvalidMessageError, PermanentError, is_transient
from shared.events import PUBSUB_PUBLISHED, CloudEventLike, PubSubMessage, envelope, parse_pubsub_event
from shared.logging import configure_logging, get_logger, log_context

T = TypeVar("T")
log = get_logger("sftpipe.adapter")


def deliver(
    event: CloudEventLike,
    function: str,
    work: Callable[[], T],
    *,
    settings: Settings | None = None,
    dead_letter: Callable[[PubSubMessage, InvalidMessageError], str] | None = None,
) -> T | None:
    """Run ``work`` for ``event`` under the delivery rules; return its result or None if dropped.

    ``dead_letter(message, error)`` publishes an invalid Pub/Sub message elsewhere and returns the
    new message id; if it raises, the event is redelivered.
    """
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    head = envelope(event)
    with log_context(event_id=head.id, function=function, event_type=head.type):
        age = head.age_seconds()
        if age is not None and age > settings.max_event_age_s:
            log.warning(
                "dropping event older than max_event_age_s",
                extra={"age_s": round(age, 1), "max_event_age_s": settings.max_event_age_s},
            )
            return None
        started = time.monotonic()
        try:
            result = work()
        except InvalidMessageError as exc:
            if dead_letter is None or head.type != PUBSUB_PUBLISHED:
                _log_permanent(exc)
                return None
            message = parse_pubsub_event(event)  # it parsed once already: only the body is invalid
            try:
                dead_letter_id = dead_letter(message, exc)
            except Exception:
                log.warning(
                    "invalid message could not be dead-lettered, event will be redelivered: %s",
                    exc.message,
                    exc_info=True,
                )
                raise
            log.error(
                "invalid message dead-lettered: %s",
                exc.message,
                extra={
                    "error_code": exc.code,
                    "error_field": exc.field,
                    "message_id": message.message_id,
                    "dead_letter_message_id": dead_letter_id,
                },
            )
            return None
        except PermanentError as exc:
            _log_permanent(exc)
            return None
        except Exception as exc:
            if is_transient(exc):
                log.warning("transient failure, event will be redelivered: %s", exc, exc_info=True)
                raise
            log.error("permanent failure, event acknowledged: %s", exc, exc_info=True)
            return None
        log.info("handled", extra={"duration_ms": round((time.monotonic() - started) * 1000, 1)})
        return result


def _log_permanent(exc: PermanentError) -> None:
    log.error(
        "permanent failure, event acknowledged: %s",
        exc.message,
        extra={"error_code": exc.code, "error_field": exc.field},
    )

"""An invalid message goes to its subscription's dead-letter topic at once, saying why.

architecture.md: "an unknown or invalid message is dead-lettered with a log line, not retried
forever". Nacking it until Pub/Sub gives up would also dead-letter it, but only after
``max_delivery_attempts`` pointless deliveries, and without the reason. So the function
publishes the message as it arrived (same data, same attributes) to the dead-letter topic its
subscription already has, adds why it was refused, and acknowledges the original.

The dead-letter topic is named ``<function>-<source topic><SFTPIPE_DEAD_LETTER_SUFFIX>``, as the
local stack and ``deploy/`` create it (a test checks that the three agree).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.errors import ConfigurationError, InvalidMessageError, PipelineError

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.events import PubSubMessage
    from shared.runtime import Runtime

#: Pub/Sub allows 100 attributes per message and 1,024 bytes per value.
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_VALUE_BYTES = 1024
#: The attributes added to a dead-lettered message (the original ones are kept).
REASON_ATTRIBUTES = (
    "sftpipe_error_code",
    "sftpipe_error_field",
    "sftpipe_error",
    "sftpipe_function",
    "sftpipe_source_message_id",
)


def source_topic(function: str, settings: Settings) -> str:
    """The topic whose subscription delivers to ``function`` (the Pub/Sub-triggered ones)."""
    topics = {
        "tuner": settings.tuning_requests_topic,
        "poller": settings.poll_ticks_topic,
        "completion": settings.job_events_topic,
    }
    if function not in topics:
        raise ConfigurationError(f"{function} is not triggered by a Pub/Sub topic", field="function")
    return topics[function]


def dead_letter_topic(function: str, settings: Settings) -> str:
    return f"{function}-{source_topic(function, settings)}{settings.dead_letter_suffix}"


def _truncated(value: str) -> str:
    encoded = value.encode()
    if len(encoded) <= MAX_ATTRIBUTE_VALUE_BYTES:
        return value
    return encoded[: MAX_ATTRIBUTE_VALUE_BYTES - 3].decode(errors="ignore") + "..."


def dead_letter(message: PubSubMessage, error: PipelineError, *, function: str, runtime: Runtime) -> str:
    """Publish ``message`` with the reason to ``function``'s dead-letter topic; returns its id.

    Raises whatever publishing raises: the caller lets the original be redelivered, and the
    subscription's own dead-letter policy still catches it if this keeps failing.
    """
    reason = {
        "sftpipe_error_code": error.code,
        "sftpipe_error_field": error.field or "",
        "sftpipe_error": _truncated(error.message),
        "sftpipe_function": function,
        "sftpipe_source_message_id": message.message_id,
    }
    kept = dict(list(message.attributes.items())[: MAX_ATTRIBUTES - len(reason)])
    attributes = {**kept, **reason}
    return runtime.publish(dead_letter_topic(function, runtime.settings), message.data, **attributes)


def dead_letter_for(
    function: str, runtime: Callable[[], Runtime]
) -> Callable[[PubSubMessage, InvalidMessageError], str]:
    """The ``dead_letter`` argument of ``shared.adapter.deliver`` for ``function``; ``runtime`` is
    called only when a message is invalid, so a valid one pays nothing for it."""

    def send(message: PubSubMessage, error: InvalidMessageError) -> str:
        return dead_letter(message, error, function=function, runtime=runtime())

    return send

"""The one entry point: ``notify(outcome, settings, targets)`` sends to every configured destination.

Destinations:
- Slack: with ``slack_bot_token``, one message per channel among ``slack_channel`` and the
  request's ``targets.slack_channel``; otherwise, with ``slack_webhook_url``, one message to the
  webhook's own channel (a webhook cannot be pointed at another channel, so a requested channel
  is then reported as not honoured). The bot token wins when both are set.
- Email: one message to ``mail_to`` plus ``targets.emails`` when ``smtp_host`` is set.

Targets chosen by an upload (``targets``) first go through the operator's allowlists
(:mod:`shared.notify.targets`): a dropped one is logged at WARNING with its reason, and the
notification itself says who was not notified and why. ``mail_to`` and ``slack_channel`` are the
deployment's own and never filtered.

Every destination is attempted, whatever happened to the others, and the result says what
happened to each: the caller records the successes (so a retry does not send them again) and
decides what to retry with :meth:`NotifyResult.raise_for_failures`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from shared.config import Settings
from shared.errors import PermanentError, PipelineError, TransientError
from shared.logging import get_logger
from shared.messages import NotifyTargets
from shared.notify import email, slack
from shared.notify.content import AnyOutcome, Notification, build_notification
from shared.notify.targets import check_targets, normalise_channel

log = get_logger(__name__)

Channel = Literal["slack", "email"]


class Delivery(BaseModel):
    """What happened at one destination. ``destination`` never contains a secret."""

    model_config = ConfigDict(frozen=True)

    channel: Channel
    destination: str
    status: Literal["sent", "skipped", "failed"]
    detail: str = ""
    transient: bool = False


class NotifyResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_key: str
    deliveries: list[Delivery]

    @property
    def sent(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.status == "sent"]

    @property
    def failed(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.status == "failed"]

    def raise_for_failures(self) -> None:
        """TransientError if any destination may succeed on retry, else PermanentError if any failed."""
        failures = self.failed
        if not failures:
            return
        described = "; ".join(f"{d.destination}: {d.detail}" for d in failures)
        if any(d.transient for d in failures):
            raise TransientError(
                f"notification {self.event_key} not delivered: {described}", code="notify_failed"
            )
        raise PermanentError(
            f"notification {self.event_key} not delivered: {described}", code="notify_failed"
        )


def _unique(values: Iterable[str | None], key: Callable[[str], str] = str) -> list[str]:
    """The non-blank values, stripped, first of each ``key`` kept (``#ml`` and ``ml`` are one channel)."""
    seen: dict[str, str] = {}
    for value in values:
        if value and value.strip():
            seen.setdefault(key(value.strip()), value.strip())
    return list(seen.values())


def _attempt(
    channel: Channel, destination: str, send: Callable[[], str | None], already_sent: Collection[str]
) -> Delivery:
    if f"{channel}/{destination}" in already_sent:
        return Delivery(channel=channel, destination=destination, status="skipped", detail="already sent")
    try:
        detail = send() or ""
    except PipelineError as exc:
        return Delivery(
            channel=channel,
            destination=destination,
            status="failed",
            detail=exc.message,
            transient=isinstance(exc, TransientError),
        )
    return Delivery(channel=channel, destination=destination, status="sent", detail=detail)


def _slack_deliveries(
    notification: Notification, settings: Settings, targets: NotifyTargets, already_sent: Collection[str]
) -> list[Delivery]:
    payload = slack.build_slack_payload(notification)
    if settings.slack_bot_token:
        channels = _unique([settings.slack_channel, targets.slack_channel], key=normalise_channel)
        if not channels:
            return [
                Delivery(
                    channel="slack",
                    destination="slack",
                    status="skipped",
                    detail="bot token set but no channel",
                )
            ]
        return [
            _attempt(
                "slack",
                f"slack channel {channel}",
                lambda channel=channel: slack.post_bot_message(settings.slack_bot_token, channel, payload),
                already_sent,
            )
            for channel in channels
        ]
    if settings.slack_webhook_url:
        delivery = _attempt(
            "slack",
            "slack webhook",
            lambda: slack.post_webhook(settings.slack_webhook_url, payload),
            already_sent,
        )
        if targets.slack_channel:
            note = f"channel {targets.slack_channel} not honoured: a webhook posts to its own channel (set a bot token)"
            delivery = delivery.model_copy(
                update={"detail": "; ".join(filter(None, [delivery.detail, note]))}
            )
        return [delivery]
    return [
        Delivery(channel="slack", destination="slack", status="skipped", detail="Slack is not configured")
    ]


def _email_delivery(
    notification: Notification, settings: Settings, targets: NotifyTargets, already_sent: Collection[str]
) -> Delivery:
    # Mailbox names are case-insensitive in practice: one copy for ML@x and ml@x.
    recipients = _unique([*settings.mail_to, *targets.emails], key=str.lower)
    if not settings.smtp_host:
        return Delivery(
            channel="email", destination="email", status="skipped", detail="SMTP is not configured"
        )
    if not recipients:
        return Delivery(channel="email", destination="email", status="skipped", detail="no recipients")
    message = email.build_email(notification, sender=settings.mail_from, recipients=recipients)

    def send() -> str:
        refused = email.send_email(
            message,
            host=settings.smtp_host,
            port=settings.smtp_port,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password,
        )
        return f"refused: {', '.join(refused)}" if refused else ""

    destination = f"email to {', '.join(recipients)} via {settings.smtp_host}:{settings.smtp_port}"
    return _attempt("email", destination, send, already_sent)


def notify(
    outcome: AnyOutcome,
    settings: Settings,
    targets: NotifyTargets | None = None,
    *,
    channels: Collection[Channel] = ("slack", "email"),
    already_sent: Collection[str] = (),
) -> NotifyResult:
    """Send the outcome to every configured destination of the given channels.

    Never raises for a delivery failure: see :class:`NotifyResult`. ``already_sent`` holds
    ``<channel>/<destination>`` keys to skip, so a retry sends only what has not succeeded yet.
    ``targets`` are checked against the allowlists here, so every path that notifies is covered.
    """
    targets, dropped = check_targets(targets or NotifyTargets(), settings)
    for target in dropped:
        log.warning(
            "notification target dropped: %s",
            target.warning,
            extra={"event_key": outcome.event_key, "channel": target.channel, "reason": target.reason},
        )
    notification = build_notification(outcome)
    if dropped:
        # Validated again (not model_copy) so that the notes are cleaned like every other string.
        notification = Notification.model_validate(
            {**notification.model_dump(), "notes": [*notification.notes, *(d.warning for d in dropped)]}
        )
    deliveries: list[Delivery] = []
    if "slack" in channels:
        deliveries += _slack_deliveries(notification, settings, targets, already_sent)
    if "email" in channels:
        deliveries.append(_email_delivery(notification, settings, targets, already_sent))
    for delivery in deliveries:
        log.log(
            logging.WARNING if delivery.status == "failed" else logging.INFO,
            "notification %s %s: %s",
            outcome.event_key,
            delivery.status,
            delivery.destination,
            extra={"channel": delivery.channel, "detail": delivery.detail, "transient": delivery.transient},
        )
    return NotifyResult(event_key=outcome.event_key, deliveries=deliveries)


CHANNELS: tuple[Channel, ...] = ("slack", "email")
#: Field of the Firestore document that records what was sent, as
#: ``<event_key>/<channel>/<destination>``: per destination, so that a retry after one of two
#: Slack channels failed posts to that channel only (``<event_key>/<channel>``, written before
#: destinations were recorded, still counts for the whole channel).
SENT_FIELD = "notifications_sent"


def notify_once(
    record: Any,
    outcome: AnyOutcome,
    settings: Settings,
    targets: NotifyTargets | None = None,
) -> None:
    """Send ``outcome`` to each destination not yet recorded in the document ``record``, record
    each success there at once, then raise for the failures (transient ones make the event
    redelivered, and the redelivery sends only what is still missing)."""
    from google.cloud import firestore

    prefix = f"{outcome.event_key}/"
    recorded = (record.get().to_dict() or {}).get(SENT_FIELD, [])
    already_sent = {key.removeprefix(prefix) for key in recorded if key.startswith(prefix)}
    channels = [c for c in CHANNELS if c not in already_sent]
    if not channels:
        log.info("notifications already sent", extra={"event_key": outcome.event_key})
        return
    result = notify(outcome, settings, targets, channels=channels, already_sent=already_sent)
    delivered = sorted({f"{prefix}{d.channel}/{d.destination}" for d in result.sent})
    if delivered:
        record.set({SENT_FIELD: firestore.ArrayUnion(delivered)}, merge=True)
    result.raise_for_failures()

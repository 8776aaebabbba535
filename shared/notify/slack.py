"""Slack: a Block Kit message, sent by incoming webhook or by bot token to a channel (slack-sdk).

The webhook URL and the bot token are secrets: slack-sdk logs the full URL and the request at
DEBUG (and retry notices at INFO), so its clients get a logger of their own that stays at WARNING
whatever the process's level, and none of our messages or errors contain either secret.

Failures: HTTP 429 and 5xx, and connection errors, are transient; every other refusal (4xx,
``invalid_auth``, ``channel_not_found``, ``invalid_blocks``...) is permanent.
"""

from __future__ import annotations

import logging
from typing import Any

from shared.errors import PermanentError, TransientError
from shared.notify.content import Notification, Table, text_table

#: Slack's Web API; the tests point it at the local sink.
SLACK_API_URL = "https://slack.com/api/"
TIMEOUT_S = 15
# Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
MAX_FIELDS = 10
BUTTON_LIMIT = 75

STATUS_EMOJI = {
    "improved": ":white_check_mark:",
    "regressed": ":small_red_triangle_down:",
    "not_distinguishable": ":heavy_minus_sign:",
    "failed": ":x:",
    "cancelled": ":no_entry_sign:",
    "expired": ":hourglass:",
    "stalled": ":warning:",
    "rejected": ":no_entry:",
    "baseline": ":straight_ruler:",
    "baseline_met": ":dart:",
}

_sdk_logger = logging.getLogger("sftpipe.notify.slack_sdk")
_sdk_logger.setLevel(logging.WARNING)

# Retryable statuses and Web API errors; see the module docstring.
_TRANSIENT_API_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters. Without this, a dataset named ``<!channel>`` pings everyone.

    Every special sequence (``<!here>``, ``<@U123>``, ``<#C123>``, ``<https://host|label>``,
    ``<!date^...>``) starts with ``<``, so escaping these three is enough: a bare ``@here`` is
    not a mention in text we post (we never ask for ``link_names``).
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_escaped(text: str, limit: int) -> str:
    """:func:`_clip` for escaped text: never cuts an entity in half (``&am…`` would show as is)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    # In escaped text every "&" opens an entity, so one after the last ";" is a cut one.
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _table_text(table: Table) -> str:
    # mrkdwn has no tables: a code block keeps the columns aligned. Slack still parses "<...>"
    # inside code blocks, so the cells are escaped like any other text.
    return "```\n" + escape_mrkdwn(text_table(table)) + "\n```"


def _is_web_url(url: str) -> bool:
    return url.startswith(("https://", "http://"))


def build_slack_payload(notification: Notification) -> dict[str, Any]:
    """Block Kit blocks plus the ``text`` Slack shows in notifications and old clients.

    Every mrkdwn string is escaped, the top-level ``text`` too: Slack parses it for mentions and
    links like any section, and it is what a phone's notification shows. ``plain_text`` objects
    (header, button) are never parsed, so they carry the text as it is.
    """
    emoji = STATUS_EMOJI.get(notification.status, ":information_source:")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _clip(notification.subject.removeprefix("[sftpipe] "), HEADER_LIMIT),
            },
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _clip_escaped(f"{emoji} {escape_mrkdwn(notification.summary)}", SECTION_LIMIT),
            },
        },
        {
            "type": "section",
            "fields": [
                {
                    "type": "mrkdwn",
                    "text": _clip_escaped(f"*{escape_mrkdwn(label)}*\n{escape_mrkdwn(value)}", FIELD_LIMIT),
                }
                for label, value in notification.facts[:MAX_FIELDS]
            ],
        },
    ]
    if notification.table is not None:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _clip_escaped(_table_text(notification.table), SECTION_LIMIT),
                },
            }
        )
    if notification.items:
        listing = "\n".join(f"• {escape_mrkdwn(item)}" for item in notification.items)
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _clip_escaped(
                        f"*{escape_mrkdwn(notification.items_title)}*\n{listing}", SECTION_LIMIT
                    ),
                },
            }
        )
    if notification.notes:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": _clip_escaped(
                            "\n".join(escape_mrkdwn(note) for note in notification.notes), SECTION_LIMIT
                        ),
                    }
                ],
            }
        )
    if notification.link:
        # Slack refuses a button whose URL is not http(s) (invalid_blocks): show other links as text.
        if _is_web_url(notification.link):
            blocks.append(
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {
                                "type": "plain_text",
                                "text": _clip(notification.link_label, BUTTON_LIMIT),
                            },
                            "url": notification.link,
                        }
                    ],
                }
            )
        else:
            blocks.append(
                {
                    "type": "context",
                    "elements": [
                        {
                            "type": "mrkdwn",
                            "text": _clip_escaped(
                                f"{escape_mrkdwn(notification.link_label)}: `{escape_mrkdwn(notification.link)}`",
                                SECTION_LIMIT,
                            ),
                        }
                    ],
                }
            )
    text = f"{escape_mrkdwn(notification.subject)}: {escape_mrkdwn(notification.summary)}"
    return {"text": _clip_escaped(text, SECTION_LIMIT), "blocks": blocks}


def slack_failure(status: int | None, reason: str, destination: str) -> TransientError | PermanentError:
    """The pipeline error for a refusal by Slack: HTTP 429, 5xx and server-side API errors are transient."""
    message = f"Slack {destination} refused the message: {reason}" + (f" (HTTP {status})" if status else "")
    if status is not None and (status == 429 or status >= 500):
        return TransientError(message, code="slack_unavailable")
    if reason in _TRANSIENT_API_ERRORS:
        return TransientError(message, code="slack_unavailable")
    return PermanentError(message, code="slack_rejected")


def post_webhook(url: str, payload: dict[str, Any], *, timeout_s: int = TIMEOUT_S) -> None:
    """POST the payload to an incoming webhook; raises TransientError or PermanentError."""
    from slack_sdk.webhook import WebhookClient

    client = WebhookClient(url, timeout=timeout_s, logger=_sdk_logger)
    try:
        response = client.send_dict(payload)
    except OSError as exc:
        # Not chained (`from None`), here and below: the handler logs errors with their cause, and a
        # cause from deep inside the HTTP client is one refactoring away from carrying the URL.
        raise TransientError(
            f"Slack webhook unreachable: {type(exc).__name__}: {getattr(exc, 'reason', exc)}",
            code="slack_unavailable",
        ) from None
    if response.status_code != 200 or response.body.strip() != "ok":
        raise slack_failure(response.status_code, _clip(response.body.strip() or "no body", 200), "webhook")


def post_bot_message(
    token: str,
    channel: str,
    payload: dict[str, Any],
    *,
    base_url: str | None = None,
    timeout_s: int = TIMEOUT_S,
) -> None:
    """chat.postMessage with a bot token; raises TransientError or PermanentError."""
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    client = WebClient(token=token, base_url=base_url or SLACK_API_URL, timeout=timeout_s, logger=_sdk_logger)
    try:
        client.chat_postMessage(channel=channel, text=payload["text"], blocks=payload["blocks"])
    except SlackApiError as exc:
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        raise slack_failure(
            exc.response.status_code, str(error or "unknown error"), f"channel {channel}"
        ) from None
    except OSError as exc:
        raise TransientError(
            f"Slack API unreachable: {type(exc).__name__}: {getattr(exc, 'reason', exc)}",
            code="slack_unavailable",
        ) from None

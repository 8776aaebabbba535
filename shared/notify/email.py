"""Email: one multipart message (plain text and HTML, same content) sent with smtplib.

STARTTLS when ``smtp_starttls`` is set, implicit TLS on port 465, login when a user name is set.
The password is never logged and never part of an error message.

Failures follow SMTP's own reply classes, which are the reverse of HTTP's: 4xx replies
("try again later"), connection errors and timeouts are transient; 5xx replies (a refused
recipient, a failed login) and a server without STARTTLS or AUTH are permanent.
"""

from __future__ import annotations

import html
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from shared.errors import PermanentError, TransientError
from shared.notify.content import Notification, one_line, text_table

TIMEOUT_S = 30
IMPLICIT_TLS_PORT = 465
#: Characters of a Subject: a dataset id can be 1,000 bytes, and mail clients show about 80.
SUBJECT_LIMIT = 200

_STATUS_COLOURS = {
    "improved": "#188038",
    "regressed": "#d93025",
    "not_distinguishable": "#5f6368",
    "stalled": "#e37400",
    "baseline": "#1a73e8",
    "baseline_met": "#188038",
}


def header_text(text: str, limit: int = SUBJECT_LIMIT) -> str:
    """A header value built from text an uploader chose: one line, no control characters, clipped.

    A CR or LF would start a new header (``Bcc: ...``); the email package refuses them, which
    would lose the notice instead of sending it. Non-ASCII stays: the default policy encodes
    it (RFC 2047) and folds long values.
    """
    line = one_line(text)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _is_web_url(url: str) -> bool:
    return url.startswith(("https://", "http://"))


def render_text(notification: Notification) -> str:
    lines = [notification.summary, ""]
    label_width = max(len(label) for label, _ in notification.facts)
    lines += [f"{label.ljust(label_width)}  {value}" for label, value in notification.facts]
    if notification.table is not None:
        lines += ["", text_table(notification.table)]
    if notification.items:
        lines += ["", f"{notification.items_title}:", *(f"- {item}" for item in notification.items)]
    if notification.notes:
        lines += ["", *(f"Note: {note}" for note in notification.notes)]
    if notification.link:
        lines += ["", f"{notification.link_label}: {notification.link}"]
    return "\n".join(lines) + "\n"


def render_html(notification: Notification) -> str:
    """Inline styles only: many mail clients drop <style> blocks.

    Every interpolated value but the template's own styles goes through ``html.escape`` (quotes
    too), so no value can open a tag or leave an attribute.
    """
    e = html.escape
    cell = "padding:4px 10px;border-bottom:1px solid #e8eaed;text-align:left"
    number = cell.replace("text-align:left", "text-align:right;font-family:monospace")
    colour = _STATUS_COLOURS.get(notification.status, "#d93025")
    parts = [
        "<!DOCTYPE html><html><body style='font-family:Arial,Helvetica,sans-serif;color:#202124'>",
        f"<h2 style='margin:0 0 8px'>{e(notification.subject.removeprefix('[sftpipe] '))}</h2>",
        # A status is an identifier (not_distinguishable); the reader gets words.
        f"<p><b style='color:{colour}'>{e(notification.status.replace('_', ' '))}</b> · {e(notification.summary)}</p>",
        "<table style='border-collapse:collapse'>",
        *(
            f"<tr><td style='{cell};color:#5f6368'>{e(k)}</td><td style='{cell}'>{e(v)}</td></tr>"
            for k, v in notification.facts
        ),
        "</table>",
    ]
    if notification.table is not None:
        header = "".join(
            f"<th style='{cell if i == 0 else number}'>{e(h)}</th>"
            for i, h in enumerate(notification.table.headers)
        )
        rows = "".join(
            "<tr>"
            + "".join(f"<td style='{cell if i == 0 else number}'>{e(v)}</td>" for i, v in enumerate(row))
            + "</tr>"
            for row in notification.table.rows
        )
        footnote = notification.table.footnote
        parts.append(
            f"<h3>Metrics</h3><table style='border-collapse:collapse'><tr>{header}</tr>{rows}</table>"
            + (f"<p style='color:#5f6368;font-size:12px'>{e(footnote)}</p>" if footnote else "")
        )
    if notification.items:
        items = "".join(f"<li><code>{e(item)}</code></li>" for item in notification.items)
        parts.append(f"<h3>{e(notification.items_title)}</h3><ul>{items}</ul>")
    if notification.notes:
        notes = "".join(f"<li>{e(note)}</li>" for note in notification.notes)
        parts.append(f"<ul style='color:#5f6368;font-size:12px'>{notes}</ul>")
    if notification.link:
        # Only web links become anchors: a javascript: or data: URI must never be clickable.
        if _is_web_url(notification.link):
            parts.append(
                f"<p><a href='{e(notification.link, quote=True)}'>{e(notification.link_label)}</a></p>"
            )
        else:
            parts.append(f"<p>{e(notification.link_label)}: <code>{e(notification.link)}</code></p>")
    parts.append("</body></html>")
    return "".join(parts)


def build_email(notification: Notification, *, sender: str, recipients: Sequence[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = header_text(notification.subject)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(render_text(notification))
    message.add_alternative(render_html(notification), subtype="html")
    return message


def smtp_failure(exc: Exception, server: str) -> TransientError | PermanentError:
    """The pipeline error for an smtplib or socket failure (SMTP reply classes: 4xx retry, 5xx do not)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        refused = ", ".join(sorted(exc.recipients))
        message = f"SMTP {server} refused every recipient ({refused}): codes {sorted(set(codes))}"
        if any(400 <= code < 500 for code in codes):
            return TransientError(message, code="smtp_unavailable")
        return PermanentError(message, code="smtp_rejected")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentError(f"SMTP {server}: {exc}", code="smtp_misconfigured")
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        message = f"SMTP {server} answered {exc.smtp_code} {reply} ({type(exc).__name__})"
        if 400 <= exc.smtp_code < 500:
            return TransientError(message, code="smtp_unavailable")
        return PermanentError(message, code="smtp_rejected")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentError(
            f"SMTP {server}: certificate not trusted: {exc.verify_message}", code="smtp_misconfigured"
        )
    return TransientError(f"SMTP {server} unreachable: {type(exc).__name__}: {exc}", code="smtp_unavailable")


def send_email(
    message: EmailMessage,
    *,
    host: str,
    port: int,
    starttls: bool,
    username: str = "",
    password: str = "",
    timeout_s: float = TIMEOUT_S,
) -> list[str]:
    """Send the message; returns the recipients the server refused while accepting others.

    Raises TransientError or PermanentError (see the module docstring).
    """
    server = f"{host}:{port}"
    context = ssl.create_default_context()
    try:
        if port == IMPLICIT_TLS_PORT:
            connection: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout_s, context=context)
        else:
            connection = smtplib.SMTP(host, port, timeout=timeout_s)
        with connection:
            connection.ehlo()
            if starttls and port != IMPLICIT_TLS_PORT:
                connection.starttls(context=context)
                connection.ehlo()
            if username:
                connection.login(username, password)
            refused = connection.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        # Not chained: smtplib's exceptions hold no password, but the AUTH exchange's frames are
        # not worth the risk in a logged traceback.
        raise smtp_failure(exc, server) from None
    return sorted(refused)

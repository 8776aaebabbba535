"""Which notification targets chosen by an upload may be notified.

An upload (its metadata, its manifest, or a tuning-request/v1 anyone may publish) can name
emails and a Slack channel on top of the deployment's own. Without a check, it could send the
organisation's mail to any address and post to any channel the bot can reach. So:

- an email is kept when it is a plain address (``local@domain``, ASCII, none of the characters
  that would make one header value several recipients: ``,`` ``;`` ``<`` ``>`` quotes, spaces,
  CR, LF) and its domain, the part after the last ``@``, is on ``notify_email_domains``
  (``SFTPIPE_NOTIFY_EMAIL_DOMAINS``), compared case-insensitively and exactly: ``example.com``
  does not allow ``mail.example.com``, each subdomain is listed on its own;
- the Slack channel is kept when it is on ``notify_slack_channels``
  (``SFTPIPE_NOTIFY_SLACK_CHANNELS``), compared without a leading ``#`` and case-insensitively
  (Slack channel names are lower case; ids such as ``C0123ABC`` compare as they are);
- a target the deployment notifies anyway (on ``mail_to``, or ``slack_channel``) is kept: it
  reaches nobody new;
- the default, empty lists, allow no upload-chosen target at all.

The deployment's own ``mail_to`` and ``slack_channel`` are never filtered. Everything here is
pure, so ingest can list what it drops in the dataset's document before anything is sent.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from shared.config import Settings
from shared.messages import NotifyTargets

#: What this module accepts as an email address: RFC 5321's dot-atom local part and a DNS name.
#: Quoted local parts and non-ASCII addresses are refused rather than parsed.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
#: A dropped target is quoted in notifications and logs: clipped, so a 1,000-byte one stays readable.
_QUOTE_LIMIT = 120


class DroppedTarget(BaseModel):
    model_config = ConfigDict(frozen=True)

    channel: str
    target: str
    reason: str

    @property
    def warning(self) -> str:
        """The line a notification and the dataset document carry."""
        target = self.target if len(self.target) <= _QUOTE_LIMIT else self.target[: _QUOTE_LIMIT - 1] + "…"
        return f"not notified: {target} ({self.reason})"


def normalise_domain(domain: str) -> str:
    return domain.strip().removeprefix("@").rstrip(".").lower()


def normalise_channel(channel: str) -> str:
    return channel.strip().removeprefix("#").lower()


def email_refusal(address: str, settings: Settings) -> str | None:
    """Why ``address`` may not be notified, or None when it may."""
    if address.strip().lower() in {a.strip().lower() for a in settings.mail_to}:
        return None
    if not _PLAIN_ADDRESS.fullmatch(address):
        return "not a plain email address"
    domain = normalise_domain(address.rpartition("@")[2])
    if domain not in {normalise_domain(d) for d in settings.notify_email_domains if d.strip()}:
        return f"domain {domain} is not on SFTPIPE_NOTIFY_EMAIL_DOMAINS"
    return None


def channel_refusal(channel: str, settings: Settings) -> str | None:
    """Why the Slack ``channel`` may not be posted to, or None when it may."""
    name = normalise_channel(channel)
    if settings.slack_channel and name == normalise_channel(settings.slack_channel):
        return None
    if name not in {normalise_channel(c) for c in settings.notify_slack_channels if c.strip()}:
        return "channel is not on SFTPIPE_NOTIFY_SLACK_CHANNELS"
    return None


def check_targets(targets: NotifyTargets, settings: Settings) -> tuple[NotifyTargets, list[DroppedTarget]]:
    """The targets that may be notified, and each one dropped with its reason."""
    dropped: list[DroppedTarget] = []
    emails: list[str] = []
    for address in targets.emails:
        reason = email_refusal(address, settings)
        if reason is None:
            emails.append(address.strip())
        else:
            dropped.append(DroppedTarget(channel="email", target=address, reason=reason))
    channel = (
        targets.slack_channel.strip() if targets.slack_channel and targets.slack_channel.strip() else None
    )
    if channel is not None:
        reason = channel_refusal(channel, settings)
        if reason is not None:
            dropped.append(DroppedTarget(channel="slack", target=channel, reason=reason))
            channel = None
    return NotifyTargets(emails=emails, slack_channel=channel), dropped


def allowed_targets(targets: NotifyTargets, settings: Settings) -> tuple[NotifyTargets, list[str]]:
    """:func:`check_targets` with each dropped target as the warning line a report carries
    (``not notified: x@evil.example (domain evil.example is not on SFTPIPE_NOTIFY_EMAIL_DOMAINS)``)."""
    kept, dropped = check_targets(targets, settings)
    return kept, [d.warning for d in dropped]

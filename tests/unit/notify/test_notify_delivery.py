from __future__ import annotations

import logging
import smtplib
import socket

import pytest

from shared.config import Settings
from shared.errors import PermanentError, TransientError
from shared.messages import NotifyTargets
from shared.notify.content import EvaluatedOutcome, JobEndedOutcome
from shared.notify.email import smtp_failure
from shared.notify.notifier import notify
from shared.notify.slack import slack_failure

WEBHOOK_SECRET = "T0SECRET/B0SECRET/xoxsecretwebhookpath"
SMTP_PASSWORD = "hunter2-smtp-password"
BOT_TOKEN = "xoxb-secret-bot-token"


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_nothing_configured_skips_both_channels(job_failed: JobEndedOutcome) -> None:
    result = notify(job_failed, Settings(_env_file=None))
    assert [(d.channel, d.status, d.detail) for d in result.deliveries] == [
        ("slack", "skipped", "Slack is not configured"),
        ("email", "skipped", "SMTP is not configured"),
    ]
    result.raise_for_failures()  # skipping is not failing


def test_unreachable_services_are_transient_and_secrets_stay_out_of_logs(
    evaluated: EvaluatedOutcome, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        slack_webhook_url=f"http://127.0.0.1:{closed_port}/services/{WEBHOOK_SECRET}",
        smtp_host="127.0.0.1",
        smtp_port=closed_port,
        smtp_starttls=False,
        smtp_username="sftpipe",
        smtp_password=SMTP_PASSWORD,
        mail_to="ml-team@example.com",
        notify_email_domains="example.com",
    )
    caplog.set_level(logging.DEBUG)

    result = notify(evaluated, settings, NotifyTargets(emails=["owner@example.com"]))

    assert [(d.destination, d.status, d.transient) for d in result.deliveries] == [
        ("slack webhook", "failed", True),
        (f"email to ml-team@example.com, owner@example.com via 127.0.0.1:{closed_port}", "failed", True),
    ]
    with pytest.raises(TransientError) as raised:
        result.raise_for_failures()
    everything = caplog.text + result.model_dump_json() + str(raised.value)
    assert "ConnectionRefusedError" in everything
    assert WEBHOOK_SECRET not in everything
    assert SMTP_PASSWORD not in everything
    assert [r.levelname for r in caplog.records if r.name == "shared.notify.notifier"] == [
        "WARNING",
        "WARNING",
    ]


def test_bot_token_is_not_logged_and_posts_to_each_channel(
    job_failed: JobEndedOutcome,
    closed_port: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # slack-sdk's WebClient talks to slack.com; point it at the closed port so nothing leaves the machine.
    monkeypatch.setattr("shared.notify.slack.SLACK_API_URL", f"http://127.0.0.1:{closed_port}/api/")
    settings = Settings(slack_bot_token=BOT_TOKEN, slack_channel="#ml-runs", notify_slack_channels="team-x")
    caplog.set_level(logging.DEBUG)

    result = notify(job_failed, settings, NotifyTargets(slack_channel="#team-x"), channels=("slack",))

    assert [(d.destination, d.status) for d in result.deliveries] == [
        ("slack channel #ml-runs", "failed"),
        ("slack channel #team-x", "failed"),
    ]
    assert BOT_TOKEN not in caplog.text + result.model_dump_json()


def test_a_retry_skips_the_destinations_already_sent(
    job_failed: JobEndedOutcome, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.notify.slack.SLACK_API_URL", f"http://127.0.0.1:{closed_port}/api/")
    settings = Settings(slack_bot_token=BOT_TOKEN, slack_channel="#ml-runs", notify_slack_channels="#team-x")

    result = notify(
        job_failed,
        settings,
        NotifyTargets(slack_channel="#team-x"),
        channels=("slack",),
        already_sent={"slack/slack channel #ml-runs"},
    )

    assert [(d.destination, d.status, d.detail) for d in result.deliveries] == [
        ("slack channel #ml-runs", "skipped", "already sent"),
        ("slack channel #team-x", "failed", result.deliveries[1].detail),
    ]


def test_webhook_cannot_honour_a_requested_channel(job_failed: JobEndedOutcome, closed_port: int) -> None:
    settings = Settings(
        slack_webhook_url=f"http://127.0.0.1:{closed_port}/hook", notify_slack_channels="team-x"
    )
    result = notify(job_failed, settings, NotifyTargets(slack_channel="#team-x"), channels=("slack",))
    (delivery,) = result.deliveries
    assert delivery.detail.endswith(
        "channel #team-x not honoured: a webhook posts to its own channel (set a bot token)"
    )


def test_bot_token_without_channel_is_skipped(job_failed: JobEndedOutcome) -> None:
    result = notify(job_failed, Settings(slack_bot_token=BOT_TOKEN), channels=("slack",))
    assert [(d.status, d.detail) for d in result.deliveries] == [("skipped", "bot token set but no channel")]


def test_only_the_requested_channels_are_attempted(job_failed: JobEndedOutcome) -> None:
    result = notify(job_failed, Settings(smtp_host="127.0.0.1", mail_to="a@example.com"), channels=())
    assert result.deliveries == []


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (500, "internal_error", TransientError),
        (503, "", TransientError),
        (429, "ratelimited", TransientError),
        (404, "no_service", PermanentError),
        (403, "invalid_token", PermanentError),
        (200, "channel_not_found", PermanentError),
        (200, "ratelimited", TransientError),
    ],
)
def test_slack_refusals_are_classified(status: int, reason: str, expected: type[Exception]) -> None:
    assert type(slack_failure(status, reason, "webhook")) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (smtplib.SMTPAuthenticationError(535, b"5.7.8 Authentication credentials invalid"), PermanentError),
        (smtplib.SMTPAuthenticationError(454, b"4.7.0 Temporary authentication failure"), TransientError),
        (smtplib.SMTPSenderRefused(451, b"4.3.0 Try again later", "s@example.com"), TransientError),
        (smtplib.SMTPDataError(552, b"5.3.4 Message too big"), PermanentError),
        (smtplib.SMTPRecipientsRefused({"a@example.com": (550, b"5.1.1 No such user")}), PermanentError),
        (smtplib.SMTPRecipientsRefused({"a@example.com": (450, b"4.2.1 Mailbox busy")}), TransientError),
        (smtplib.SMTPNotSupportedError("STARTTLS extension not supported by server."), PermanentError),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), TransientError),
        (ConnectionRefusedError(111, "Connection refused"), TransientError),
        (TimeoutError("timed out"), TransientError),
    ],
)
def test_smtp_failures_follow_smtp_reply_classes(error: Exception, expected: type[Exception]) -> None:
    assert type(smtp_failure(error, "smtp.example.com:587")) is expected

"""Notification targets chosen by an upload are checked against the operator's allowlists."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from shared.config import Settings
from shared.messages import NotifyTargets
from shared.notify.content import JobEndedOutcome
from shared.notify.notifier import notify
from shared.notify.targets import allowed_targets, channel_refusal, check_targets, email_refusal


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_by_default_an_upload_may_choose_no_target() -> None:
    kept, warnings = allowed_targets(
        NotifyTargets(emails=["owner@example.com"], slack_channel="#team-x"), _settings()
    )
    assert kept == NotifyTargets()
    assert warnings == [
        "not notified: owner@example.com (domain example.com is not on SFTPIPE_NOTIFY_EMAIL_DOMAINS)",
        "not notified: #team-x (channel is not on SFTPIPE_NOTIFY_SLACK_CHANNELS)",
    ]


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("owner@example.com", True),
        ("Owner@EXAMPLE.com", True),  # domains compare case-insensitively
        ("first.last+tag@example.com", True),
        ("ops@example.org", True),
        ("a@mail.example.com", False),  # exact domain: subdomains are listed on their own
        ("a@example.com.evil.example", False),
        ("a@evilexample.com", False),
        ("a@evil.example", False),
    ],
)
def test_the_domain_after_the_last_at_must_be_listed_exactly(address: str, allowed: bool) -> None:
    settings = _settings(notify_email_domains=" Example.com, @example.org ")
    assert (email_refusal(address, settings) is None) is allowed


@pytest.mark.parametrize(
    "address",
    [
        "evil,x@example.com",  # one header value, two recipients
        "x;y@example.com",
        "<x>@example.com",
        '"x"@example.com',
        "x\r\nBcc: y@example.com",
        "x\n@example.com",
        "x@example.com\r\n",
        "名前@example.com",
        "x@exa_mple.com",
        ".x@example.com",
        "x@example",
    ],
)
def test_addresses_that_are_not_plain_are_refused_whatever_their_domain(address: str) -> None:
    settings = _settings(notify_email_domains="example.com")
    assert email_refusal(address, settings) == "not a plain email address"


def test_the_deployments_own_recipients_and_channel_are_never_dropped() -> None:
    settings = _settings(mail_to="ml-team@corp.example", slack_channel="#ml-runs")
    kept, warnings = allowed_targets(
        NotifyTargets(emails=["ML-team@corp.example"], slack_channel="ml-runs"), settings
    )
    assert kept == NotifyTargets(emails=["ML-team@corp.example"], slack_channel="ml-runs")
    assert warnings == []


@pytest.mark.parametrize(
    ("channel", "allowed"),
    [
        ("#team-x", True),
        ("team-x", True),
        ("#Team-X", True),
        ("#general", False),
        ("#team-x-leaks", False),
        ("", True),
    ],
)
def test_channels_match_exactly_with_or_without_the_hash(channel: str, allowed: bool) -> None:
    settings = _settings(notify_slack_channels="team-x, #C0123ABC")
    kept, dropped = check_targets(NotifyTargets(slack_channel=channel), settings)
    assert (dropped == []) is allowed
    assert kept.slack_channel == (channel.strip() or None if allowed else None)


def test_a_channel_id_can_be_allowed() -> None:
    assert channel_refusal("C0123ABC", _settings(notify_slack_channels="#C0123ABC")) is None


def test_a_long_target_is_clipped_in_its_warning() -> None:
    _, warnings = allowed_targets(NotifyTargets(emails=[f"{'x' * 990}@evil.example"]), _settings())
    (warning,) = warnings
    assert len(warning) < 200
    assert warning.endswith("… (domain evil.example is not on SFTPIPE_NOTIFY_EMAIL_DOMAINS)")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """What notify hands to Slack and SMTP (the senders themselves are tested against local sinks)."""
    captured: list[tuple[str, Any]] = []
    monkeypatch.setattr(
        "shared.notify.slack.post_webhook", lambda url, payload: captured.append(("slack", payload))
    )

    def send_email(message: Any, **_: Any) -> list[str]:
        captured.append(("email", message))
        return []

    monkeypatch.setattr("shared.notify.email.send_email", send_email)
    return captured


def test_notify_drops_what_is_not_allowed_logs_it_and_says_so_in_the_notification(
    job_failed: JobEndedOutcome, sent: list[tuple[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(
        slack_webhook_url="http://127.0.0.1:9/hook",
        smtp_host="127.0.0.1",
        mail_to="ml-team@example.com",
        notify_email_domains="example.com",
    )
    caplog.set_level(logging.INFO)
    targets = NotifyTargets(
        emails=["owner@example.com", "<!here>@evil.example", "x@evil.example"], slack_channel="#random"
    )

    result = notify(job_failed, settings, targets)

    assert [(d.destination, d.status) for d in result.deliveries] == [
        ("slack webhook", "sent"),
        ("email to ml-team@example.com, owner@example.com via 127.0.0.1:587", "sent"),
    ]
    expected = [
        "not notified: <!here>@evil.example (not a plain email address)",
        "not notified: x@evil.example (domain evil.example is not on SFTPIPE_NOTIFY_EMAIL_DOMAINS)",
        "not notified: #random (channel is not on SFTPIPE_NOTIFY_SLACK_CHANNELS)",
    ]
    dropped = [r for r in caplog.records if r.getMessage().startswith("notification target dropped")]
    assert [(r.levelname, r.getMessage().removeprefix("notification target dropped: ")) for r in dropped] == [
        ("WARNING", line) for line in expected
    ]
    (_, payload), (_, message) = sent
    assert payload["blocks"][-1] == {
        "type": "context",
        "elements": [
            {
                "type": "mrkdwn",
                "text": "not notified: &lt;!here&gt;@evil.example (not a plain email address)\n"
                "not notified: x@evil.example (domain evil.example is not on SFTPIPE_NOTIFY_EMAIL_DOMAINS)\n"
                "not notified: #random (channel is not on SFTPIPE_NOTIFY_SLACK_CHANNELS)",
            }
        ],
    }
    assert message["To"] == "ml-team@example.com, owner@example.com"
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "\n".join(f"Note: {line}" for line in expected) in text
    page = message.get_body(preferencelist=("html",)).get_content()
    assert "not notified: &lt;!here&gt;@evil.example (not a plain email address)" in page


def test_notify_without_upload_targets_adds_no_note(
    job_failed: JobEndedOutcome, sent: list[tuple[str, Any]]
) -> None:
    notify(job_failed, _settings(slack_webhook_url="http://127.0.0.1:9/hook"), channels=("slack",))
    ((_, payload),) = sent
    assert [b["type"] for b in payload["blocks"]] == ["header", "section", "section"]
    assert "not notified" not in str(payload)

"""Uploader-controlled text (object names, metadata, error messages quoting a file) in every medium.

A dataset id, an object name or an error message can hold anything a bucket accepts. None of it
may become a Slack mention or link, an HTML tag, or a mail header.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest

from shared.notify.content import (
    DatasetRejectedOutcome,
    JobEndedOutcome,
    Notification,
    build_notification,
    one_line,
    printable,
)
from shared.notify.email import SUBJECT_LIMIT, build_email, header_text, render_html
from shared.notify.slack import build_slack_payload

HOSTILE = [
    "<!here>",
    "<!channel>",
    "<@U123>",
    "<#C0123|general>",
    "<https://evil.example|click>",
    "a & b",
    "&lt;!here&gt;",  # already looks escaped: must be escaped again, not trusted
    "Übersicht",
    "名前",
    "x" * 1000,
    "é" * 500,  # 1,000 bytes of UTF-8
    "Subject\r\nBcc: attacker@evil.example",
    "<script>alert(1)</script>",
]
#: An "&" that does not open one of the three entities escape_mrkdwn writes.
RAW_AMPERSAND = re.compile(r"&(?!(?:amp|lt|gt);)")


def _rejection(name: str) -> DatasetRejectedOutcome:
    return DatasetRejectedOutcome(
        dataset_id=name,
        source_uri=f"gs://sftpipe-local/incoming/{name}",
        error_count=2,
        top_errors=[f"line 1: messages[0].content: {name}", f"line 2: unknown role {name!r}"],
        report_url="gs://sftpipe-local/prepared/ds/report.json",
    )


def _job_ended(name: str) -> JobEndedOutcome:
    return JobEndedOutcome(
        job_id=f"job-{name}",
        dataset_id=name,
        base_model=name,
        state="JOB_STATE_FAILED",
        reason=f"the file {name} has 3 examples",
        tuning_job_name=f"projects/p/locations/l/tuningJobs/{name}",
        link=f"projects/p/locations/l/tuningJobs/{name}",  # not a web URL: shown as mrkdwn text
    )


def _mrkdwn_texts(payload: dict[str, Any]) -> list[str]:
    """Every string of the payload that Slack parses as mrkdwn."""
    texts = [payload["text"]]
    for block in payload["blocks"]:
        if block.get("text", {}).get("type") == "mrkdwn":
            texts.append(block["text"]["text"])
        texts += [field["text"] for field in block.get("fields", [])]
        if block["type"] == "context":
            texts += [element["text"] for element in block["elements"] if element["type"] == "mrkdwn"]
    return texts


def _assert_inert_mrkdwn(text: str) -> None:
    # <!here>, <@U..>, <http..|..> and <#C..> all need a raw "<"
    assert "<" not in text, text
    assert ">" not in text, text
    assert not RAW_AMPERSAND.search(text), text
    assert "\r" not in text


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("make", [_rejection, _job_ended])
def test_no_mrkdwn_field_of_the_slack_payload_carries_a_control_sequence(name: str, make: Any) -> None:
    payload = build_slack_payload(build_notification(make(name)))
    texts = _mrkdwn_texts(payload)
    assert len(texts) >= 4  # text, summary, fields, and the items or the link context
    for text in texts:
        _assert_inert_mrkdwn(text)
    # plain_text objects are never parsed: no escaping needed, but no line break in a header
    assert "\n" not in payload["blocks"][0]["text"]["text"]


def test_the_top_level_text_is_escaped_exactly() -> None:
    payload = build_slack_payload(build_notification(_rejection("<!here> & <https://evil.example|click>")))
    assert payload["text"] == (
        "[sftpipe] dataset rejected: &lt;!here&gt; &amp; &lt;https://evil.example|click&gt;: "
        "gs://sftpipe-local/incoming/&lt;!here&gt; &amp; &lt;https://evil.example|click&gt; "
        "was rejected with 2 errors; no tuning job was started."
    )
    header = payload["blocks"][0]["text"]
    assert header == {
        "type": "plain_text",
        "text": "dataset rejected: <!here> & <https://evil.example|click>",
    }


def test_scripts_other_than_latin_are_kept_as_they_are() -> None:
    payload = build_slack_payload(build_notification(_rejection("Übersicht-名前")))
    assert payload["text"].startswith("[sftpipe] dataset rejected: Übersicht-名前: ")
    message = build_email(
        build_notification(_rejection("Übersicht-名前")), sender="s@example.com", recipients=["a@example.com"]
    )
    parsed = BytesParser(policy=policy.default).parsebytes(message.as_bytes())
    assert parsed["Subject"] == "[sftpipe] dataset rejected: Übersicht-名前"


def test_a_clipped_slack_text_never_ends_in_half_an_entity() -> None:
    payload = build_slack_payload(build_notification(_rejection("&" * 2000)))
    for text in _mrkdwn_texts(payload):
        _assert_inert_mrkdwn(text)
        assert len(text) <= 3000
    assert payload["text"].endswith("&amp;…")


def test_the_link_label_of_a_text_link_is_escaped() -> None:
    notification = Notification(
        kind="job_ended",
        status="failed",
        subject="s",
        summary="s",
        facts=[("Job", "j")],
        link="projects/p/tuningJobs/<!here>",
        link_label="Open <!channel>",
    )
    blocks = build_slack_payload(notification)["blocks"]
    assert blocks[-1]["elements"][0]["text"] == "Open &lt;!channel&gt;: `projects/p/tuningJobs/&lt;!here&gt;`"


def _parsed(message: EmailMessage) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(message.as_bytes())
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("make", [_rejection, _job_ended])
def test_the_mail_has_one_subject_no_injected_header_and_escaped_html(name: str, make: Any) -> None:
    message = build_email(
        build_notification(make(name)), sender="s@example.com", recipients=["a@example.com"]
    )
    raw = message.as_bytes()
    parsed = _parsed(message)

    assert len(parsed.get_all("Subject") or []) == 1
    assert parsed["Bcc"] is None
    headers = raw.split(b"\n\n", 1)[0]
    assert b"\nBcc:" not in headers
    assert not headers.startswith(b"Bcc:")
    subject = str(parsed["Subject"])
    assert "\r" not in subject
    assert "\n" not in subject
    assert len(subject) <= SUBJECT_LIMIT
    assert parsed["To"] == "a@example.com"
    # every line of the serialised mail stays within SMTP's limit, however long the name
    assert max(len(line) for line in raw.split(b"\n")) <= 998

    page = parsed.get_body(preferencelist=("html",)).get_content()
    assert "<script" not in page
    for sequence in ("<!here>", "<!channel>", "<https://", "<@U123>"):
        assert sequence not in page
    # the only tags are the template's
    tags = set(re.findall(r"<(/?[a-zA-Z0-9!]+)", page))
    assert tags <= {
        "!DOCTYPE",
        "html",
        "/html",
        "body",
        "/body",
        "h2",
        "/h2",
        "h3",
        "/h3",
        "p",
        "/p",
        "b",
        "/b",
        "table",
        "/table",
        "tr",
        "/tr",
        "td",
        "/td",
        "ul",
        "/ul",
        "li",
        "/li",
        "code",
        "/code",
        "a",
        "/a",
    }, tags


def test_the_injection_attempt_stays_inside_the_subject() -> None:
    message = build_email(
        build_notification(_rejection("Subject\r\nBcc: attacker@evil.example")),
        sender="s@example.com",
        recipients=["a@example.com"],
    )
    parsed = _parsed(message)
    assert parsed["Subject"] == "[sftpipe] dataset rejected: Subject Bcc: attacker@evil.example"
    assert [key for key in parsed if key.lower() == "bcc"] == []


def test_a_long_subject_is_clipped_and_folded() -> None:
    message = build_email(
        build_notification(_rejection("é" * 500)), sender="s@example.com", recipients=["a@example.com"]
    )
    parsed = _parsed(message)
    assert parsed["Subject"] == "[sftpipe] dataset rejected: " + "é" * (SUBJECT_LIMIT - 29) + "…"


def test_a_non_web_link_is_never_an_anchor() -> None:
    notification = Notification(
        kind="job_ended",
        status="failed",
        subject="s",
        summary="s",
        facts=[("Job", "j")],
        link="javascript:alert(1)",
    )
    page = render_html(notification)
    assert "href" not in page
    assert "<code>javascript:alert(1)</code>" in page


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\r\nb\rc\nd", "a\nb\nc\nd"),
        ("nul\x00 bell\x07 esc\x1b del\x7f c1\x85", "nul\ufffd bell\ufffd esc\ufffd del\ufffd c1\ufffd"),
        ("report\u202egpj.exe", "report\ufffdgpj.exe"),
        ("line\u2028sep\u2029para", "line\ufffdsep\ufffdpara"),
        ("tab\tkept, Übersicht, 名前, emoji 🎉", "tab\tkept, Übersicht, 名前, emoji 🎉"),
    ],
)
def test_printable_neutralises_control_characters_only(text: str, expected: str) -> None:
    assert printable(text) == expected


def test_one_line_and_header_text() -> None:
    assert one_line("  a\r\n\tb  c\n") == "a b c"
    assert header_text("x" * 300) == "x" * (SUBJECT_LIMIT - 1) + "…"
    assert header_text("Subject\r\nBcc: a@evil.example") == "Subject Bcc: a@evil.example"


def test_the_notification_itself_holds_no_control_character() -> None:
    notification = build_notification(_job_ended("ds\x00\u202e\r\nX"))
    assert (
        notification.subject
        == "[sftpipe] failed: job-ds\ufffd\ufffd X (ds\ufffd\ufffd X on ds\ufffd\ufffd X)"
    )
    assert ("Dataset", "ds\ufffd\ufffd X") in notification.facts
    assert (
        notification.summary
        == "Tuning job job-ds\ufffd\ufffd\nX failed: the file ds\ufffd\ufffd\nX has 3 examples"
    )

"""Notifications reach the local sinks the local stack runs, and read back as a person would get them.

The sinks run as the local stack runs them (``python -m local.mailsink`` / ``local.slacksink``
subprocesses); the notifier talks to them through smtplib and slack-sdk for real.
"""

from __future__ import annotations

import json
import logging
import re
import select
import smtplib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings
from shared.errors import PermanentError, TransientError
from shared.evaluation.metrics import TaskChoice, compute_metrics
from shared.evaluation.report import build_summary
from shared.messages import NotifyTargets, Task
from shared.notify import slack
from shared.notify.content import DatasetRejectedOutcome, EvaluatedOutcome, build_notification
from shared.notify.email import send_email
from shared.notify.notifier import notify

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SMTP_USER = "sftpipe"
SMTP_PASSWORD = "local-secret-password"
WEBHOOK_PATH = "/services/T000/B000/secretwebhooktoken"


@dataclass
class Sink:
    process: subprocess.Popen[str]
    port: int
    directory: Path
    ready_line: str

    def files(self, suffix: str) -> list[Path]:
        return sorted(self.directory.glob(f"*{suffix}"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(argv: list[str], ready_prefix: str, directory: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", *argv, "--dir", str(directory)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    seen: list[str] = []
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], 0.2)
        if not readable:
            if process.poll() is not None:
                break
            continue
        line = process.stdout.readline()
        seen.append(line)
        if line.startswith(ready_prefix):
            # Keep draining, or a full pipe would block the sink's logging.
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return process, line.strip()
    process.kill()
    pytest.fail(f"{argv[0]} never printed its readiness line; output:\n{''.join(seen)}")


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def mailsink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sink]:
    directory = tmp_path_factory.mktemp("mail")
    port = _free_port()
    argv = ["local.mailsink", "--host", "127.0.0.1", "--port", str(port)]
    process, line = _start(
        [*argv, "--username", SMTP_USER, "--password", SMTP_PASSWORD], "mailsink ready", directory
    )
    yield Sink(process, port, directory, line)
    _stop(process)


@pytest.fixture(scope="module")
def slacksink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sink]:
    directory = tmp_path_factory.mktemp("slack")
    process, line = _start(
        ["local.slacksink", "--host", "127.0.0.1", "--port", "0"], "slacksink ready", directory
    )
    port = int(line.split("http://127.0.0.1:")[1].split(",")[0])
    yield Sink(process, port, directory, line)
    _stop(process)


@pytest.fixture
def settings(mailsink: Sink, slacksink: Sink) -> Settings:
    return Settings(
        slack_webhook_url=f"http://127.0.0.1:{slacksink.port}{WEBHOOK_PATH}",
        smtp_host="127.0.0.1",
        smtp_port=mailsink.port,
        smtp_starttls=False,
        smtp_username=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
        mail_from="sftpipe@localhost",
        mail_to="ml-team@example.com",
        notify_email_domains="example.com",
    )


LABELS = ["positive", "negative", "neutral"]


@pytest.fixture
def evaluated() -> EvaluatedOutcome:
    # 150 examples: base right on 93 (8 answers outside the label set), tuned on 136 (one failed call).
    references = LABELS * 50
    base = [r if n < 93 else "unsure" if n >= 142 else LABELS[(n + 1) % 3] for n, r in enumerate(references)]
    tuned = [r if n < 136 else None if n == 149 else LABELS[(n + 1) % 3] for n, r in enumerate(references)]
    summary = build_summary(
        job_id="job-sinks-1",
        dataset_id="reviews-<script>alert(1)</script>",
        base_model="gemini-2.5-flash",
        task_choice=TaskChoice(task=Task.CLASSIFICATION, decided_by="inferred", reason="3 labels"),
        base=compute_metrics(Task.CLASSIFICATION, references, base),
        tuned=compute_metrics(Task.CLASSIFICATION, references, tuned),
        tuning_duration_s=2710,
    )
    return EvaluatedOutcome(summary=summary, report_url="gs://sftpipe-local/reports/job-sinks-1/report.html")


def _new_files(sink: Sink, suffix: str, before: list[Path]) -> list[Path]:
    return [path for path in sink.files(suffix) if path not in before]


def test_sinks_print_readiness_and_answer_health_checks(mailsink: Sink, slacksink: Sink) -> None:
    assert (
        mailsink.ready_line
        == f"mailsink ready on smtp://127.0.0.1:{mailsink.port}, writing to {mailsink.directory}"
    )
    with smtplib.SMTP("127.0.0.1", mailsink.port, timeout=10) as connection:
        assert connection.noop()[0] == 250
    with urllib.request.urlopen(f"http://127.0.0.1:{slacksink.port}/", timeout=10) as response:
        assert (response.status, response.read()) == (200, b"ok")


def test_evaluation_outcome_reaches_mail_and_slack(
    evaluated: EvaluatedOutcome,
    settings: Settings,
    mailsink: Sink,
    slacksink: Sink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mails_before, posts_before = mailsink.files(".eml"), slacksink.files(".json")
    caplog.set_level(logging.DEBUG)

    result = notify(evaluated, settings, NotifyTargets(emails=["owner@example.com"]))

    assert [(d.destination, d.status) for d in result.deliveries] == [
        ("slack webhook", "sent"),
        (f"email to ml-team@example.com, owner@example.com via 127.0.0.1:{mailsink.port}", "sent"),
    ]
    (mail_file,) = _new_files(mailsink, ".eml", mails_before)
    mail = BytesParser(policy=policy.default).parsebytes(mail_file.read_bytes())
    assert (
        mail["Subject"]
        == "[sftpipe] improved: job-sinks-1 (gemini-2.5-flash on reviews-<script>alert(1)</script>)"
    )
    assert mail["X-Mailsink-Rcpt-To"] == "ml-team@example.com, owner@example.com"
    text = mail.get_body(preferencelist=("plain",)).get_content()
    page = mail.get_body(preferencelist=("html",)).get_content()
    assert "The tuned model improved on macro_f1: 0.637 → 0.910 (+0.273, 95% CI [+0.201, +0.345])." in text
    assert "macro_f1 *         0.637  0.910  +0.273" in text
    assert (
        "Open the report: https://storage.cloud.google.com/sftpipe-local/reports/job-sinks-1/report.html"
        in text
    )
    assert "reviews-&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page

    (post_file,) = _new_files(slacksink, ".json", posts_before)
    post = json.loads(post_file.read_text())
    assert post["text"].startswith("[sftpipe] improved: job-sinks-1")
    blocks = post["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": "improved: job-sinks-1 (gemini-2.5-flash on reviews-<script>alert(1)</script>)",
        },
    }
    assert "macro_f1 *         0.637  0.910  +0.273" in blocks[3]["text"]["text"]
    assert blocks[-1]["elements"][0]["url"].endswith("/reports/job-sinks-1/report.html")

    logged = caplog.text + result.model_dump_json()
    assert WEBHOOK_PATH not in logged
    assert SMTP_PASSWORD not in logged


def test_rejection_reaches_slack_through_the_bot_api(slacksink: Sink) -> None:
    outcome = DatasetRejectedOutcome(
        dataset_id="ds-bad",
        source_uri="gs://sftpipe-local/incoming/bad.jsonl",
        error_count=2,
        top_errors=["line 3: missing_contents_list", "line 9: consecutive_turns"],
    )
    before = slacksink.files(".json")

    slack.post_bot_message(
        "xoxb-local-token",
        "#ml-runs",
        slack.build_slack_payload(build_notification(outcome)),
        base_url=f"http://127.0.0.1:{slacksink.port}/api/",
    )

    (post_file,) = _new_files(slacksink, ".json", before)
    stored = post_file.read_text()
    post = json.loads(stored)
    assert post["channel"] == "#ml-runs"
    texts = [block["text"]["text"] for block in post["blocks"] if "text" in block]
    assert "*First errors*\n• line 3: missing_contents_list\n• line 9: consecutive_turns" in texts
    assert "xoxb-local-token" not in stored


def _mrkdwn_texts(post: dict[str, Any]) -> list[str]:
    texts = [post["text"]]
    for block in post["blocks"]:
        if block.get("text", {}).get("type") == "mrkdwn":
            texts.append(block["text"]["text"])
        texts += [field["text"] for field in block.get("fields", [])]
        if block["type"] == "context":
            texts += [element["text"] for element in block["elements"] if element["type"] == "mrkdwn"]
    return texts


def test_a_dataset_named_with_control_sequences_reaches_the_sinks_escaped(
    settings: Settings, mailsink: Sink, slacksink: Sink
) -> None:
    name = "<!here> <!channel> <@U123> <https://evil.example|click> a & b Übersicht 名前\r\nBcc: attacker@evil.example"
    outcome = DatasetRejectedOutcome(
        dataset_id=name,
        source_uri=f"gs://sftpipe-local/incoming/{name}.jsonl",
        error_count=1,
        top_errors=[f"line 1: messages[0].content: <script>alert(1)</script> {name}"],
        report_url="gs://sftpipe-local/prepared/ds-hostile/report.json",
    )
    mails_before, posts_before = mailsink.files(".eml"), slacksink.files(".json")

    result = notify(outcome, settings)

    assert [d.status for d in result.deliveries] == ["sent", "sent"]
    (post_file,) = _new_files(slacksink, ".json", posts_before)
    post = json.loads(post_file.read_text(encoding="utf-8"))
    escaped = (
        "&lt;!here&gt; &lt;!channel&gt; &lt;@U123&gt; &lt;https://evil.example|click&gt; a &amp; b "
        "Übersicht 名前 Bcc: attacker@evil.example"
    )
    assert post["text"].startswith(f"[sftpipe] dataset rejected: {escaped}: gs://sftpipe-local/incoming/")
    texts = _mrkdwn_texts(post)
    assert f"*Dataset*\n{escaped}" in texts
    for text in texts:
        assert "<" not in text, text
        assert ">" not in text, text
        assert re.search(r"&(?!(?:amp|lt|gt);)", text) is None, text
    assert post["blocks"][0]["text"]["type"] == "plain_text"  # never parsed by Slack

    (mail_file,) = _new_files(mailsink, ".eml", mails_before)
    raw = mail_file.read_bytes()
    mail = BytesParser(policy=policy.default).parsebytes(raw)
    assert mail.get_all("Subject") == [
        "[sftpipe] dataset rejected: <!here> <!channel> <@U123> <https://evil.example|click> a & b "
        "Übersicht 名前 Bcc: attacker@evil.example"
    ]
    assert mail["Bcc"] is None
    assert mail["X-Mailsink-Rcpt-To"] == "ml-team@example.com"  # the envelope: nobody was added
    page = mail.get_body(preferencelist=("html",)).get_content()
    assert "<script>" not in page
    assert "&lt;!here&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_targets_off_the_allowlists_are_not_notified_and_the_notice_says_so(
    settings: Settings, mailsink: Sink, slacksink: Sink
) -> None:
    outcome = DatasetRejectedOutcome(
        dataset_id="ds-targets",
        source_uri="gs://sftpipe-local/incoming/targets.jsonl",
        error_count=1,
        top_errors=["line 1: missing_contents_list"],
    )
    mails_before, posts_before = mailsink.files(".eml"), slacksink.files(".json")

    notify(
        outcome,
        settings,
        NotifyTargets(emails=["owner@example.com", "x@evil.example"], slack_channel="#anywhere"),
    )

    (mail_file,) = _new_files(mailsink, ".eml", mails_before)
    mail = BytesParser(policy=policy.default).parsebytes(mail_file.read_bytes())
    assert mail["X-Mailsink-Rcpt-To"] == "ml-team@example.com, owner@example.com"
    lines = mail.get_body(preferencelist=("plain",)).get_content().splitlines()
    assert lines[-2:] == [
        "Note: not notified: x@evil.example (domain evil.example is not on SFTPIPE_NOTIFY_EMAIL_DOMAINS)",
        "Note: not notified: #anywhere (channel is not on SFTPIPE_NOTIFY_SLACK_CHANNELS)",
    ]
    (post_file,) = _new_files(slacksink, ".json", posts_before)
    post = json.loads(post_file.read_text(encoding="utf-8"))
    assert post["blocks"][-1]["elements"][0]["text"] == (
        "not notified: x@evil.example (domain evil.example is not on SFTPIPE_NOTIFY_EMAIL_DOMAINS)\n"
        "not notified: #anywhere (channel is not on SFTPIPE_NOTIFY_SLACK_CHANNELS)"
    )


@pytest.mark.parametrize(
    ("status", "expected"), [(500, TransientError), (429, TransientError), (404, PermanentError)]
)
def test_webhook_refusals_are_classified(slacksink: Sink, status: int, expected: type[Exception]) -> None:
    payload = {"text": "hello"}
    with pytest.raises(expected) as raised:
        slack.post_webhook(f"http://127.0.0.1:{slacksink.port}/fail/{status}", payload)
    assert f"(HTTP {status})" in str(raised.value)


def test_webhook_refuses_a_message_without_text(slacksink: Sink) -> None:
    with pytest.raises(PermanentError, match="no_text"):
        slack.post_webhook(f"http://127.0.0.1:{slacksink.port}{WEBHOOK_PATH}", {"blocks": []})


def _plain_mail() -> EmailMessage:
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = "hi", "sftpipe@localhost", "a@example.com"
    message.set_content("body")
    return message


def test_wrong_smtp_password_is_permanent_and_not_echoed(mailsink: Sink) -> None:
    with pytest.raises(PermanentError) as raised:
        send_email(
            _plain_mail(),
            host="127.0.0.1",
            port=mailsink.port,
            starttls=False,
            username=SMTP_USER,
            password="wrong-pw",
        )
    assert "535" in raised.value.message
    assert "wrong-pw" not in raised.value.message


def test_starttls_against_a_server_without_it_is_permanent(mailsink: Sink) -> None:
    with pytest.raises(PermanentError, match="STARTTLS extension not supported"):
        send_email(_plain_mail(), host="127.0.0.1", port=mailsink.port, starttls=True)

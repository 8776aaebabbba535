from __future__ import annotations

from email import policy
from email.parser import BytesParser

from shared.notify.content import (
    DatasetRejectedOutcome,
    EvaluatedOutcome,
    JobEndedOutcome,
    browser_url,
    build_notification,
)
from shared.notify.email import build_email
from shared.notify.slack import build_slack_payload, escape_mrkdwn


def test_evaluated_notification_carries_metrics_verdict_and_link(evaluated: EvaluatedOutcome) -> None:
    notification = build_notification(evaluated)

    assert notification.status == "improved"
    assert notification.subject == "[sftpipe] improved: job-42 (gemini-2.5-flash on reviews-<!channel>)"
    # The primary metric's delta with its paired 95% interval (seeded: the same every time).
    assert (
        notification.summary
        == "The tuned model improved on f1: 0.550 → 0.760 (+0.210, 95% CI [+0.177, +0.243])."
    )
    assert ("Tuning duration", "1 h 02 min") in notification.facts
    assert ("Test examples", "200 (failed calls: base 2, tuned 0)") in notification.facts
    assert notification.table is not None
    assert notification.table.rows == [
        ["exact_match", "0.410", "0.630", "+0.220"],
        ["f1 *", "0.550", "0.760", "+0.210"],
    ]
    assert notification.link == "https://storage.cloud.google.com/sftpipe-local/reports/job-42/report.html"
    assert evaluated.event_key == "evaluated"


def test_an_undecided_evaluation_says_so_with_the_interval_and_the_examples_needed(
    undecided: EvaluatedOutcome,
) -> None:
    summary = undecided.summary
    assert summary.verdict == "not_distinguishable"
    assert summary.examples_needed is not None
    assert summary.examples_needed > 200
    notification = build_notification(undecided)

    assert notification.status == "not_distinguishable"
    assert notification.subject == "[sftpipe] not distinguishable: job-44 (gemini-2.5-flash on reviews)"
    assert notification.summary.startswith(
        "The tuned model is not distinguishable from the base model on f1: 0.500 → 0.525 (+0.025, 95% CI [-0."
    )
    assert notification.summary.endswith(
        f"]); a clear answer would need about {summary.examples_needed:,} test examples "
        "(this test split has 200)."
    )
    blocks = build_slack_payload(notification)["blocks"]
    assert blocks[1]["text"]["text"].startswith(":heavy_minus_sign: The tuned model is not distinguishable")
    page = build_email(notification, sender="s@example.com", recipients=["a@example.com"]).get_body(
        preferencelist=("html",)
    )
    assert page is not None
    assert "<b style='color:#5f6368'>not distinguishable</b> · The tuned model is not" in page.get_content()


def test_job_ended_notification_names_state_and_reason(job_failed: JobEndedOutcome) -> None:
    notification = build_notification(job_failed)
    assert notification.status == "failed"
    assert notification.subject == "[sftpipe] failed: job-43 (gemini-2.5-flash on ds-1)"
    assert (
        notification.summary
        == "Tuning job job-43 failed: Training data has 3 examples; at least 16 are required."
    )
    assert ("Duration", "1 min 35 s") in notification.facts
    assert job_failed.event_key == "job_ended:failed"


def test_rejection_lists_the_first_errors_and_counts_the_rest(rejected: DatasetRejectedOutcome) -> None:
    notification = build_notification(rejected)
    assert notification.summary == (
        "gs://sftpipe-local/incoming/bad.jsonl was rejected with 57 errors; no tuning job was started."
    )
    assert len(notification.items) == 10
    assert notification.items_title == "First errors (47 more in the report)"
    assert notification.link_label == "Open the validation report"


def test_browser_url_turns_gcs_uris_into_console_links() -> None:
    assert (
        browser_url("gs://b/reports/job 1/report.html")
        == "https://storage.cloud.google.com/b/reports/job%201/report.html"
    )
    assert browser_url("https://example.com/r.html") == "https://example.com/r.html"


def test_slack_payload_has_header_fields_table_and_button(evaluated: EvaluatedOutcome) -> None:
    payload = build_slack_payload(build_notification(evaluated))
    blocks = payload["blocks"]

    assert [b["type"] for b in blocks] == ["header", "section", "section", "section", "actions"]
    assert (
        blocks[0]["text"]["text"] == "improved: job-42 (gemini-2.5-flash on reviews-<!channel>)"
    )  # plain_text: literal
    assert blocks[1]["text"]["text"].startswith(":white_check_mark: The tuned model improved on f1")
    fields = [f["text"] for f in blocks[2]["fields"]]
    assert "*Dataset*\nreviews-&lt;!channel&gt;" in fields  # no @channel ping from a dataset name
    table = blocks[3]["text"]["text"]
    assert table.startswith("```\nmetric")
    assert "f1 *         0.550  0.760  +0.210" in table
    assert (
        blocks[4]["elements"][0]["url"]
        == "https://storage.cloud.google.com/sftpipe-local/reports/job-42/report.html"
    )
    assert payload["text"].startswith("[sftpipe] improved: job-42")


def test_slack_payload_shows_non_web_links_as_text(job_failed: JobEndedOutcome) -> None:
    outcome = job_failed.model_copy(update={"link": "projects/p/locations/l/tuningJobs/987"})
    blocks = build_slack_payload(build_notification(outcome))["blocks"]
    assert blocks[-1] == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "Open the job: `projects/p/locations/l/tuningJobs/987`"}],
    }


def test_slack_payload_respects_block_kit_limits(rejected: DatasetRejectedOutcome) -> None:
    huge = rejected.model_copy(update={"top_errors": ["x" * 5000] * 10, "dataset_id": "d" * 400})
    blocks = build_slack_payload(build_notification(huge))["blocks"]
    assert len(blocks[0]["text"]["text"]) <= 150
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section" and "text" in b)
    assert all(len(f["text"]) <= 2000 for f in blocks[2]["fields"])


def test_escape_mrkdwn() -> None:
    assert escape_mrkdwn("a < b & <@U123>") == "a &lt; b &amp; &lt;@U123&gt;"


def test_email_has_text_and_html_with_the_same_content(rejected: DatasetRejectedOutcome) -> None:
    notification = build_notification(rejected)
    message = build_email(
        notification, sender="sftpipe@example.com", recipients=["a@example.com", "b@example.com"]
    )
    parsed = BytesParser(policy=policy.default).parsebytes(message.as_bytes())

    assert parsed["Subject"] == "[sftpipe] dataset rejected: ds-bad"
    assert parsed["To"] == "a@example.com, b@example.com"
    assert parsed.get_content_type() == "multipart/alternative"
    text = parsed.get_body(preferencelist=("plain",)).get_content()
    page = parsed.get_body(preferencelist=("html",)).get_content()
    assert "was rejected with 57 errors" in text
    assert "was rejected with 57 errors" in page
    assert "- line 1: contents[0].parts: missing_text <script>alert(1)</script>" in text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Open the validation report: https://storage.cloud.google.com/" in text
    assert "href='https://storage.cloud.google.com/sftpipe-local/prepared/ds-bad/report.html'" in page


def test_email_subject_cannot_inject_headers(job_failed: JobEndedOutcome) -> None:
    outcome = job_failed.model_copy(update={"dataset_id": "ds\r\nBcc: victim@example.com"})
    message = build_email(build_notification(outcome), sender="s@example.com", recipients=["a@example.com"])
    assert message["Bcc"] is None
    assert message["Subject"] == "[sftpipe] failed: job-43 (gemini-2.5-flash on ds Bcc: victim@example.com)"


def test_email_metric_table_is_aligned(evaluated: EvaluatedOutcome) -> None:
    message = build_email(build_notification(evaluated), sender="s@example.com", recipients=["a@example.com"])
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert (
        "metric        base  tuned       Δ\nexact_match  0.410  0.630  +0.220\nf1 *         0.550  0.760  +0.210"
        in text
    )
    assert (
        "* primary metric: it decides the verdict (its Δ interval must exclude 0 and the change exceed "
        "the tolerance ±0.01)" in text
    )

"""What a stall alert says, and how one stall is told from the next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser

from pydantic import TypeAdapter

from shared.notify.content import JobStalledOutcome, Outcome, build_notification
from shared.notify.email import build_email
from shared.notify.slack import build_slack_payload

RAISED = datetime(2025, 3, 4, 12, 30, 5, tzinfo=UTC)


def _stalled(**changes: object) -> JobStalledOutcome:
    values: dict[str, object] = {
        "job_id": "job-7",
        "dataset_id": "reviews-<!here>",
        "base_model": "gemini-2.5-flash",
        "state": "JOB_STATE_RUNNING",
        "occurred_at": RAISED,
        "last_progress_at": RAISED - timedelta(hours=2, minutes=5),
        "tuning_job_name": "projects/p/locations/us-central1/tuningJobs/987",
        "link": "https://console.cloud.google.com/vertex-ai/generative/language/locations/us-central1/tuningJobs/987",
    }
    return JobStalledOutcome.model_validate({**values, **changes})


def test_the_stall_notice_names_the_job_its_state_and_the_last_progress() -> None:
    notification = build_notification(_stalled())

    assert notification.kind == "job_stalled"
    assert notification.status == "stalled"
    assert notification.subject == "[sftpipe] stalled: job-7 (gemini-2.5-flash on reviews-<!here>)"
    assert notification.summary == (
        "Tuning job job-7 is still running but has made no progress for 2 h 05 min "
        "(last progress 2025-03-04 10:25 UTC). Nothing is cancelled automatically: "
        "`sftpipe cancel job-7` stops it."
    )
    assert notification.facts == [
        ("Job", "job-7"),
        ("Base model", "gemini-2.5-flash"),
        ("Dataset", "reviews-<!here>"),
        ("State", "JOB_STATE_RUNNING"),
        ("Last progress", "2025-03-04 10:25 UTC"),
        ("Alert raised", "2025-03-04 12:30 UTC"),
        ("Vertex AI job", "projects/p/locations/us-central1/tuningJobs/987"),
    ]
    assert notification.link is not None
    assert notification.link.endswith("/tuningJobs/987")
    assert notification.link_label == "Open the job"


def test_a_job_without_recorded_progress_says_since_submission() -> None:
    notification = build_notification(_stalled(last_progress_at=None, tuning_job_name=None, link=None))
    assert "has made no progress since it was submitted." in notification.summary
    assert ("Last progress", "none seen") in notification.facts
    assert [label for label, _ in notification.facts][-1] == "Alert raised"
    assert notification.link is None


def test_each_stall_has_its_own_event_key_and_a_redelivery_the_same() -> None:
    first = _stalled()
    assert first.event_key == f"job_stalled:{int(RAISED.timestamp())}"
    assert _stalled().event_key == first.event_key  # the same alert delivered again
    assert _stalled(occurred_at=RAISED + timedelta(hours=3)).event_key != first.event_key
    assert "/" not in first.event_key  # notifications_sent keys are <event_key>/<channel>/<destination>


def test_the_outcome_round_trips_through_the_discriminated_union() -> None:
    adapter = TypeAdapter(Outcome)
    outcome = _stalled()
    assert adapter.validate_python(outcome.model_dump()) == outcome


def test_slack_and_mail_render_the_stall_escaped() -> None:
    notification = build_notification(_stalled())
    payload = build_slack_payload(notification)
    assert payload["text"].startswith("[sftpipe] stalled: job-7 (gemini-2.5-flash on reviews-&lt;!here&gt;)")
    assert payload["blocks"][1]["text"]["text"].startswith(":warning: Tuning job job-7 is still running")
    assert payload["blocks"][-1]["elements"][0]["url"].endswith("/tuningJobs/987")

    message = build_email(notification, sender="s@example.com", recipients=["a@example.com"])
    parsed = BytesParser(policy=policy.default).parsebytes(message.as_bytes())
    assert parsed["Subject"] == "[sftpipe] stalled: job-7 (gemini-2.5-flash on reviews-<!here>)"
    page = parsed.get_body(preferencelist=("html",)).get_content()
    assert "color:#e37400" in page
    assert "reviews-&lt;!here&gt;" in page

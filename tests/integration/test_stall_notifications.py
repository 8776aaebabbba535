"""A stall alert reaches Slack and email through the stack's completion function, once per stall.

The test writes the job document the tuner and poller would have written for a RUNNING job
(without a Vertex name, so the stack's poller leaves it alone) and publishes the poller's
``stalled`` job-event/v1 on the job-events topic, twice, as an at-least-once delivery would.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from shared.messages import JobEventV1, TuningRequestV1
from shared.runtime import Runtime
from shared.state.jobs import JobRecord
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

BASE_MODEL = "gemini-2.5-flash"


def _write_running_job(runtime: Runtime, last_progress_at: datetime) -> JobRecord:
    settings = runtime.settings
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    dataset_id = f"dataset-{uuid.uuid4().hex[:12]}"
    request = TuningRequestV1(
        dataset_id=dataset_id,
        base_model=BASE_MODEL,
        training_uri=f"gs://{settings.bucket}/prepared/{dataset_id}/train.jsonl",
    )
    record = JobRecord(
        job_id=job_id,
        dataset_id=dataset_id,
        request=request.model_dump(mode="json", by_alias=True, exclude_none=True),
        base_model=BASE_MODEL,
        status="JOB_STATE_RUNNING",
        sequence=2,
        created=last_progress_at - timedelta(minutes=10),
        submitted_at=last_progress_at - timedelta(minutes=9),
        last_progress_at=last_progress_at,
    )
    runtime.firestore.collection(settings.jobs_collection).document(job_id).set(
        record.model_dump(mode="python")
    )
    return record


def _stalled_event(job: JobRecord, occurred_at: datetime) -> JobEventV1:
    """The event shared.tuning.poll._alert_stalled publishes."""
    assert job.last_progress_at is not None
    return JobEventV1(
        job_id=job.job_id,
        dataset_id=job.dataset_id,
        sequence=job.sequence,
        state=job.status,
        kind="stalled",
        tuning_job_name="projects/p/locations/us-central1/tuningJobs/4242",
        error=f"no progress since {job.last_progress_at.isoformat()}",
        occurred_at=occurred_at,
    )


def _files_naming(directory: str, pattern: str, job_id: str) -> list[Path]:
    return sorted(p for p in Path(directory).glob(pattern) if job_id in p.read_text(errors="replace"))


def _document(runtime: Runtime, collection: str, job_id: str) -> dict[str, Any] | None:
    snapshot = runtime.firestore.collection(collection).document(job_id).get()
    return snapshot.to_dict() if snapshot.exists else None


@pytest.mark.slow(12)
def test_a_stall_is_notified_once_per_stall_on_slack_and_by_mail(
    runtime: Runtime, stack: dict[str, str]
) -> None:
    slack_dir, mail_dir = stack["SFTPIPE_SLACK_DIR"], stack["SFTPIPE_MAIL_DIR"]
    now = datetime.now(UTC).replace(microsecond=0)
    job = _write_running_job(runtime, last_progress_at=now - timedelta(hours=3))
    event = _stalled_event(job, occurred_at=now - timedelta(minutes=50))

    for _ in range(2):  # the same alert twice, at once
        runtime.publish(runtime.settings.job_events_topic, event.to_json(), **event.attributes())

    [post] = wait_for(lambda: _files_naming(slack_dir, "*.json", job.job_id), what="a Slack post")
    [mail] = wait_for(lambda: _files_naming(mail_dir, "*.eml", job.job_id), what="a mail")
    assert "stalled" in post.read_text()
    assert "no progress for 2 h 10 min" in post.read_text()
    parsed = BytesParser(policy=policy.default).parsebytes(mail.read_bytes())
    assert parsed["Subject"] == f"[sftpipe] stalled: {job.job_id} ({BASE_MODEL} on {job.dataset_id})"
    assert parsed["X-Mailsink-Rcpt-To"] == "ml-team@example.com"

    time.sleep(12)  # past the subscription's 10 s maximum backoff: every redelivery has happened
    assert len(_files_naming(slack_dir, "*.json", job.job_id)) == 1
    assert len(_files_naming(mail_dir, "*.eml", job.job_id)) == 1
    key = f"job_stalled:{int(event.occurred_at.timestamp())}"
    job_doc = _document(runtime, runtime.settings.jobs_collection, job.job_id) or {}
    assert sorted(k.split("/")[:2] for k in job_doc["notifications_sent"]) == [[key, "email"], [key, "slack"]]
    assert job_doc["status"] == "JOB_STATE_RUNNING"  # an alert changes nothing about the job
    # The evaluation document belongs to the job's end: a stall does not create it.
    assert _document(runtime, runtime.settings.evaluations_collection, job.job_id) is None

    # A later stall (the poller raises a new alert only after progress resumed and stopped again)
    # is a notice of its own.
    later = _stalled_event(job, occurred_at=now)
    runtime.publish(runtime.settings.job_events_topic, later.to_json(), **later.attributes())
    wait_for(lambda: len(_files_naming(slack_dir, "*.json", job.job_id)) == 2, what="the second Slack post")
    wait_for(lambda: len(_files_naming(mail_dir, "*.eml", job.job_id)) == 2, what="the second mail")

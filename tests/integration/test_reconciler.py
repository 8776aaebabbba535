"""The reconciler (shared/reconcile.py) through the stack: its poller runs it on every tick."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shared.messages import Hyperparameters, TuningRequestV1
from shared.runtime import Runtime
from shared.tuning.submit import derive_job_id
from tests.integration.conftest import wait_for


def _job(runtime: Runtime, job_id: str) -> dict[str, Any] | None:
    snapshot = runtime.firestore.collection(runtime.settings.jobs_collection).document(job_id).get()
    return snapshot.to_dict() if snapshot.exists else None


def test_a_request_whose_deliveries_were_spent_is_recorded_failed_and_notified_once(
    runtime: Runtime, stack: dict[str, str]
) -> None:
    settings = runtime.settings
    request = TuningRequestV1(
        dataset_id="spent-0000000000000000",
        base_model="gemini-2.5-flash",
        training_uri=f"gs://{settings.bucket}/prepared/spent/train.jsonl",
        hyperparameters=Hyperparameters(epochs=1),
    )
    runtime.firestore.collection(settings.datasets_collection).document(request.dataset_id).set(
        {"dataset_id": request.dataset_id, "status": "READY"}
    )
    # What Pub/Sub does once the tuner's subscription has spent its delivery attempts.
    dead_letter_topic = f"tuner-{settings.tuning_requests_topic}{settings.dead_letter_suffix}"
    runtime.publish(
        dead_letter_topic, request.to_json(), **request.attributes(), sftpipe_error="Firestore down"
    )
    job_id = derive_job_id(request)

    job = wait_for(
        lambda: (j := _job(runtime, job_id)) and j["status"] != "QUEUED" and j,
        what="the reconciler to record the request",
    )

    assert job["status"] == "JOB_STATE_FAILED"
    assert job["error"].startswith("request_dead_lettered")
    assert "Firestore down" in job["error"]

    def about_this(folder: str, pattern: str) -> list[Path]:
        return [p for p in Path(stack[folder]).glob(pattern) if job_id in p.read_text(errors="replace")]

    wait_for(lambda: about_this("SFTPIPE_SLACK_DIR", "*.json"), what="the Slack notice")
    wait_for(lambda: about_this("SFTPIPE_MAIL_DIR", "*.eml"), what="the mail")
    time.sleep(5)  # several more ticks: the dead letter was acknowledged, nothing repeats
    assert len(about_this("SFTPIPE_SLACK_DIR", "*.json")) == 1
    assert len(about_this("SFTPIPE_MAIL_DIR", "*.eml")) == 1
    assert [d.id for d in runtime.firestore.collection(settings.jobs_collection).stream()] == [job_id]


def test_a_ready_dataset_whose_request_was_lost_is_published_again(runtime: Runtime) -> None:
    from datetime import UTC, datetime, timedelta

    settings = runtime.settings
    request = TuningRequestV1(
        dataset_id="lost-0000000000000000",
        base_model="not-a-gemini-model",  # the service refuses it: the job ends FAILED at once
        training_uri=f"gs://{settings.bucket}/prepared/lost/train.jsonl",
    )
    runtime.firestore.collection(settings.datasets_collection).document(request.dataset_id).set(
        {
            "dataset_id": request.dataset_id,
            "status": "READY",
            "awaiting_job": True,
            "tuning_request": request.model_dump(mode="json", by_alias=True, exclude_none=True),
            "updated": datetime.now(UTC) - timedelta(minutes=5),  # ingest published it long ago
        }
    )

    job = wait_for(lambda: _job(runtime, derive_job_id(request)), what="the request to be published again")

    assert job["dataset_id"] == request.dataset_id
    dataset = runtime.firestore.collection(settings.datasets_collection).document(request.dataset_id).get()
    assert dataset.get("request_republishes") == 1


def test_an_ended_job_that_completion_never_recorded_is_published_again_and_notified_once(
    runtime: Runtime, stack: dict[str, str]
) -> None:
    from datetime import UTC, datetime, timedelta

    from shared.state.jobs import JobRecord

    settings = runtime.settings
    ended = datetime.now(UTC) - timedelta(minutes=5)
    request = TuningRequestV1(
        dataset_id="unheard-0000000000000000",
        base_model="gemini-2.5-flash",
        training_uri=f"gs://{settings.bucket}/prepared/unheard/train.jsonl",
    )
    job_id = derive_job_id(request)
    # What the poller left when completion's deliveries of the FAILED event were all spent before
    # it could write anything: the job ended long ago, and no evaluations/{job_id} exists.
    record = JobRecord(
        job_id=job_id,
        dataset_id=request.dataset_id,
        request=request.model_dump(mode="json", by_alias=True, exclude_none=True),
        base_model=request.base_model,
        status="JOB_STATE_FAILED",
        sequence=2,
        error="8: quota exhausted during training",
        created=ended,
        ended_at=ended,
    ).model_dump(mode="python")
    runtime.firestore.collection(settings.jobs_collection).document(job_id).set(
        {**record, "awaiting_completion": True}
    )

    def about_this(folder: str, pattern: str) -> list[Path]:
        return [p for p in Path(stack[folder]).glob(pattern) if job_id in p.read_text(errors="replace")]

    wait_for(lambda: about_this("SFTPIPE_SLACK_DIR", "*.json"), what="the Slack notice")
    wait_for(lambda: about_this("SFTPIPE_MAIL_DIR", "*.eml"), what="the mail")
    time.sleep(5)  # more ticks: the job is recorded by completion now, nothing is published again
    assert len(about_this("SFTPIPE_SLACK_DIR", "*.json")) == 1
    assert len(about_this("SFTPIPE_MAIL_DIR", "*.eml")) == 1
    assert "quota exhausted during training" in about_this("SFTPIPE_SLACK_DIR", "*.json")[0].read_text()
    job = _job(runtime, job_id)
    assert (job["awaiting_completion"], job["completion_republishes"]) == (False, 1)

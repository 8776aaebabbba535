"""A job that waits for quota: Vertex reports it PENDING with ``tuning_job_state``
WAITING_FOR_QUOTA. The poller records the sub-state (and every later one) with when it began,
``sftpipe status`` shows it, and a wait longer than ``SFTPIPE_WAITING_NOTICE_AFTER_S`` raises one
notice (not a stall alert), delivered once on each channel.

A second local tuning service runs with ``--queue-over-quota`` and a quota of one job: a long job
holds the slot, so the next one waits for quota as on Vertex. The poller's refresh runs in-process
on collections of the test's own (the stack's poller never sees these jobs); the notice goes
through completion's own entry point to the stack's Slack and mail sinks.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from google.genai import types

from local.services import free_port, http_answers
from local.tuning import sample
from shared.evaluation.notices import notify_stalled
from shared.messages import JobEventV1, TuningRequestV1
from shared.runtime import Runtime
from shared.state.jobs import JobRecord, SubStateEntry
from shared.state.store import JobStore
from shared.tuning.client import make_client
from shared.tuning.observe import progress_marker
from shared.tuning.poll import _refresh
from tests.integration.conftest import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def queueing_service(tmp_path: Path, stack: dict[str, str]) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "local.tuning", "--port", str(port), "--model", "tiny"]
    argv += ["--state-dir", str(tmp_path / "state"), "--max-concurrent-jobs", "1", "--queue-over-quota"]
    with open(tmp_path / "service.log", "ab") as log:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: http_answers(f"{url}healthz"), timeout=60, what="the queueing tuning service")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _files_naming(directory: str, job_id: str) -> list[str]:
    return [p.read_text() for p in Path(directory).glob("*") if job_id in p.read_text(errors="replace")]


@pytest.mark.slow(25)
def test_a_job_waiting_for_quota_is_recorded_shown_and_notified_once(
    runtime: Runtime, stack: dict[str, str], queueing_service: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = runtime.settings.model_copy(
        update={
            "tuning_api_url": queueing_service,
            "jobs_collection": f"jobs-{suffix}",
            "idempotency_collection": f"idempotency-{suffix}",
        }
    )
    local = Runtime(settings)
    store = JobStore(local.firestore, settings)
    client = make_client(settings)
    training = f"prepared/waiting-{suffix}/train.jsonl"
    local.storage.bucket(settings.bucket).blob(training).upload_from_string(
        b"".join(orjson.dumps(r) + b"\n" for r in sample.sentiment_records(16, seed=5))
    )
    dataset = types.TuningDataset(gcs_uri=f"gs://{settings.bucket}/{training}")
    holder = client.tunings.tune(
        base_model="gemini-2.5-flash",
        training_dataset=dataset,
        config=types.CreateTuningJobConfig(epoch_count=100),
    )
    waiting = client.tunings.tune(
        base_model="gemini-2.5-flash",
        training_dataset=dataset,
        config=types.CreateTuningJobConfig(epoch_count=1),
    )
    try:
        assert waiting.state == types.JobState.JOB_STATE_PENDING
        wait_for(
            lambda: (
                client.tunings.get(name=waiting.name).tuning_job_state
                == types.TuningJobState.TUNING_JOB_STATE_WAITING_FOR_QUOTA
            ),
            timeout=30,
            what="the second job to wait for quota",
        )
        job_id = f"job-{suffix}"
        request = TuningRequestV1(
            dataset_id=f"waiting-{suffix}", base_model="gemini-2.5-flash", training_uri=dataset.gcs_uri or ""
        )
        record = JobRecord(
            job_id=job_id,
            dataset_id=request.dataset_id,
            request=request.model_dump(mode="json", by_alias=True, exclude_none=True),
            base_model="gemini-2.5-flash",
            status="JOB_STATE_PENDING",
            sequence=2,
            tuning_job_name=waiting.name,
            created=datetime.now(UTC),
            submitted_at=datetime.now(UTC),
            # As the poller left it three hours ago, before the job began to wait: nothing has
            # changed at Vertex since but the sub-state.
            last_progress_at=datetime.now(UTC) - timedelta(hours=3),
            progress_marker=progress_marker(client.tunings.get(name=waiting.name)),
            tuning_job_state="TUNING_JOB_STATE_PROCESSING_DATASET",
            sub_states=[
                SubStateEntry(
                    sub_state="TUNING_JOB_STATE_PROCESSING_DATASET",
                    state="JOB_STATE_PENDING",
                    at=datetime.now(UTC) - timedelta(hours=3),
                )
            ],
        )
        local.firestore.collection(settings.jobs_collection).document(job_id).set(record.model_dump())

        def refresh(wait_notice_after_s: int) -> JobRecord:
            job = store.get(job_id)
            assert job is not None
            # A stall threshold the 3 h without progress would pass: a new sub-state is progress,
            # and a wait is not a stall, so no stall alert may come of it.
            _refresh(job, store, client, stall_after_s=3600, wait_notice_after_s=wait_notice_after_s)
            refreshed = store.get(job_id)
            assert refreshed is not None
            return refreshed

        first = refresh(wait_notice_after_s=3600)
        assert first.tuning_job_state == "TUNING_JOB_STATE_WAITING_FOR_QUOTA"
        assert [e.sub_state.removeprefix("TUNING_JOB_STATE_") for e in first.sub_states] == [
            "PROCESSING_DATASET",
            "WAITING_FOR_QUOTA",
        ]
        assert first.waiting_alerted_at is None  # the wait has just begun
        assert first.last_progress_at is not None
        assert datetime.now(UTC) - first.last_progress_at < timedelta(minutes=1)
        # Waited long enough: three ticks, one alert.
        local.firestore.collection(settings.jobs_collection).document(job_id).update(
            {"tuning_job_state_since": datetime.now(UTC) - timedelta(hours=2)}
        )
        for _ in range(3):
            refresh(wait_notice_after_s=1800)
        # The outbox is shared with the stack: this job's entries only.
        alerts = [doc.to_dict() for doc in store.outbox.stream() if doc.id.startswith(f"{job_id}-")]
        assert [a["event"]["tuning_job_state"] for a in alerts] == ["TUNING_JOB_STATE_WAITING_FOR_QUOTA"]
        assert store.get(job_id).stalled_alerted_at is None  # type: ignore[union-attr] # not a stall
        assert [
            name
            for name in (doc.id for doc in store.outbox.stream())
            if name.startswith(f"{job_id}-stalled-")
        ] == []

        # The notice, delivered twice (at least once), reaches each channel once.
        event = JobEventV1.model_validate(alerts[0]["event"])
        for _ in range(2):
            notify_stalled(store.get(job_id), event, local)  # type: ignore[arg-type]
        posts = _files_naming(stack["SFTPIPE_SLACK_DIR"], job_id)
        mails = _files_naming(stack["SFTPIPE_MAIL_DIR"], job_id)
        assert len(posts) == 1
        assert len(mails) == 1
        assert "waiting for quota" in posts[0]
        assert "WAITING_FOR_QUOTA" in mails[0]

        # The slot frees: the job trains, and every sub-state it passes through is recorded.
        client.tunings.cancel(name=holder.name)
        wait_for(lambda: client.tunings.get(name=waiting.name).has_ended, timeout=120, what="the job to end")
        final = refresh(wait_notice_after_s=1800)
        seen = [e.sub_state.removeprefix("TUNING_JOB_STATE_") for e in final.sub_states]
        assert seen[:2] == ["PROCESSING_DATASET", "WAITING_FOR_QUOTA"]
        assert seen[-1] == "POST_PROCESSING"
        assert final.status == "JOB_STATE_SUCCEEDED"
    finally:
        for name in (holder.name, waiting.name):
            if name and not client.tunings.get(name=name).has_ended:
                client.tunings.cancel(name=name)

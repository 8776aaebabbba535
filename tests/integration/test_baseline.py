"""The baseline before spend, through the local stack: the base model is scored on the test split
before any tuning job exists, the gate can stop a run, and the final evaluation reuses the
baseline's answers instead of asking the base model again.

Requests are published to the stack's tuning-requests topic (push to the tuner, which creates the
job BASELINE; its first event reaches completion, which takes the baseline, queues the job and
hands it back to the tuner), except for the redelivery test, which drives completion in-process
on collections and topics of its own so that the stack's poller never sees its job.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from local.tuning import sample
from shared.evaluation.completion import handle_job_message
from shared.events import PubSubMessage
from shared.messages import (
    BaselineContinuationV1,
    Hyperparameters,
    JobEventV1,
    TuningRequestV1,
    parse_message,
)
from shared.runtime import Runtime
from shared.state.jobs import BASELINE, BASELINE_MET, JobRecord
from shared.tuning.client import make_client
from shared.tuning.submit import derive_job_id, find_tuning_job
from tests.integration.conftest import wait_for

BASE_MODEL = "gemini-2.5-flash"
TEST_EXAMPLES = 10
#: Baseline, a tiny tuning job (behind the quota of one job, which another module may hold) and
#: the evaluation.
PIPELINE_TIMEOUT_S = 420.0


def _upload_splits(
    runtime: Runtime, dataset_id: str, *, train: int = 40, test: int = TEST_EXAMPLES
) -> dict[str, str]:
    bucket = runtime.storage.bucket(runtime.settings.bucket)
    uris = {}
    for split, count, seed in (("train", train, 31), ("test", test, 37)):
        name = f"prepared/{dataset_id}/{split}.jsonl"
        records = sample.sentiment_records(count, seed=seed)
        bucket.blob(name).upload_from_string(b"".join(orjson.dumps(r) + b"\n" for r in records))
        uris[split] = f"gs://{runtime.settings.bucket}/{name}"
    return uris


def _dataset_with_ingest_report(runtime: Runtime, dataset_id: str) -> None:
    """The records ingest leaves for a READY dataset: its document and its report."""
    prefix = f"{runtime.settings.reports_prefix}{dataset_id}/"
    bucket = runtime.storage.bucket(runtime.settings.bucket)
    bucket.blob(f"{prefix}report.json").upload_from_string(orjson.dumps({"ok": True, "examples": 50}))
    bucket.blob(f"{prefix}report.md").upload_from_string("# Dataset report\n\nAccepted.\n")
    runtime.firestore.collection(runtime.settings.datasets_collection).document(dataset_id).set(
        {
            "dataset_id": dataset_id,
            "status": "READY",
            "report_uri": f"gs://{runtime.settings.bucket}/{prefix}report.json",
        }
    )


def _request(runtime: Runtime, **fields: Any) -> TuningRequestV1:
    dataset_id = f"baseline-{uuid.uuid4().hex[:10]}"
    uris = _upload_splits(runtime, dataset_id)
    return TuningRequestV1(
        dataset_id=dataset_id,
        base_model=BASE_MODEL,
        training_uri=uris["train"],
        test_uri=uris["test"],
        hyperparameters=Hyperparameters(epochs=1),
        task="classification",
        **fields,
    )


def _document(runtime: Runtime, collection: str, doc_id: str) -> dict[str, Any]:
    return runtime.firestore.collection(collection).document(doc_id).get().to_dict() or {}


def _files_naming(directory: str, pattern: str, job_id: str) -> list[Path]:
    return [p for p in Path(directory).glob(pattern) if job_id in p.read_text(errors="replace")]


def _report_object(runtime: Runtime, name: str) -> bytes:
    return runtime.storage.bucket(runtime.settings.bucket).blob(name).download_as_bytes()


@pytest.mark.slow(150)
def test_the_baseline_is_taken_before_the_job_is_submitted_and_reused_by_the_evaluation(
    runtime: Runtime, stack: dict[str, str]
) -> None:
    settings = runtime.settings
    request = _request(runtime, few_shot=1)
    _dataset_with_ingest_report(runtime, request.dataset_id)
    job_id = derive_job_id(request)
    runtime.publish(settings.tuning_requests_topic, request.to_json(), **request.attributes())

    def baseline_done() -> dict[str, Any] | None:
        doc = _document(runtime, settings.baselines_collection, job_id)
        return doc if doc.get("status") == "DONE" else None

    baseline_doc = wait_for(baseline_done, timeout=120, what="the baseline")
    # Marked answers: if the evaluation asked the base model again, they would not survive.
    answers_name = f"{settings.reports_prefix}{job_id}/baseline/predictions.jsonl"
    baseline_answers = [orjson.loads(line) for line in _report_object(runtime, answers_name).splitlines()]
    assert [a["index"] for a in baseline_answers] == list(range(TEST_EXAMPLES))
    assert [a["base_error"] for a in baseline_answers if a["base_output"] is None] == []
    assert all(a["tuned_output"] is None for a in baseline_answers)
    marked = [{**a, "base_output": f"baseline answer {a['index']}"} for a in baseline_answers]
    runtime.storage.bucket(settings.bucket).blob(answers_name).upload_from_string(
        b"".join(orjson.dumps(a) + b"\n" for a in marked)
    )

    def evaluated() -> dict[str, Any] | None:
        doc = _document(runtime, settings.evaluations_collection, job_id)
        return doc if doc.get("status") == "DONE" else None

    wait_for(evaluated, timeout=PIPELINE_TIMEOUT_S, what="the evaluation")
    job = JobRecord.model_validate(_document(runtime, settings.jobs_collection, job_id))
    states = [entry.state for entry in sorted(job.history, key=lambda e: e.sequence)]
    assert states[:2] == [BASELINE, "QUEUED"]
    assert states[-1] == "JOB_STATE_SUCCEEDED"
    assert job.baseline is not None
    assert job.submitted_at is not None
    evaluated_at = job.baseline["evaluated_at"]
    assert evaluated_at < job.submitted_at, "the baseline must be recorded before any job is submitted"
    assert job.baseline["examples"] == TEST_EXAMPLES
    assert job.baseline["few_shot"] == 1
    assert job.baseline["primary_metric"] == "macro_f1"
    assert set(job.baseline["metrics"]) >= {"accuracy", "macro_f1"}
    assert baseline_doc["cursor"] == TEST_EXAMPLES
    assert baseline_doc["chunks"] == [f"0000000-{TEST_EXAMPLES:07d}"]

    summary = orjson.loads(_report_object(runtime, f"{settings.reports_prefix}{job_id}/summary.json"))
    assert summary["baseline"]["reused"] is True
    assert summary["baseline"]["examples"] == TEST_EXAMPLES
    assert summary["baseline"]["few_shot"] == 1
    assert summary["baseline"]["metrics"] == job.baseline["metrics"]
    assert summary["baseline"]["evaluated_at"] < summary["tuning"]["submitted_at"]
    predictions = [
        orjson.loads(line)
        for line in _report_object(
            runtime, f"{settings.reports_prefix}{job_id}/predictions.jsonl"
        ).splitlines()
    ]
    assert [p["base_output"] for p in predictions] == [f"baseline answer {i}" for i in range(TEST_EXAMPLES)]
    assert all(isinstance(p["tuned_output"], str) for p in predictions)
    html = _report_object(runtime, f"{settings.reports_prefix}{job_id}/report.html").decode()
    assert "Baseline, before tuning" in html
    assert "1-shot" in html

    # Recorded where the user looks before tuning: the dataset and the ingest report.
    dataset = _document(runtime, settings.datasets_collection, request.dataset_id)
    assert dataset["baseline"]["job_id"] == job_id
    assert dataset["baseline"]["metrics"] == job.baseline["metrics"]
    report_prefix = f"{settings.reports_prefix}{request.dataset_id}/"
    assert (
        orjson.loads(_report_object(runtime, f"{report_prefix}report.json"))["baseline"]["examples"]
        == TEST_EXAMPLES
    )
    report_md = _report_object(runtime, f"{report_prefix}report.md").decode()
    assert report_md.startswith("# Dataset report")
    assert report_md.count("## Baseline") == 1

    # One baseline notice and one result per channel.
    mails = _files_naming(stack["SFTPIPE_MAIL_DIR"], "*.eml", job_id)
    posts = _files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job_id)
    assert len(mails) == 2
    assert len(posts) == 2
    notice = [p.read_text() for p in posts if "tuning job queued" in p.read_text()]
    assert len(notice) == 1
    assert "macro_f1" in notice[0]
    assert "served locally by a tiny GPT-2" in notice[0]
    assert "1-shot" in notice[0]


@pytest.mark.slow(30)
def test_a_baseline_that_meets_the_gate_stops_the_run_before_any_tuning_job(
    runtime: Runtime, stack: dict[str, str]
) -> None:
    settings = runtime.settings
    request = _request(runtime, baseline_gate="accuracy>=0")  # any model meets it
    job_id = derive_job_id(request)
    for _ in range(2):  # a redelivered request changes nothing
        runtime.publish(settings.tuning_requests_topic, request.to_json(), **request.attributes())

    def skipped() -> dict[str, Any] | None:
        doc = _document(runtime, settings.evaluations_collection, job_id)
        return doc if doc.get("status") == "SKIPPED" else None

    evaluation = wait_for(skipped, timeout=120, what="the gated run to end")
    job = JobRecord.model_validate(_document(runtime, settings.jobs_collection, job_id))
    assert job.status == BASELINE_MET
    assert [entry.state for entry in sorted(job.history, key=lambda e: e.sequence)] == [
        BASELINE,
        BASELINE_MET,
    ]
    assert job.tuning_job_name is None
    assert job.submitted_at is None
    assert find_tuning_job(make_client(settings), job_id) is None
    assert "no tuning job was created" in evaluation["reason"]
    assert "accuracy>=0" in evaluation["reason"]
    [mail] = wait_for(lambda: _files_naming(stack["SFTPIPE_MAIL_DIR"], "*.eml", job_id), what="the notice")
    assert "no tuning job was created" in mail.read_text(errors="replace")
    assert len(_files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job_id)) == 1


@pytest.mark.slow(30)
def test_a_baseline_across_invocations_and_redeliveries_scores_each_example_once(
    runtime: Runtime, stack: dict[str, str], continuations: tuple[str, Callable[[], list[PubSubMessage]]]
) -> None:
    topic, pull = continuations
    suffix = uuid.uuid4().hex[:8]
    # A budget no invocation meets (one chunk each), and collections the stack's poller never reads.
    settings = runtime.settings.model_copy(
        update={
            "job_events_topic": topic,
            "tuning_requests_topic": topic,
            "jobs_collection": f"jobs-{suffix}",
            "baselines_collection": f"baselines-{suffix}",
            "evaluations_collection": f"evaluations-{suffix}",
            "evaluation_time_budget_s": 0.001,
            "evaluation_chunk_size": 4,
            "evaluation_max_output_tokens": 8,
        }
    )
    local = Runtime(settings)
    request = _request(local)
    job_id = derive_job_id(request)
    from shared.state.store import JobStore

    store = JobStore(local.firestore, settings)
    assert store.create_queued(
        job_id, orjson.loads(request.to_json()), request.dataset_id, BASE_MODEL, baseline=True
    )
    first_event = JobEventV1(job_id=job_id, dataset_id=request.dataset_id, sequence=0, state=BASELINE)

    outcomes = [handle_job_message(first_event, local)]
    assert outcomes[0] == {"job_id": job_id, "status": "RUNNING", "cursor": 4, "total": TEST_EXAMPLES}
    cursors = []
    seen: list[PubSubMessage] = []
    for _ in range(10):
        pulled = wait_for(pull, timeout=30, what="a baseline continuation")
        seen += pulled
        messages = [m for m in pulled if m.attributes.get("schema") == BaselineContinuationV1.SCHEMA]
        if not messages:
            continue
        [message] = messages
        continuation = parse_message(message, BaselineContinuationV1)
        cursors.append(continuation.cursor)
        outcome = handle_job_message(continuation, local)
        outcomes.append(outcome)
        # Redeliveries of what came before are stale or duplicates now.
        assert handle_job_message(continuation, local) is None
        assert handle_job_message(first_event, local) is None
        if outcome and outcome["status"] == "DONE":
            break

    assert cursors == [4, 8]
    assert [o["status"] for o in outcomes if o] == ["RUNNING", "RUNNING", "DONE"]
    baseline = _document(local, settings.baselines_collection, job_id)
    assert sorted(baseline["chunks"]) == ["0000000-0000004", "0000004-0000008", "0000008-0000010"]
    assert baseline["invocations"] == 3
    assert baseline["cursor"] == TEST_EXAMPLES
    job = JobRecord.model_validate(_document(local, settings.jobs_collection, job_id))
    assert [entry.state for entry in job.history] == [BASELINE, "QUEUED"]
    assert len(_files_naming(stack["SFTPIPE_MAIL_DIR"], "*.eml", job_id)) == 1
    assert len(_files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job_id)) == 1
    assert sorted(key.split("/")[0] for key in baseline["notifications_sent"]) == ["baseline", "baseline"]
    # One request handed to the tuner, whatever the redeliveries (the QUEUED event goes through
    # the outbox, which the stack's poller may publish too: the history above counts it).
    for _ in range(3):
        seen += pull()
    schemas = [m.attributes.get("schema") for m in seen]
    assert schemas.count(TuningRequestV1.SCHEMA) == 1

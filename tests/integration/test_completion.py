"""The completion function against the local stack and a model really tuned by the local service.

A tiny model is tuned once per module through the real google-genai client; each test then writes
the job document the tuner would have written and delivers terminal job events: through the
stack's job-events topic (push to the completion function), or, for the multi-invocation run,
in-process with a tiny time budget and chunk size (its continuations go to a topic of the test's
own, read back with a pull subscription and delivered again by hand, duplicates included).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.genai import errors as genai_errors
from google.genai import types

from local.services import free_port
from local.tuning import sample
from shared.config import Settings
from shared.errors import PermanentError, TransientError
from shared.evaluation.completion import handle_job_message
from shared.events import PubSubMessage
from shared.messages import EvaluationContinuationV1, JobEventV1, TuningRequestV1, parse_message
from shared.runtime import Runtime
from shared.state.jobs import Checkpoint, JobRecord, lineage_of
from shared.tuning.client import make_client
from tests.integration.conftest import wait_for

BASE_MODEL = "gemini-2.5-flash"
TEST_EXAMPLES = 10
#: Evaluation through the stack: tuning is seconds, generation with the tiny model a few more.
EVALUATION_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class TunedModel:
    tuning_job_name: str
    tuned_model: str
    tuned_endpoint: str
    #: One per epoch, each with its own endpoint.
    checkpoints: tuple[Checkpoint, ...] = ()


@pytest.fixture(scope="module")
def tuned_model(stack: dict[str, str]) -> TunedModel:
    settings = Settings()
    training_uri = f"gs://{settings.bucket}/completion-tests/train.jsonl"
    records = sample.sentiment_records(48, seed=11)
    Runtime(settings).storage.bucket(settings.bucket).blob("completion-tests/train.jsonl").upload_from_string(
        b"".join(orjson.dumps(r) + b"\n" for r in records)
    )
    client = make_client(settings)

    def submitted() -> types.TuningJob | None:
        try:
            return client.tunings.tune(
                base_model=BASE_MODEL,
                training_dataset=types.TuningDataset(gcs_uri=training_uri),
                config=types.CreateTuningJobConfig(
                    epoch_count=3, tuned_model_display_name="completion-tests"
                ),
            )
        except genai_errors.ClientError as exc:
            if exc.code != 429:
                raise
            return None  # a job an earlier module on this worker started still holds the quota of 1

    job = wait_for(submitted, timeout=300, what="the local tuning service's quota of one job to free up")
    assert job.name is not None

    def ended() -> types.TuningJob | None:
        current = client.tunings.get(name=job.name)
        return current if current.has_ended else None

    finished = wait_for(ended, timeout=180, what="the tiny tuning job to end")
    assert finished.state == types.JobState.JOB_STATE_SUCCEEDED, finished.error
    assert finished.tuned_model is not None
    return TunedModel(
        tuning_job_name=finished.name or "",
        tuned_model=finished.tuned_model.model or "",
        tuned_endpoint=finished.tuned_model.endpoint or "",
        checkpoints=tuple(
            Checkpoint(checkpoint_id=c.checkpoint_id, epoch=c.epoch, step=c.step, endpoint=c.endpoint)
            for c in finished.tuned_model.checkpoints or []
        ),
    )


def _write_job(
    runtime: Runtime,
    tuned: TunedModel,
    *,
    status: str,
    test_examples: int = TEST_EXAMPLES,
    error: str | None = None,
    validation_examples: int = 0,
    display_name: str | None = None,
    ended: datetime | None = None,
) -> JobRecord:
    """Upload a test split and write jobs/{job_id} as the tuner and poller would have; with
    ``validation_examples``, a validation split too and the job's checkpoints."""
    settings = runtime.settings
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    dataset_id = f"dataset-{uuid.uuid4().hex[:12]}"
    test_name = f"prepared/{dataset_id}/test.jsonl"
    records = sample.sentiment_records(test_examples, seed=23)
    runtime.storage.bucket(settings.bucket).blob(test_name).upload_from_string(
        b"".join(orjson.dumps(r) + b"\n" for r in records)
    )
    validation_uri = None
    if validation_examples:
        validation_name = f"prepared/{dataset_id}/validation.jsonl"
        runtime.storage.bucket(settings.bucket).blob(validation_name).upload_from_string(
            b"".join(orjson.dumps(r) + b"\n" for r in sample.sentiment_records(validation_examples, seed=29))
        )
        validation_uri = f"gs://{settings.bucket}/{validation_name}"
    request = TuningRequestV1(
        dataset_id=dataset_id,
        base_model=BASE_MODEL,
        training_uri=f"gs://{settings.bucket}/prepared/{dataset_id}/train.jsonl",
        validation_uri=validation_uri,
        test_uri=f"gs://{settings.bucket}/{test_name}",
        display_name=display_name,
    )
    ended = ended or datetime.now(UTC)
    succeeded = status == "JOB_STATE_SUCCEEDED"
    record = JobRecord(
        job_id=job_id,
        dataset_id=dataset_id,
        request=request.model_dump(mode="json", by_alias=True, exclude_none=True),
        base_model=BASE_MODEL,
        status=status,
        sequence=3,
        tuning_job_name=tuned.tuning_job_name,
        tuned_model=tuned.tuned_model if succeeded else None,
        tuned_endpoint=tuned.tuned_endpoint if succeeded else None,
        checkpoints=list(tuned.checkpoints) if validation_examples else [],
        error=error,
        lineage=lineage_of(request.model_dump(mode="json", by_alias=True, exclude_none=True)),
        created=ended - timedelta(minutes=5),
        submitted_at=ended - timedelta(minutes=4),
        ended_at=ended,
    )
    runtime.firestore.collection(settings.jobs_collection).document(job_id).set(
        record.model_dump(mode="python")
    )
    return record


def _terminal_event(job: JobRecord) -> JobEventV1:
    return JobEventV1(
        job_id=job.job_id,
        dataset_id=job.dataset_id,
        sequence=job.sequence,
        state=job.status,
        previous_state="JOB_STATE_RUNNING",
        terminal=True,
        tuning_job_name=job.tuning_job_name,
        tuned_model=job.tuned_model,
        tuned_endpoint=job.tuned_endpoint,
        error=job.error,
    )


def _files_naming(directory: str, pattern: str, job_id: str) -> list[Path]:
    return [p for p in Path(directory).glob(pattern) if job_id in p.read_text(errors="replace")]


def _evaluation(runtime: Runtime, job_id: str) -> dict[str, Any]:
    return (
        runtime.firestore.collection(runtime.settings.evaluations_collection).document(job_id).get().to_dict()
        or {}
    )


def _report_objects(runtime: Runtime, job_id: str) -> dict[str, bytes]:
    prefix = f"{runtime.settings.reports_prefix}{job_id}/"
    return {
        blob.name.removeprefix(prefix): blob.download_as_bytes()
        for blob in runtime.storage.list_blobs(runtime.settings.bucket, prefix=prefix)
    }


def _check_report(objects: dict[str, bytes], job: JobRecord, test_examples: int) -> dict[str, Any]:
    """The three report files agree with each other and with the test split."""
    predictions = [orjson.loads(line) for line in objects["predictions.jsonl"].splitlines()]
    assert [p["index"] for p in predictions] == list(range(test_examples))
    assert [p["tuned_error"] for p in predictions if p["tuned_error"]] == []
    assert [p["base_error"] for p in predictions if p["base_error"]] == []
    assert all(isinstance(p["tuned_output"], str) for p in predictions)
    assert all(isinstance(p["base_output"], str) for p in predictions)
    summary = orjson.loads(objects["summary.json"])
    assert summary["schema"] == "evaluation-summary/v1"
    assert summary["job_id"] == job.job_id
    assert summary["counts"] == {
        "test_examples": test_examples,
        "base_failures": 0,
        "tuned_failures": 0,
        "base_truncated": 0,
        "tuned_truncated": 0,
    }
    assert (summary["task"], summary["task_decided_by"]) == ("classification", "inferred")
    assert summary["primary_metric"] == "macro_f1"
    assert summary["tuned_endpoint"] == job.tuned_endpoint
    # Every metric has its 95% intervals; the verdict is one the intervals allow.
    for metric in summary["metrics"]:
        for key in ("base_ci", "tuned_ci", "delta_ci"):
            low, high = metric[key]
            assert low <= high, (metric["name"], key)
        assert metric["significant"] == (metric["delta_ci"][0] > 0 or metric["delta_ci"][1] < 0)
    assert summary["verdict"] in {"improved", "regressed", "not_distinguishable"}
    primary = next(m for m in summary["metrics"] if m["primary"])
    assert primary["significant"] or summary["verdict"] == "not_distinguishable"
    assert summary["confidence"]["resamples"] == 1000
    # Each model's confusion matrix accounts for every test example.
    for model in ("base", "tuned"):
        confusion = summary["confusion"][model]
        assert len(confusion["matrix"]) == len(confusion["labels"])
        assert sum(map(sum, confusion["matrix"])) + confusion["omitted_examples"] == test_examples
    # The local tuning service exposes the loss series, so the report has the training curve.
    assert summary["loss_curves"].get("training"), "\n".join(summary["notes"])
    # The local service stood in for Gemini, and everything that shows a figure says so.
    assert summary["served_locally_by"] == "a tiny GPT-2 (2 layers, 64 wide, trained here)"
    html = objects["report.html"].decode()
    assert f"{BASE_MODEL}, served locally by a tiny GPT-2" in html
    assert "no figure is a Gemini result" in html
    assert html.startswith("<!DOCTYPE html>")
    assert job.job_id in html
    assert "Loss curves" in html
    assert "<script" not in html
    return summary


@pytest.mark.slow(40)
def test_duplicated_terminal_event_gives_one_evaluation_and_one_notification_per_channel(
    runtime: Runtime,
    stack: dict[str, str],
    tuned_model: TunedModel,
    function_log: Callable[[str], list[dict[str, Any]]],
) -> None:
    job = _write_job(runtime, tuned_model, status="JOB_STATE_SUCCEEDED")
    event = _terminal_event(job)

    # Two copies at once: Pub/Sub's at-least-once delivery, and a poller that published twice.
    for _ in range(2):
        runtime.publish(runtime.settings.job_events_topic, event.to_json(), **event.attributes())

    wait_for(
        lambda: _evaluation(runtime, job.job_id).get("status") == "DONE",
        timeout=EVALUATION_TIMEOUT_S,
        what="the evaluation to be done and notified",
    )
    objects = _report_objects(runtime, job.job_id)
    summary = _check_report(objects, job, TEST_EXAMPLES)
    evaluation = _evaluation(runtime, job.job_id)
    assert evaluation["cursor"] == evaluation["total"] == TEST_EXAMPLES
    sent = sorted(evaluation["notifications_sent"])  # <event>/<channel>/<destination>
    assert [key.split("/")[:2] for key in sent] == [["evaluated", "email"], ["evaluated", "slack"]]
    assert sent[1] == "evaluated/slack/slack webhook"
    assert evaluation["verdict"] == summary["verdict"]
    job_doc = (
        runtime.firestore.collection(runtime.settings.jobs_collection).document(job.job_id).get().to_dict()
    )
    assert job_doc["evaluation_report_uri"].endswith(f"{job.job_id}/report.html")

    [post] = wait_for(
        lambda: _files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job.job_id), what="a Slack post"
    )
    [mail] = wait_for(lambda: _files_naming(stack["SFTPIPE_MAIL_DIR"], "*.eml", job.job_id), what="a mail")
    assert "macro_f1" in post.read_text()
    assert "ml-team@example.com" in mail.read_text(errors="replace")

    time.sleep(12)  # past the subscription's 10 s maximum backoff: every redelivery has happened
    assert len(_files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job.job_id)) == 1
    assert len(_files_naming(stack["SFTPIPE_MAIL_DIR"], "*.eml", job.job_id)) == 1
    started = [
        line
        for line in function_log("completion")
        if line.get("message") == "evaluation started" and line.get("job_id") == job.job_id
    ]
    assert len(started) == 1
    chunk_objects = [name for name in _report_objects(runtime, job.job_id) if name.startswith("chunks/")]
    assert chunk_objects == [f"chunks/0000000-{TEST_EXAMPLES:07d}.jsonl"]


def test_failed_job_is_notified_with_its_reason_once_and_not_evaluated(
    runtime: Runtime, stack: dict[str, str], tuned_model: TunedModel
) -> None:
    reason = "Training data has 3 examples with more than 131072 tokens (code 3)."
    job = _write_job(runtime, tuned_model, status="JOB_STATE_FAILED", error=reason)
    event = _terminal_event(job)
    for _ in range(2):
        runtime.publish(runtime.settings.job_events_topic, event.to_json(), **event.attributes())

    [post] = wait_for(
        lambda: _files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job.job_id), what="a Slack post"
    )
    [mail] = wait_for(lambda: _files_naming(stack["SFTPIPE_MAIL_DIR"], "*.eml", job.job_id), what="a mail")
    assert "131072 tokens" in post.read_text()
    assert "failed" in post.read_text()
    assert "131072 tokens" in mail.read_text(errors="replace")

    time.sleep(5)
    assert len(_files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job.job_id)) == 1
    assert len(_files_naming(stack["SFTPIPE_MAIL_DIR"], "*.eml", job.job_id)) == 1
    evaluation = _evaluation(runtime, job.job_id)
    assert evaluation["status"] == "SKIPPED"
    assert evaluation["reason"] == reason
    sent = sorted(evaluation["notifications_sent"])
    assert [key.split("/")[:2] for key in sent] == [
        ["job_ended:failed", "email"],
        ["job_ended:failed", "slack"],
    ]
    assert _report_objects(runtime, job.job_id) == {}


@pytest.mark.slow(8)
def test_long_evaluation_continues_across_invocations_and_counts_each_example_once(
    runtime: Runtime,
    stack: dict[str, str],
    tuned_model: TunedModel,
    continuations: tuple[str, Callable[[], list[PubSubMessage]]],
) -> None:
    topic, pull = continuations
    # A budget no invocation can meet: each one evaluates its one mandatory chunk and hands over.
    settings = Settings(
        job_events_topic=topic,
        evaluation_time_budget_s=0.001,
        evaluation_chunk_size=4,
        evaluation_max_output_tokens=8,
    )
    runtime = Runtime(settings)
    examples = 11
    job = _write_job(runtime, tuned_model, status="JOB_STATE_SUCCEEDED", test_examples=examples)
    event = _terminal_event(job)

    first = handle_job_message(event, runtime)
    assert first == {"job_id": job.job_id, "status": "RUNNING", "cursor": 4, "total": examples}
    outcomes: list[dict[str, Any] | None] = [first]
    delivered: list[EvaluationContinuationV1] = []
    for _ in range(10):
        messages = wait_for(pull, timeout=30, what="a continuation message")
        assert len(messages) == 1
        continuation = parse_message(messages[0], JobEventV1, EvaluationContinuationV1)
        assert isinstance(continuation, EvaluationContinuationV1)
        delivered.append(continuation)
        outcome = handle_job_message(continuation, runtime)
        outcomes.append(outcome)
        # Redeliveries of everything seen so far, the terminal event included: all are stale now.
        assert handle_job_message(continuation, runtime) is None
        assert handle_job_message(event, runtime) is None
        if outcome and outcome["status"] == "DONE":
            break

    assert [c.cursor for c in delivered] == [4, 8, 11]
    assert [o["status"] for o in outcomes if o] == ["RUNNING", "RUNNING", "RUNNING", "DONE"]
    evaluation = _evaluation(runtime, job.job_id)
    assert evaluation["cursor"] == examples
    assert sorted(evaluation["chunks"]) == ["0000000-0000004", "0000004-0000008", "0000008-0000011"]
    assert evaluation["invocations"] == 4
    assert evaluation["lease_owner"] is None
    objects = _report_objects(runtime, job.job_id)
    _check_report(objects, job, examples)
    assert sorted(name for name in objects if name.startswith("chunks/")) == [
        "chunks/0000000-0000004.jsonl",
        "chunks/0000004-0000008.jsonl",
        "chunks/0000008-0000011.jsonl",
    ]
    assert len(_files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job.job_id)) == 1
    assert len(_files_naming(stack["SFTPIPE_MAIL_DIR"], "*.eml", job.job_id)) == 1
    assert pull() == []


def test_every_checkpoint_is_scored_once_across_redeliveries_and_the_best_is_evaluated(
    runtime: Runtime,
    stack: dict[str, str],
    tuned_model: TunedModel,
    continuations: tuple[str, Callable[[], list[PubSubMessage]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shared.evaluation.checkpoints as checkpoints_module

    assert len(tuned_model.checkpoints) == 3, "the fixture's job trains 3 epochs, one checkpoint each"
    topic, pull = continuations
    # One checkpoint (or one chunk) per invocation: every hand-over is exercised.
    settings = Settings(
        job_events_topic=topic,
        evaluation_time_budget_s=0.001,
        evaluation_chunk_size=5,
        evaluation_max_output_tokens=8,
        checkpoint_max_examples=6,
    )
    runtime = Runtime(settings)
    asked: list[str] = []
    real_run = checkpoints_module.run_predictions

    def counted(*args: Any, **kwargs: Any) -> Any:  # the real calls, counted per endpoint
        asked.append(kwargs["tuned_model"])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(checkpoints_module, "run_predictions", counted)
    job = _write_job(runtime, tuned_model, status="JOB_STATE_SUCCEEDED", validation_examples=8)
    event = _terminal_event(job)

    outcomes = [handle_job_message(event, runtime)]
    for _ in range(20):
        if _evaluation(runtime, job.job_id).get("status") == "DONE":
            break
        for message in wait_for(pull, timeout=30, what="a continuation message"):
            continuation = parse_message(message, JobEventV1, EvaluationContinuationV1)
            outcomes += [handle_job_message(continuation, runtime), handle_job_message(continuation, runtime)]
    outcomes.append(handle_job_message(event, runtime))

    endpoints = [c.endpoint for c in tuned_model.checkpoints]
    assert sorted(asked) == sorted(endpoints), "each checkpoint asked exactly once"
    evaluation = _evaluation(runtime, job.job_id)
    assert evaluation["status"] == "DONE"
    scores = evaluation["checkpoint_scores"]
    assert sorted(scores) == sorted(c.checkpoint_id for c in tuned_model.checkpoints)
    assert all(entry["examples"] == 6 for entry in scores.values())
    best = checkpoints_module.choose_best(scores, "macro_f1")
    assert evaluation["best_checkpoint"] == best
    assert evaluation["tuned_endpoint"] == scores[best]["endpoint"]
    objects = _report_objects(runtime, job.job_id)
    assert sorted(n for n in objects if n.startswith("checkpoints/")) == sorted(
        f"checkpoints/{c.checkpoint_id}.jsonl" for c in tuned_model.checkpoints
    )
    summary = orjson.loads(objects["summary.json"])
    assert summary["best_checkpoint"] == best
    assert summary["tuned_endpoint"] == scores[best]["endpoint"]
    assert [c["checkpoint_id"] for c in summary["checkpoints"]] == [
        c.checkpoint_id for c in tuned_model.checkpoints
    ]
    assert [c["epoch"] for c in summary["checkpoints"]] == [1, 2, 3]
    html = objects["report.html"].decode()
    assert "Checkpoints, validation split" in html
    assert "Validation macro_f1 by checkpoint" in html
    [post] = _files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job.job_id)
    assert "Best checkpoint" in post.read_text()
    assert scores[best]["endpoint"] in post.read_text()
    assert len(_files_naming(stack["SFTPIPE_MAIL_DIR"], "*.eml", job.job_id)) == 1


def test_a_new_model_is_compared_with_the_champion_of_its_lineage(
    runtime: Runtime, stack: dict[str, str], tuned_model: TunedModel
) -> None:
    lineage = f"reviews-{uuid.uuid4().hex[:8]}.jsonl"
    first_epoch = tuned_model.checkpoints[0].endpoint or ""
    # The champion: an earlier job of the same lineage, evaluated on its first checkpoint.
    champion = _write_job(
        runtime,
        tuned_model,
        status="JOB_STATE_SUCCEEDED",
        display_name=lineage,
        ended=datetime.now(UTC) - timedelta(days=1),
    )
    runtime.firestore.collection(runtime.settings.jobs_collection).document(champion.job_id).update(
        {"evaluation_status": "DONE", "evaluated_endpoint": first_epoch}
    )
    # Another lineage's newer model must not be taken for the champion.
    stranger = _write_job(runtime, tuned_model, status="JOB_STATE_SUCCEEDED", display_name="other.jsonl")
    runtime.firestore.collection(runtime.settings.jobs_collection).document(stranger.job_id).update(
        {"evaluation_status": "DONE", "evaluated_endpoint": tuned_model.tuned_endpoint}
    )
    challenger = _write_job(runtime, tuned_model, status="JOB_STATE_SUCCEEDED", display_name=lineage)
    event = _terminal_event(challenger)
    runtime.publish(runtime.settings.job_events_topic, event.to_json(), **event.attributes())

    wait_for(
        lambda: _evaluation(runtime, challenger.job_id).get("status") == "DONE" or None,
        timeout=EVALUATION_TIMEOUT_S,
        what="the challenger's evaluation",
    )
    objects = _report_objects(runtime, challenger.job_id)
    summary = orjson.loads(objects["summary.json"])
    compared = summary["champion"]
    assert compared["job_id"] == champion.job_id
    assert compared["endpoint"] == first_epoch
    assert compared["lineage"] == lineage
    assert compared["examples"] == TEST_EXAMPLES
    assert compared["failed"] == 0
    primary = [m for m in compared["metrics"] if m["primary"]]
    assert [m["name"] for m in primary] == ["macro_f1"]
    assert primary[0]["challenger"] == round(next(m["tuned"] for m in summary["metrics"] if m["primary"]), 4)
    assert compared["verdict"] in ("challenger_better", "champion_better", "not_distinguishable")
    assert "Champion and challenger" in objects["report.html"].decode()
    [post] = _files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", challenger.job_id)
    assert "Against the champion" in post.read_text()
    assert champion.job_id in post.read_text()
    job = (
        runtime.firestore.collection(runtime.settings.jobs_collection)
        .document(challenger.job_id)
        .get()
        .to_dict()
    )
    assert job["evaluated_endpoint"] == tuned_model.tuned_endpoint


def _succeeded_job_without_its_test_split(
    runtime: Runtime, tuned_model: TunedModel
) -> tuple[JobRecord, JobEventV1]:
    """A SUCCEEDED job whose held-out split was deleted: its evaluation fails permanently."""
    job = _write_job(runtime, tuned_model, status="JOB_STATE_SUCCEEDED")
    runtime.storage.bucket(runtime.settings.bucket).blob(
        job.request["test_uri"].removeprefix(f"gs://{runtime.settings.bucket}/")
    ).delete()
    return job, _terminal_event(job)


def test_a_missing_test_split_fails_the_evaluation_once_with_a_notification(
    runtime: Runtime, stack: dict[str, str], tuned_model: TunedModel
) -> None:
    job, event = _succeeded_job_without_its_test_split(runtime, tuned_model)

    with pytest.raises(PermanentError, match="does not exist"):
        handle_job_message(event, runtime)
    duplicate = handle_job_message(event, runtime)  # finds the failure recorded and notified
    assert duplicate == {"job_id": job.job_id, "state": "EVALUATION_FAILED", "status": "FAILED"}

    evaluation = _evaluation(runtime, job.job_id)
    assert evaluation["status"] == "FAILED"
    assert "does not exist" in evaluation["reason"]
    [post] = wait_for(
        lambda: _files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job.job_id), what="a Slack post"
    )
    assert "does not exist" in post.read_text()
    assert len(_files_naming(stack["SFTPIPE_MAIL_DIR"], "*.eml", job.job_id)) == 1
    assert _report_objects(runtime, job.job_id) == {}


def test_an_evaluation_failure_whose_notice_failed_is_notified_by_the_redelivery(
    runtime: Runtime, stack: dict[str, str], tuned_model: TunedModel
) -> None:
    job, event = _succeeded_job_without_its_test_split(runtime, tuned_model)
    closed_port = free_port()  # nothing listens: the Slack post fails, the mail goes through
    slack_down = Runtime(
        runtime.settings.model_copy(update={"slack_webhook_url": f"http://127.0.0.1:{closed_port}/"})
    )

    with pytest.raises(TransientError):
        handle_job_message(event, slack_down)
    assert _evaluation(runtime, job.job_id)["status"] == "FAILED"
    assert _files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job.job_id) == []

    handle_job_message(event, runtime)  # the redelivery, Slack back up

    [post] = wait_for(
        lambda: _files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job.job_id), what="the Slack post"
    )
    assert "does not exist" in post.read_text()
    assert len(_files_naming(stack["SFTPIPE_MAIL_DIR"], "*.eml", job.job_id)) == 1  # not sent twice
    handle_job_message(event, runtime)
    assert len(_files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job.job_id)) == 1


@pytest.mark.slow(20)
def test_no_evaluation_call_starts_that_could_outlive_the_invocation(
    runtime: Runtime,
    stack: dict[str, str],
    tuned_model: TunedModel,
    continuations: tuple[str, Callable[[], list[PubSubMessage]]],
) -> None:
    topic, pull = continuations
    # An invocation may run 60 s, its last 30 kept for recording: a 25 s call may start only in
    # the first 5 s. One call every 5 s: each invocation gets its first example's two calls (it
    # always makes progress), then the next call would risk the timeout and is not started.
    settings = Settings(
        job_events_topic=topic,
        function_timeout_s=60,
        evaluation_request_timeout_s=25,
        evaluation_rpm=12,
        evaluation_concurrency=1,
        evaluation_chunk_size=4,
        evaluation_max_output_tokens=8,
    )
    runtime = Runtime(settings)
    job = _write_job(runtime, tuned_model, status="JOB_STATE_SUCCEEDED", test_examples=2)

    started = time.monotonic()
    first = handle_job_message(_terminal_event(job), runtime)
    took = time.monotonic() - started

    assert first == {"job_id": job.job_id, "status": "RUNNING", "cursor": 1, "total": 2}
    assert took < settings.function_timeout_s - 30
    assert _evaluation(runtime, job.job_id)["chunks"] == ["0000000-0000001"]  # what it finished
    [message] = wait_for(pull, timeout=30, what="the continuation")
    continuation = parse_message(message, JobEventV1, EvaluationContinuationV1)
    second = handle_job_message(continuation, runtime)
    assert second is not None
    assert second["status"] == "DONE"  # the last example fitted, and so did the report
    evaluation = _evaluation(runtime, job.job_id)
    assert evaluation["cursor"] == 2
    assert sorted(evaluation["chunks"]) == ["0000000-0000001", "0000001-0000002"]


@pytest.mark.slow(60)
def test_a_completion_worker_killed_mid_evaluation_still_ends_it_with_one_notice(
    runtime: Runtime, stack: dict[str, str], tuned_model: TunedModel
) -> None:
    from tests.integration.test_killed_workers import RECOVERY_S, worker_pids

    # 300 calls, two chunks: at the stack's 600 calls a minute, half a minute of work, long enough
    # to kill it mid-way through the first chunk.
    examples = 150
    job = _write_job(runtime, tuned_model, status="JOB_STATE_SUCCEEDED", test_examples=examples)
    event = _terminal_event(job)
    runtime.publish(runtime.settings.job_events_topic, event.to_json(), **event.attributes())
    wait_for(
        lambda: _evaluation(runtime, job.job_id).get("status") == "RUNNING",
        what="the evaluation to start",
    )
    time.sleep(1.0)
    assert _evaluation(runtime, job.job_id)["cursor"] < examples, "evaluated too fast to kill mid-way"
    killed_at = time.monotonic()
    for pid in worker_pids(stack, "completion"):
        os.kill(pid, signal.SIGKILL)

    # The killed invocation's lease lapses without its heartbeat; another invocation takes it
    # over (the redelivery, or the reconciler's continuation) and resumes the work.
    wait_for(
        lambda: _evaluation(runtime, job.job_id).get("invocations", 0) >= 2,
        timeout=RECOVERY_S,
        what="another invocation to resume the evaluation",
    )
    resumed_in = time.monotonic() - killed_at
    wait_for(
        lambda: _evaluation(runtime, job.job_id).get("status") == "DONE",
        timeout=RECOVERY_S,
        what="the evaluation to end after its worker was killed",
    )
    recovered_in = time.monotonic() - killed_at
    print(f"resumed {resumed_in:.1f} s and done {recovered_in:.1f} s after the kill")  # with pytest -s

    evaluation = _evaluation(runtime, job.job_id)
    assert evaluation["cursor"] == evaluation["total"] == examples
    assert evaluation["invocations"] >= 2  # the killed one, and the one that took over its lease
    _check_report(_report_objects(runtime, job.job_id), job, examples)
    assert resumed_in < RECOVERY_S, f"resumed in {resumed_in:.0f} s"
    wait_for(lambda: _files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job.job_id), what="a Slack post")
    wait_for(lambda: _files_naming(stack["SFTPIPE_MAIL_DIR"], "*.eml", job.job_id), what="a mail")
    time.sleep(5)
    assert len(_files_naming(stack["SFTPIPE_SLACK_DIR"], "*.json", job.job_id)) == 1
    assert len(_files_naming(stack["SFTPIPE_MAIL_DIR"], "*.eml", job.job_id)) == 1

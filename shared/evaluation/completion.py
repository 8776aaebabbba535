"""Entry point of the completion function: a job's terminal event -> evaluation, report, notifications.

Messages (both on the ``job-events`` topic, see :func:`handle_job_message`):
- ``job-event/v1``: non-terminal states are ignored. SUCCEEDED (or PARTIALLY_SUCCEEDED with an
  endpoint) starts the evaluation; FAILED, CANCELLED and EXPIRED skip it and notify the reason
  (once per job, state and channel: ``completion-<job_id>-<state>`` in ``shared.idempotency``).
- ``evaluation-continuation/v1``: resume an evaluation that an earlier invocation checkpointed.

The evaluation spans as many invocations as it needs. ``evaluations/{job_id}`` is the source of
truth:
- ``cursor``: examples ``[0, cursor)`` are done; their answers are in the chunk objects named in
  ``chunks`` (``reports/<job_id>/chunks/<start>-<end>.jsonl``). A chunk object is written
  *before* the cursor moves, and the cursor moves in a transaction only from the chunk's own
  start, by the invocation holding the lease: a duplicate can never count a chunk twice.
- ``lease_owner`` / ``lease_expires``: one invocation works on a job at a time; a duplicate that
  finds a live lease raises AlreadyInProgressError (redelivered later); an expired lease (its
  holder was killed) is taken over. The lease is renewed at every chunk.
- ``continuation_cursor``: the cursor of the newest published continuation. A message whose cursor
  is behind it is a stale duplicate and is dropped; the newest one (or a redelivery of it, when
  its invocation died before publishing the next) resumes from the stored cursor.
An invocation stops starting chunks when the next one would end past
``SFTPIPE_EVALUATION_TIME_BUDGET_S`` (it always does at least one, so every invocation makes
progress), releases the lease and publishes a continuation. The invocation that completes the
last chunk merges the chunks into ``predictions.jsonl``, scores both models, writes
``summary.json`` and ``report.html``, then notifies each channel that has not been notified yet
(``notifications_sent``, recorded after each success).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.budgets import EVALUATION_RECORD_MARGIN_S, JUDGE_MIN_TIME_S, heartbeat_interval_s
from shared.config import Settings
from shared.errors import PermanentError
from shared.evaluation.baseline import gate_met_reason, handle_baseline, reusable_answers
from shared.evaluation.checkpoints import select_checkpoint
from shared.evaluation.chunks import evaluation_stage, publish_continuation, run_chunks
from shared.evaluation.finalize import finalize
from shared.evaluation.inputs import load_job, load_test_examples, reports_bucket
from shared.evaluation.judge import judge_wanted
from shared.evaluation.notices import notify_evaluated, notify_not_evaluated, notify_stalled
from shared.evaluation.record import (
    DONE,
    EVALUATION_FAILED,
    FAILED,
    PARTIALLY_SUCCEEDED,
    RUNNING,
    SKIPPED,
    LeaseLostError,
    acquire,
    evaluation_ref,
    release,
    renew_lease,
)
from shared.evaluation.report import EvaluationSummary
from shared.evaluation.runner import GenerationOptions
from shared.leases import Heartbeat
from shared.logging import bind, get_logger
from shared.messages import BaselineContinuationV1, EvaluationContinuationV1, JobEventV1
from shared.runtime import Runtime
from shared.state.jobs import BASELINE, BASELINE_MET, SUCCEEDED, TERMINAL, JobRecord

if TYPE_CHECKING:
    pass


log = get_logger("sftpipe.completion")


def handle_job_message(
    message: JobEventV1 | EvaluationContinuationV1 | BaselineContinuationV1,
    runtime: Runtime,
    *,
    started: float | None = None,
) -> dict[str, Any] | None:
    """Handle one job-events message; returns what happened (for the log), None when ignored.

    ``started`` is the invocation's ``time.monotonic()`` start, from which the time budget runs.
    """
    started = time.monotonic() if started is None else started
    bind(job_id=message.job_id, dataset_id=message.dataset_id)
    if isinstance(message, EvaluationContinuationV1):
        job = load_job(runtime, message.job_id)
        return _evaluate(job, runtime, started=started, message_cursor=message.cursor)
    if isinstance(message, BaselineContinuationV1):
        job = load_job(runtime, message.job_id)
        return handle_baseline(job, runtime, started=started, message_cursor=message.cursor)
    if message.state == BASELINE and message.kind == "transition":
        return handle_baseline(load_job(runtime, message.job_id), runtime, started=started, message_cursor=0)
    if message.kind == "stalled":
        return notify_stalled(load_job(runtime, message.job_id), message, runtime)
    if not message.terminal and message.state not in TERMINAL:
        log.info("non-terminal job event ignored", extra={"state": message.state})
        return None
    job = load_job(runtime, message.job_id)
    endpoint = job.tuned_endpoint or message.tuned_endpoint
    if message.state in (SUCCEEDED, PARTIALLY_SUCCEEDED) and endpoint:
        if job.tuned_endpoint is None:
            job = job.model_copy(update={"tuned_endpoint": endpoint, "tuned_model": message.tuned_model})
        if job.request.get("test_uri"):
            return _evaluate(job, runtime, started=started, message_cursor=0)
        return _skip(
            job, message, runtime, "the dataset has no held-out test split, so nothing was evaluated"
        )
    if message.state in (SUCCEEDED, PARTIALLY_SUCCEEDED):
        return _skip(job, message, runtime, "the tuning job reported no tuned endpoint to evaluate")
    if message.state == BASELINE_MET and job.baseline:
        return _skip(job, message, runtime, gate_met_reason(job.baseline))
    reason = message.error or job.error or "the tuning service gave no reason"
    return _skip(job, message, runtime, reason)


def _skip(job: JobRecord, event: JobEventV1, runtime: Runtime, reason: str) -> dict[str, Any]:
    """Notify why the job is not evaluated: once per job and state, however often the event comes."""
    return notify_not_evaluated(job, runtime, state=event.state, status=SKIPPED, reason=reason)


def _evaluate(
    job: JobRecord, runtime: Runtime, *, started: float, message_cursor: int
) -> dict[str, Any] | None:
    ref = evaluation_ref(runtime, job.job_id)
    recorded = ref.get()
    failure = recorded.to_dict() if recorded.exists else None
    if failure and failure.get("status") == FAILED and failure.get("state") == EVALUATION_FAILED:
        # The failure is recorded before it is notified: a redelivery after a channel failed
        # finishes the notice (each channel at most once) instead of finding FAILED and dropping it.
        return notify_not_evaluated(
            job, runtime, state=EVALUATION_FAILED, status=FAILED, reason=failure.get("reason", "")
        )
    owner = uuid.uuid4().hex
    try:
        return _evaluate_with_lease(job, runtime, ref, owner, started=started, message_cursor=message_cursor)
    except PermanentError as exc:
        if exc.code == "notify_failed":  # the evaluation is done; only a channel refused it
            raise
        # Retrying cannot help (a test split that is gone or unreadable): say so once, then the
        # adapter acknowledges the event.
        log.error("evaluation failed: %s", exc.message, extra={"error_code": exc.code})
        notify_not_evaluated(
            job,
            runtime,
            state=EVALUATION_FAILED,
            status=FAILED,
            reason=f"the evaluation failed: {exc.message}",
        )
        raise


def _evaluate_with_lease(
    job: JobRecord, runtime: Runtime, ref: Any, owner: str, *, started: float, message_cursor: int
) -> dict[str, Any] | None:
    settings = runtime.settings
    doc = acquire(ref, runtime, job, owner, message_cursor)
    if doc is None:
        return None
    heartbeat = Heartbeat(
        lambda: renew_lease(ref, runtime, owner),
        max_hold_s=settings.function_timeout_s,
        interval_s=heartbeat_interval_s(settings.idempotency_lease_s),
        what=f"evaluation lease of {job.job_id}",
    )
    try:
        with heartbeat:
            return _evaluate_held(job, runtime, ref, owner, doc, started=started)
    except LeaseLostError:
        log.warning("evaluation lease lost to another invocation; stopping")
        return None
    except BaseException:
        release(ref, runtime, owner)
        raise


def finalize_in_new_invocation(settings: Settings, elapsed_s: float) -> bool:
    """Whether an invocation that has run ``elapsed_s`` and evaluated chunks leaves finalizing to a
    continuation: past its time budget, or with less than JUDGE_MIN_TIME_S left for the judge."""
    usable_s = settings.function_timeout_s - EVALUATION_RECORD_MARGIN_S
    judge_left_s = usable_s - elapsed_s
    # A new invocation only pays when it would give the judge more time than this one has left:
    # with a short function timeout no invocation ever has JUDGE_MIN_TIME_S, and deferring would
    # only add an invocation; half of what a fresh one has is the bar there.
    needed_s = min(JUDGE_MIN_TIME_S, usable_s / 2)
    return elapsed_s > settings.evaluation_time_budget_s or (
        judge_wanted(settings) and judge_left_s < needed_s
    )


def _evaluate_held(
    job: JobRecord, runtime: Runtime, ref: Any, owner: str, doc: dict[str, Any], *, started: float
) -> dict[str, Any] | None:
    """The evaluation's work while this invocation holds its lease."""
    settings = runtime.settings
    if doc["status"] == RUNNING:
        if doc["cursor"] == 0 and "checkpoint_selection" not in doc:
            selected = select_checkpoint(ref, runtime, job, doc, owner, started=started)
            if selected is None:  # out of time between checkpoints: the next invocation goes on
                release(ref, runtime, owner)
                publish_continuation(runtime, job, ref, 0)
                return {"job_id": job.job_id, "status": RUNNING, "cursor": 0, "total": doc["total"]}
            doc = selected
        examples = load_test_examples(runtime, doc["test_uri"], doc["test_generation"])
        if len(examples) != doc["total"]:
            raise PermanentError(
                f"the test file has {len(examples)} examples, the evaluation started with {doc['total']}",
                code="test_split_changed",
            )
        options = GenerationOptions.from_settings(settings, job.base_model, examples)
        reused, why_not = reusable_answers(runtime, job, doc, options)
        reuse = {"base_reused": reused is not None, "base_reuse_note": why_not}
        if {key: doc.get(key) for key in reuse} != reuse:  # read by finalize's summary
            ref.update(reuse)
            doc = {**doc, **reuse}
        cursor, chunks_done = run_chunks(
            ref,
            runtime,
            job,
            examples=examples,
            doc=doc,
            owner=owner,
            started=started,
            stage=evaluation_stage(job, reused, doc.get("tuned_endpoint")),
        )
        # Finalizing (merge, metrics, report, notify) gets an invocation of its own when this
        # one has used its budget; one that evaluated nothing always finalizes (no ping-pong).
        out_of_time = finalize_in_new_invocation(settings, time.monotonic() - started)
        if cursor < doc["total"] or (chunks_done and out_of_time):
            release(ref, runtime, owner)
            publish_continuation(runtime, job, ref, cursor)
            return {"job_id": job.job_id, "status": RUNNING, "cursor": cursor, "total": doc["total"]}
        doc = finalize(
            ref,
            runtime,
            job,
            examples,
            owner,
            deadline=started + settings.function_timeout_s - EVALUATION_RECORD_MARGIN_S,
        )
    summary = EvaluationSummary.model_validate_json(
        reports_bucket(runtime).blob(doc["summary_object"]).download_as_bytes()
    )
    notify_evaluated(ref, runtime, job, summary, doc["report_uri"])
    ref.update({"status": DONE, "finished": datetime.now(UTC), "lease_owner": None, "lease_expires": None})
    log.info("evaluation done and notified", extra={"verdict": summary.verdict})
    return {
        "job_id": job.job_id,
        "status": DONE,
        "verdict": summary.verdict,
        "report_uri": doc["report_uri"],
    }

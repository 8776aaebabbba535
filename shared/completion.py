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
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from google.api_core import exceptions as gexc

from shared.budgets import EVALUATION_RECORD_MARGIN_S
from shared.errors import AlreadyInProgressError, PermanentError
from shared.evaluation.losses import fetch_loss_curves
from shared.evaluation.metrics import TaskChoice, choice_from_request, compute_metrics
from shared.evaluation.report import (
    CostEstimate,
    EvaluationSummary,
    ExampleComparison,
    build_summary,
    estimate_training_cost,
    render_report_html,
)
from shared.evaluation.runner import (
    GenerationOptions,
    Prediction,
    TestExample,
    chunk_name,
    chunk_object_name,
    chunk_ranges_cover,
    content_text,
    next_cursor,
    parse_chunk_name,
    parse_test_examples,
    plan_chunk,
    run_predictions,
    truncation_counts,
)
from shared.idempotency import IdempotencyStore
from shared.leases import Heartbeat
from shared.logging import bind, get_logger
from shared.messages import EvaluationContinuationV1, JobEventV1, NotifyTargets
from shared.runtime import Runtime
from shared.state.jobs import SUCCEEDED, TERMINAL, JobRecord

if TYPE_CHECKING:
    from google.cloud import firestore


log = get_logger("sftpipe.completion")

RUNNING = "RUNNING"
REPORTED = "REPORTED"
DONE = "DONE"
SKIPPED = "SKIPPED"
FAILED = "FAILED"
#: The state named in the notification when the evaluation itself fails for good.
EVALUATION_FAILED = "EVALUATION_FAILED"
PARTIALLY_SUCCEEDED = "JOB_STATE_PARTIALLY_SUCCEEDED"
#: Examples shown side by side in report.html (predictions.jsonl has all of them).
REPORT_EXAMPLES = 12


class LeaseLostError(Exception):
    """Another invocation took this evaluation over (this one outlived its lease): stop quietly."""


def handle_job_message(
    message: JobEventV1 | EvaluationContinuationV1, runtime: Runtime, *, started: float | None = None
) -> dict[str, Any] | None:
    """Handle one job-events message; returns what happened (for the log), None when ignored.

    ``started`` is the invocation's ``time.monotonic()`` start, from which the time budget runs.
    """
    started = time.monotonic() if started is None else started
    bind(job_id=message.job_id, dataset_id=message.dataset_id)
    if isinstance(message, EvaluationContinuationV1):
        job = _load_job(runtime, message.job_id)
        return _evaluate(job, runtime, started=started, message_cursor=message.cursor)
    if message.kind == "stalled":
        return _notify_stalled(_load_job(runtime, message.job_id), message, runtime)
    if not message.terminal and message.state not in TERMINAL:
        log.info("non-terminal job event ignored", extra={"state": message.state})
        return None
    job = _load_job(runtime, message.job_id)
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
    reason = message.error or job.error or "the tuning service gave no reason"
    return _skip(job, message, runtime, reason)


# --- Jobs that are not evaluated ---------------------------------------------------------------


def _skip(job: JobRecord, event: JobEventV1, runtime: Runtime, reason: str) -> dict[str, Any]:
    """Notify why the job is not evaluated: once per job and state, however often the event comes."""
    return _notify_not_evaluated(job, runtime, state=event.state, status=SKIPPED, reason=reason)


def _notify_not_evaluated(
    job: JobRecord, runtime: Runtime, *, state: str, status: str, reason: str
) -> dict[str, Any]:
    settings = runtime.settings
    short_state = state.removeprefix("JOB_STATE_").lower()
    store = IdempotencyStore.from_settings(runtime.firestore, settings)

    def notify_ended() -> dict[str, Any]:
        from shared.notify.content import JobEndedOutcome
        from shared.notify.notifier import notify_once

        ref = _evaluation_ref(runtime, job.job_id)
        ref.set(
            {
                "job_id": job.job_id,
                "dataset_id": job.dataset_id,
                "status": status,
                "state": state,
                "reason": reason,
                "lease_owner": None,
                "lease_expires": None,
                "updated": datetime.now(UTC),
            },
            merge=True,
        )
        outcome = JobEndedOutcome(
            job_id=job.job_id,
            dataset_id=job.dataset_id,
            base_model=job.base_model,
            state=state,
            reason=reason,
            duration_s=_tuning_duration(job),
            tuning_job_name=job.tuning_job_name,
            link=_console_link(runtime, job),
        )
        notify_once(ref, outcome, settings, _targets(job))
        log.info("job not evaluated, notified", extra={"state": state, "reason": reason})
        return {"job_id": job.job_id, "status": status, "state": state}

    return store.run_once(f"completion-{job.job_id}-{short_state}", notify_ended)


def _notify_stalled(job: JobRecord, event: JobEventV1, runtime: Runtime) -> dict[str, Any] | None:
    """Tell people a job stopped making progress: once per stall, whatever the deliveries.

    Recorded on ``jobs/{job_id}`` (``notifications_sent``, keyed by the alert's time), not on the
    evaluation document, which must not exist before the job ends. The claim makes two copies
    delivered at once send one notice.
    """
    if job.status in TERMINAL or (job.last_progress_at and job.last_progress_at > event.occurred_at):
        # Delivered late: the job has ended (its own notice says how) or moved again since.
        log.info("stale stall alert ignored", extra={"state": job.status})
        return None
    settings = runtime.settings
    store = IdempotencyStore.from_settings(runtime.firestore, settings)

    def notify_stalled() -> dict[str, Any]:
        from shared.notify.content import JobStalledOutcome
        from shared.notify.notifier import notify_once

        outcome = JobStalledOutcome(
            job_id=job.job_id,
            dataset_id=job.dataset_id,
            base_model=job.base_model,
            state=event.state,
            occurred_at=event.occurred_at,
            last_progress_at=job.last_progress_at,
            tuning_job_name=job.tuning_job_name or event.tuning_job_name,
            link=_console_link(runtime, job),
        )
        ref = runtime.firestore.collection(settings.jobs_collection).document(job.job_id)
        notify_once(ref, outcome, settings, _targets(job))
        log.info("stalled job notified", extra={"state": event.state, "event_key": outcome.event_key})
        return {"job_id": job.job_id, "status": "STALLED", "state": event.state}

    return store.run_once(
        f"completion-{job.job_id}-stalled-{int(event.occurred_at.timestamp())}", notify_stalled
    )


# --- The evaluation ----------------------------------------------------------------------------


def _evaluate(
    job: JobRecord, runtime: Runtime, *, started: float, message_cursor: int
) -> dict[str, Any] | None:
    ref = _evaluation_ref(runtime, job.job_id)
    recorded = ref.get()
    failure = recorded.to_dict() if recorded.exists else None
    if failure and failure.get("status") == FAILED and failure.get("state") == EVALUATION_FAILED:
        # The failure is recorded before it is notified: a redelivery after a channel failed
        # finishes the notice (each channel at most once) instead of finding FAILED and dropping it.
        return _notify_not_evaluated(
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
        _notify_not_evaluated(
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
    doc = _acquire(ref, runtime, job, owner, message_cursor)
    if doc is None:
        return None
    heartbeat = Heartbeat(
        lambda: _renew_lease(ref, runtime, owner),
        max_hold_s=settings.function_timeout_s,
        what=f"evaluation lease of {job.job_id}",
    )
    try:
        with heartbeat:
            return _evaluate_held(job, runtime, ref, owner, doc, started=started)
    except LeaseLostError:
        log.warning("evaluation lease lost to another invocation; stopping")
        return None
    except BaseException:
        _release(ref, runtime, owner)
        raise


def _evaluate_held(
    job: JobRecord, runtime: Runtime, ref: Any, owner: str, doc: dict[str, Any], *, started: float
) -> dict[str, Any] | None:
    """The evaluation's work while this invocation holds its lease."""
    settings = runtime.settings
    if doc["status"] == RUNNING:
        examples = _load_test_examples(runtime, doc["test_uri"], doc["test_generation"])
        if len(examples) != doc["total"]:
            raise PermanentError(
                f"the test file has {len(examples)} examples, the evaluation started with {doc['total']}",
                code="test_split_changed",
            )
        cursor, chunks_done = _run_chunks(
            ref, runtime, job, examples=examples, doc=doc, owner=owner, started=started
        )
        # Finalizing (merge, metrics, report, notify) gets an invocation of its own when this
        # one has used its budget; one that evaluated nothing always finalizes (no ping-pong).
        out_of_time = time.monotonic() - started > settings.evaluation_time_budget_s
        if cursor < doc["total"] or (chunks_done and out_of_time):
            _release(ref, runtime, owner)
            _publish_continuation(runtime, job, ref, cursor)
            return {"job_id": job.job_id, "status": RUNNING, "cursor": cursor, "total": doc["total"]}
        doc = _finalize(ref, runtime, job, examples, owner)
    summary = EvaluationSummary.model_validate_json(
        _bucket(runtime).blob(doc["summary_object"]).download_as_bytes()
    )
    _notify_evaluated(ref, runtime, job, summary, doc["report_uri"])
    ref.update({"status": DONE, "finished": datetime.now(UTC), "lease_owner": None, "lease_expires": None})
    log.info("evaluation done and notified", extra={"verdict": summary.verdict})
    return {
        "job_id": job.job_id,
        "status": DONE,
        "verdict": summary.verdict,
        "report_uri": doc["report_uri"],
    }


def _renew_lease(ref: Any, runtime: Runtime, owner: str) -> bool:
    """The heartbeat: extend this invocation's evaluation lease; False once it is not ours."""
    from google.cloud import firestore

    @firestore.transactional
    def renew(transaction: firestore.Transaction) -> bool:
        snapshot = ref.get(transaction=transaction)
        if not snapshot.exists or snapshot.to_dict().get("lease_owner") != owner:
            return False
        lease = timedelta(seconds=runtime.settings.idempotency_lease_s)
        transaction.update(ref, {"lease_expires": datetime.now(UTC) + lease})
        return True

    return renew(runtime.firestore.transaction())


def _acquire(
    ref: Any, runtime: Runtime, job: JobRecord, owner: str, message_cursor: int
) -> dict[str, Any] | None:
    """Take the evaluation's lease (creating the record on first sight); None: nothing to do."""
    from google.cloud import firestore

    lease = timedelta(seconds=runtime.settings.idempotency_lease_s)
    snapshot = ref.get()
    if not snapshot.exists:
        test_uri = job.request["test_uri"]
        generation, total = _test_file_facts(runtime, test_uri)
        now = datetime.now(UTC)
        record = {
            "job_id": job.job_id,
            "dataset_id": job.dataset_id,
            "status": RUNNING,
            "base_model": job.base_model,
            "tuned_endpoint": job.tuned_endpoint,
            "tuned_model": job.tuned_model,
            "test_uri": test_uri,
            "test_generation": generation,
            "total": total,
            "cursor": 0,
            "chunks": [],
            "continuation_cursor": 0,
            "invocations": 1,
            "base_failures": 0,
            "tuned_failures": 0,
            "base_truncated": 0,
            "tuned_truncated": 0,
            "lease_owner": owner,
            "lease_expires": now + lease,
            "started": now,
            "updated": now,
        }
        try:
            ref.create(record)
            log.info("evaluation started", extra={"test_examples": total, "test_uri": test_uri})
            return record
        except gexc.AlreadyExists:
            pass  # a concurrent delivery created it first: fall through and compete for the lease

    @firestore.transactional
    def claim(transaction: firestore.Transaction) -> dict[str, Any] | None:
        current = ref.get(transaction=transaction).to_dict()
        if current["status"] not in (RUNNING, REPORTED):
            log.info("duplicate message: the evaluation is %s", current["status"].lower())
            return None
        if message_cursor < current.get("continuation_cursor", 0):
            log.info(
                "stale message: a newer continuation carries this evaluation",
                extra={
                    "message_cursor": message_cursor,
                    "continuation_cursor": current["continuation_cursor"],
                },
            )
            return None
        now = datetime.now(UTC)
        holder, expires = current.get("lease_owner"), current.get("lease_expires")
        if holder and holder != owner and expires and expires > now:
            raise AlreadyInProgressError(
                f"evaluation of {job.job_id} is held by another invocation until {expires.isoformat()}"
            )
        if holder and expires and expires <= now:
            log.warning("took over an expired evaluation lease")
        transaction.update(
            ref,
            {
                "lease_owner": owner,
                "lease_expires": now + lease,
                "invocations": firestore.Increment(1),
                "updated": now,
            },
        )
        return current

    return claim(runtime.firestore.transaction())


def _run_chunks(
    ref: Any,
    runtime: Runtime,
    job: JobRecord,
    *,
    examples: list[TestExample],
    doc: dict[str, Any],
    owner: str,
    started: float,
) -> tuple[int, int]:
    """Evaluate chunks from the stored cursor until done or out of time: (new cursor, chunks done)."""
    settings = runtime.settings
    cursor = doc["cursor"]
    chunks_done = 0
    slowest_chunk_s = 0.0
    while (chunk := plan_chunk(cursor, len(examples), settings.evaluation_chunk_size)) is not None:
        elapsed = time.monotonic() - started
        if slowest_chunk_s and elapsed + slowest_chunk_s > settings.evaluation_time_budget_s:
            log.info(
                "time budget reached, continuing in a new invocation",
                extra={"cursor": cursor, "elapsed_s": round(elapsed, 1)},
            )
            break
        start, end = chunk
        chunk_started = time.monotonic()
        predictions = run_predictions(
            settings,
            examples[start:end],
            base_model=job.base_model,
            tuned_model=job.tuned_endpoint or "",
            options=GenerationOptions.from_settings(settings, job.base_model, examples),
            deadline=started + settings.function_timeout_s - EVALUATION_RECORD_MARGIN_S,
        )
        cut_short = len(predictions) < end - start
        end = start + len(predictions)  # the calls that could not end in time are the next chunk's
        _bucket(runtime).blob(
            chunk_object_name(settings.reports_prefix, job.job_id, start, end)
        ).upload_from_string(b"".join(p.to_jsonl() for p in predictions), content_type="application/x-ndjson")
        cursor = _advance(
            ref,
            runtime,
            owner,
            start,
            end,
            base_failures=sum(p.base_output is None for p in predictions),
            tuned_failures=sum(p.tuned_output is None for p in predictions),
            truncated=truncation_counts(predictions),
        )
        chunks_done += 1
        chunk_s = time.monotonic() - chunk_started
        slowest_chunk_s = max(slowest_chunk_s, chunk_s)
        log.info("chunk evaluated", extra={"chunk": chunk_name(start, end), "seconds": round(chunk_s, 2)})
        if cut_short:
            log.info(
                "chunk cut short: no call starts that could outlive the invocation; continuing",
                extra={"cursor": cursor, "elapsed_s": round(time.monotonic() - started, 1)},
            )
            break
    return cursor, chunks_done


def _advance(
    ref: Any,
    runtime: Runtime,
    owner: str,
    start: int,
    end: int,
    *,
    base_failures: int,
    tuned_failures: int,
    truncated: tuple[int, int] = (0, 0),
) -> int:
    """Commit chunk [start, end): the cursor moves only from ``start``, and only for the lease holder."""
    from google.cloud import firestore

    @firestore.transactional
    def commit(transaction: firestore.Transaction) -> int:
        current = ref.get(transaction=transaction).to_dict()
        if current.get("lease_owner") != owner:
            raise LeaseLostError(f"lease now held by {current.get('lease_owner')}")
        try:
            cursor = next_cursor(current["cursor"], start, start, end)
        except ValueError as exc:
            raise LeaseLostError(str(exc)) from exc
        now = datetime.now(UTC)
        transaction.update(
            ref,
            {
                "cursor": cursor,
                "chunks": firestore.ArrayUnion([chunk_name(start, end)]),
                "base_failures": firestore.Increment(base_failures),
                "tuned_failures": firestore.Increment(tuned_failures),
                "base_truncated": firestore.Increment(truncated[0]),
                "tuned_truncated": firestore.Increment(truncated[1]),
                "lease_expires": now + timedelta(seconds=runtime.settings.idempotency_lease_s),
                "updated": now,
            },
        )
        return cursor

    return commit(runtime.firestore.transaction())


def _release(ref: Any, runtime: Runtime, owner: str) -> None:
    """Give the lease back if this invocation still holds it (best effort: it expires anyway)."""
    try:
        snapshot = ref.get()
        if snapshot.exists and snapshot.to_dict().get("lease_owner") == owner:
            ref.update(
                {"lease_owner": None, "lease_expires": None},
                option=runtime.firestore.write_option(last_update_time=snapshot.update_time),
            )
    except (gexc.FailedPrecondition, gexc.NotFound, gexc.GoogleAPICallError):
        log.warning("could not release the evaluation lease; it will expire", exc_info=True)


def _publish_continuation(runtime: Runtime, job: JobRecord, ref: Any, cursor: int) -> None:
    from google.cloud import firestore

    message = EvaluationContinuationV1(job_id=job.job_id, dataset_id=job.dataset_id, cursor=cursor)
    message_id = runtime.publish(runtime.settings.job_events_topic, message.to_json(), **message.attributes())
    # Recorded after the publish: if this invocation dies in between, the message that started it
    # is not stale and its redelivery carries the evaluation on.
    ref.update({"continuation_cursor": firestore.Maximum(cursor)})
    log.info("evaluation continues in a new invocation", extra={"cursor": cursor, "message_id": message_id})


def _finalize(
    ref: Any, runtime: Runtime, job: JobRecord, examples: list[TestExample], owner: str
) -> dict[str, Any]:
    """Merge the chunks, score both models, write predictions.jsonl, summary.json and report.html."""
    settings = runtime.settings
    doc = ref.get().to_dict()
    if doc.get("lease_owner") != owner:
        raise LeaseLostError(job.job_id)
    predictions = _merged_predictions(runtime, job.job_id, doc["chunks"], doc["total"])
    references = [p.reference for p in predictions]
    task_choice = _task_choice(job, references, [_task_prompt(e) for e in examples])
    # Identical prompts (system instruction and turns) share their reference answers (QA).
    prompts = [orjson.dumps([e.system_instruction, e.contents]) for e in examples]
    base, tuned = (
        compute_metrics(task_choice.task, references, answers, labels=task_choice.labels, prompts=prompts)
        for answers in ([p.base_output for p in predictions], [p.tuned_output for p in predictions])
    )
    base_truncated, tuned_truncated = truncation_counts(predictions)
    curves, curves_note = fetch_loss_curves(settings, job.tuning_job_name)
    statistics, cost, cost_note = _dataset_facts(runtime, job)
    summary = build_summary(
        job_id=job.job_id,
        dataset_id=job.dataset_id,
        base_model=job.base_model,
        task_choice=task_choice,
        base=base,
        tuned=tuned,
        tuned_model=job.tuned_model,
        tuned_endpoint=job.tuned_endpoint,
        tuning_duration_s=_tuning_duration(job),
        evaluation_duration_s=(datetime.now(UTC) - doc["started"]).total_seconds(),
        cost=cost,
        dataset_statistics=statistics,
        loss_curves=curves,
        base_truncated=base_truncated,
        tuned_truncated=tuned_truncated,
    )
    notes = [n for n in (curves_note, cost_note) if n]
    if notes:
        summary = summary.model_copy(update={"notes": [*summary.notes, *notes]})

    prefix = f"{settings.reports_prefix}{job.job_id}/"
    bucket = _bucket(runtime)
    bucket.blob(f"{prefix}predictions.jsonl").upload_from_string(
        b"".join(p.to_jsonl() for p in predictions), content_type="application/x-ndjson"
    )
    bucket.blob(f"{prefix}summary.json").upload_from_string(
        summary.to_json(), content_type="application/json"
    )
    bucket.blob(f"{prefix}report.html").upload_from_string(
        render_report_html(summary, _report_examples(predictions)), content_type="text/html; charset=utf-8"
    )
    primary = summary.primary
    fields = {
        "status": REPORTED,
        "task": summary.task.value,
        "task_decided_by": summary.task_decided_by,
        "task_reason": summary.task_reason,
        "verdict": summary.verdict,
        "primary_metric": primary.name,
        "base_score": primary.base,
        "tuned_score": primary.tuned,
        "summary_object": f"{prefix}summary.json",
        "report_uri": f"gs://{settings.bucket}/{prefix}report.html",
        "summary_uri": f"gs://{settings.bucket}/{prefix}summary.json",
        "predictions_uri": f"gs://{settings.bucket}/{prefix}predictions.jsonl",
        "reported": datetime.now(UTC),
        "updated": datetime.now(UTC),
    }
    ref.update(fields)
    try:
        runtime.firestore.collection(settings.jobs_collection).document(job.job_id).update(
            {"evaluation_status": REPORTED, "evaluation_report_uri": fields["report_uri"]}
        )
    except gexc.NotFound:
        log.warning("job document vanished before the evaluation was recorded on it")
    log.info(
        "evaluation reported",
        extra={"task": summary.task.value, "verdict": summary.verdict, "report_uri": fields["report_uri"]},
    )
    return {**doc, **fields}


def _merged_predictions(runtime: Runtime, job_id: str, chunks: list[str], total: int) -> list[Prediction]:
    ranges = [parse_chunk_name(name) for name in chunks]
    if not chunk_ranges_cover(ranges, total):
        raise PermanentError(
            f"evaluation chunks {sorted(chunks)} do not cover 0..{total} exactly", code="bad_chunks"
        )
    bucket = _bucket(runtime)
    predictions: list[Prediction] = []
    for start, end in sorted(ranges):
        data = bucket.blob(
            chunk_object_name(runtime.settings.reports_prefix, job_id, start, end)
        ).download_as_bytes()
        rows = [Prediction.model_validate_json(line) for line in data.splitlines() if line.strip()]
        if [row.index for row in rows] != list(range(start, end)):
            raise PermanentError(
                f"chunk {chunk_name(start, end)} does not hold examples {start}..{end - 1}", code="bad_chunks"
            )
        predictions.extend(rows)
    return predictions


def _task_choice(job: JobRecord, references: list[str], prompts: list[str]) -> TaskChoice:
    """The request's task decision: ``task`` (the user's: explicit), else ``inferred_task`` (ingest's
    rule, with its evidence), else the same rule on the test split; labels from the request."""
    return choice_from_request(job.request, references, prompts)


def _task_prompt(example: TestExample) -> str:
    """The prompt as the task rule reads it at ingest: system instruction, then every turn but the last."""
    system = content_text(example.system_instruction) if example.system_instruction else ""
    return "\n\n".join(text for text in (system, example.prompt_text) if text)


def _report_examples(predictions: list[Prediction]) -> list[ExampleComparison]:
    """Examples where the two models disagree first: they show what tuning changed."""
    ordered = sorted(predictions, key=lambda p: (p.base_output == p.tuned_output, p.index))
    return [
        ExampleComparison(
            prompt=p.prompt, reference=p.reference, base_output=p.base_output, tuned_output=p.tuned_output
        )
        for p in ordered[:REPORT_EXAMPLES]
    ]


# --- Notifications -----------------------------------------------------------------------------


def _notify_evaluated(
    ref: Any, runtime: Runtime, job: JobRecord, summary: EvaluationSummary, report_uri: str
) -> None:
    from shared.notify.content import EvaluatedOutcome
    from shared.notify.notifier import notify_once

    notify_once(
        ref, EvaluatedOutcome(summary=summary, report_url=report_uri), runtime.settings, _targets(job)
    )


def _targets(job: JobRecord) -> NotifyTargets:
    try:
        return NotifyTargets.model_validate(job.request.get("notify") or {})
    except ValueError:
        log.warning("the request's notify targets are invalid; using the deployment's defaults")
        return NotifyTargets()


# --- Reading the job, the test split and the dataset -------------------------------------------


def _load_job(runtime: Runtime, job_id: str) -> JobRecord:
    snapshot = runtime.firestore.collection(runtime.settings.jobs_collection).document(job_id).get()
    if not snapshot.exists:
        raise PermanentError(
            f"job {job_id} has no document in {runtime.settings.jobs_collection}", code="job_not_found"
        )
    try:
        return JobRecord.model_validate(snapshot.to_dict())
    except ValueError as exc:
        raise PermanentError(
            f"job {job_id}'s document is not a JobRecord: {exc}", code="invalid_job"
        ) from exc


def _evaluation_ref(runtime: Runtime, job_id: str) -> firestore.DocumentReference:
    return runtime.firestore.collection(runtime.settings.evaluations_collection).document(job_id)


def _bucket(runtime: Runtime) -> Any:
    return runtime.storage.bucket(runtime.settings.bucket)


def _split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://") or "/" not in uri.removeprefix("gs://"):
        raise PermanentError(
            f"{uri!r} is not a gs:// object URI", code="invalid_uri", field="request.test_uri"
        )
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    return bucket, name


def _test_file_facts(runtime: Runtime, test_uri: str) -> tuple[int, int]:
    """(generation, example count) of the test split; the generation pins every later read."""
    bucket_name, name = _split_uri(test_uri)
    blob = runtime.storage.bucket(bucket_name).get_blob(name)
    if blob is None:
        raise PermanentError(f"test split {test_uri} does not exist", code="test_split_missing")
    examples = parse_test_examples(blob.download_as_bytes().splitlines())
    return int(blob.generation), len(examples)


def _load_test_examples(runtime: Runtime, test_uri: str, generation: int) -> list[TestExample]:
    bucket_name, name = _split_uri(test_uri)
    try:
        data = runtime.storage.bucket(bucket_name).blob(name, generation=generation).download_as_bytes()
    except gexc.NotFound as exc:
        raise PermanentError(
            f"test split {test_uri}#{generation} is gone", code="test_split_missing"
        ) from exc
    return parse_test_examples(data.splitlines())


def _dataset_facts(
    runtime: Runtime, job: JobRecord
) -> tuple[dict[str, str | int | float], CostEstimate | None, str | None]:
    """Dataset statistics and training cost from the dataset record and ingest's report.json."""
    settings = runtime.settings
    snapshot = runtime.firestore.collection(settings.datasets_collection).document(job.dataset_id).get()
    if not snapshot.exists:
        return {}, None, "No dataset record was found, so no statistics or cost are shown."
    dataset = snapshot.to_dict()
    split = dataset.get("split") or {}
    tokens = dataset.get("tokens") or {}
    statistics: dict[str, str | int | float] = {
        key: value
        for key, value in (
            ("examples", dataset.get("examples")),
            ("training examples", split.get("train")),
            ("validation examples", split.get("validation")),
            ("test examples", split.get("test")),
            ("duplicates removed", dataset.get("duplicates")),
            ("tokens (all splits)", tokens.get("total")),
            ("tokens per example, median", tokens.get("p50")),
            ("tokens per example, p95", tokens.get("p95")),
            ("token counting", tokens.get("method")),
        )
        if value is not None
    }
    report = _read_json(runtime, dataset.get("report_uri"))
    estimate = (report or {}).get("estimated_cost") or {}
    epochs = (job.request.get("hyperparameters") or {}).get("epochs") or estimate.get("epochs")
    if not estimate.get("billable_tokens") or not estimate.get("epochs") or not epochs:
        return statistics, None, "The training cost could not be estimated: ingest recorded no token count."
    cost = estimate_training_cost(
        training_tokens=int(estimate["billable_tokens"]) // int(estimate["epochs"]),
        epochs=int(epochs),
        base_model=job.base_model,
        prices_per_m_tokens=settings.training_price_per_m_tokens,
        tokens_counted="exact" if tokens.get("method") == "exact" else "estimated",
    )
    return statistics, cost, None


def _read_json(runtime: Runtime, uri: str | None) -> dict[str, Any] | None:
    if not uri:
        return None
    try:
        bucket_name, name = _split_uri(uri)
        return orjson.loads(runtime.storage.bucket(bucket_name).blob(name).download_as_bytes())
    except (PermanentError, gexc.NotFound, orjson.JSONDecodeError):
        return None


def _tuning_duration(job: JobRecord) -> float | None:
    begun = job.submitted_at or job.created
    if job.ended_at is None or begun is None:
        return None
    return (job.ended_at - begun).total_seconds()


def _console_link(runtime: Runtime, job: JobRecord) -> str | None:
    if runtime.settings.tuning_api_url or not job.tuning_job_name:
        return None
    job_number = job.tuning_job_name.rsplit("/", 1)[-1]
    settings = runtime.settings
    return (
        f"https://console.cloud.google.com/vertex-ai/generative/language/locations/{settings.location}"
        f"/tuning/tuningJob/{job_number}?project={settings.project}"
    )

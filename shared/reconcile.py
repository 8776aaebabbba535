"""The reconciler: on every scheduler tick, find what a crash, a timeout or a spent retry budget
stranded, and finish it or end it with the reason (architecture.md, "reconciler").

Each repair is logged with its ids and counted in the tick's result:
- ``datasets_reingested`` / ``datasets_rejected``: a dataset still VALIDATING whose ingest claim
  has lapsed (its worker died, and its event's deliveries are spent or waiting behind the lease)
  is ingested again here (:data:`MAX_REINGESTS_PER_TICK` a tick), at most
  :data:`MAX_INGEST_ATTEMPTS` times in all, then REJECTED as ``ingest_incomplete`` with a notice;
- ``requests_republished``: a READY dataset whose tuning request never became a job (the publish
  was lost, or the tuner's deliveries were spent) gets its stored request published again;
- ``requests_failed``: a request dead-lettered on the tuner's subscription for a dataset we know
  and with no job becomes a job recorded FAILED with the reason, so completion notifies it;
- ``evaluations_resumed``: an evaluation whose lease lapsed, or that no message carries on any
  more, gets a continuation;
- ``baselines_resumed``: the same for a pre-tuning baseline (``baselines/{job_id}``), and a job
  still BASELINE that no baseline record ever came of (its first event's deliveries were spent)
  gets that event published again;
- ``completions_resumed``: a job that ended but that completion never recorded (its terminal
  event's deliveries were spent before the evaluation record was written) gets its terminal
  event published again, at most :data:`MAX_REPUBLISHES` times;
- ``claims_expired``: SUBMITTING claims past their lease (the same tick's dispatch re-claims them
  and looks the job up before anything else);
- ``tuning_jobs_adopted`` / ``duplicates_cancelled`` / ``tuning_jobs_unknown``: running Vertex
  jobs that carry our job label and that Firestore does not record: adopted into a job that has
  no tuning job yet, cancelled when the job records another one, reported when no job exists.
Every check reads a bounded number of documents (:data:`SCAN_LIMIT`) so that a tick stays short.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from google.cloud.firestore_v1.base_query import FieldFilter
from pydantic import ValidationError

from shared.budgets import CLAIM_LEASE_S
from shared.events import GCS_NOTIFICATION_FINALIZE, StorageObject
from shared.logging import get_logger, log_context
from shared.messages import BaselineContinuationV1, EvaluationContinuationV1, JobEventV1, TuningRequestV1
from shared.runtime import Runtime
from shared.state.jobs import BASELINE, SUBMITTING
from shared.state.store import JobStore

if TYPE_CHECKING:
    from google import genai

log = get_logger("sftpipe.reconciler")

#: Ingest runs of one dataset in all (its own event's, then the reconciler's) before it is
#: REJECTED as ``ingest_incomplete``: a file that kills its worker every time must end.
MAX_INGEST_ATTEMPTS = 3
#: Datasets one tick ingests again: each can take as long as an ingest, inside the poller's own
#: timeout; the others wait for the next tick.
MAX_REINGESTS_PER_TICK = 1
#: Seconds a dataset stays READY without a job before its request is published again, and
#: between two such publishes.
REPUBLISH_AFTER_S = 120
#: Publishes of one dataset's request by the reconciler before it only reports it.
MAX_REPUBLISHES = 3
#: Seconds an evaluation may go without an update (and without a live lease) before it is
#: continued, and between two continuations the reconciler publishes.
EVALUATION_IDLE_S = 120
#: Documents (or dead letters, or tuning jobs) one check reads per tick.
SCAN_LIMIT = 100
INGEST_INCOMPLETE = "ingest_incomplete"
REQUEST_DEAD_LETTERED = "request_dead_lettered"

COUNTERS = (
    "datasets_reingested",
    "datasets_rejected",
    "requests_republished",
    "requests_failed",
    "evaluations_resumed",
    "baselines_resumed",
    "completions_resumed",
    "claims_expired",
    "tuning_jobs_adopted",
    "duplicates_cancelled",
    "tuning_jobs_unknown",
    "failed",
)


def reconcile(runtime: Runtime, client: genai.Client, *, now: datetime | None = None) -> dict[str, int]:
    """Run every check once; returns the repairs made (see the module docstring), and ``failed``:
    the checks that raised (logged; the next tick tries again)."""
    now = now or datetime.now(UTC)
    counts = dict.fromkeys(COUNTERS, 0)
    checks = (
        _stranded_datasets,
        _ready_without_job,
        _dead_lettered_requests,
        _idle_evaluations,
        _idle_baselines,
        _unstarted_baselines,
        _unfinished_completions,
        _expired_claims,
        _unrecorded_tuning_jobs,
    )
    for check in checks:
        try:
            check(runtime, client, now, counts)
        except Exception:  # one check's failure must not stop the others
            log.exception("reconciler check failed", extra={"check": check.__name__})
            counts["failed"] += 1
    repairs = {key: value for key, value in counts.items() if value}
    if repairs:
        log.warning("reconciler repaired stranded work", extra=repairs)
    return counts


# --- Datasets ----------------------------------------------------------------------------------


def _stranded_datasets(runtime: Runtime, client: genai.Client, now: datetime, counts: dict[str, int]) -> None:
    from shared.ingest import VALIDATING, ingest_upload

    settings = runtime.settings
    datasets = runtime.firestore.collection(settings.datasets_collection)
    query = datasets.where(filter=FieldFilter("status", "==", VALIDATING)).limit(SCAN_LIMIT)
    for snapshot in query.stream():
        if counts["datasets_reingested"] >= MAX_REINGESTS_PER_TICK:
            break
        dataset = snapshot.to_dict()
        dataset_id = snapshot.id
        with log_context(dataset_id=dataset_id):
            if _claim_is_live(runtime, f"ingest-{dataset_id}", now):
                continue
            updated = dataset.get("updated") or dataset.get("created")
            if updated and now - updated < timedelta(seconds=CLAIM_LEASE_S):
                continue  # its event's claim may not even be written yet
            attempts = int(dataset.get("ingest_attempts") or 1)
            obj = _source_object(dataset)
            if attempts >= MAX_INGEST_ATTEMPTS or obj is None:
                _reject_incomplete(runtime, snapshot.reference, dataset, attempts)
                counts["datasets_rejected"] += 1
                continue
            snapshot.reference.update({"ingest_attempts": attempts + 1, "reingested_at": now})
            log.warning("dataset stranded in VALIDATING: ingesting it again", extra={"attempt": attempts + 1})
            ingest_upload(obj, GCS_NOTIFICATION_FINALIZE, runtime)
            counts["datasets_reingested"] += 1


def _source_object(dataset: dict[str, Any]) -> StorageObject | None:
    uri = str(dataset.get("source_uri") or "")
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    if not uri.startswith("gs://") or not name:
        return None
    try:
        return StorageObject(
            bucket=bucket,
            name=name,
            generation=int(dataset.get("source_generation") or 0),
            size=int(dataset.get("source_size") or 0),
            metadata=dataset.get("source_metadata") or {},
        )
    except (ValidationError, ValueError):
        return None


def _reject_incomplete(runtime: Runtime, ref: Any, dataset: dict[str, Any], attempts: int) -> None:
    from shared.ingest import REJECTED
    from shared.notify.content import DatasetRejectedOutcome
    from shared.notify.notifier import notify_once

    reason = (
        f"{INGEST_INCOMPLETE}: ingest did not finish after {attempts} attempt(s) "
        "(each one was stopped before it could record a result); nothing was written"
    )
    log.error("dataset stranded in VALIDATING: rejected", extra={"reason": reason})
    ref.update(
        {
            "status": REJECTED,
            "error_counts": {INGEST_INCOMPLETE: 1},
            "rejection_reason": reason,
            "updated": datetime.now(UTC),
        }
    )
    outcome = DatasetRejectedOutcome(
        dataset_id=dataset.get("dataset_id") or ref.id,
        source_uri=str(dataset.get("source_uri") or ""),
        error_count=1,
        top_errors=[f"file: {reason}"],
        report_url=str(dataset.get("report_uri") or dataset.get("source_uri") or ""),
    )
    notify_once(ref, outcome, runtime.settings)


def _ready_without_job(runtime: Runtime, client: genai.Client, now: datetime, counts: dict[str, int]) -> None:
    from shared.ingest import READY

    settings = runtime.settings
    datasets = runtime.firestore.collection(settings.datasets_collection)
    jobs = runtime.firestore.collection(settings.jobs_collection)
    query = (
        datasets.where(filter=FieldFilter("status", "==", READY))
        .where(filter=FieldFilter("awaiting_job", "==", True))
        .limit(SCAN_LIMIT)
    )
    for snapshot in query.stream():
        dataset = snapshot.to_dict()
        with log_context(dataset_id=snapshot.id):
            last = dataset.get("request_republished_at") or dataset.get("updated")
            if last and now - last < timedelta(seconds=REPUBLISH_AFTER_S):
                continue
            if list(jobs.where(filter=FieldFilter("dataset_id", "==", snapshot.id)).limit(1).stream()):
                snapshot.reference.update({"awaiting_job": False})
                continue
            republished = int(dataset.get("request_republishes") or 0)
            body = dataset.get("tuning_request")
            if republished >= MAX_REPUBLISHES or not body:
                log.error(
                    "dataset READY without a job, not published again",
                    extra={"republishes": republished, "has_request": bool(body)},
                )
                snapshot.reference.update({"awaiting_job": False})
                continue
            request = TuningRequestV1.model_validate(body)
            runtime.publish(settings.tuning_requests_topic, request.to_json(), **request.attributes())
            snapshot.reference.update({"request_republished_at": now, "request_republishes": republished + 1})
            log.warning("dataset READY without a job: tuning request published again")
            counts["requests_republished"] += 1


def _dead_lettered_requests(
    runtime: Runtime, client: genai.Client, now: datetime, counts: dict[str, int]
) -> None:
    """Requests the tuner could not take (its deliveries were spent) for datasets we know."""
    from google.cloud import pubsub_v1

    from shared.tuning.submit import derive_job_id, publish_event

    settings = runtime.settings
    subscription = (
        f"projects/{settings.project}/subscriptions/"
        f"tuner-{settings.tuning_requests_topic}{settings.dead_letter_suffix}"
    )
    subscriber = pubsub_v1.SubscriberClient()
    try:
        response = subscriber.pull(subscription=subscription, max_messages=SCAN_LIMIT, timeout=5)
        done: list[str] = []
        left: list[str] = []
        store = JobStore(runtime.firestore, settings)
        datasets = runtime.firestore.collection(settings.datasets_collection)
        for received in response.received_messages:
            message = received.message
            try:
                request = TuningRequestV1.model_validate(orjson.loads(message.data))
            except (ValidationError, orjson.JSONDecodeError):
                left.append(received.ack_id)  # invalid: dead-lettered with its reason, for an operator
                continue
            if not datasets.document(request.dataset_id).get().exists:
                left.append(received.ack_id)  # not a dataset of ours: for an operator
                continue
            job_id = derive_job_id(request)
            with log_context(job_id=job_id, dataset_id=request.dataset_id):
                error = message.attributes.get("sftpipe_error") or "its deliveries were spent"
                reason = f"{REQUEST_DEAD_LETTERED}: the tuner could not take the request: {error}"
                body = orjson.loads(request.to_json())
                if store.create_failed(job_id, body, request.dataset_id, request.base_model, reason):
                    log.error(
                        "dead-lettered tuning request recorded as a failed job", extra={"reason": reason}
                    )
                    counts["requests_failed"] += 1
            done.append(received.ack_id)
        if left:  # back at once for whoever inspects the dead letters
            subscriber.modify_ack_deadline(subscription=subscription, ack_ids=left, ack_deadline_seconds=0)
        if done:
            store.publish_pending(lambda event: publish_event(runtime, event))
            subscriber.acknowledge(subscription=subscription, ack_ids=done)
    finally:
        subscriber.close()


# --- Evaluations and claims ---------------------------------------------------------------------


def _idle_evaluations(runtime: Runtime, client: genai.Client, now: datetime, counts: dict[str, int]) -> None:
    _continue_idle(runtime, now, counts, runtime.settings.evaluations_collection, EvaluationContinuationV1)


def _idle_baselines(runtime: Runtime, client: genai.Client, now: datetime, counts: dict[str, int]) -> None:
    _continue_idle(runtime, now, counts, runtime.settings.baselines_collection, BaselineContinuationV1)


def _unstarted_baselines(
    runtime: Runtime, client: genai.Client, now: datetime, counts: dict[str, int]
) -> None:
    """Jobs still BASELINE, idle for EVALUATION_IDLE_S, with no baseline record: their BASELINE
    event never reached completion (or its deliveries were spent); published again."""
    settings = runtime.settings
    jobs = runtime.firestore.collection(settings.jobs_collection)
    baselines = runtime.firestore.collection(settings.baselines_collection)
    query = jobs.where(filter=FieldFilter("status", "==", BASELINE)).limit(SCAN_LIMIT)
    for snapshot in query.stream():
        job = snapshot.to_dict()
        last = job.get("baseline_republished_at") or job.get("updated")
        if last and now - last < timedelta(seconds=EVALUATION_IDLE_S):
            continue
        if baselines.document(snapshot.id).get().exists:
            continue  # _idle_baselines carries it on
        with log_context(job_id=snapshot.id, dataset_id=job.get("dataset_id")):
            event = JobEventV1(
                job_id=snapshot.id,
                dataset_id=job.get("dataset_id") or "unknown",
                sequence=0,
                state=BASELINE,
                occurred_at=job.get("created") or now,
            )
            runtime.publish(settings.job_events_topic, event.to_json(), **event.attributes())
            snapshot.reference.update({"baseline_republished_at": now})
            log.warning("job waiting for a baseline that never started: its event published again")
            counts["baselines_resumed"] += 1


def _continue_idle(
    runtime: Runtime,
    now: datetime,
    counts: dict[str, int],
    collection: str,
    message_type: type[EvaluationContinuationV1 | BaselineContinuationV1],
) -> None:
    from shared.evaluation.record import REPORTED, RUNNING

    settings = runtime.settings
    evaluations = runtime.firestore.collection(collection)
    query = evaluations.where(filter=FieldFilter("status", "in", [RUNNING, REPORTED])).limit(SCAN_LIMIT)
    for snapshot in query.stream():
        evaluation = snapshot.to_dict()
        expires, reconciled, updated = (
            evaluation.get("lease_expires"),
            evaluation.get("reconciled_at"),
            evaluation.get("updated"),
        )
        idle = timedelta(seconds=EVALUATION_IDLE_S)
        if evaluation.get("lease_owner") and expires and expires > now:
            continue  # a live invocation holds it (its heartbeat renews the lease)
        if reconciled and now - reconciled < idle:
            continue  # continued a moment ago
        if not evaluation.get("lease_owner") and updated and now - updated < idle:
            continue  # released moments ago: its own continuation is on the way
        with log_context(job_id=snapshot.id, dataset_id=evaluation.get("dataset_id")):
            message = message_type(
                job_id=snapshot.id,
                dataset_id=evaluation.get("dataset_id") or "unknown",
                cursor=int(evaluation.get("cursor") or 0),
            )
            runtime.publish(settings.job_events_topic, message.to_json(), **message.attributes())
            snapshot.reference.update({"reconciled_at": now})
            what = "baseline" if message_type is BaselineContinuationV1 else "evaluation"
            log.warning("%s stranded: continued", what, extra={"cursor": message.cursor})
            counts[f"{what}s_resumed"] += 1


def _unfinished_completions(
    runtime: Runtime, client: genai.Client, now: datetime, counts: dict[str, int]
) -> None:
    from shared.state.jobs import JobRecord

    settings = runtime.settings
    jobs = runtime.firestore.collection(settings.jobs_collection)
    evaluations = runtime.firestore.collection(settings.evaluations_collection)
    query = jobs.where(filter=FieldFilter("awaiting_completion", "==", True)).limit(SCAN_LIMIT)
    for snapshot in query.stream():
        document = snapshot.to_dict()
        with log_context(job_id=snapshot.id, dataset_id=document.get("dataset_id")):
            if evaluations.document(snapshot.id).get().exists:
                snapshot.reference.update({"awaiting_completion": False})
                continue
            last = document.get("completion_republished_at") or document.get("ended_at")
            if last and now - last < timedelta(seconds=EVALUATION_IDLE_S):
                continue
            republished = int(document.get("completion_republishes") or 0)
            try:
                job = JobRecord.model_validate(document)
            except ValidationError:
                log.error("ended job is not a JobRecord: not published again")
                snapshot.reference.update({"awaiting_completion": False})
                continue
            if republished >= MAX_REPUBLISHES:
                log.error(
                    "ended job never reached completion, not published again",
                    extra={"republishes": republished},
                )
                snapshot.reference.update({"awaiting_completion": False})
                continue
            event = JobEventV1(
                job_id=job.job_id,
                dataset_id=job.dataset_id,
                sequence=job.sequence,
                state=job.status,
                terminal=True,
                tuning_job_name=job.tuning_job_name,
                tuned_model=job.tuned_model,
                tuned_endpoint=job.tuned_endpoint,
                error=job.error,
            )
            runtime.publish(settings.job_events_topic, event.to_json(), **event.attributes())
            snapshot.reference.update(
                {"completion_republished_at": now, "completion_republishes": republished + 1}
            )
            log.warning("ended job never reached completion: terminal event published again")
            counts["completions_resumed"] += 1


def _expired_claims(runtime: Runtime, client: genai.Client, now: datetime, counts: dict[str, int]) -> None:
    jobs = runtime.firestore.collection(runtime.settings.jobs_collection)
    query = jobs.where(filter=FieldFilter("status", "==", SUBMITTING)).limit(SCAN_LIMIT)
    for snapshot in query.stream():
        lease = snapshot.to_dict().get("submit_lease")
        if lease is None or lease <= now:
            log.warning("submission claim expired: the dispatch re-claims it", extra={"job_id": snapshot.id})
            counts["claims_expired"] += 1


def _unrecorded_tuning_jobs(
    runtime: Runtime, client: genai.Client, now: datetime, counts: dict[str, int]
) -> None:
    """Running tuning jobs with our label that no job document records (they bill)."""
    from google.genai import types

    from shared.tuning.submit import JOB_ID_LABEL, cancel_duplicate

    store = JobStore(runtime.firestore, runtime.settings)
    pager = client.tunings.list(
        config=types.ListTuningJobsConfig(filter=f"labels.{JOB_ID_LABEL}:*", page_size=SCAN_LIMIT)
    )
    for seen, tuning_job in enumerate(pager):
        if seen >= SCAN_LIMIT:
            break
        job_id = (tuning_job.labels or {}).get(JOB_ID_LABEL)
        if tuning_job.has_ended or not job_id:
            continue
        job = store.get(job_id)
        with log_context(job_id=job_id, tuning_job=tuning_job.name):
            if job is None:
                log.error("a running tuning job carries our label but no job records it")
                counts["tuning_jobs_unknown"] += 1
            elif job.tuning_job_name == tuning_job.name:
                continue
            elif job.tuning_job_name is not None:
                log.error(
                    "a second tuning job for a recorded job: cancelling it",
                    extra={"recorded_tuning_job": job.tuning_job_name},
                )
                if cancel_duplicate(client, tuning_job.name):
                    counts["duplicates_cancelled"] += 1
            else:
                # QUEUED or SUBMITTING without a tuning job: the dispatch looks every job it claims
                # up by its label before any create, and records this one.
                log.warning("a running tuning job is not recorded yet: the dispatch adopts it")
                counts["tuning_jobs_adopted"] += 1


# --- Helpers ------------------------------------------------------------------------------------


def _claim_is_live(runtime: Runtime, key: str, now: datetime) -> bool:
    from shared.idempotency import IN_PROGRESS

    snapshot = runtime.firestore.collection(runtime.settings.idempotency_collection).document(key).get()
    if not snapshot.exists:
        return False
    claim = snapshot.to_dict()
    expires = claim.get("lease_expires")
    return claim.get("status") == IN_PROGRESS and expires is not None and expires > now

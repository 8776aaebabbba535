"""The tuner's entry point: one tuning-request/v1 -> exactly one Vertex AI tuning job.

1. ``job_id`` is derived from the request (dataset, base model, files, hyperparameters): the
   same request delivered any number of times names the same job.
2. ``jobs/{job_id}`` is created as QUEUED with ``create()`` (fails if it exists): duplicates stop
   there. Anything in the queue is handed out by :func:`dispatch`. A request with a test split
   (and ``SFTPIPE_BASELINE_BEFORE_TUNING`` on) is created as BASELINE instead: completion scores
   the base model on the test split, then queues the job (or ends it BASELINE_MET when the
   request's gate is met) and publishes the request again so that a tuner dispatches it.
3. :func:`dispatch` (tuner and poller alike) claims the oldest queued job for a free quota slot
   in one transaction, submits it under a heartbeat-renewed claim, and claims the next, while
   the submission's worst case fits in the invocation (``shared.budgets``). Before submitting it
   looks the job up by its label: a tuner that died after Vertex accepted the job and before
   Firestore recorded it is repaired by recording the job it finds, never by a second create.
4. The create is made once, never retried by the SDK. An answer that is no clear yes or no (a
   timeout, a lost connection, 408 or 5xx) is followed by a lookup by label: a job found is
   recorded; none found marks the create unclear, and no second create happens until a lookup
   ``CREATE_SETTLE_S`` later still finds nothing. The job goes back to the queue and the error
   is raised so that the message is redelivered.
5. Vertex answers 429 RESOURCE_EXHAUSTED: the job goes back to the head of the queue. Another
   4xx: the job is FAILED with Vertex's message (and the completion function notifies). Each
   claimed job settles on its own: one job's failure never leaves another in SUBMITTING.
6. Every record of a submission is conditional on the claim's owner: a late answer to a claim
   that was taken over never overwrites what the later holder recorded, and a duplicate it
   finds recorded instead is cancelled.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from shared.budgets import (
    CREATE_SETTLE_S,
    CREATE_TIMEOUT_S,
    LOOKUP_PAUSE_S,
    heartbeat_interval_s,
    submission_time_left,
    submission_worst_case_s,
)
from shared.config import Settings
from shared.errors import TransientError, is_transient
from shared.leases import Heartbeat
from shared.logging import bind, get_logger, log_context
from shared.messages import JobEventV1, JobOptions, TuningRequestV1
from shared.runtime import Runtime
from shared.state.jobs import QUEUED, SUBMITTING, JobRecord
from shared.state.store import JobStore, utcnow
from shared.tuning.observe import observed_fields, progress_marker

if TYPE_CHECKING:
    from google import genai
    from google.genai import types

log = get_logger("sftpipe.tuner")

JOB_ID_LABEL = "sftpipe-job-id"
DATASET_ID_LABEL = "sftpipe-dataset-id"
#: Vertex label values: at most 63 characters of lowercase letters, digits, '_' and '-'.
MAX_LABEL_VALUE = 63
ADAPTER_SIZES = {
    1: "ADAPTER_SIZE_ONE",
    2: "ADAPTER_SIZE_TWO",
    4: "ADAPTER_SIZE_FOUR",
    8: "ADAPTER_SIZE_EIGHT",
    16: "ADAPTER_SIZE_SIXTEEN",
}


def derive_job_id(request: TuningRequestV1) -> str:
    """Stable id of the job a request asks for; a valid Firestore id and Vertex label value."""
    identity = orjson.dumps(
        {
            "dataset_id": request.dataset_id,
            "base_model": request.base_model,
            "training_uri": request.training_uri,
            "validation_uri": request.validation_uri,
            "hyperparameters": request.hyperparameters.model_dump(),
        },
        option=orjson.OPT_SORT_KEYS,
    )
    digest = hashlib.sha256(identity).hexdigest()[:16]
    stem = "".join(c if c.isascii() and c.isalnum() else "-" for c in request.dataset_id.lower()).strip("-")
    return f"{stem[: MAX_LABEL_VALUE - 22].rstrip('-') or 'job'}-{digest}"


def label_value(value: str) -> str:
    cleaned = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in value.lower())
    return cleaned[:MAX_LABEL_VALUE]


def handle_tuning_request(request: TuningRequestV1, runtime: Runtime, client: genai.Client) -> dict[str, Any]:
    job_id = derive_job_id(request)
    bind(job_id=job_id, dataset_id=request.dataset_id)
    store = JobStore(runtime.firestore, runtime.settings)
    body = orjson.loads(request.to_json())
    # With a test split, the base model is scored first (completion's baseline stage, which
    # queues the job when it is done): nothing is paid for before the user knows the bar.
    baseline = runtime.settings.baseline_before_tuning and request.test_uri is not None
    created = store.create_queued(job_id, body, request.dataset_id, request.base_model, baseline=baseline)
    if created:
        log.info("job created: baseline first" if baseline else "job queued")
    else:
        log.info("duplicate request: job already exists")
    submitted = dispatch(runtime, client, store)  # also publishes the QUEUED event from the outbox
    return {"job_id": job_id, "created": created, "submitted": submitted}


def dispatch(
    runtime: Runtime,
    client: genai.Client,
    store: JobStore | None = None,
    *,
    started: float | None = None,
) -> list[str]:
    """Submit queued jobs while quota slots are free, oldest first; returns the jobs submitted.

    Jobs are claimed one at a time, each right before its own submission, and only while the
    submission's worst case still fits in the invocation that began at ``started`` (its timeout
    is ``SFTPIPE_FUNCTION_TIMEOUT_S``; ``shared.budgets``): a claim never waits behind other jobs' submissions, and no
    submission is cut off by the function's timeout. A job that fails for good is recorded and
    the next one is claimed; quota full at Vertex, or a transient failure, ends the round (the
    job is back in the queue). If any failed transiently, TransientError is raised once the
    outbox is published, so that the message is redelivered.
    """
    store = store or JobStore(runtime.firestore, runtime.settings)
    started = time.monotonic() if started is None else started
    limit = runtime.settings.max_concurrent_jobs
    submitted: list[str] = []
    failures: list[Exception] = []
    claims = 0
    timeout_s = runtime.settings.function_timeout_s
    while submission_time_left(timeout_s, time.monotonic() - started) >= submission_worst_case_s():
        # An expired SUBMITTING claim is counted as active and re-claimed: its slot is its own.
        claimed = store.claim_for_submission(lambda active: limit - active)
        if not claimed:
            break
        [job] = claimed
        claims += 1
        try:
            if not submit(job, runtime, client, store):
                if _back_in_queue(store, job.job_id):
                    break  # quota full at Vertex: nothing else can start now
                continue  # failed for good and recorded: the next job may still start
            submitted.append(job.job_id)
        except TransientError as exc:  # already back in the queue
            failures.append(exc)
            break
        except Exception as exc:  # Firestore could not record the outcome either
            log.exception(
                "could not settle a failed submission: the job is re-claimed when its lease expires",
                extra={"job_id": job.job_id},
            )
            failures.append(exc)
            break
    store.publish_pending(lambda event: publish_event(runtime, event))
    if failures:
        raise TransientError(
            f"{len(failures)} of {claims} claimed jobs could not be submitted: {failures[0]}"
        ) from failures[0]
    return submitted


def _back_in_queue(store: JobStore, job_id: str) -> bool:
    job = store.get(job_id)
    return job is not None and job.status == QUEUED


def submit(job: JobRecord, runtime: Runtime, client: genai.Client, store: JobStore) -> bool:
    """Submit one claimed job (or record the one Vertex already has); True if it is now on Vertex.

    The claim is renewed by a heartbeat while the submission runs, for at most the submission's
    worst case. A failure never leaves the job in SUBMITTING: it goes back to the queue (429:
    Vertex's quota is full, no retry needed; other transient errors: TransientError is raised)
    or is FAILED with the error (a 4xx or a request that cannot be valid, so that the user is
    notified). Only if Firestore itself fails to record that does the job wait for its lease.
    """
    with log_context(job_id=job.job_id, dataset_id=job.dataset_id):
        heartbeat = Heartbeat(
            lambda: store.renew_submission(job.job_id, job.submit_owner),
            max_hold_s=submission_worst_case_s(),
            interval_s=heartbeat_interval_s(store.submit_lease.total_seconds()),
            what=f"submission claim of {job.job_id}",
        )
        with heartbeat:
            try:
                return _submit(job, client, store)
            except Exception as exc:
                return _settle_failure(job, store, exc)


def _submit(job: JobRecord, client: genai.Client, store: JobStore) -> bool:
    from google.genai import errors

    existing = find_tuning_job(client, job.job_id)
    if existing is not None:
        log.warning("job was already submitted: recording it", extra={"tuning_job": existing.name})
        record_submitted(store, job, existing, client)
        return True
    unclear_at = job.create_unclear_at
    if unclear_at is not None and utcnow() - unclear_at < timedelta(seconds=CREATE_SETTLE_S):
        settles = (unclear_at + timedelta(seconds=CREATE_SETTLE_S)).isoformat()
        raise TransientError(
            f"an earlier create ended without an answer at {unclear_at.isoformat()} and no job is "
            f"listed yet: no second create before {settles}"
        )
    request = TuningRequestV1.model_validate(job.request)
    attempted_at = utcnow()
    try:
        tuning_job = client.tunings.tune(
            # Continuing from a tuned model: the SDK sends it as preTunedModel (with the checkpoint).
            base_model=request.job_options.pre_tuned_model or request.base_model,
            training_dataset=_dataset(request.training_uri),
            config=_config(job, request, store.settings),
        )
    except errors.ClientError as exc:
        if exc.code == 409:  # a concurrent change at Vertex: worth another try, unlike other 4xx
            raise TransientError(f"{exc.code} {exc.status}: {exc.message}") from exc
        if exc.code != 408:
            raise
        return _after_unclear_create(job, client, store, exc, attempted_at)
    except Exception as exc:
        if not is_transient(exc):
            raise
        return _after_unclear_create(job, client, store, exc, attempted_at)
    log.info("tuning job submitted", extra={"tuning_job": tuning_job.name})
    _warn_on_other_base_model(request, tuning_job)
    record_submitted(store, job, tuning_job, client)
    return True


def _warn_on_other_base_model(request: TuningRequestV1, tuning_job: types.TuningJob) -> None:
    """A job continued from a tuned model runs on that model's own base, which Vertex reports;
    the baseline, limits and prices used the request's ``base_model``: say so when they differ."""
    reported = (tuning_job.base_model or "").rsplit("/", 1)[-1]
    if request.job_options.pre_tuned_model and reported and reported != request.base_model.rsplit("/", 1)[-1]:
        log.warning(
            "the continued model's base differs from the request's base_model",
            extra={"reported_base_model": reported, "base_model": request.base_model},
        )


def _after_unclear_create(
    job: JobRecord, client: genai.Client, store: JobStore, exc: Exception, attempted_at: datetime
) -> bool:
    """A create that timed out, lost its connection or answered 5xx may have made the job: look
    it up before anything else, and if it is not listed yet forbid another create for a while."""
    reason = _describe(exc)
    log.warning("create ended without a clear answer: looking the job up", extra={"error": reason})
    time.sleep(LOOKUP_PAUSE_S)
    try:
        found = find_tuning_job(client, job.job_id)
    except Exception:
        log.warning("the lookup after an unclear create failed too", exc_info=True)
        found = None
    if found is not None:
        log.warning("the unclear create had made the job: recording it", extra={"tuning_job": found.name})
        record_submitted(store, job, found, client)
        return True
    store.mark_unclear_create(job.job_id, job.submit_owner, attempted_at)
    raise TransientError(f"create ended without a clear answer and no job is listed yet: {reason}") from exc


def _settle_failure(job: JobRecord, store: JobStore, exc: Exception) -> bool:
    """Take a failed job out of SUBMITTING; returns False or raises TransientError."""
    reason = _describe(exc)
    if _is_quota_full(exc):
        log.info("quota full at Vertex: job back in the queue")
        store.release_to_queue(job.job_id, reason, owner=job.submit_owner)
        return False
    if _is_permanent(exc):
        log.error("could not submit the tuning job: job failed", extra={"error": reason})
        store.record_transition(
            job.job_id,
            "JOB_STATE_FAILED",
            fields={"error": reason},
            detail="rejected at submission",
            allow_from=[SUBMITTING],
            submit_owner=job.submit_owner,  # not the claim of a later submission
        )
        return False
    log.warning("transient failure: job back in the queue", extra={"error": reason})
    store.release_to_queue(job.job_id, f"transient: {reason}", owner=job.submit_owner)
    raise TransientError(f"tuning job submission failed: {reason}") from exc


def _is_quota_full(exc: Exception) -> bool:
    """429 RESOURCE_EXHAUSTED: the job waits in the queue; the poller submits it when a slot frees."""
    from google.genai import errors

    return isinstance(exc, errors.ClientError) and exc.code == 429


def _is_permanent(exc: Exception) -> bool:
    """Whether submitting this job again cannot succeed (4xx other than 401, 408, 429; a stored
    request that is not a valid tuning-request/v1); anything unknown is retried."""
    if isinstance(exc, ValidationError):
        return True
    return not is_transient(exc)


def _describe(exc: Exception) -> str:
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        return f"{exc.code} {exc.status}: {exc.message}"
    return str(exc) or type(exc).__name__


def record_submitted(
    store: JobStore, job: JobRecord, tuning_job: types.TuningJob, client: genai.Client | None = None
) -> JobEventV1 | None:
    """Record the job Vertex has, as the poller would (a job found already finished carries its
    tuned model, endpoint, checkpoints and error), only if this holder's claim still stands.

    A late answer to a claim that was taken over never overwrites what the later holder
    recorded. If that holder recorded another tuning job, this one is a duplicate that nobody
    tracks and that bills: it is cancelled.
    """
    state = tuning_job.state.value if tuning_job.state else "JOB_STATE_PENDING"
    fields = {
        **observed_fields(tuning_job),
        "tuning_job_name": tuning_job.name,
        "submitted_at": tuning_job.create_time,
        "progress_marker": progress_marker(tuning_job),
    }
    event = store.record_transition(
        job.job_id,
        state,
        fields=fields,
        detail="submitted",
        allow_from=[SUBMITTING],
        submit_owner=job.submit_owner,
    )
    if event is not None:
        return event
    current = store.get(job.job_id)
    recorded = current.tuning_job_name if current else None
    if recorded == tuning_job.name:
        return None  # a later holder found and recorded this very job
    if recorded is not None and client is not None and not tuning_job.has_ended:
        log.error(
            "claim was taken over and another tuning job recorded: cancelling this duplicate",
            extra={"tuning_job": tuning_job.name, "recorded_tuning_job": recorded},
        )
        cancel_duplicate(client, tuning_job.name)
    else:
        log.warning(
            "claim was taken over: not recording this tuning job (the reconciler adopts or cancels it)",
            extra={"tuning_job": tuning_job.name, "recorded_tuning_job": recorded},
        )
    return None


def cancel_duplicate(client: genai.Client, name: str | None) -> bool:
    """Cancel a tuning job that duplicates the recorded one; False if Vertex refused."""
    if not name:
        return False
    try:
        client.tunings.cancel(name=name)
    except Exception:
        log.exception("could not cancel the duplicate tuning job", extra={"tuning_job": name})
        return False
    return True


def find_tuning_job(client: genai.Client, job_id: str) -> types.TuningJob | None:
    """The tuning job labelled with ``job_id`` (the oldest, if a fault ever made two)."""
    from google.genai import types

    pager = client.tunings.list(
        config=types.ListTuningJobsConfig(filter=f'labels.{JOB_ID_LABEL}="{job_id}"', page_size=10)
    )
    found = [job for job in pager if (job.labels or {}).get(JOB_ID_LABEL) == job_id]
    if not found:
        return None
    return min(found, key=lambda job: (job.create_time is None, job.create_time or utcnow(), job.name or ""))


def publish_event(runtime: Runtime, event: JobEventV1) -> str:
    return runtime.publish(runtime.settings.job_events_topic, event.to_json(), **event.attributes())


def _dataset(uri: str) -> types.TuningDataset:
    from google.genai import types

    return types.TuningDataset(gcs_uri=uri)


def vertex_evaluation_prefix(settings: Settings, job_id: str) -> str:
    """Where Vertex AI writes its own evaluation of a job (deploy/ lets its service agent write
    there, and only there)."""
    return f"gs://{settings.bucket}/{settings.reports_prefix}vertex-evaluation/{job_id}/"


def vertex_evaluation_config(
    job: JobRecord, request: TuningRequestV1, settings: Settings
) -> types.EvaluationConfig | None:
    """The job's ``evaluation_config`` when the request asks for Vertex AI's own evaluation."""
    from google.genai import types

    if not request.vertex_evaluation_metrics:
        return None
    # types.Metric lower-cases its name, and google-genai then sends rouge_type "rougel", which is
    # not one of Vertex's ROUGE types ("rougeL", "rougeLsum"): ROUGE goes as its own spec.
    metrics: list[types.Metric | types.UnifiedMetric] = [
        types.UnifiedMetric(rouge_spec=types.RougeSpec(rouge_type=name))
        if name.startswith("rouge")
        else types.Metric(name=name)
        for name in request.vertex_evaluation_metrics
    ]
    return types.EvaluationConfig(
        metrics=metrics,
        output_config=types.OutputConfig(
            gcs_destination=types.GcsDestination(
                output_uri_prefix=vertex_evaluation_prefix(settings, job.job_id)
            )
        ),
    )


def job_options(request: TuningRequestV1, settings: Settings) -> JobOptions:
    """The request's job options, each missing one from the deployment's settings."""
    given = request.job_options
    return JobOptions.model_validate(
        {
            **given.model_dump(),
            "description": given.description or settings.tuning_description or None,
            "output_uri": given.output_uri or settings.tuning_output_uri or None,
            "kms_key_name": given.kms_key_name or settings.tuning_kms_key_name or None,
            "service_account": given.service_account or settings.tuning_service_account or None,
        }
    )


def _config(job: JobRecord, request: TuningRequestV1, settings: Settings) -> types.CreateTuningJobConfig:
    from google.genai import types

    hyper = request.hyperparameters
    options = job_options(request, settings)
    return types.CreateTuningJobConfig(
        # Never retried by the SDK, however the client was built: a create whose answer is lost
        # may have made the job, and only a lookup by label can tell (``_after_unclear_create``).
        http_options=types.HttpOptions(
            timeout=int(CREATE_TIMEOUT_S * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),
            # CreateTuningJobConfig has no service account; the API's TuningJob does.
            extra_body={"serviceAccount": options.service_account} if options.service_account else None,
        ),
        description=options.description,
        output_uri=options.output_uri,
        encryption_spec=types.EncryptionSpec(kms_key_name=options.kms_key_name)
        if options.kms_key_name
        else None,
        pre_tuned_model_checkpoint_id=options.pre_tuned_model_checkpoint_id,
        validation_dataset=types.TuningValidationDataset(gcs_uri=request.validation_uri)
        if request.validation_uri
        else None,
        epoch_count=hyper.epochs,
        export_last_checkpoint_only=request.export_last_checkpoint_only,
        evaluation_config=vertex_evaluation_config(job, request, settings),
        learning_rate_multiplier=hyper.learning_rate_multiplier,
        adapter_size=ADAPTER_SIZES[hyper.adapter_size] if hyper.adapter_size else None,
        tuned_model_display_name=f"sftpipe {job.job_id}"[:128],
        labels={
            **{label_value(k): label_value(v) for k, v in request.labels.items()},
            JOB_ID_LABEL: job.job_id,
            DATASET_ID_LABEL: label_value(job.dataset_id),
        },
    )

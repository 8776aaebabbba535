"""The tuner's entry point: one tuning-request/v1 -> exactly one Vertex AI tuning job.

1. ``job_id`` is derived from the request (dataset, base model, files, hyperparameters): the
   same request delivered any number of times names the same job.
2. ``jobs/{job_id}`` is created as QUEUED with ``create()`` (fails if it exists): duplicates stop
   there. Anything in the queue is handed out by :func:`dispatch`.
3. :func:`dispatch` (tuner and poller alike) claims the oldest queued jobs for the free quota
   slots in one transaction and submits each one. Before submitting it looks the job up by its
   label: a tuner that died after Vertex accepted the job and before Firestore recorded it is
   repaired by recording the job it finds, never by submitting a second one.
4. Vertex answers 429 RESOURCE_EXHAUSTED: the job goes back to the head of the queue. 4xx: the job
   is FAILED with Vertex's message (and the completion function notifies). 5xx or network
   errors: back to the queue, and the error is raised so that the message is redelivered.
   This holds for every step of a submission (the lookup, the request, the tuning call, the
   record), and each claimed job settles on its own: one job's failure never leaves the others
   in SUBMITTING, holding a quota slot until their lease expires.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from shared.errors import TransientError, is_transient
from shared.logging import bind, get_logger, log_context
from shared.messages import JobEventV1, TuningRequestV1
from shared.runtime import Runtime
from shared.state.jobs import SUBMITTING, JobRecord
from shared.state.store import JobStore

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
    stem = "".join(c if c.isalnum() else "-" for c in request.dataset_id.lower()).strip("-")
    return f"{stem[: MAX_LABEL_VALUE - 22].rstrip('-') or 'job'}-{digest}"


def label_value(value: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in value.lower())
    return cleaned[:MAX_LABEL_VALUE]


def handle_tuning_request(request: TuningRequestV1, runtime: Runtime, client: genai.Client) -> dict[str, Any]:
    job_id = derive_job_id(request)
    bind(job_id=job_id, dataset_id=request.dataset_id)
    store = JobStore(runtime.firestore, runtime.settings)
    body = orjson.loads(request.to_json())
    created = store.create_queued(job_id, body, request.dataset_id, request.base_model)
    if created:
        log.info("job queued")
    else:
        log.info("duplicate request: job already exists")
    submitted = dispatch(runtime, client, store)  # also publishes the QUEUED event from the outbox
    return {"job_id": job_id, "created": created, "submitted": submitted}


def dispatch(runtime: Runtime, client: genai.Client, store: JobStore | None = None) -> list[str]:
    """Submit queued jobs while quota slots are free, oldest first; returns the jobs submitted.

    Every claimed job is tried, whatever happened to the ones before it; if any failed
    transiently (and went back to the queue), TransientError is raised once all are settled and
    the outbox is published, so that the message is redelivered.
    """
    store = store or JobStore(runtime.firestore, runtime.settings)
    limit = runtime.settings.max_concurrent_jobs
    # An expired SUBMITTING claim is counted as active and re-claimed: its slot is its own.
    claimed = store.claim_for_submission(lambda active: limit - active)
    submitted = []
    failures: list[Exception] = []
    for job in claimed:
        try:
            if submit(job, runtime, client, store):
                submitted.append(job.job_id)
        except TransientError as exc:  # already back in the queue: go on with the others
            failures.append(exc)
        except Exception as exc:  # Firestore could not record the outcome either
            log.exception(
                "could not settle a failed submission: the job is re-claimed when its lease expires",
                extra={"job_id": job.job_id},
            )
            failures.append(exc)
    store.publish_pending(lambda event: publish_event(runtime, event))
    if failures:
        raise TransientError(
            f"{len(failures)} of {len(claimed)} claimed jobs could not be submitted: {failures[0]}"
        ) from failures[0]
    return submitted


def submit(job: JobRecord, runtime: Runtime, client: genai.Client, store: JobStore) -> bool:
    """Submit one claimed job (or record the one Vertex already has); True if it is now on Vertex.

    A failure never leaves the job in SUBMITTING: it goes back to the queue (429: Vertex's quota
    is full, no retry needed; other transient errors: TransientError is raised) or is FAILED
    with the error (a 4xx or a request that cannot be valid, so that the user is notified).
    Only if Firestore itself fails to record that does the job wait for its lease to expire.
    """
    with log_context(job_id=job.job_id, dataset_id=job.dataset_id):
        try:
            return _submit(job, client, store)
        except Exception as exc:
            return _settle_failure(job, store, exc)


def _submit(job: JobRecord, client: genai.Client, store: JobStore) -> bool:
    from google.genai import errors

    existing = find_tuning_job(client, job.job_id)
    if existing is not None:
        log.warning("job was already submitted: recording it", extra={"tuning_job": existing.name})
        record_submitted(store, job, existing)
        return True
    request = TuningRequestV1.model_validate(job.request)
    try:
        tuning_job = client.tunings.tune(
            base_model=request.base_model,
            training_dataset=_dataset(request.training_uri),
            config=_config(job, request),
        )
    except errors.ClientError as exc:
        if exc.code == 409:  # a concurrent change at Vertex: worth another try, unlike other 4xx
            raise TransientError(f"{exc.code} {exc.status}: {exc.message}") from exc
        raise
    log.info("tuning job submitted", extra={"tuning_job": tuning_job.name})
    record_submitted(store, job, tuning_job)
    return True


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


def record_submitted(store: JobStore, job: JobRecord, tuning_job: types.TuningJob) -> JobEventV1 | None:
    state = tuning_job.state.value if tuning_job.state else "JOB_STATE_PENDING"
    fields = {"tuning_job_name": tuning_job.name, "submitted_at": tuning_job.create_time}
    event = store.record_transition(
        job.job_id, state, fields=fields, detail="submitted", allow_from=[SUBMITTING]
    )
    if event is None:  # already recorded by a concurrent repair: keep the name anyway
        store.touch(job.job_id, {"tuning_job_name": tuning_job.name})
    return event


def find_tuning_job(client: genai.Client, job_id: str) -> types.TuningJob | None:
    from google.genai import types

    pager = client.tunings.list(
        config=types.ListTuningJobsConfig(filter=f'labels.{JOB_ID_LABEL}="{job_id}"', page_size=10)
    )
    for tuning_job in pager:
        if (tuning_job.labels or {}).get(JOB_ID_LABEL) == job_id:
            return tuning_job
    return None


def publish_event(runtime: Runtime, event: JobEventV1) -> str:
    return runtime.publish(runtime.settings.job_events_topic, event.to_json(), **event.attributes())


def _dataset(uri: str) -> types.TuningDataset:
    from google.genai import types

    return types.TuningDataset(gcs_uri=uri)


def _config(job: JobRecord, request: TuningRequestV1) -> types.CreateTuningJobConfig:
    from google.genai import types

    hyper = request.hyperparameters
    return types.CreateTuningJobConfig(
        validation_dataset=types.TuningValidationDataset(gcs_uri=request.validation_uri)
        if request.validation_uri
        else None,
        epoch_count=hyper.epochs,
        learning_rate_multiplier=hyper.learning_rate_multiplier,
        adapter_size=ADAPTER_SIZES[hyper.adapter_size] if hyper.adapter_size else None,
        tuned_model_display_name=f"sftpipe {job.job_id}"[:128],
        labels={
            **{label_value(k): label_value(v) for k, v in request.labels.items()},
            JOB_ID_LABEL: job.job_id,
            DATASET_ID_LABEL: label_value(job.dataset_id),
        },
    )

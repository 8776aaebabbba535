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
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

from shared.errors import TransientError
from shared.logging import bind, get_logger
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
    """Submit queued jobs while quota slots are free, oldest first; returns the jobs submitted."""
    store = store or JobStore(runtime.firestore, runtime.settings)
    limit = runtime.settings.max_concurrent_jobs
    # An expired SUBMITTING claim is counted as active and re-claimed: its slot is its own.
    claimed = store.claim_for_submission(lambda active: limit - active)
    submitted = []
    transient: Exception | None = None
    for job in claimed:
        try:
            if submit(job, runtime, client, store):
                submitted.append(job.job_id)
        except TransientError as exc:
            transient = exc
    store.publish_pending(lambda event: publish_event(runtime, event))
    if transient is not None:
        raise transient
    return submitted


def submit(job: JobRecord, runtime: Runtime, client: genai.Client, store: JobStore) -> bool:
    """Submit one claimed job (or record the one Vertex already has); True if it is now on Vertex."""
    from google.genai import errors

    with_log = {"job_id": job.job_id}
    existing = find_tuning_job(client, job.job_id)
    if existing is not None:
        log.warning(
            "job was already submitted: recording it", extra={**with_log, "tuning_job": existing.name}
        )
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
        if exc.code == 429:
            log.info("quota full at Vertex: job back in the queue", extra=with_log)
            store.release_to_queue(job.job_id, f"429 {exc.status}: {exc.message}")
            return False
        if exc.code in (408, 409):
            store.release_to_queue(job.job_id, f"{exc.code} {exc.status}")
            raise TransientError(f"tuning job submission failed: {exc.code} {exc.message}") from exc
        log.error(
            "Vertex rejected the tuning job", extra={**with_log, "status": exc.status, "error": exc.message}
        )
        store.record_transition(
            job.job_id,
            "JOB_STATE_FAILED",
            fields={"error": f"{exc.code} {exc.status}: {exc.message}"},
            detail="rejected at submission",
            allow_from=[SUBMITTING],
        )
        return False
    except Exception as exc:  # 5xx after the SDK's retries, network errors
        store.release_to_queue(job.job_id, f"transient: {exc}")
        raise TransientError(f"tuning job submission failed: {exc}") from exc
    log.info("tuning job submitted", extra={**with_log, "tuning_job": tuning_job.name})
    record_submitted(store, job, tuning_job)
    return True


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

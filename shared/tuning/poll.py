"""The poller's entry point: one tick reads every active job's state and records what changed.

A tick:
1. reads the jobs whose status is active (one indexed query: the cost grows with the number of
   active jobs only, never with the history);
2. asks Vertex for each submitted one (``tunings.get``) with bounded concurrency;
3. records each forward change in its own short transaction (``JobStore.record_transition``),
   keeping the tuned model, endpoint, checkpoints and error; a job whose Vertex resource is gone
   (404) is FAILED with that reason; a job without progress for ``stall_after_s`` gets one
   ``stalled`` alert event;
4. publishes the outbox (one job-event/v1 per transition, also those a crashed tick left);
5. submits queued jobs into the slots that freed up, oldest first.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.logging import get_logger, log_context
from shared.messages import JobEventV1
from shared.runtime import Runtime
from shared.state.jobs import ACTIVE, SUBMITTING, Checkpoint, JobRecord, is_forward
from shared.state.store import JobStore
from shared.tuning.submit import dispatch, publish_event

if TYPE_CHECKING:
    from google import genai
    from google.genai import types

log = get_logger("sftpipe.poller")

VANISHED = "the tuning job no longer exists at Vertex AI (404 NOT_FOUND)"


def poll_tick(runtime: Runtime, client: genai.Client) -> dict[str, Any]:
    settings = runtime.settings
    store = JobStore(runtime.firestore, settings)
    jobs = [job for job in store.with_status(ACTIVE) if job.status != SUBMITTING and job.tuning_job_name]
    with ThreadPoolExecutor(max_workers=settings.poll_concurrency) as pool:
        changes = list(pool.map(lambda job: _refresh(job, store, client, settings.stall_after_s), jobs))
    published = store.publish_pending(lambda event: publish_event(runtime, event))
    submitted = dispatch(runtime, client, store)
    summary = {
        "active": len(jobs),
        "transitions": sum(1 for change in changes if change),
        "published": published,
        "submitted": len(submitted),
        "firestore_reads": store.reads,
    }
    log.info("poll tick", extra=summary)
    return summary


def _refresh(job: JobRecord, store: JobStore, client: genai.Client, stall_after_s: int) -> JobEventV1 | None:
    from google.genai import errors

    with log_context(job_id=job.job_id, dataset_id=job.dataset_id):
        try:
            tuning_job = client.tunings.get(name=job.tuning_job_name)
        except errors.ClientError as exc:
            if exc.code == 404:
                log.error("tuning job vanished", extra={"tuning_job": job.tuning_job_name})
                return store.record_transition(
                    job.job_id, "JOB_STATE_FAILED", fields={"error": VANISHED}, detail="vanished"
                )
            log.warning("could not read the tuning job: %s", exc)
            return None
        except Exception as exc:  # one unreachable job must not stop the tick for the others
            log.warning("could not read the tuning job: %s", exc)
            return None
        fields = _observed_fields(tuning_job)
        state = tuning_job.state.value if tuning_job.state else job.status
        # The document was read by this tick's query: only a forward change needs a transaction.
        event = (
            store.record_transition(job.job_id, state, fields=fields, detail="observed")
            if is_forward(job.status, state)
            else None
        )
        if event is not None:
            log.info("job state changed", extra={"state": state, "previous_state": event.previous_state})
            return event
        progress = _progress_marker(tuning_job)
        if progress != job.progress_marker:
            store.touch(
                job.job_id, {**fields, "progress_marker": progress, "last_progress_at": datetime.now(UTC)}
            )
        elif job.last_progress_at and datetime.now(UTC) - job.last_progress_at > timedelta(
            seconds=stall_after_s
        ):
            _alert_stalled(store, job)
        return None


def _observed_fields(tuning_job: types.TuningJob) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    tuned = tuning_job.tuned_model
    if tuned is not None:
        fields["tuned_model"] = tuned.model
        fields["tuned_endpoint"] = tuned.endpoint
        fields["checkpoints"] = [
            Checkpoint(
                checkpoint_id=c.checkpoint_id, epoch=c.epoch, step=c.step, endpoint=c.endpoint
            ).model_dump()
            for c in tuned.checkpoints or []
        ]
    if tuning_job.error is not None and tuning_job.error.message:
        fields["error"] = f"{tuning_job.error.code}: {tuning_job.error.message}"
    if tuning_job.experiment:
        fields["experiment"] = tuning_job.experiment
    return {k: v for k, v in fields.items() if v is not None}


def _progress_marker(tuning_job: types.TuningJob) -> str:
    checkpoints = len(tuning_job.tuned_model.checkpoints or []) if tuning_job.tuned_model else 0
    updated = tuning_job.update_time.isoformat() if tuning_job.update_time else ""
    return f"{updated}|{checkpoints}"


def _alert_stalled(store: JobStore, job: JobRecord) -> None:
    """One ``stalled`` event per stall (a new stall after progress gets a new one)."""
    if job.stalled_alerted_at and job.last_progress_at and job.stalled_alerted_at >= job.last_progress_at:
        return
    event = JobEventV1(
        job_id=job.job_id,
        dataset_id=job.dataset_id,
        sequence=job.sequence,
        state=job.status,
        kind="stalled",
        tuning_job_name=job.tuning_job_name,
        error=f"no progress since {job.last_progress_at.isoformat() if job.last_progress_at else 'submission'}",
    )
    log.warning("job stalled", extra={"last_progress_at": str(job.last_progress_at)})
    store.add_alert(job.job_id, event)

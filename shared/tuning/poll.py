"""The poller's entry point: one tick reads every active job's state and records what changed.

A tick:
1. reads the jobs whose status is active (one indexed query: the cost grows with the number of
   active jobs only, never with the history);
2. asks Vertex for each submitted one (``tunings.get``) with bounded concurrency;
3. records each forward change in its own short transaction (``JobStore.record_transition``),
   keeping the tuned model, endpoint, checkpoints and error; a job whose Vertex resource is gone
   (404) is FAILED with that reason; a job without progress for ``stall_after_s`` gets one
   ``stalled`` alert event;
4. runs the reconciler (``shared.reconcile``): finds and finishes what a crash, a timeout or a
   spent retry budget stranded, each repair counted in the tick's ``repairs``;
5. publishes the outbox (one job-event/v1 per transition, also those a crashed tick left);
6. submits queued jobs into the slots that freed up, oldest first.

Each job is read, validated and refreshed on its own: a malformed document or a failed write
for one job is logged (at ERROR, with its job_id) and counted in the tick's ``failed``, and
steps 4 and 5 still run for everyone else.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

from google.cloud.firestore_v1.base_query import FieldFilter
from pydantic import ValidationError

from shared.logging import get_logger, log_context
from shared.messages import JobEventV1
from shared.reconcile import reconcile
from shared.runtime import Runtime
from shared.state.jobs import ACTIVE, SUBMITTING, WAITING_SUB_STATES, JobRecord, SubStateEntry, is_forward
from shared.state.store import JobStore
from shared.tuning.observe import observed_fields, progress_marker
from shared.tuning.submit import dispatch, publish_event

if TYPE_CHECKING:
    from google import genai

log = get_logger("sftpipe.poller")

VANISHED = "the tuning job no longer exists at Vertex AI (404 NOT_FOUND)"


class Outcome(Enum):
    """What refreshing one job came to in this tick."""

    CHANGED = "changed"
    UNCHANGED = "unchanged"
    FAILED = "failed"


def poll_tick(runtime: Runtime, client: genai.Client) -> dict[str, Any]:
    """Refresh every active job, publish the outbox, submit queued jobs; returns counts.

    A job that could not be refreshed is counted in ``failed`` rather than raised: the next
    Cloud Scheduler tick (a minute later) is its retry anyway, while raising would only make
    Pub/Sub redeliver this tick on top of the scheduled ones and, for a job that fails every
    time (a malformed document), send every tick to the dead-letter topic. The ERROR lines
    carry each job_id for alerting. Failures of publishing or dispatching themselves still
    raise: they concern every job, and a redelivered tick is the quickest retry.
    """
    started = time.monotonic()
    settings = runtime.settings
    store = JobStore(runtime.firestore, settings)
    jobs, malformed = _active_jobs(store)
    polled = [job for job in jobs if job.status != SUBMITTING and job.tuning_job_name]
    with ThreadPoolExecutor(max_workers=settings.poll_concurrency) as pool:
        outcomes = list(
            pool.map(
                lambda job: _refresh_isolated(
                    job, store, client, settings.stall_after_s, settings.waiting_notice_after_s
                ),
                polled,
            )
        )
    repairs = reconcile(runtime, client)
    published = store.publish_pending(lambda event: publish_event(runtime, event))
    submitted = dispatch(runtime, client, store, started=started)
    summary = {
        "active": len(polled),
        "transitions": outcomes.count(Outcome.CHANGED),
        "failed": malformed + outcomes.count(Outcome.FAILED),
        "published": published,
        "submitted": len(submitted),
        "firestore_reads": store.reads,
        "repairs": {key: value for key, value in repairs.items() if value},
    }
    level = logging.WARNING if summary["failed"] or summary["repairs"] else logging.INFO
    log.log(level, "poll tick", extra=summary)
    return summary


def _active_jobs(store: JobStore) -> tuple[list[JobRecord], int]:
    """The active jobs that are valid JobRecords, and how many documents were not.

    Validated one by one (not ``JobStore.with_status``, which fails the whole query on one bad
    document), so a malformed document costs only itself.
    """
    query = store.jobs.where(filter=FieldFilter("status", "in", sorted(ACTIVE)))
    snapshots = list(query.stream())
    store.reads += max(1, len(snapshots))  # what Firestore bills: an empty result is one read
    jobs = []
    for snapshot in snapshots:
        try:
            jobs.append(JobRecord.model_validate(snapshot.to_dict()))
        except ValidationError as exc:
            log.error("malformed job document skipped: %s", exc, extra={"job_id": snapshot.id})
    return jobs, len(snapshots) - len(jobs)


def _refresh_isolated(
    job: JobRecord, store: JobStore, client: genai.Client, stall_after_s: int, wait_notice_after_s: int
) -> Outcome:
    """Refresh one job; whatever goes wrong is logged with its job_id and stays with that job."""
    try:
        event = _refresh(job, store, client, stall_after_s, wait_notice_after_s)
    except Exception:  # one job's failed write must not cost the others their refresh
        log.exception("could not refresh the job", extra={"job_id": job.job_id, "dataset_id": job.dataset_id})
        return Outcome.FAILED
    return Outcome.UNCHANGED if event is None else Outcome.CHANGED


def _refresh(
    job: JobRecord, store: JobStore, client: genai.Client, stall_after_s: int, wait_notice_after_s: int
) -> JobEventV1 | None:
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
        fields = observed_fields(tuning_job)
        state = tuning_job.state.value if tuning_job.state else job.status
        sub_state = fields.pop("tuning_job_state", None)
        changed = _record_sub_state(job, store, sub_state, state)
        waiting = sub_state in WAITING_SUB_STATES
        # The document was read by this tick's query: only a forward change needs a transaction.
        event = (
            store.record_transition(job.job_id, state, fields=fields, detail="observed")
            if is_forward(job.status, state)
            else None
        )
        if event is not None:
            log.info("job state changed", extra={"state": state, "previous_state": event.previous_state})
            return event
        progress = progress_marker(tuning_job)
        moved = progress != job.progress_marker
        if moved:
            store.touch(
                job.job_id, {**fields, "progress_marker": progress, "last_progress_at": datetime.now(UTC)}
            )
        if changed:
            pass  # a new sub-state is progress: the next tick judges the wait or the stall
        elif waiting:
            # Waiting for quota or capacity is not a stall: one notice of its own says so.
            _alert_waiting(store, job, wait_notice_after_s)
        elif (
            not moved
            and job.last_progress_at
            and datetime.now(UTC) - job.last_progress_at > timedelta(seconds=stall_after_s)
        ):
            _alert_stalled(store, job)
        return None


def _record_sub_state(job: JobRecord, store: JobStore, sub_state: str | None, state: str) -> bool:
    """Records a new running sub-state (``tuning_job_state``) with when it began, appended to the
    job's ``sub_states``; returns whether it changed (then this tick raises no alert: the record
    it read is from before the change)."""
    if sub_state is None:
        return False
    if sub_state != job.tuning_job_state:
        now = datetime.now(UTC)
        entry = SubStateEntry(sub_state=sub_state, state=state, at=now)
        store.touch(
            job.job_id,
            {
                "tuning_job_state": sub_state,
                "tuning_job_state_since": now,
                "sub_states": [*(e.model_dump() for e in job.sub_states), entry.model_dump()],
                # A new sub-state is progress: a job that starts tuning after a long wait for
                # quota has not stalled.
                "last_progress_at": now,
            },
        )
        log.info("job sub-state changed", extra={"tuning_job_state": sub_state, "state": state})
        return True
    return False


def _alert_waiting(store: JobStore, job: JobRecord, wait_notice_after_s: int) -> None:
    """One notice per wait, once the job has waited ``wait_notice_after_s`` in the same sub-state."""
    since = job.tuning_job_state_since
    if since is None or datetime.now(UTC) - since <= timedelta(seconds=wait_notice_after_s):
        return
    if job.waiting_alerted_at is not None and job.waiting_alerted_at >= since:
        return
    event = _alert_event(
        job, tuning_job_state=job.tuning_job_state, error=f"{job.tuning_job_state} since {since.isoformat()}"
    )
    log.warning(
        "job waits for Vertex AI", extra={"tuning_job_state": job.tuning_job_state, "since": str(since)}
    )
    store.add_alert(job.job_id, event)


def _alert_stalled(store: JobStore, job: JobRecord) -> None:
    """One ``stalled`` event per stall (a new stall after progress gets a new one)."""
    if job.stalled_alerted_at and job.last_progress_at and job.stalled_alerted_at >= job.last_progress_at:
        return
    event = _alert_event(
        job,
        error=f"no progress since {job.last_progress_at.isoformat() if job.last_progress_at else 'submission'}",
    )
    log.warning("job stalled", extra={"last_progress_at": str(job.last_progress_at)})
    store.add_alert(job.job_id, event)


def _alert_event(job: JobRecord, *, error: str, tuning_job_state: str | None = None) -> JobEventV1:
    """The ``stalled`` job-event of an alert about ``job`` (a wait carries its sub-state)."""
    return JobEventV1(
        job_id=job.job_id,
        dataset_id=job.dataset_id,
        sequence=job.sequence,
        state=job.status,
        kind="stalled",
        tuning_job_state=tuning_job_state,
        tuning_job_name=job.tuning_job_name,
        error=error,
    )

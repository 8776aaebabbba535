"""What completion tells people: a job not evaluated (and why), a stalled job, an evaluation's
result. Each notice is sent once per destination, however often the event comes
(``shared.notify.notifier.notify_once``; claims in ``shared.idempotency``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.evaluation.record import evaluation_ref
from shared.evaluation.report import EvaluationSummary
from shared.idempotency import IdempotencyStore
from shared.logging import get_logger
from shared.messages import JobEventV1, NotifyTargets
from shared.runtime import Runtime
from shared.state.jobs import TERMINAL, JobRecord

if TYPE_CHECKING:
    pass

log = get_logger("sftpipe.completion")


def notify_not_evaluated(
    job: JobRecord, runtime: Runtime, *, state: str, status: str, reason: str
) -> dict[str, Any]:
    settings = runtime.settings
    short_state = state.removeprefix("JOB_STATE_").lower()
    store = IdempotencyStore.from_settings(runtime.firestore, settings)

    def notify_ended() -> dict[str, Any]:
        from shared.notify.content import JobEndedOutcome
        from shared.notify.notifier import notify_once

        ref = evaluation_ref(runtime, job.job_id)
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
            duration_s=tuning_duration(job),
            tuning_job_name=job.tuning_job_name,
            link=console_link(runtime, job),
        )
        notify_once(ref, outcome, settings, notify_targets(job))
        log.info("job not evaluated, notified", extra={"state": state, "reason": reason})
        return {"job_id": job.job_id, "status": status, "state": state}

    return store.run_once(f"completion-{job.job_id}-{short_state}", notify_ended)


def notify_stalled(job: JobRecord, event: JobEventV1, runtime: Runtime) -> dict[str, Any] | None:
    """Tell people a job stopped making progress: once per stall, whatever the deliveries.

    Recorded on ``jobs/{job_id}`` (``notifications_sent``, keyed by the alert's time), not on the
    evaluation document, which must not exist before the job ends. The claim makes two copies
    delivered at once send one notice.
    """
    moved_on = event.tuning_job_state is not None and job.tuning_job_state != event.tuning_job_state
    if (
        job.status in TERMINAL
        or moved_on
        or (job.last_progress_at and job.last_progress_at > event.occurred_at)
    ):
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
            waiting=event.tuning_job_state,
            waiting_since=job.tuning_job_state_since if event.tuning_job_state else None,
            tuning_job_name=job.tuning_job_name or event.tuning_job_name,
            link=console_link(runtime, job),
        )
        ref = runtime.firestore.collection(settings.jobs_collection).document(job.job_id)
        notify_once(ref, outcome, settings, notify_targets(job))
        log.info("stalled job notified", extra={"state": event.state, "event_key": outcome.event_key})
        return {"job_id": job.job_id, "status": "STALLED", "state": event.state}

    return store.run_once(
        f"completion-{job.job_id}-stalled-{int(event.occurred_at.timestamp())}", notify_stalled
    )


def notify_evaluated(
    ref: Any, runtime: Runtime, job: JobRecord, summary: EvaluationSummary, report_uri: str
) -> None:
    from shared.notify.content import EvaluatedOutcome
    from shared.notify.notifier import notify_once

    notify_once(
        ref, EvaluatedOutcome(summary=summary, report_url=report_uri), runtime.settings, notify_targets(job)
    )


def notify_targets(job: JobRecord) -> NotifyTargets:
    try:
        return NotifyTargets.model_validate(job.request.get("notify") or {})
    except ValueError:
        log.warning("the request's notify targets are invalid; using the deployment's defaults")
        return NotifyTargets()


def tuning_duration(job: JobRecord) -> float | None:
    begun = job.submitted_at or job.created
    if job.ended_at is None or begun is None:
        return None
    return (job.ended_at - begun).total_seconds()


def console_link(runtime: Runtime, job: JobRecord) -> str | None:
    if runtime.settings.tuning_api_url or not job.tuning_job_name:
        return None
    job_number = job.tuning_job_name.rsplit("/", 1)[-1]
    settings = runtime.settings
    return (
        f"https://console.cloud.google.com/vertex-ai/generative/language/locations/{settings.location}"
        f"/tuning/tuningJob/{job_number}?project={settings.project}"
    )

"""Firestore operations on jobs and their event outbox: claims, transitions, the FIFO queue.

Every state change is a short transaction on one job document that (a) checks the change is
forward, (b) appends to the history with the next sequence number, and (c) creates the outbox
document ``job_events/{job_id}-{sequence:06d}`` in the same commit. Publishing then claims each
outbox document with a lease in its own transaction, publishes, and marks it published, so two
overlapping poller ticks publish one message per transition, and a crash between commit and
publish is repaired by the next tick. (A crash after publishing and before marking republishes
that one event after the lease: consumers key their work on ``(job_id, state)``.)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from pydantic import ValidationError

from shared.budgets import submission_lease_s
from shared.config import Settings
from shared.logging import get_logger
from shared.messages import JobEventV1
from shared.state.jobs import (
    ACTIVE,
    BASELINE,
    FAILED,
    QUEUED,
    SUBMITTING,
    TERMINAL,
    JobRecord,
    is_forward,
    lineage_of,
)

log = get_logger("sftpipe.state")

#: Seconds an outbox claim holds before another publisher may take it over.
PUBLISH_LEASE_S = 60
OUTBOX_COLLECTION = "job_events"
#: How long published events stay in the outbox before the TTL policy deletes them.
OUTBOX_RETENTION = timedelta(days=30)


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStore:
    def __init__(self, db: firestore.Client, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        #: How long a SUBMITTING claim holds without its heartbeat (shared.budgets.submission_lease_s).
        self.submit_lease = timedelta(seconds=submission_lease_s(settings.idempotency_lease_s))
        self.jobs = db.collection(settings.jobs_collection)
        self.outbox = db.collection(OUTBOX_COLLECTION)
        #: Documents read by this store (what Firestore bills); the poller reports it per tick.
        self.reads = 0

    def _count_reads(self, documents: list[Any]) -> list[Any]:
        self.reads += max(1, len(documents))  # an empty query result is billed as one read
        return documents

    # ---------------------------------------------------------------------------------- reads
    def get(self, job_id: str) -> JobRecord | None:
        snapshot = self.jobs.document(job_id).get()
        self.reads += 1
        return JobRecord.model_validate(snapshot.to_dict()) if snapshot.exists else None

    def with_status(self, statuses: Iterable[str]) -> list[JobRecord]:
        """Jobs in the given statuses: one indexed query, its cost grows with the matches only."""
        query = self.jobs.where(filter=FieldFilter("status", "in", sorted(statuses)))
        return [JobRecord.model_validate(doc.to_dict()) for doc in self._count_reads(list(query.stream()))]

    def recent(self, limit: int = 50) -> list[JobRecord]:
        query = self.jobs.order_by("created", direction=firestore.Query.DESCENDING).limit(limit)
        return [JobRecord.model_validate(doc.to_dict()) for doc in query.stream()]

    # ---------------------------------------------------------------------------------- writes
    def create_queued(
        self,
        job_id: str,
        request: dict[str, Any],
        dataset_id: str,
        base_model: str,
        *,
        baseline: bool = False,
    ) -> bool:
        """Create the job as QUEUED (sequence 0) with its outbox event; False if it already exists.

        ``baseline``: created as BASELINE instead; completion scores the base model first and then
        moves it to QUEUED (or BASELINE_MET), and no dispatch claims it before.
        """
        return self._create(
            job_id,
            request,
            dataset_id,
            base_model,
            failed_reason=None,
            first=BASELINE if baseline else QUEUED,
        )

    def create_failed(
        self, job_id: str, request: dict[str, Any], dataset_id: str, base_model: str, reason: str
    ) -> bool:
        """Create the job already FAILED with ``reason`` (a request that can never be submitted),
        with its QUEUED and FAILED events, in one commit: no dispatch can claim it in between.
        False if the job exists."""
        return self._create(job_id, request, dataset_id, base_model, failed_reason=reason)

    def _create(
        self,
        job_id: str,
        request: dict[str, Any],
        dataset_id: str,
        base_model: str,
        *,
        failed_reason: str | None,
        first: str = QUEUED,
    ) -> bool:
        now = utcnow()
        history = [{"sequence": 0, "state": first, "at": now, "detail": "request received"}]
        events = [JobEventV1(job_id=job_id, dataset_id=dataset_id, sequence=0, state=first, occurred_at=now)]
        if failed_reason is not None:
            history.append({"sequence": 1, "state": FAILED, "at": now, "detail": failed_reason})
            events.append(
                JobEventV1(
                    job_id=job_id,
                    dataset_id=dataset_id,
                    sequence=1,
                    state=FAILED,
                    previous_state=first,
                    terminal=True,
                    error=failed_reason,
                    occurred_at=now,
                )
            )
        record = JobRecord(
            job_id=job_id,
            dataset_id=dataset_id,
            request=request,
            base_model=base_model,
            status=first if failed_reason is None else FAILED,
            sequence=len(events) - 1,
            error=failed_reason,
            created=now,
            updated=now,
            queued_at=now,
            last_progress_at=now,
            ended_at=None if failed_reason is None else now,
            lineage=lineage_of(request),
        ).model_dump(mode="python")
        record["history"] = history
        if failed_reason is not None:
            record["awaiting_completion"] = True  # until the reconciler sees completion's record
        batch = self.db.batch()
        batch.create(self.jobs.document(job_id), record)
        for event in events:
            batch.create(self.outbox.document(_outbox_id(job_id, event.sequence)), _outbox_doc(event))
        try:
            batch.commit()
        except gexc.AlreadyExists:
            return False
        return True

    def claim_for_submission(
        self, free_slots_of: Callable[[int], int], *, max_claims: int = 1
    ) -> list[JobRecord]:
        """Move at most ``max_claims`` jobs to SUBMITTING: SUBMITTING ones whose claim expired
        first (their slot is their own), then the oldest QUEUED ones for the free slots.

        One transaction counts the active jobs (an aggregation: one read per 1,000 jobs), reads
        the SUBMITTING ones and the head of the queue, so concurrent tuners and pollers never
        hand out more slots than ``free_slots_of(active_count)``, and jobs leave the queue in
        arrival order. Callers claim one job at a time (the default) and submit it before the
        next claim, so that every claim's lease starts with its own submission.
        """
        now = utcnow()
        lease = now + self.submit_lease

        @firestore.transactional
        def claim(transaction: firestore.Transaction) -> list[JobRecord]:
            active = list(
                self.jobs.where(filter=FieldFilter("status", "in", sorted(ACTIVE))).stream(
                    transaction=transaction
                )
            )
            expired = [
                doc
                for doc in active
                if doc.get("status") == SUBMITTING and (doc.to_dict().get("submit_lease") or now) <= now
            ][:max_claims]
            free = min(max(0, free_slots_of(len(active))), max_claims - len(expired))
            queued = []
            if free > 0:
                query = (
                    self.jobs.where(filter=FieldFilter("status", "==", QUEUED))
                    .order_by("queued_at")
                    .limit(free)
                )
                queued = self._count_reads(list(query.stream(transaction=transaction)))
            claimed = []
            for doc in [*expired, *queued]:
                try:
                    JobRecord.model_validate(doc.to_dict())
                except ValidationError as exc:
                    _fail_malformed(transaction, doc, exc, now)
                    continue
                owner = uuid.uuid4().hex
                transaction.update(
                    doc.reference,
                    {"status": SUBMITTING, "submit_lease": lease, "submit_owner": owner, "updated": now},
                )
                claimed.append(
                    JobRecord.model_validate({**doc.to_dict(), "status": SUBMITTING, "submit_owner": owner})
                )
            return claimed

        return claim(self.db.transaction())

    def renew_submission(self, job_id: str, owner: str | None) -> bool:
        """Extend ``owner``'s SUBMITTING claim by a lease; False when the claim is not theirs any
        more (taken over after it expired, or already settled)."""

        @firestore.transactional
        def renew(transaction: firestore.Transaction) -> bool:
            ref = self.jobs.document(job_id)
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                return False
            current = snapshot.to_dict()
            if current.get("status") != SUBMITTING or current.get("submit_owner") != owner:
                return False
            transaction.update(ref, {"submit_lease": utcnow() + self.submit_lease})
            return True

        return renew(self.db.transaction())

    def mark_unclear_create(self, job_id: str, owner: str | None, at: datetime) -> None:
        """Remember that a create by ``owner`` may have made a job that no lookup found yet: no
        other create is allowed until a lookup ``CREATE_SETTLE_S`` later still finds nothing."""

        @firestore.transactional
        def mark(transaction: firestore.Transaction) -> None:
            ref = self.jobs.document(job_id)
            snapshot = ref.get(transaction=transaction)
            if snapshot.exists and snapshot.to_dict().get("submit_owner") == owner:
                transaction.update(ref, {"create_unclear_at": at})

        mark(self.db.transaction())

    def release_to_queue(self, job_id: str, reason: str, *, owner: str | None) -> None:
        """Give a SUBMITTING job back to the queue (quota full at Vertex, or a transient error).

        Not a transition (no event): the job never left QUEUED as far as anyone outside knows.
        It keeps its ``queued_at``, so it stays at the head of the line. Only the claim's
        ``owner`` may: a holder whose lease expired must not undo the claim of the one after it.
        """

        @firestore.transactional
        def release(transaction: firestore.Transaction) -> None:
            ref = self.jobs.document(job_id)
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists or snapshot.get("status") != SUBMITTING:
                return
            if snapshot.to_dict().get("submit_owner") != owner:
                log.warning("claim taken over by another submission: not released", extra={"job_id": job_id})
                return
            transaction.update(
                ref,
                {
                    "status": QUEUED,
                    "submit_lease": None,
                    "submit_owner": None,
                    "requeue_reason": reason,
                    "updated": utcnow(),
                },
            )

        release(self.db.transaction())

    def record_transition(
        self,
        job_id: str,
        new_state: str,
        *,
        fields: dict[str, Any] | None = None,
        detail: str | None = None,
        allow_from: Iterable[str] | None = None,
        submit_owner: str | None = None,
    ) -> JobEventV1 | None:
        """Record a forward change (with its outbox event) and return the event, or None if the
        job is already there or further (a stale or duplicate observation), or, with
        ``submit_owner``, if that submission's claim was taken over since."""
        fields = fields or {}

        @firestore.transactional
        def apply(transaction: firestore.Transaction) -> JobEventV1 | None:
            ref = self.jobs.document(job_id)
            snapshot = ref.get(transaction=transaction)
            self.reads += 1
            if not snapshot.exists:
                return None
            current = snapshot.to_dict()
            status = current["status"]
            if allow_from is not None and status not in allow_from:
                return None
            if submit_owner is not None and current.get("submit_owner") != submit_owner:
                return None
            if not is_forward(status, new_state):
                return None
            now = utcnow()
            sequence = int(current.get("sequence", 0)) + 1
            event = JobEventV1(
                job_id=job_id,
                dataset_id=current["dataset_id"],
                sequence=sequence,
                state=new_state,
                previous_state=status,
                terminal=new_state in TERMINAL,
                tuning_job_name=fields.get("tuning_job_name", current.get("tuning_job_name")),
                tuned_model=fields.get("tuned_model", current.get("tuned_model")),
                tuned_endpoint=fields.get("tuned_endpoint", current.get("tuned_endpoint")),
                error=fields.get("error", current.get("error")),
                occurred_at=now,
            )
            update = {
                **fields,
                "status": new_state,
                "sequence": sequence,
                "history": firestore.ArrayUnion(
                    [{"sequence": sequence, "state": new_state, "at": now, "detail": detail}]
                ),
                "updated": now,
                "last_progress_at": now,
                "submit_lease": None,
            }
            if new_state in TERMINAL:
                update["ended_at"] = now
                # Until the reconciler sees completion's record of it (shared/reconcile.py).
                update["awaiting_completion"] = True
            transaction.update(ref, update)
            transaction.create(self.outbox.document(_outbox_id(job_id, sequence)), _outbox_doc(event))
            return event

        return apply(self.db.transaction())

    def touch(self, job_id: str, fields: dict[str, Any]) -> None:
        """Update non-state fields (progress, checkpoints) of a job."""
        self.jobs.document(job_id).update({**fields, "updated": utcnow()})

    def add_alert(self, job_id: str, event: JobEventV1) -> None:
        """Record a stall (or long-wait) alert on the job and queue its event (not a transition:
        no sequence). A wait alert carries the waiting sub-state and has a marker of its own."""
        waiting = event.tuning_job_state is not None
        marker = "waiting_alerted_at" if waiting else "stalled_alerted_at"
        batch = self.db.batch()
        batch.update(self.jobs.document(job_id), {marker: event.occurred_at})
        alert_id = f"{job_id}-{'waiting' if waiting else 'stalled'}-{int(event.occurred_at.timestamp())}"
        batch.create(self.outbox.document(alert_id), _outbox_doc(event))
        batch.commit()

    # ---------------------------------------------------------------------------------- outbox
    def pending_events(self) -> list[str]:
        query = self.outbox.where(filter=FieldFilter("published", "==", False))
        return [doc.id for doc in self._count_reads(list(query.stream()))]

    def publish_pending(
        self, publish: Callable[[JobEventV1], str], outbox_ids: Iterable[str] | None = None
    ) -> int:
        """Publish each unpublished event once; returns how many this call published."""
        published = 0
        for outbox_id in sorted(outbox_ids if outbox_ids is not None else self.pending_events()):
            event = self._claim_outbox(outbox_id)
            if event is None:
                continue
            publish(event)
            self.outbox.document(outbox_id).update({"published": True, "published_at": utcnow()})
            published += 1
        return published

    def _claim_outbox(self, outbox_id: str) -> JobEventV1 | None:
        now = utcnow()

        @firestore.transactional
        def claim(transaction: firestore.Transaction) -> JobEventV1 | None:
            ref = self.outbox.document(outbox_id)
            snapshot = ref.get(transaction=transaction)
            self.reads += 1
            if not snapshot.exists:
                return None
            entry = snapshot.to_dict()
            if entry.get("published") or (entry.get("claimed_until") and entry["claimed_until"] > now):
                return None
            transaction.update(ref, {"claimed_until": now + timedelta(seconds=PUBLISH_LEASE_S)})
            return JobEventV1.model_validate(entry["event"])

        return claim(self.db.transaction())


def _outbox_id(job_id: str, sequence: int) -> str:
    return f"{job_id}-{sequence:06d}"


def _outbox_doc(event: JobEventV1) -> dict[str, Any]:
    return {
        "job_id": event.job_id,
        "sequence": event.sequence,
        "event": event.model_dump(mode="json", by_alias=True),
        "published": False,
        "claimed_until": None,
        "created": utcnow(),
        # A TTL policy (deploy/firestore.tf) deletes old outbox entries.
        "expire_at": utcnow() + OUTBOX_RETENTION,
    }


def _fail_malformed(
    transaction: firestore.Transaction, doc: Any, exc: ValidationError, now: datetime
) -> None:
    """A queued document that is not a JobRecord (edited by hand, or from an incompatible
    version) can never be submitted; left QUEUED it would head the queue and fail every dispatch.
    It is ended FAILED with the reason; without a valid record there is no event to publish, so
    the ERROR line (with its job_id) is what tells an operator."""
    reason = f"malformed job document, not submitted: {exc.error_count()} invalid field(s): " + "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()[:5]
    )
    log.error(reason, extra={"job_id": doc.id})
    transaction.update(
        doc.reference,
        {"status": FAILED, "error": reason, "ended_at": now, "updated": now},
    )

"""The evaluation record, ``evaluations/{job_id}``, and its lease.

One invocation works on an evaluation at a time: :func:`acquire` creates the record on first
sight or takes its lease (an expired one is taken over), :func:`renew_lease` is the heartbeat,
:func:`advance` commits a chunk (the cursor moves only from the chunk's own start, and only for
the lease holder), :func:`release` gives the lease back. Any of them finding the lease gone
raises :class:`LeaseLostError`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc

from shared.errors import AlreadyInProgressError
from shared.evaluation.inputs import test_file_facts
from shared.evaluation.runner import (
    chunk_name,
    next_cursor,
)
from shared.logging import get_logger
from shared.runtime import Runtime
from shared.state.jobs import JobRecord

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


class LeaseLostError(Exception):
    """Another invocation took this evaluation over (this one outlived its lease): stop quietly."""


def evaluation_ref(runtime: Runtime, job_id: str) -> firestore.DocumentReference:
    return runtime.firestore.collection(runtime.settings.evaluations_collection).document(job_id)


def acquire(
    ref: Any, runtime: Runtime, job: JobRecord, owner: str, message_cursor: int
) -> dict[str, Any] | None:
    """Take the evaluation's lease (creating the record on first sight); None: nothing to do."""
    from google.cloud import firestore

    lease = timedelta(seconds=runtime.settings.idempotency_lease_s)
    snapshot = ref.get()
    if not snapshot.exists:
        test_uri = job.request["test_uri"]
        generation, total = test_file_facts(runtime, test_uri)
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


def renew_lease(ref: Any, runtime: Runtime, owner: str) -> bool:
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


def advance(
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


def release(ref: Any, runtime: Runtime, owner: str) -> None:
    """Give the lease back if this invocation still holds it (best effort: it expires anyway).

    In a transaction, which Firestore retries on contention: a heartbeat's renewal that lands
    between the read and the write (one every few seconds with a short lease) must not leave
    the lease held until it expires, delaying the continuation that follows."""
    from google.cloud import firestore

    @firestore.transactional
    def give_back(transaction: firestore.Transaction) -> None:
        snapshot = ref.get(transaction=transaction)
        if snapshot.exists and snapshot.to_dict().get("lease_owner") == owner:
            transaction.update(ref, {"lease_owner": None, "lease_expires": None})

    try:
        give_back(runtime.firestore.transaction())
    except (gexc.FailedPrecondition, gexc.NotFound, gexc.GoogleAPICallError, ValueError):
        log.warning("could not release the evaluation lease; it will expire", exc_info=True)

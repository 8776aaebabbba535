"""Run a handler once per key, however often and however concurrently its event is delivered.

The flow of Powertools' idempotency utility, on Firestore:
1. claim the key with ``create()`` (fails if the document exists) as IN_PROGRESS with a short
   lease that a heartbeat renews while the handler runs (``shared.leases``): a live handler
   keeps its claim, a killed one's lapses within a lease;
2. if it exists: COMPLETED returns the stored result, FAILED re-raises the stored permanent
   error, IN_PROGRESS within its lease raises :class:`AlreadyInProgressError` (transient: the
   platform redelivers later), an expired lease is taken over with an update-time precondition;
3. run the handler: on success store the result as COMPLETED; on a permanent error store it as
   FAILED (a duplicate gets the same answer, not a second attempt); on any other exception delete
   the claim (only if still ours) so that the redelivery can run.
Claims carry ``expire_at`` for a Firestore TTL policy (deploy/ creates it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry

from shared.budgets import claim_call_timeout_s, heartbeat_interval_s
from shared.errors import AlreadyInProgressError, PermanentError
from shared.leases import Heartbeat
from shared.logging import get_logger

if TYPE_CHECKING:
    from google.cloud import firestore

    from shared.config import Settings

IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
#: How long finished claims are kept before the TTL policy deletes them.
RECORD_RETENTION = timedelta(days=30)

log = get_logger("sftpipe.idempotency")


class IdempotencyStore:
    def __init__(
        self, db: firestore.Client, collection: str, lease_s: int, *, max_hold_s: float = 3600.0
    ) -> None:
        """``lease_s``: how long a claim holds without its heartbeat; ``max_hold_s``: how long
        the heartbeat may keep it (the handler's worst case, e.g. the function's timeout)."""
        self._db = db
        self._collection = collection
        self._lease = timedelta(seconds=lease_s)
        self._max_hold_s = max_hold_s
        # The claim's create and get, the first Firestore calls of a delivery, are bounded by
        # shared.budgets.claim_call_timeout_s (the client's defaults: 60 s and 300 s per attempt,
        # retried for a minute): a delivery that cannot reach Firestore fails soon, and the
        # platform redelivers it later with its own backoff.
        bound = claim_call_timeout_s(lease_s)
        self._claim_call: dict[str, Any] = {
            "retry": gretry.Retry(
                predicate=gretry.if_transient_error, initial=0.2, maximum=4.0, timeout=bound
            ),
            "timeout": bound,
        }

    @classmethod
    def from_settings(cls, db: firestore.Client, settings: Settings) -> IdempotencyStore:
        """The deployment's store: its collection and lease, held at most one function timeout."""
        return cls(
            db,
            settings.idempotency_collection,
            settings.idempotency_lease_s,
            max_hold_s=settings.function_timeout_s,
        )

    def run_once(self, key: str, handler: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``handler`` at most once to completion for ``key`` and return its (stored) result."""
        ref = self._db.collection(self._collection).document(key)
        owner = uuid.uuid4().hex
        stored = self._claim(ref, key, owner)
        if stored is not None:
            return stored
        heartbeat = Heartbeat(
            lambda: self._renew(ref, owner),
            max_hold_s=self._max_hold_s,
            interval_s=heartbeat_interval_s(self._lease.total_seconds()),
            what=f"claim {key}",
        )
        try:
            with heartbeat:
                result = handler()
        except PermanentError as exc:
            self._finish(
                ref,
                owner,
                {"status": FAILED, "error": exc.to_dict(), "error_type": type(exc).__name__},
            )
            raise
        except BaseException:
            self._release(ref, owner)
            raise
        self._finish(ref, owner, {"status": COMPLETED, "result": result})
        return result

    def _claim(self, ref: Any, key: str, owner: str) -> dict[str, Any] | None:
        """Claim ``key``; returns None (the claim is ours) or the stored result of a duplicate."""
        now = datetime.now(UTC)
        record = {
            "status": IN_PROGRESS,
            "owner": owner,
            "lease_expires": now + self._lease,
            "created": now,
            "expire_at": now + RECORD_RETENTION,
        }
        try:
            ref.create(record, **self._claim_call)
            return None
        except gexc.AlreadyExists:
            pass
        snapshot = ref.get(**self._claim_call)
        if not snapshot.exists:  # deleted by a failed attempt between our create and get
            return self._claim(ref, key, owner)
        existing = snapshot.to_dict()
        status = existing.get("status")
        if status == COMPLETED:
            log.info("duplicate delivery: returning stored result", extra={"idempotency_key": key})
            return existing.get("result") or {}
        if status == FAILED:
            error = existing.get("error") or {}
            log.info("duplicate delivery of a failed event", extra={"idempotency_key": key})
            raise PermanentError(
                error.get("message", "failed earlier"),
                code=error.get("code"),
                field=error.get("field"),
            )
        now = datetime.now(UTC)  # after the calls: the lease taken over starts when it is taken
        if existing.get("lease_expires") and existing["lease_expires"] > now:
            raise AlreadyInProgressError(
                f"{key} is being handled by another delivery until {existing['lease_expires'].isoformat()}"
            )
        # The holder died without releasing its claim: take it over, unless someone else just did.
        try:
            ref.update(
                {"owner": owner, "lease_expires": now + self._lease, "taken_over": now},
                option=self._db.write_option(last_update_time=snapshot.update_time),
            )
        except (gexc.FailedPrecondition, gexc.NotFound) as exc:
            raise AlreadyInProgressError(f"{key} was taken over by another delivery") from exc
        log.warning("took over an expired idempotency claim", extra={"idempotency_key": key})
        return None

    def _finish(self, ref: Any, owner: str, fields: dict[str, Any]) -> None:
        ref.update({**fields, "finished": datetime.now(UTC), "owner": owner})

    def _renew(self, ref: Any, owner: str) -> bool:
        """Extend our IN_PROGRESS claim by a lease (the heartbeat); False once it is not ours."""
        return self._if_ours(
            ref, owner, lambda t: t.update(ref, {"lease_expires": datetime.now(UTC) + self._lease})
        )

    def _release(self, ref: Any, owner: str) -> None:
        """Delete our claim so that the redelivery can run; never someone else's."""
        try:
            if not self._if_ours(ref, owner, lambda t: t.delete(ref)):
                log.warning("idempotency claim was taken over before it could be released")
        except gexc.GoogleAPICallError:
            log.warning("could not release the idempotency claim; it expires by itself", exc_info=True)

    def _if_ours(self, ref: Any, owner: str, act: Callable[[Any], object]) -> bool:
        """In one transaction: ``act(transaction)`` if the claim is still ``owner``'s IN_PROGRESS
        one; False (and nothing done) otherwise."""
        from google.cloud import firestore

        @firestore.transactional
        def attempt(transaction: Any) -> bool:
            snapshot = ref.get(transaction=transaction)
            current = snapshot.to_dict() if snapshot.exists else None
            if not current or current.get("status") != IN_PROGRESS or current.get("owner") != owner:
                return False
            act(transaction)
            return True

        return attempt(self._db.transaction())

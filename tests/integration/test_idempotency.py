"""The idempotency utility against the Firestore emulator: duplicates, races, crashes, leases."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import AlreadyInProgressError, PermanentError, TransientError
from shared.idempotency import IdempotencyStore
from shared.runtime import Runtime


def _store(runtime: Runtime, lease_s: int = 60) -> IdempotencyStore:
    return IdempotencyStore(runtime.firestore, runtime.settings.idempotency_collection, lease_s)


def test_concurrent_duplicates_run_the_handler_once(runtime: Runtime) -> None:
    store = _store(runtime)
    calls: list[int] = []
    gate = threading.Barrier(5)

    def handler() -> dict:
        calls.append(1)
        time.sleep(0.5)
        return {"dataset_id": "d1"}

    def deliver() -> object:
        gate.wait()
        try:
            return store.run_once("key-concurrent", handler)
        except AlreadyInProgressError as exc:
            return exc

    with ThreadPoolExecutor(5) as pool:
        outcomes = list(pool.map(lambda _: deliver(), range(5)))

    assert len(calls) == 1
    assert outcomes.count({"dataset_id": "d1"}) == 1
    assert all(isinstance(o, AlreadyInProgressError) for o in outcomes if o != {"dataset_id": "d1"})
    # The redelivery after the winner finished gets the stored result without running again.
    assert store.run_once("key-concurrent", handler) == {"dataset_id": "d1"}
    assert len(calls) == 1


def test_transient_failure_releases_the_claim_so_the_retry_runs(runtime: Runtime) -> None:
    store = _store(runtime)

    def flaky() -> dict:
        raise TransientError("storage unavailable")

    with pytest.raises(TransientError):
        store.run_once("key-flaky", flaky)

    assert store.run_once("key-flaky", lambda: {"ok": True}) == {"ok": True}


def test_permanent_failure_is_stored_and_replayed_without_running_again(runtime: Runtime) -> None:
    store = _store(runtime)
    calls: list[int] = []

    def reject() -> dict:
        calls.append(1)
        raise PermanentError("line 3: contents: missing", code="missing_contents_list", field="contents")

    with pytest.raises(PermanentError):
        store.run_once("key-bad", reject)
    with pytest.raises(PermanentError) as replay:
        store.run_once("key-bad", reject)

    assert len(calls) == 1
    assert (replay.value.code, replay.value.field) == ("missing_contents_list", "contents")


def test_expired_claim_of_a_crashed_holder_is_taken_over(runtime: Runtime) -> None:
    store = _store(runtime, lease_s=1)
    ref = runtime.firestore.collection(runtime.settings.idempotency_collection).document("key-crashed")
    # Long enough that a slow machine still makes the first attempt inside the lease.
    expires = datetime.now(UTC) + timedelta(seconds=5)
    ref.create({"status": "IN_PROGRESS", "owner": "dead", "lease_expires": expires})

    with pytest.raises(AlreadyInProgressError):
        store.run_once("key-crashed", lambda: {"ran": True})
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)

    assert store.run_once("key-crashed", lambda: {"ran": True}) == {"ran": True}
    assert ref.get().to_dict()["status"] == "COMPLETED"

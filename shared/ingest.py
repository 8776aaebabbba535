"""Entry point of the ingest function: one finalized upload -> one dataset record.

This is the foundation's minimal ingest: it decides which objects start a run and records each
one exactly once. Conversion, validation, the split and the tuning request build on it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.events import GCS_NOTIFICATION_FINALIZE, StorageObject
from shared.idempotency import IdempotencyStore
from shared.logging import bind, get_logger
from shared.runtime import Runtime

log = get_logger("sftpipe.ingest")

RECEIVED = "RECEIVED"


def skip_reason(obj: StorageObject, event_type: str, incoming_prefix: str) -> str | None:
    """Why this object does not start a run, or None if it does."""
    if event_type != GCS_NOTIFICATION_FINALIZE:
        return f"event type {event_type} is not a finalize"
    if not obj.name.startswith(incoming_prefix):
        return f"object is outside {incoming_prefix}"
    if obj.name.endswith("/"):
        return "object is a folder placeholder"
    if obj.size == 0:
        return "object is empty (zero bytes)"
    return None


def ingest_upload(obj: StorageObject, event_type: str, runtime: Runtime) -> dict[str, Any] | None:
    """Handle one upload event; returns the dataset summary, or None when the object is skipped."""
    settings = runtime.settings
    reason = skip_reason(obj, event_type, settings.incoming_prefix)
    if reason:
        log.info("upload ignored: %s", reason, extra={"object": obj.uri})
        return None
    dataset_id = obj.dataset_id
    bind(dataset_id=dataset_id)
    store = IdempotencyStore(runtime.firestore, settings.idempotency_collection, settings.idempotency_lease_s)
    return store.run_once(f"ingest-{dataset_id}", lambda: _record_dataset(obj, runtime))


def _record_dataset(obj: StorageObject, runtime: Runtime) -> dict[str, Any]:
    now = datetime.now(UTC)
    document = {
        "dataset_id": obj.dataset_id,
        "source_uri": obj.uri,
        "source_generation": obj.generation,
        "source_size": obj.size,
        "source_metadata": dict(obj.metadata),
        "status": RECEIVED,
        "created": now,
        "updated": now,
    }
    runtime.firestore.collection(runtime.settings.datasets_collection).document(obj.dataset_id).set(document)
    log.info("dataset recorded", extra={"object": obj.uri})
    return {"dataset_id": obj.dataset_id, "status": RECEIVED}

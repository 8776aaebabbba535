"""Entry point of the ingest function: one finalized upload -> one prepared dataset and one request.

For an object under ``incoming/`` (not empty, not a folder placeholder):
1. claim ``ingest-<dataset_id>`` (``shared.idempotency``): duplicates and concurrent copies of the
   event get the stored result;
2. record ``datasets/<dataset_id>`` as VALIDATING;
3. check the size from the object's metadata, parse the per-upload settings (custom metadata),
   then validate and convert with ``shared.datasets.prepare_and_write``: a validate-only pass,
   and only for a valid file a second pass writing ``prepared/<dataset_id>/{train,validation,
   test}.jsonl``. Writers are committed only after that pass succeeded, so a crash leaves no
   partial object; the generation read is pinned to the event's;
4. write ``report.json`` and ``report.md`` next to them (for a rejection too);
5. READY: publish one ``tuning-request/v1``; REJECTED: notify (once per channel, recorded on the
   dataset document) and acknowledge, never retry.
A transient failure (GCS, Firestore or Pub/Sub unavailable) raises: the claim is released and
the redelivered event does the work again, overwriting what an earlier attempt wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from shared.datasets import (
    PrepareOptions,
    PrepareResult,
    UploadSettingsError,
    check_size,
    parse_object_metadata,
    prepare_and_write,
    render_report,
)
from shared.datasets.issues import Issue
from shared.events import GCS_NOTIFICATION_FINALIZE, StorageObject
from shared.idempotency import IdempotencyStore
from shared.logging import bind, get_logger
from shared.messages import Hyperparameters, NotifyTargets, TuningRequestV1
from shared.runtime import Runtime

log = get_logger("sftpipe.ingest")

VALIDATING = "VALIDATING"
READY = "READY"
REJECTED = "REJECTED"
SPLITS = ("train", "validation", "test")
#: Errors quoted in a rejection notification (the report lists them all, up to its own cap).
NOTIFIED_ERRORS = 5


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
    bind(dataset_id=obj.dataset_id)
    store = IdempotencyStore(runtime.firestore, settings.idempotency_collection, settings.idempotency_lease_s)
    return store.run_once(f"ingest-{obj.dataset_id}", lambda: _ingest(obj, runtime))


def _ingest(obj: StorageObject, runtime: Runtime) -> dict[str, Any]:
    settings = runtime.settings
    dataset_ref = runtime.firestore.collection(settings.datasets_collection).document(obj.dataset_id)
    now = datetime.now(UTC)
    dataset_ref.set(
        {
            "dataset_id": obj.dataset_id,
            "source_uri": obj.uri,
            "source_generation": obj.generation,
            "source_size": obj.size,
            "source_metadata": dict(obj.metadata),
            "status": VALIDATING,
            "created": now,
            "updated": now,
        },
        merge=True,
    )
    prefix = f"{settings.prepared_prefix}{obj.dataset_id}/"
    bucket = runtime.storage.bucket(settings.bucket)

    upload = None
    try:
        upload = parse_object_metadata(obj.metadata)
        options = PrepareOptions.from_settings(settings, upload)
    except UploadSettingsError as exc:
        result = _rejected_before_reading(
            obj, settings.base_model, exc.field or "metadata", exc.code, exc.message
        )
    else:
        size_issue = check_size(obj.size, options.base_model)
        if size_issue is not None:
            result = _rejected_before_reading(
                obj, options.base_model, "", size_issue.code, size_issue.message
            )
        else:
            source = bucket.blob(obj.name, generation=obj.generation)
            writers = _PreparedWriters(
                lambda split: bucket.blob(f"{prefix}{split}.jsonl").open("wb", ignore_flush=True)
            )
            try:
                result = prepare_and_write(
                    lambda: source.open("rb"),
                    filename=obj.name,
                    size=obj.size,
                    options=options,
                    sink=writers.write,
                )
            except BaseException:
                writers.abandon()
                raise
            writers.commit()

    report = orjson.dumps(result.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
    bucket.blob(f"{prefix}report.json").upload_from_string(report, content_type="application/json")
    bucket.blob(f"{prefix}report.md").upload_from_string(render_report(result), content_type="text/markdown")
    report_uri = f"gs://{settings.bucket}/{prefix}report.json"
    uris = {
        split: f"gs://{settings.bucket}/{prefix}{split}.jsonl" for split in SPLITS if _count(result, split)
    }
    summary = {
        "status": READY if result.ok else REJECTED,
        "format": result.format,
        "shape": result.shape,
        "base_model": result.base_model,
        "records_in": result.records_in,
        "examples": result.examples,
        "rejected": result.rejected,
        "duplicates": result.duplicates,
        "error_counts": result.error_counts,
        "split": result.split.model_dump(),
        "tokens": result.tokens.model_dump(mode="json"),
        "task": result.task.model_dump(mode="json") if result.task else None,
        "report_uri": report_uri,
        "prepared_uris": uris,
        "updated": datetime.now(UTC),
    }
    dataset_ref.set(summary, merge=True)

    if not result.ok:
        log.warning(
            "dataset rejected",
            extra={"error_counts": result.error_counts, "report_uri": report_uri},
        )
        _notify_rejection(
            obj, result, report_uri=report_uri, upload=upload, dataset_ref=dataset_ref, runtime=runtime
        )
        return {"dataset_id": obj.dataset_id, "status": REJECTED, "report_uri": report_uri}

    request = TuningRequestV1(
        dataset_id=obj.dataset_id,
        base_model=result.base_model,
        training_uri=uris["train"],
        validation_uri=uris.get("validation"),
        test_uri=uris.get("test"),
        hyperparameters=_hyperparameters(result, options),
        task=result.task.value if result.task else None,
        display_name=obj.name.rsplit("/", 1)[-1][:128],
        notify=NotifyTargets(emails=list(upload.notify_emails) if upload else []),
    )
    message_id = runtime.publish(settings.tuning_requests_topic, request.to_json(), **request.attributes())
    dataset_ref.set({"tuning_request_message_id": message_id, "updated": datetime.now(UTC)}, merge=True)
    log.info(
        "dataset ready, tuning request published",
        extra={"examples": result.examples, "message_id": message_id},
    )
    return {"dataset_id": obj.dataset_id, "status": READY, "message_id": message_id, "report_uri": report_uri}


class _PreparedWriters:
    """One GCS writer per split, opened on first use; objects appear only on commit()."""

    def __init__(self, open_writer: Callable[[str], IO[bytes]]) -> None:
        self._open = open_writer
        self._writers: dict[str, IO[bytes]] = {}

    def write(self, split: str, line: bytes) -> None:
        writer = self._writers.get(split)
        if writer is None:
            writer = self._writers[split] = self._open(split)
        writer.write(line)

    def commit(self) -> None:
        for writer in self._writers.values():
            writer.close()

    def abandon(self) -> None:
        # A BlobWriter that is never closed never finalizes its upload: no partial object exists.
        self._writers.clear()


def _count(result: PrepareResult, split: str) -> int:
    return int(getattr(result.split, split))


def _hyperparameters(result: PrepareResult, options: PrepareOptions) -> Hyperparameters:
    """The hyperparameters the job will use: the upload's choice, else the recommendation."""
    chosen, recommended = options.hyperparameters, result.recommended
    return Hyperparameters(
        epochs=chosen.epochs or recommended.epochs,
        learning_rate_multiplier=chosen.learning_rate_multiplier or recommended.learning_rate_multiplier,
        adapter_size=chosen.adapter_size or recommended.adapter_size,
    )


def _rejected_before_reading(
    obj: StorageObject, base_model: str, field: str, code: str, message: str
) -> PrepareResult:
    issue = Issue(line=0, field=field, code=code, message=message)
    return PrepareResult(
        ok=False,
        filename=obj.name,
        base_model=base_model,
        errors=[issue],
        error_counts={code: 1},
    )


def _notify_rejection(
    obj: StorageObject,
    result: PrepareResult,
    *,
    report_uri: str,
    upload: Any,
    dataset_ref: Any,
    runtime: Runtime,
) -> None:
    from shared.notify.content import DatasetRejectedOutcome
    from shared.notify.notifier import notify

    already = set((dataset_ref.get().to_dict() or {}).get("notifications_sent", []))
    channels = [c for c in ("slack", "email") if c not in already]
    if not channels:
        return
    outcome = DatasetRejectedOutcome(
        dataset_id=obj.dataset_id,
        source_uri=obj.uri,
        error_count=sum(result.error_counts.values()),
        top_errors=[_describe(issue) for issue in result.errors[:NOTIFIED_ERRORS]],
        report_url=report_uri,
    )
    targets = NotifyTargets(emails=list(upload.notify_emails) if upload else [])
    sent = notify(outcome, runtime.settings, targets, channels=channels)
    delivered = sorted({d.channel for d in sent.sent})
    if delivered:
        from google.cloud import firestore

        dataset_ref.update({"notifications_sent": firestore.ArrayUnion(delivered)})
    sent.raise_for_failures()


def _describe(issue: Issue) -> str:
    where = f"line {issue.line}" if issue.line else "file"
    field = f" {issue.field}" if issue.field else ""
    return f"{where}{field}: {issue.code}: {issue.message}"

"""Entry point of the ingest function: one finalized upload -> one prepared dataset and one request.

For an object under ``incoming/`` (not empty, not a folder placeholder, not a media file):
1. claim ``ingest-<dataset_id>`` (``shared.idempotency``): duplicates and concurrent copies of the
   event get the stored result;
2. record ``datasets/<dataset_id>`` as VALIDATING;
3. check the size from the object's metadata, parse the per-upload settings (custom metadata),
   then validate and convert with ``shared.datasets.prepare_and_write``: a validate-only pass,
   and only for a valid file a second pass writing ``prepared/<dataset_id>/{train,validation,
   test}.jsonl``. Writers are committed only after that pass succeeded, so a crash leaves no
   partial object; the generation read is pinned to the event's. A manifest
   (``*.tuning.json|yaml``) names several files instead and carries the settings itself:
   ``shared.ingest.manifest`` prepares them, and the writers are committed only when every file
   is valid;
4. write ``report.json`` and ``report.md`` next to them (for a rejection too; a manifest's
   report.json has each file's result and the totals);
5. READY: publish one ``tuning-request/v1``; REJECTED: notify (once per channel, recorded on the
   dataset document) and acknowledge, never retry.
A transient failure (GCS, Firestore or Pub/Sub unavailable) raises: the claim is released and
the redelivered event does the work again, overwriting what an earlier attempt wrote.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from google.api_core import exceptions as gexc
from pydantic import ValidationError

from shared.datasets import (
    PrepareOptions,
    PrepareResult,
    UploadSettings,
    UploadSettingsError,
    check_size,
    is_manifest,
    parse_object_metadata,
    prepare_and_write,
    render_report,
)
from shared.datasets.issues import Issue
from shared.datasets.report import TaskInfo
from shared.errors import ConfigurationError
from shared.evaluation.gate import gate_problem
from shared.events import GCS_NOTIFICATION_FINALIZE, StorageObject
from shared.idempotency import IdempotencyStore
from shared.ingest.manifest import ManifestReport, ReadPolicy, prepare_manifest, render_manifest_report
from shared.ingest.media_lookup import object_facts_lookup, upload_folder
from shared.logging import bind, get_logger
from shared.messages import LINEAGE_LABEL, Hyperparameters, JobOptions, NotifyTargets, Task, TuningRequestV1
from shared.runtime import Runtime

if TYPE_CHECKING:
    from google.cloud.storage.fileio import BlobWriter

    from shared.config import Settings

log = get_logger("sftpipe.ingest")

VALIDATING = "VALIDATING"
READY = "READY"
REJECTED = "REJECTED"
SPLITS = ("train", "validation", "test")
#: Error code of an accepted upload whose tuning-request/v1 cannot be valid.
INVALID_REQUEST = "invalid_tuning_request"
#: Errors quoted in a rejection notification (the report lists them all, up to its own cap).
NOTIFIED_ERRORS = 5

Sink = Callable[[str, bytes], None]


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
    media = media_type(obj)
    if media:
        # Images beside a LLaVA-style dataset are uploaded under incoming/ too: they are read by
        # the dataset that names them, and are not datasets themselves.
        return f"object is a media file ({media}), read by the dataset that names it"
    return None


#: Content types of media files (image/*, audio/*, video/*, PDF): never a dataset.
MEDIA_KINDS = ("image/", "audio/", "video/")


def media_type(obj: StorageObject) -> str | None:
    """The media type of an object, from its contentType or else its name's extension; None for
    anything that may be a dataset."""
    for mime in (obj.content_type, mimetypes.guess_type(obj.name, strict=False)[0]):
        if mime and (mime.startswith(MEDIA_KINDS) or mime == "application/pdf"):
            return mime
    return None


def ingest_upload(obj: StorageObject, event_type: str, runtime: Runtime) -> dict[str, Any] | None:
    """Handle one upload event; returns the dataset summary, or None when the object is skipped."""
    settings = runtime.settings
    reason = skip_reason(obj, event_type, settings.incoming_prefix)
    if reason:
        log.info("upload ignored: %s", reason, extra={"object": obj.uri})
        return None
    bind(dataset_id=obj.dataset_id)
    store = IdempotencyStore.from_settings(runtime.firestore, settings)
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

    writers = _PreparedWriters(
        lambda split: bucket.blob(f"{prefix}{split}.jsonl").open("wb", ignore_flush=True)
    )
    prepare_upload = _prepare_manifest if is_manifest(obj.name) else _prepare_file
    try:
        outcome = prepare_upload(obj, runtime, writers.write)
    except (gexc.NotFound, gexc.Forbidden) as exc:
        # The event's generation was deleted or replaced before it was read (a replacement has its
        # own event), or the bucket refuses this function: retrying cannot help, and a dataset
        # left VALIDATING would never be explained.
        writers.abandon()
        outcome = _file_outcome(_unreadable(obj, settings.base_model, exc), None, None)
    except BaseException:
        writers.abandon()
        raise
    uris = {
        split: f"gs://{settings.bucket}/{prefix}{split}.jsonl"
        for split in SPLITS
        if outcome.split_counts[split]
    }
    request: TuningRequestV1 | None = None
    if outcome.ok:
        outcome = _gate_checked(outcome)
    if outcome.ok:
        try:
            request = _tuning_request(obj, outcome, uris, settings)
        except ValidationError as exc:
            # Permanent: every redelivery would build the same request. Rejected and told once.
            outcome = _request_invalid(outcome, exc)
    if outcome.ok:
        writers.commit()
    else:
        writers.abandon()

    bucket.blob(f"{prefix}report.json").upload_from_string(
        outcome.report_json, content_type="application/json"
    )
    bucket.blob(f"{prefix}report.md").upload_from_string(outcome.report_md, content_type="text/markdown")
    report_uri = f"gs://{settings.bucket}/{prefix}report.json"
    summary = {
        "status": READY if outcome.ok else REJECTED,
        **outcome.facts,
        "report_uri": report_uri,
        "prepared_uris": uris,
        "updated": datetime.now(UTC),
    }
    if request is not None:
        # Kept with the dataset: the reconciler re-publishes it if no job ever came of it.
        summary["tuning_request"] = orjson.loads(request.to_json())
        summary["awaiting_job"] = True  # until the reconciler has seen a job come of it
    dataset_ref.set(summary, merge=True)

    if not outcome.ok:
        log.warning(
            "dataset rejected",
            extra={"error_counts": outcome.facts["error_counts"], "report_uri": report_uri},
        )
        _notify_rejection(obj, outcome, report_uri=report_uri, dataset_ref=dataset_ref, runtime=runtime)
        return {"dataset_id": obj.dataset_id, "status": REJECTED, "report_uri": report_uri}

    assert request is not None  # built above for every accepted upload
    message_id = runtime.publish(settings.tuning_requests_topic, request.to_json(), **request.attributes())
    dataset_ref.set(
        {
            "tuning_request_message_id": message_id,
            "notify_warnings": _notify_targets(outcome, settings)[1],
            "updated": datetime.now(UTC),
        },
        merge=True,
    )
    log.info(
        "dataset ready, tuning request published",
        extra={"examples": outcome.facts["examples"], "message_id": message_id},
    )
    return {"dataset_id": obj.dataset_id, "status": READY, "message_id": message_id, "report_uri": report_uri}


def _tuning_request(
    obj: StorageObject, outcome: _Outcome, uris: dict[str, str], settings: Settings
) -> TuningRequestV1:
    """The tuning-request/v1 an accepted upload publishes; ValidationError if it cannot be one."""
    # Filtered here, so a disallowed address never reaches the request, the job or a re-publish.
    notify, notify_warnings = _notify_targets(outcome, settings)
    if notify_warnings:
        log.warning("notification targets dropped", extra={"notify_warnings": notify_warnings})
    return TuningRequestV1(
        dataset_id=obj.dataset_id,
        base_model=outcome.base_model,
        training_uri=uris["train"],
        validation_uri=uris.get("validation"),
        test_uri=uris.get("test"),
        hyperparameters=outcome.hyperparameters,
        # Only a task the user set is "task"; ingest's inference travels apart, so that
        # completion reports it as inferred, with its evidence.
        task=outcome.task,
        inferred_task=outcome.inferred_task,
        task_evidence=outcome.task_evidence,
        task_labels=list(outcome.task_labels) or None,
        few_shot=outcome.few_shot or None,
        baseline_gate=outcome.baseline_gate,
        export_last_checkpoint_only=outcome.export_last_checkpoint_only,
        vertex_evaluation_metrics=outcome.vertex_evaluation_metrics,  # type: ignore[arg-type]
        job_options=outcome.job_options or JobOptions(),
        display_name=obj.name.rsplit("/", 1)[-1][:128],
        notify=notify,
        labels={LINEAGE_LABEL: outcome.lineage} if outcome.lineage else {},
    )


def _gate_checked(outcome: _Outcome) -> _Outcome:
    """The outcome, rejected when its ``baseline_gate`` names a metric its task does not report
    (the task is only known once the data is read, so the setting's own parse cannot tell)."""
    if not outcome.baseline_gate:
        return outcome
    task = outcome.task or outcome.inferred_task
    problem = gate_problem(outcome.baseline_gate, task)
    if problem is None:
        return outcome
    message = f"upload setting 'baseline_gate': {problem}"
    return _rejected_issue(
        outcome, Issue(line=0, field="baseline_gate", code=UploadSettingsError.code, message=message)
    )


def _request_invalid(outcome: _Outcome, exc: ValidationError) -> _Outcome:
    """The accepted upload's outcome turned into a rejection: its request cannot be valid."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "request"
    message = f"the tuning request built from this upload is invalid: {field}: {first['msg']}"
    return _rejected_issue(outcome, Issue(line=0, field=field, code=INVALID_REQUEST, message=message))


def _rejected_issue(outcome: _Outcome, issue: Issue) -> _Outcome:
    """The accepted upload's outcome turned into a rejection for one file-level ``issue``."""
    message = issue.message
    report = orjson.loads(outcome.report_json)
    report["ok"] = False
    report["errors"] = [*report.get("errors", []), issue.model_dump(mode="json")]
    report["error_counts"] = {**report.get("error_counts", {}), issue.code: 1}
    facts = {**outcome.facts, "error_counts": report["error_counts"]}
    return replace(
        outcome,
        ok=False,
        report_json=orjson.dumps(report, option=orjson.OPT_INDENT_2),
        report_md=f"**REJECTED**: {message}\n\n{outcome.report_md}",
        facts=facts,
        top_errors=[_describe(issue), *outcome.top_errors][:NOTIFIED_ERRORS],
        error_count=outcome.error_count + 1,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Outcome:
    """What an upload became, whether one file or a manifest: enough to record, report and publish."""

    ok: bool
    report_json: bytes
    report_md: str
    #: Statistics for the dataset document (format, counts, split, tokens, task...).
    facts: dict[str, Any]
    split_counts: dict[str, int]
    #: The first errors, as a notification quotes them.
    top_errors: list[str]
    error_count: int
    base_model: str
    hyperparameters: Hyperparameters
    #: The task the user set (upload metadata or manifest), else None.
    task: str | None
    notify_emails: list[str]
    #: The task the rule inferred from the data when the user set none.
    inferred_task: str | None = None
    #: Who set the task, or the inference's evidence.
    task_evidence: str | None = None
    #: The dataset's class labels (normalised), when the task is classification and they are known.
    task_labels: tuple[str, ...] = ()
    #: The baseline's settings from the upload (``few_shot``, ``baseline_gate``).
    few_shot: int | None = None
    baseline_gate: str | None = None
    lineage: str | None = None
    export_last_checkpoint_only: bool | None = None
    vertex_evaluation_metrics: list[str] | None = None
    job_options: JobOptions | None = None


def _prepare_file(obj: StorageObject, runtime: Runtime, sink: Sink) -> _Outcome:
    """One data file: settings from its custom metadata, the seeded three-way split."""
    settings = runtime.settings
    upload: UploadSettings | None = None
    options: PrepareOptions | None = None
    try:
        upload = parse_object_metadata(obj.metadata)
        options = PrepareOptions.from_settings(settings, upload)
        size_issue = check_size(obj.size, options.base_model)  # an unknown model raises here
    except (UploadSettingsError, ConfigurationError) as exc:
        result = _rejected_before_reading(
            obj, settings.base_model, exc.field or "metadata", exc.code, exc.message
        )
    else:
        if size_issue is not None:
            result = _rejected_before_reading(
                obj, options.base_model, "", size_issue.code, size_issue.message
            )
        else:
            source = runtime.storage.bucket(obj.bucket).blob(obj.name, generation=obj.generation)
            policy = ReadPolicy.from_settings(settings, obj.bucket)
            result = prepare_and_write(
                lambda: source.open("rb"),
                filename=obj.name,
                size=obj.size,
                options=options,
                sink=sink,
                object_facts=object_facts_lookup(runtime.storage, policy, obj.name),
                media_base=f"gs://{obj.bucket}/{upload_folder(obj.name)}",
            )
    return _file_outcome(result, upload, options)


def _file_outcome(
    result: PrepareResult, upload: UploadSettings | None, options: PrepareOptions | None
) -> _Outcome:
    return _Outcome(
        ok=result.ok,
        report_json=orjson.dumps(result.model_dump(mode="json"), option=orjson.OPT_INDENT_2),
        report_md=render_report(result),
        facts={
            "format": result.format,
            "shape": result.shape,
            "base_model": result.base_model,
            "records_in": result.records_in,
            "examples": result.examples,
            "rejected": result.rejected,
            "duplicates": result.duplicates,
            "near_duplicates": result.near_duplicates,
            "error_counts": result.error_counts,
            "split": result.split.model_dump(),
            "tokens": result.tokens.model_dump(mode="json"),
            "task": result.task.model_dump(mode="json") if result.task else None,
        },
        split_counts={split: _count(result, split) for split in SPLITS},
        top_errors=[_describe(issue) for issue in result.errors[:NOTIFIED_ERRORS]],
        error_count=sum(result.error_counts.values()),
        base_model=result.base_model,
        hyperparameters=_hyperparameters(result, options) if options else Hyperparameters(),
        notify_emails=list(upload.notify_emails) if upload else [],
        few_shot=upload.few_shot if upload else None,
        lineage=upload.lineage if upload else None,
        baseline_gate=upload.baseline_gate if upload else None,
        export_last_checkpoint_only=upload.export_last_checkpoint_only if upload else None,
        vertex_evaluation_metrics=upload.vertex_evaluation_metrics if upload else None,
        job_options=upload.job_options if upload else None,
        **_task_fields(result.task, "set by the upload (custom metadata 'task')"),
    )


def _task_fields(task: TaskInfo | None, given_by: str) -> dict[str, Any]:
    """The _Outcome's task fields: ``task`` only when the user set it, else the inference."""
    if task is None:
        return {"task": None}
    labels = tuple(task.labels) if task.value == Task.CLASSIFICATION else ()
    if task.source == "given":
        return {"task": task.value, "task_evidence": given_by, "task_labels": labels}
    return {"task": None, "inferred_task": task.value, "task_evidence": task.reason, "task_labels": labels}


def _prepare_manifest(obj: StorageObject, runtime: Runtime, sink: Sink) -> _Outcome:
    """A manifest naming several files: settings from the manifest (shared.ingest.manifest)."""
    prepared = prepare_manifest(obj, runtime, sink)
    report, manifest, options = prepared.report, prepared.manifest, prepared.options
    train = report.train_result()
    issues = report.all_issues()[:NOTIFIED_ERRORS]
    return _Outcome(
        ok=report.ok,
        report_json=orjson.dumps(report.model_dump(mode="json"), option=orjson.OPT_INDENT_2),
        report_md=render_manifest_report(report),
        facts=report.dataset_facts(),
        split_counts={split: _count(report, split) for split in SPLITS},
        top_errors=[f"{where}: {_describe(issue)}" for where, issue in issues],
        error_count=sum(report.error_counts.values()),
        base_model=report.base_model,
        hyperparameters=_hyperparameters(train, options) if train and options else Hyperparameters(),
        notify_emails=list(manifest.notify_emails) if manifest else [],
        few_shot=manifest.few_shot if manifest else None,
        lineage=manifest.lineage if manifest else None,
        baseline_gate=manifest.baseline_gate if manifest else None,
        export_last_checkpoint_only=manifest.export_last_checkpoint_only if manifest else None,
        vertex_evaluation_metrics=manifest.vertex_evaluation_metrics if manifest else None,
        job_options=manifest.job_options if manifest else None,
        **_task_fields(report.task, "set by the manifest ('task')"),
    )


class _PreparedWriters:
    """One GCS writer per split, opened on first use; objects appear only on commit()."""

    def __init__(self, open_writer: Callable[[str], BlobWriter]) -> None:
        self._open = open_writer
        self._writers: dict[str, BlobWriter] = {}

    def write(self, split: str, line: bytes) -> None:
        writer = self._writers.get(split)
        if writer is None:
            writer = self._writers[split] = self._open(split)
        writer.write(line)

    def commit(self) -> None:
        for writer in self._writers.values():
            writer.close()

    def abandon(self) -> None:
        # Dropping a BlobWriter is not enough: io's finalizer calls close(), which finalizes the
        # upload. terminate() cancels the resumable upload (if one started) and closes the buffer.
        for split, writer in self._writers.items():
            try:
                writer.terminate()
            except Exception:  # cancelling is best effort: the dataset document says what is valid
                log.warning("could not cancel the upload of the %s split", split, exc_info=True)
        self._writers.clear()


def _count(result: PrepareResult | ManifestReport, split: str) -> int:
    return int(getattr(result.split, split))


def _hyperparameters(result: PrepareResult, options: PrepareOptions) -> Hyperparameters:
    """The hyperparameters the job will use: the upload's choice, else the recommendation."""
    chosen, recommended = options.hyperparameters, result.recommended
    return Hyperparameters(
        epochs=chosen.epochs or recommended.epochs,
        learning_rate_multiplier=chosen.learning_rate_multiplier or recommended.learning_rate_multiplier,
        adapter_size=chosen.adapter_size or recommended.adapter_size,
    )


def _unreadable(obj: StorageObject, base_model: str, exc: gexc.GoogleAPICallError) -> PrepareResult:
    what = "does not exist any more" if isinstance(exc, gexc.NotFound) else "cannot be read by ingest"
    return _rejected_before_reading(
        obj,
        base_model,
        "",
        "source_unreadable",
        f"{obj.uri} (generation {obj.generation}) {what}: {exc.message}",
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
    outcome: _Outcome,
    *,
    report_uri: str,
    dataset_ref: Any,
    runtime: Runtime,
) -> None:
    from shared.notify.content import DatasetRejectedOutcome
    from shared.notify.notifier import notify_once

    # notify_once filters the targets again and says in the notice who was not notified.
    dataset_ref.set({"notify_warnings": _notify_targets(outcome, runtime.settings)[1]}, merge=True)
    rejection = DatasetRejectedOutcome(
        dataset_id=obj.dataset_id,
        source_uri=obj.uri,
        error_count=outcome.error_count,
        top_errors=outcome.top_errors,
        report_url=report_uri,
    )
    notify_once(dataset_ref, rejection, runtime.settings, NotifyTargets(emails=outcome.notify_emails))


def _notify_targets(outcome: _Outcome, settings: Settings) -> tuple[NotifyTargets, list[str]]:
    """The upload's targets that the allowlists let through, and a warning line per dropped one."""
    from shared.notify.targets import allowed_targets

    return allowed_targets(NotifyTargets(emails=outcome.notify_emails), settings)


def _describe(issue: Issue) -> str:
    where = f"line {issue.line}" if issue.line else "file"
    field = f" {issue.field}" if issue.field else ""
    return f"{where}{field}: {issue.code}: {issue.message}"

"""Ingest of a manifest upload: one ``*.tuning.json|yaml`` under ``incoming/`` -> one dataset.

The manifest names its files as object names in its own bucket or as ``gs://`` URIs, all outside
``incoming/`` (see :class:`~shared.datasets.TuningManifest`), so a data file never starts a run of
its own. A manifest may only make ingest read what its uploader could have put there
(architecture.md, "Who may read and notify what"): objects of its own bucket under the uploads
prefixes (``SFTPIPE_UPLOAD_PREFIXES``), or any object of a bucket on ``SFTPIPE_ALLOWED_BUCKETS``;
:class:`ReadPolicy` decides, before anything is read. :func:`prepare_manifest` reads the manifest
(at most :data:`MAX_MANIFEST_BYTES`), checks that every named file is allowed, exists and is small
enough, then validates the files with one shared
:class:`~shared.datasets.SeenExamples` (an example in two files is ``example_in_multiple_splits``):

- only ``train``: the file is split three ways, as for a single upload;
- ``validation`` / ``test`` given: each file goes whole to its role.

Strict across the manifest: the run is accepted only when every file is. Files are fed to the
caller's ``sink`` as they pass, and the caller commits what the sink wrote only when the whole
manifest is ``ok`` (``shared.ingest.upload`` does). Each file is read at the generation seen when it was
checked, so the validating and the writing pass see the same bytes.

Nothing here retries or records: a transient GCS failure raises, and the caller's idempotency
claim lets the redelivered event start over.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from shared.config import Settings
from shared.datasets import (
    PrepareOptions,
    PrepareResult,
    SeenExamples,
    TuningManifest,
    UploadSettingsError,
    check_size,
    load_manifest,
    model_limits,
    prepare,
    prepare_and_write,
    render_report,
)
from shared.datasets.issues import Issue
from shared.datasets.options import FILE_NOT_ALLOWED, SplitName
from shared.datasets.report import CostEstimate, SplitCounts, TaskInfo
from shared.errors import ConfigurationError
from shared.events import StorageObject
from shared.messages import MAX_TASK_LABELS

if TYPE_CHECKING:
    from shared.runtime import Runtime

#: A manifest is a few lines of settings; anything larger is not one we should parse.
MAX_MANIFEST_BYTES = 1024 * 1024

#: Codes of manifest-level errors (each file's own errors use ``shared.datasets.ERROR_CODES``).
MANIFEST_ERROR_CODES: dict[str, str] = {
    "invalid_upload_setting": "the manifest does not parse, or a setting in it cannot work",
    "manifest_too_large": f"the manifest is larger than {MAX_MANIFEST_BYTES:,} bytes",
    "manifest_file_missing": "a file the manifest names does not exist",
    "manifest_file_in_incoming": "a file the manifest names is under the upload prefix",
    "manifest_file_not_allowed": (
        "a file the manifest names is neither under an uploads prefix of the manifest's bucket "
        "(SFTPIPE_UPLOAD_PREFIXES) nor in an allowed bucket (SFTPIPE_ALLOWED_BUCKETS)"
    ),
    "file_too_large": "a file the manifest names is larger than the model's training-file limit",
}

Sink = Callable[[str, bytes], None]


def normalise_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Each prefix once, without a leading '/', ending in '/'; empty ones dropped.

    Without the trailing slash ``datasets`` would also match ``datasets-private/...``, and an
    empty prefix would open the whole bucket.
    """
    found: list[str] = []
    for prefix in prefixes:
        cleaned = prefix.strip().lstrip("/")
        if not cleaned.rstrip("/"):
            continue
        cleaned = cleaned if cleaned.endswith("/") else cleaned + "/"
        if cleaned not in found:
            found.append(cleaned)
    return tuple(found)


@dataclass(frozen=True, slots=True)
class ReadPolicy:
    """Which objects a manifest uploaded to ``bucket`` may make ingest read.

    ``deploy/iam.tf`` grants ingest read on exactly these prefixes and buckets;
    ``tests/unit/test_deploy.py`` keeps the two together.
    """

    bucket: str
    upload_prefixes: tuple[str, ...]
    allowed_buckets: frozenset[str]
    incoming_prefix: str
    #: Where the pipeline writes other people's results: never readable through a manifest, even
    #: when an operator's prefix (or allowed bucket) would include it.
    reserved_prefixes: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings, bucket: str) -> ReadPolicy:
        return cls(
            bucket=bucket,
            upload_prefixes=normalise_prefixes(settings.upload_prefixes),
            allowed_buckets=frozenset(b.strip() for b in settings.allowed_buckets if b.strip()),
            incoming_prefix=settings.incoming_prefix,
            reserved_prefixes=normalise_prefixes([settings.prepared_prefix, settings.reports_prefix]),
        )

    def allowed(self) -> str:
        """What may be named, in words, for error messages."""
        prefixes = ", ".join(self.upload_prefixes) or "(none)"
        others = ", ".join(sorted(self.allowed_buckets - {self.bucket}))
        buckets = f"any object of the buckets {others}" if others else "no other bucket"
        return (
            f"a manifest may name objects of gs://{self.bucket} under {prefixes} "
            f"(SFTPIPE_UPLOAD_PREFIXES) and {buckets} (SFTPIPE_ALLOWED_BUCKETS)"
        )

    def refusal(self, name: str) -> tuple[str, str] | None:
        """(code, message) when the manifest may not name ``name``, None when it may.

        Pure: decides from the name alone, so nothing of a refused object is ever read.
        """
        bucket, object_name = _location(name, self.bucket)
        uri = f"gs://{bucket}/{object_name}"
        malformed = _malformed(bucket, object_name)
        if malformed:
            return (
                "manifest_file_not_allowed",
                f"{name!r} is not a plain object name ({malformed}); {self.allowed()}",
            )
        if bucket == self.bucket:
            if object_name.startswith(self.incoming_prefix):
                return "manifest_file_in_incoming", (
                    f"{uri} is under {self.incoming_prefix}, where every object starts a run of its own; "
                    "keep the files a manifest names outside it"
                )
            # The manifest's own bucket follows the prefixes even when it is on the allowlist,
            # or listing it would open prepared/ and reports/.
            under_upload = any(object_name.startswith(p) for p in self.upload_prefixes)
            reserved = any(object_name.startswith(p) for p in self.reserved_prefixes)
            if under_upload and not reserved:
                return None
            return FILE_NOT_ALLOWED, f"{uri} may not be read: {self.allowed()}"
        if bucket in self.allowed_buckets:
            return None
        return FILE_NOT_ALLOWED, f"{uri} is in another bucket: {self.allowed()}"


def _malformed(bucket: str, object_name: str) -> str | None:
    """Why a bucket / object name is not one plain object, or None.

    '.', '..' and empty segments read as paths to tools that normalise them, so the object a
    person sees (or another client reads) could differ from the one checked here.
    """
    if not bucket:
        return "no bucket"
    if not object_name:
        return "empty object name"
    if object_name.startswith("/"):
        return "leading '/'"
    segments = object_name.split("/")
    if any(segment in (".", "..") for segment in segments):
        return "'.' or '..' segment"
    if "" in segments:
        return "empty segment ('//' or a trailing '/')"
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in bucket + object_name):
        return "control or invisible formatting character"
    return None


class ManifestFile(BaseModel):
    """One file of a manifest and what preparing it gave (None when it was never read)."""

    role: SplitName
    uri: str
    generation: int | None = None
    size: int | None = None
    result: PrepareResult | None = None


class ManifestReport(BaseModel):
    """``report.json`` of a manifest upload: per-file results, manifest-level errors and totals.

    The top-level counts mirror :class:`~shared.datasets.PrepareResult`'s names (summed over the
    files), and ``estimated_cost`` / ``hyperparameters`` / ``task`` are the train file's, so a
    reader of either report shape finds the same keys.
    """

    ok: bool
    manifest: str
    base_model: str
    #: Errors of the manifest itself (parse, missing or misplaced files); files' are in ``files``.
    errors: list[Issue] = Field(default_factory=list)
    #: Every error code over the manifest and its files, with counts.
    error_counts: dict[str, int] = Field(default_factory=dict)
    records_in: int = 0
    #: Examples written: 0 when the manifest is rejected.
    examples: int = 0
    valid_examples: int = 0
    rejected: int = 0
    duplicates: int = 0
    #: Near duplicates removed over the files; None when every file kept them (dedupe: exact).
    near_duplicates: int | None = 0
    split: SplitCounts = Field(default_factory=SplitCounts)
    task: TaskInfo | None = None
    estimated_cost: CostEstimate = Field(default_factory=CostEstimate)
    files: list[ManifestFile] = Field(default_factory=list)

    def train_result(self) -> PrepareResult | None:
        return next((f.result for f in self.files if f.role == "train"), None)

    def all_issues(self) -> list[tuple[str, Issue]]:
        """(where, issue) for the manifest's errors, then each file's, in file order."""
        found = [(self.manifest, issue) for issue in self.errors]
        for file in self.files:
            if file.result is not None:
                found += [(f"{file.role} ({file.uri})", issue) for issue in file.result.errors]
        return found

    def dataset_facts(self) -> dict[str, Any]:
        """The dataset document's statistics, with the same keys as for a single file."""
        train = self.train_result()
        results = [f.result for f in self.files if f.result is not None]
        counts = [r.tokens for r in results if r.valid_examples]
        examples_counted = sum(r.valid_examples for r in results if r.valid_examples)
        tokens: dict[str, Any] = {}
        if counts:
            # Percentiles do not add up across files; the report has each file's.
            tokens = {
                "total": sum(t.total for t in counts),
                "min": min(t.min for t in counts),
                "max": max(t.max for t in counts),
                "mean": round(sum(t.total for t in counts) / max(examples_counted, 1), 1),
                "method": counts[0].method,
                "limit_per_example": counts[0].limit_per_example,
            }
        return {
            "format": train.format if train else None,
            "shape": train.shape if train else None,
            "base_model": self.base_model,
            "records_in": self.records_in,
            "examples": self.examples,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "near_duplicates": self.near_duplicates,
            "error_counts": self.error_counts,
            "split": self.split.model_dump(),
            "tokens": tokens,
            "task": self.task.model_dump(mode="json") if self.task else None,
            "manifest_files": {f.role: f.uri for f in self.files},
            # The manifest's own errors name the field at fault (train, test, epochs...), which
            # error_counts alone cannot; each file's errors stay in its report.
            "manifest_errors": [
                {"field": issue.field, "code": issue.code, "message": issue.message} for issue in self.errors
            ],
        }


@dataclass(frozen=True, slots=True)
class ManifestOutcome:
    """The report, plus what the caller needs to build the tuning request when it is ok."""

    report: ManifestReport
    manifest: TuningManifest | None
    options: PrepareOptions | None


def prepare_manifest(obj: StorageObject, runtime: Runtime, sink: Sink) -> ManifestOutcome:
    """Read, check and prepare the manifest ``obj``; see the module docstring for the contract."""
    settings = runtime.settings
    if obj.size > MAX_MANIFEST_BYTES:
        message = f"the manifest has {obj.size:,} bytes; a manifest may have at most {MAX_MANIFEST_BYTES:,}"
        issue = _issue("manifest", "manifest_too_large", message)
        return ManifestOutcome(_rejected(obj, settings.base_model, [issue], []), None, None)
    data = runtime.storage.bucket(obj.bucket).blob(obj.name, generation=obj.generation).download_as_bytes()
    try:
        manifest = load_manifest(data, obj.name)
        options = PrepareOptions.from_settings(settings, manifest)
        model_limits(options.base_model)
    except (UploadSettingsError, ConfigurationError) as exc:
        if exc.code == FILE_NOT_ALLOWED:  # a file name that cannot be one object ('..', empty...)
            policy = ReadPolicy.from_settings(settings, obj.bucket)
            issue = _issue(exc.field or "manifest", FILE_NOT_ALLOWED, f"{exc.message}; {policy.allowed()}")
        else:
            issue = _issue(exc.field or "manifest", "invalid_upload_setting", exc.message)
        return ManifestOutcome(_rejected(obj, settings.base_model, [issue], []), None, None)

    policy = ReadPolicy.from_settings(settings, obj.bucket)
    files, problems = _locate_files(manifest, obj, runtime, options.base_model, policy)
    if problems:
        return ManifestOutcome(_rejected(obj, options.base_model, problems, files), manifest, options)

    from shared.ingest.media_lookup import (
        object_facts_lookup,
        upload_folder,
    )  # it imports ReadPolicy from here

    facts = object_facts_lookup(runtime.storage, policy, obj.name)
    seen = SeenExamples()
    split_three_ways = set(manifest.files()) == {"train"}
    rejected = False
    for file in files:
        bucket_name, object_name = _location(file.uri, obj.bucket)
        pinned = runtime.storage.bucket(bucket_name).blob(object_name, generation=file.generation)
        arguments: dict[str, Any] = {
            "filename": file.uri,
            "size": file.size,
            "options": options.model_copy(update={"split": "auto" if split_three_ways else file.role}),
            "seen": seen,
            "object_facts": facts,
            "media_base": f"gs://{bucket_name}/{upload_folder(object_name)}",
        }
        if not rejected:
            file.result = prepare_and_write(lambda blob=pinned: blob.open("rb"), sink=sink, **arguments)
        else:
            # The manifest is rejected already: check this file for the report, write nothing.
            with contextlib.closing(pinned.open("rb")) as stream:
                file.result = prepare(stream, **arguments)
        rejected = rejected or not file.result.ok
    return ManifestOutcome(_totals(obj, files), manifest, options)


def render_manifest_report(report: ManifestReport) -> str:
    """Markdown for people: the verdict, one row per file, then each file's own report."""
    verdict = "ACCEPTED" if report.ok else "REJECTED"
    lines = [
        f"# Dataset report: {report.manifest}",
        "",
        f"**{verdict}** for tuning `{report.base_model}`.",
    ]
    if not report.ok:
        lines.append("Nothing was written: every file of a manifest must be valid. Fix the errors below.")
    lines += ["", "| role | file | records | valid examples | errors |", "|---|---|---|---|---|"]
    for file in report.files:
        result = file.result
        if result is None:
            lines.append(f"| {file.role} | {file.uri} | - | - | - |")
        else:
            errors = sum(result.error_counts.values())
            lines.append(
                f"| {file.role} | {file.uri} | {result.records_in:,} | {result.valid_examples:,} | {errors:,} |"
            )
    split = report.split
    lines += ["", f"Split train / validation / test: {split.train} / {split.validation} / {split.test}."]
    if report.errors:
        lines += ["", "## Manifest errors", "", "| field | code | message |", "|---|---|---|"]
        for issue in report.errors:
            message = issue.message.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{issue.field}` | `{issue.code}` | {message} |")
    for file in report.files:
        if file.result is not None:
            # Each file's own report, its title replaced by the file's role, one heading level down.
            _title, body = render_report(file.result).split("\n", 1)
            lines += ["", f"## {file.role}: {file.uri}", body.replace("\n#", "\n##").rstrip("\n")]
    return "\n".join(lines) + "\n"


def _locate_files(
    manifest: TuningManifest, obj: StorageObject, runtime: Runtime, base_model: str, policy: ReadPolicy
) -> tuple[list[ManifestFile], list[Issue]]:
    """Each named file with its current generation and size, and what makes any unusable.

    A file the policy refuses is not even looked up: whether it exists is not the uploader's
    business either.
    """
    files: list[ManifestFile] = []
    problems: list[Issue] = []
    for role, name in manifest.files().items():
        bucket_name, object_name = _location(name, obj.bucket)
        file = ManifestFile(role=role, uri=f"gs://{bucket_name}/{object_name}")
        files.append(file)
        refusal = policy.refusal(name)
        if refusal is not None:
            problems.append(_issue(role, *refusal))
            continue
        blob = runtime.storage.bucket(bucket_name).get_blob(object_name)
        if blob is None:
            problems.append(_issue(role, "manifest_file_missing", f"{file.uri} does not exist"))
            continue
        file.generation, file.size = blob.generation, blob.size
        size_issue = check_size(blob.size, base_model)
        if size_issue is not None:
            problems.append(_issue(role, size_issue.code, f"{file.uri}: {size_issue.message}"))
    return files, problems


def _location(name: str, default_bucket: str) -> tuple[str, str]:
    """(bucket, object) of a manifest's file name: a gs:// URI, or an object in the manifest's bucket."""
    if name.startswith("gs://"):
        bucket, _, object_name = name.removeprefix("gs://").partition("/")
        return bucket, object_name
    return default_bucket, name


def _issue(field: str, code: str, message: str) -> Issue:
    return Issue(line=0, field=field, code=code, message=message)


def _rejected(
    obj: StorageObject, base_model: str, problems: list[Issue], files: list[ManifestFile]
) -> ManifestReport:
    counts = Counter(issue.code for issue in problems)
    return ManifestReport(
        ok=False,
        manifest=obj.uri,
        base_model=base_model,
        errors=problems,
        error_counts=dict(counts),
        files=files,
    )


def _task_over_files(task: TaskInfo | None, results: list[PrepareResult]) -> TaskInfo | None:
    """The train file's task decision, with the labels of every file (the dataset's label set)."""
    if task is None or not task.labels:
        return task
    labels = sorted({label for result in results if result.task for label in result.task.labels})
    return task.model_copy(update={"labels": labels}) if len(labels) <= MAX_TASK_LABELS else task


def _totals(obj: StorageObject, files: list[ManifestFile]) -> ManifestReport:
    results = [f.result for f in files if f.result is not None]
    ok = all(r.ok for r in results)
    error_counts: Counter[str] = Counter()
    for result in results:
        error_counts.update(result.error_counts)
    train = results[0]  # manifest.files() lists train first
    split = SplitCounts(
        train=sum(r.split.train for r in results),
        validation=sum(r.split.validation for r in results),
        test=sum(r.split.test for r in results),
        mode="auto" if len(files) == 1 else "files",
        seed=train.split.seed,
        validation_fraction=train.split.validation_fraction,
        test_fraction=train.split.test_fraction,
    )
    return ManifestReport(
        ok=ok,
        manifest=obj.uri,
        base_model=train.base_model,
        error_counts=dict(error_counts),
        records_in=sum(r.records_in for r in results),
        examples=sum(r.examples for r in results) if ok else 0,
        valid_examples=sum(r.valid_examples for r in results),
        rejected=sum(r.rejected for r in results),
        duplicates=sum(r.duplicates for r in results),
        near_duplicates=(
            None
            if all(r.near_duplicates is None for r in results)
            else sum(r.near_duplicates or 0 for r in results)
        ),
        split=split,
        task=_task_over_files(train.task, results),
        estimated_cost=train.estimated_cost,
        files=files,
    )

"""Turn any reasonable upload into Gemini tuning JSONL, or into a precise rejection.

Pure Python on byte streams: no Google Cloud call happens in this package. The ingest function
(and ``sftpipe validate``) call it like this::

    from shared.datasets import PrepareOptions, prepare_and_write, render_report, parse_object_metadata

    size_error = check_size(obj.size, options.base_model)          # before opening anything
    upload = parse_object_metadata(obj.metadata)                     # UploadSettingsError names the key
    options = PrepareOptions.from_settings(settings, upload)
    result = prepare_and_write(lambda: blob.open("rb"), filename=obj.name, size=obj.size,
                               options=options, sink=lambda split, line: writers[split].write(line))
    report_json = result.model_dump(mode="json")                     # == `sftpipe validate --json`
    report_md = render_report(result)

API
---
``prepare(stream, *, filename, size=None, options, sink=None, progress=None, seen=None, split_plan=None) -> PrepareResult``
    One streaming pass. ``sink(split, line)`` receives each converted example as one Gemini JSONL
    line (bytes ending in ``\\n``), ``split`` in ``train`` / ``validation`` / ``test``.
    ``progress(bytes_read)`` is called about once per MiB. ``seen`` (a :class:`SeenExamples`)
    is shared by the calls of one multi-file upload (manifest) so that a prompt in two of its
    files is an ``example_in_multiple_splits`` error; set ``options.split`` to the file's role.
    With ``options.split == "auto"`` the split is planned from the counts of the whole file
    (:mod:`shared.datasets.split`): a pass without ``split_plan`` counts and reports the planned
    split; writing needs ``split_plan=result.split.plan()`` of such a pass (a sink without it is a
    ValueError).
``prepare_and_write(open_stream, *, filename, size, options, sink, ...) -> PrepareResult``
    "Nothing is written for a rejected file": a validate-only pass (``sink=None``) that also plans
    the split, then, only when the result is ok, a second pass that applies the plan and feeds
    ``sink``. The caller owns the streams
    (``open_stream`` is called once or twice) and what the sink writes to. ``prepare`` alone may
    call the sink before it finds an error late in the file (strict mode stops calling it after
    the first error, but earlier lines were already given), so a caller that uses ``prepare``
    with a sink must write to temporary objects and keep them only when ``result.ok``.
``render_report(result) -> str``
    Markdown for people (report.md, notifications).
``MODEL_LIMITS`` / ``model_limits(name)``
    One row of limits per base model: ``MODEL_LIMITS`` holds the shipped rows (``models.yaml``),
    ``model_limits`` looks in the operator's file (SFTPIPE_MODEL_LIMITS) first. An unknown model
    raises ``shared.errors.ConfigurationError`` (code ``unknown_base_model``, field
    ``base_model``); a malformed operator file, code ``invalid_model_limits``.
``check_size(size, base_model) -> Issue | None``
    The upload-size check (1 GB: 10^9 bytes) from the object's metadata, before any byte is read.
    The prepared training split is held to the same limit (``training_file_too_large``): its bytes
    are counted in the validate-only pass, so nothing is written for a file that grows past it.
``parse_object_metadata(dict) -> UploadSettings``, ``load_manifest(bytes, filename) -> TuningManifest``
    Per-upload settings from custom metadata or a ``*.tuning.json|yaml`` manifest; both raise
    ``UploadSettingsError`` (a PermanentError) naming the key.

Strict by default: any error rejects the whole file (``ok`` false, ``examples`` 0). With
``options.skip_invalid`` invalid records are skipped and reported, and the file is rejected only
for file-level errors (unreadable, too large, no examples, too many examples).

Preference data (DPO pairs, OpenAI preference, Vertex AI scored completions) and KTO labels are
never trained on as uploaded: by default they are errors (``unsupported_preference_pairs``,
``kto_labels_present``); ``options.preference_mode == "chosen"`` keeps the prompt and the
preferred answer of each pair and drops ``label: false`` examples (so does ``skip_invalid``).

Memory is bounded for any size: records stream one block (1 MiB) at a time, and duplicate
detection keeps 60-bit hashes, never texts: per distinct example its near hash and its exact one
(a dict, about 105 MB per million; with ``dedupe: exact`` a set of exact hashes, about 65 MB), and
one per distinct prompt (a set, about 65 MB per million), each at most the model's training +
validation + test maximum, about 1M;
the split keeps four counters per hash bucket (512 KiB); token counts are kept in an ``array`` of
4 bytes per example for the percentiles; task inference holds the texts of at most 2,000 sampled
examples, up to 32 MiB. A 1 GB file of short lines peaked at about 190 MB for one pass and 230 MB
for both in one process (``benchmarks/ingest_throughput.py``) before near duplicates were tracked;
the dict adds about 40 MB to that.
"""

from __future__ import annotations

from shared.datasets.issues import ERROR_CODES, WARNING_CODES, DatasetWarning, Issue
from shared.datasets.limits import (
    MAX_FILE_BYTES,
    MAX_TRAINING_FILE_BYTES,
    MODEL_LIMITS,
    ModelLimits,
    adapter_size_problem,
    model_limits,
)
from shared.datasets.options import (
    ColumnMapping,
    PrepareOptions,
    TuningManifest,
    UploadSettings,
    UploadSettingsError,
    is_manifest,
    load_manifest,
    parse_object_metadata,
)
from shared.datasets.prepare import SeenExamples, prepare, prepare_and_write
from shared.datasets.report import PrepareResult, render_report


def check_size(size: int | None, base_model: str) -> Issue | None:
    """The file-size error for an object of ``size`` bytes, or None when it may be read."""
    limit = model_limits(base_model).max_file_bytes
    if size is not None and size > limit:
        return Issue(
            line=0,
            field="",
            code="file_too_large",
            message=f"the file has {size:,} bytes; the limit is {limit:,}",
        )
    return None


__all__ = [
    "ERROR_CODES",
    "MAX_FILE_BYTES",
    "MAX_TRAINING_FILE_BYTES",
    "MODEL_LIMITS",
    "WARNING_CODES",
    "ColumnMapping",
    "DatasetWarning",
    "Issue",
    "ModelLimits",
    "PrepareOptions",
    "PrepareResult",
    "SeenExamples",
    "TuningManifest",
    "UploadSettings",
    "UploadSettingsError",
    "adapter_size_problem",
    "check_size",
    "is_manifest",
    "load_manifest",
    "model_limits",
    "parse_object_metadata",
    "prepare",
    "prepare_and_write",
    "render_report",
]

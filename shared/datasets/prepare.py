"""One streaming pass over an upload: detect, convert, validate, deduplicate, split, report."""

from __future__ import annotations

import contextlib
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson
import xxhash

from shared.datasets import convert as cv
from shared.datasets.convert import MissingColumnsError
from shared.datasets.formats import Source, SourceUnreadableError
from shared.datasets.issues import WARNING_CODES, DatasetWarning, Issue, RecordIssueError
from shared.datasets.limits import (
    RECOMMENDED_MIN_EXAMPLES,
    ModelLimits,
    model_limits,
    recommend_hyperparameters,
)
from shared.datasets.options import PrepareOptions
from shared.datasets.report import (
    CostEstimate,
    PrepareResult,
    Recommended,
    SplitCounts,
    TaskInfo,
    TokenStats,
)
from shared.datasets.split import SplitAllocator
from shared.datasets.task import TaskInferrer
from shared.datasets.tokens import CounterChoice, TokenizerFactory, choose_token_counter
from shared.messages import Task

Sink = Callable[[str, bytes], None]
Progress = Callable[[int], None]
_WARNING_LINES = 10


class SeenExamples:
    """Which split each example went to, shared by the prepare() calls of one multi-file upload.

    Holds one 64-bit hash per example. Preparing the same file twice (a validate-only pass, then
    a writing pass) is harmless: only a hash seen in a *different* split is an error.
    """

    def __init__(self) -> None:
        self._split_of: dict[int, str] = {}

    def claim(self, digest: int, split: str) -> str | None:
        """Record the example; returns the other split that already has it, if any."""
        other = self._split_of.setdefault(digest, split)
        return None if other == split else other


class _Run:
    """The mutable state of one pass."""

    def __init__(self, options: PrepareOptions, limits: ModelLimits) -> None:
        self.options = options
        self.limits = limits
        self.errors: list[Issue] = []
        self.error_counts: Counter[str] = Counter()
        self.rejected = 0
        self.fatal = False
        self.warnings: dict[str, list[Any]] = {}  # code -> [count, lines, message]

    def error(self, issue: Issue, *, record: bool = True) -> None:
        self.error_counts[issue.code] += 1
        if record:
            self.rejected += 1
        if len(self.errors) < self.options.max_errors_listed:
            self.errors.append(issue)

    def file_error(self, code: str, message: str, line: int = 0) -> None:
        self.fatal = True
        self.error(Issue(line=line, field="", code=code, message=message), record=False)

    def warn(self, code: str, line: int, message: str | None = None) -> None:
        entry = self.warnings.get(code)
        if entry is None:
            self.warnings[code] = entry = [0, [], message or WARNING_CODES[code]]
        entry[0] += 1
        if line and len(entry[1]) < _WARNING_LINES:
            entry[1].append(line)

    def warning_list(self) -> list[DatasetWarning]:
        return [
            DatasetWarning(code=code, count=n, lines=lines, message=msg)
            for code, (n, lines, msg) in self.warnings.items()
        ]


def prepare(
    stream: BinaryIO,
    *,
    filename: str,
    size: int | None = None,
    options: PrepareOptions,
    sink: Sink | None = None,
    progress: Progress | None = None,
    seen: SeenExamples | None = None,
    tokenizer_factory: TokenizerFactory | None = None,
) -> PrepareResult:
    """Read ``stream`` once and return the result; see the package docstring for the contract."""
    limits = model_limits(options.base_model)
    run = _Run(options, limits)
    choice = choose_token_counter(limits, options.token_counting, tokenizer_factory)
    counter = choice.counter
    allocator = SplitAllocator(
        options.split,
        validation_fraction=options.validation_fraction,
        test_fraction=options.test_fraction,
        max_validation=limits.max_validation_examples,
        max_test=limits.max_test_examples,
    )
    inferrer = TaskInferrer()
    token_counts = array("L")
    train_tokens = 0
    # Bytes of prepared/<id>/train.jsonl, counted in the validate-only pass too, so that a file
    # that grows past Vertex AI's limit when converted is rejected before anything is written.
    train_bytes = 0
    hashes: set[int] = set()
    # Past this many distinct examples the file is invalid anyway; stop growing the hash set.
    max_tracked = limits.max_training_examples + limits.max_validation_examples + limits.max_test_examples
    duplicates = 0
    records_in = 0
    converter = cv.FileConverter(options.column_mapping)
    source_format: str | None = None
    bytes_read = 0
    seed = options.split_seed & 0xFFFFFFFFFFFFFFFF
    hash64 = xxhash.xxh3_64_intdigest
    dumps = orjson.dumps
    max_tokens = limits.max_tokens_per_example
    max_files = limits.max_files_per_example

    if size is not None and size > limits.max_file_bytes:
        run.file_error(
            "file_too_large", f"the file has {size:,} bytes; the limit is {limits.max_file_bytes:,}"
        )
    else:
        try:
            source = Source(stream, filename, max_bytes=limits.max_file_bytes, progress=progress)
            source_format = source.format.value
            for line, value, issue in source.records():
                records_in += 1
                if issue is not None:
                    run.error(issue)
                    continue
                try:
                    example = converter.convert(value, line)
                except RecordIssueError as bad:
                    run.error(Issue(line=line, field=bad.field, code=bad.code, message=bad.message))
                    continue
                except MissingColumnsError as missing:
                    header_line = 1 if source.format.value in ("csv", "tsv") else line
                    run.file_error("missing_column", str(missing), line=header_line)
                    break
                tokens = counter.count(example)
                if tokens > max_tokens:
                    run.error(
                        Issue(
                            line=line,
                            field="",
                            code="too_many_tokens",
                            message=f"the example has {tokens:,} tokens ({counter.method}); {limits.name} accepts {max_tokens:,}",
                        )
                    )
                    continue
                if example.files > max_files:
                    run.error(
                        Issue(
                            line=line,
                            field="",
                            code="too_many_files",
                            message=f"the example has {example.files} file parts; at most {max_files} are accepted",
                        )
                    )
                    continue
                for note in example.notes:
                    run.warn(note, line)
                digest = hash64(example.key, seed)
                if digest in hashes:
                    duplicates += 1
                    run.warn("duplicates_removed", line)
                    continue
                if len(hashes) < max_tracked:
                    hashes.add(digest)
                split_name = allocator.assign(digest)
                if seen is not None:
                    other = seen.claim(digest, split_name)
                    if other is not None:
                        run.error(
                            Issue(
                                line=line,
                                field="",
                                code="example_in_multiple_splits",
                                message=f"this example is also in the {other} file; train, validation and test must not share examples",
                            )
                        )
                        allocator.counts[split_name] -= 1
                        continue
                token_counts.append(tokens)
                prepared_line: bytes | None = None
                if split_name == "train":
                    train_tokens += tokens
                    prepared_line = dumps(example.record) + b"\n"
                    train_bytes += len(prepared_line)
                inferrer.observe(example)
                if sink is not None and (options.skip_invalid or not run.error_counts):
                    if prepared_line is None:
                        prepared_line = dumps(example.record) + b"\n"
                    sink(split_name, prepared_line)
            bytes_read = source.bytes_read
        except SourceUnreadableError as unreadable:
            run.fatal = True
            run.error(unreadable.issue, record=False)
    totals = _Totals(
        records_in=records_in,
        duplicates=duplicates,
        token_counts=token_counts,
        train_tokens=train_tokens,
        train_bytes=train_bytes,
        allocator=allocator,
        inferrer=inferrer,
        shape=converter.shape,
        source_format=source_format,
        bytes_read=bytes_read,
        column_task_hint=converter.task_hint,
        choice=choice,
    )
    return _finish(run, totals, filename=filename)


@dataclass(slots=True, kw_only=True)
class _Totals:
    records_in: int
    duplicates: int
    token_counts: array
    train_tokens: int
    train_bytes: int
    allocator: SplitAllocator
    inferrer: TaskInferrer
    shape: str | None
    source_format: str | None
    bytes_read: int
    column_task_hint: str | None
    choice: CounterChoice


def _finish(run: _Run, totals: _Totals, *, filename: str) -> PrepareResult:
    options, limits, t = run.options, run.limits, totals
    counts = t.allocator.counts
    valid = sum(counts.values())
    if not run.fatal:
        if t.records_in == 0:
            run.file_error("empty_file", "the file has no records")
        elif valid == 0:
            run.file_error("no_examples", "no valid example is left to train on")
        elif options.split in ("auto", "train") and counts["train"] == 0:
            run.file_error("no_examples", "no example is left for the training split")
        if counts["train"] > limits.max_training_examples:
            run.file_error(
                "too_many_examples",
                f"{counts['train']:,} training examples; {limits.name} accepts at most {limits.max_training_examples:,}",
            )
        if t.train_bytes > limits.max_training_file_bytes:
            run.file_error(
                "training_file_too_large",
                f"the prepared training file (Gemini JSONL, {counts['train']:,} examples) would have "
                f"{t.train_bytes:,} bytes; Vertex AI accepts at most {limits.max_training_file_bytes:,} "
                "bytes per training file: remove examples or shorten them",
            )
        if counts["validation"] > limits.max_validation_examples:
            run.file_error(
                "too_many_validation_examples",
                f"{counts['validation']:,} validation examples; {limits.name} accepts at most {limits.max_validation_examples:,}",
            )
    if options.split in ("auto", "train") and 0 < counts["train"] < RECOMMENDED_MIN_EXAMPLES:
        run.warn(
            "too_few_examples",
            0,
            f"{counts['train']} training examples; at least {RECOMMENDED_MIN_EXAMPLES} are recommended",
        )
    if t.allocator.capped:
        run.warn(
            "validation_capped",
            0,
            f"{t.allocator.capped} held-out examples over the limit of {limits.max_validation_examples} went to train",
        )
    if options.skip_invalid and run.rejected:
        run.warn("records_skipped", 0, f"{run.rejected} invalid records were skipped")
    if t.choice.counter.method == "estimate":
        run.warn("tokens_estimated", 0, f"token counts are estimates: {t.choice.fallback_reason}")
    truncated = sum(run.error_counts.values()) > len(run.errors)
    if truncated:
        run.warn(
            "errors_truncated", 0, f"only the first {len(run.errors)} errors are listed; error_counts has all"
        )
    ok = not run.fatal and (options.skip_invalid or not run.error_counts)

    tokens = sorted(t.token_counts)
    n = len(tokens)
    stats = TokenStats(
        total=sum(tokens),
        min=tokens[0] if n else 0,
        max=tokens[-1] if n else 0,
        mean=round(sum(tokens) / n, 1) if n else 0.0,
        p50=tokens[(n - 1) // 2] if n else 0,
        p95=tokens[min(n - 1, int(0.95 * n))] if n else 0,
        method=t.choice.counter.method,
        description=t.choice.counter.description,
        fallback_reason=t.choice.fallback_reason,
        limit_per_example=limits.max_tokens_per_example,
    )
    rec = recommend_hyperparameters(limits, counts["train"], stats.mean)
    recommended = Recommended(
        epochs=rec.epochs,
        learning_rate_multiplier=rec.learning_rate_multiplier,
        adapter_size=rec.adapter_size,
        basis=rec.basis,
    )
    given = options.hyperparameters
    effective = Recommended(
        epochs=given.epochs if given.epochs is not None else rec.epochs,
        learning_rate_multiplier=given.learning_rate_multiplier
        if given.learning_rate_multiplier is not None
        else rec.learning_rate_multiplier,
        adapter_size=given.adapter_size if given.adapter_size is not None else rec.adapter_size,
        basis="the upload's settings where given, else the recommendation",
    )
    if given.epochs is not None:
        epochs, epochs_source = given.epochs, "given"
    elif rec.epochs is not None:
        epochs, epochs_source = rec.epochs, "recommended"
    else:
        epochs, epochs_source = (
            limits.assumed_default_epochs,
            "assumed: Vertex chooses its default, we assume this many",
        )
    billable = t.train_tokens * epochs
    price = options.price_per_m_tokens
    cost = CostEstimate(
        billable_tokens=billable,
        epochs=epochs,
        epochs_source=epochs_source,
        usd_per_m_tokens=price,
        usd=None if price is None else round(billable / 1_000_000 * price, 2),
    )
    if options.task is not None:
        labels = t.inferrer.labels() if options.task is Task.CLASSIFICATION else ()
        task = TaskInfo(
            value=options.task.value, source="given", reason="named by the upload", labels=list(labels)
        )
    else:
        choice = t.inferrer.infer(t.column_task_hint)
        task = TaskInfo(
            value=choice.task.value, source="inferred", reason=choice.reason, labels=list(choice.labels)
        )
    return PrepareResult(
        ok=ok,
        filename=filename,
        format=t.source_format,
        shape=t.shape,
        base_model=limits.name,
        skip_invalid=options.skip_invalid,
        bytes_read=t.bytes_read,
        records_in=t.records_in,
        examples=valid if ok else 0,
        valid_examples=valid,
        rejected=run.rejected,
        errors=run.errors,
        errors_truncated=truncated,
        error_counts=dict(run.error_counts),
        warnings=run.warning_list(),
        tokens=stats,
        duplicates=t.duplicates,
        split=SplitCounts(
            **counts,
            mode=options.split,
            seed=options.split_seed,
            validation_fraction=options.validation_fraction,
            test_fraction=options.test_fraction,
        ),
        task=task,
        recommended=recommended,
        hyperparameters=effective,
        estimated_cost=cost,
    )


def prepare_and_write(
    open_stream: Callable[[], BinaryIO],
    *,
    filename: str,
    size: int | None = None,
    options: PrepareOptions,
    sink: Sink,
    progress: Progress | None = None,
    seen: SeenExamples | None = None,
    tokenizer_factory: TokenizerFactory | None = None,
) -> PrepareResult:
    """Validate in a first pass and write in a second only when the file is accepted.

    ``sink`` is never called for a rejected file. ``open_stream`` is called once or twice and
    each stream is closed here. Both passes see the same bytes, so the second result equals the
    first.
    """
    kwargs: dict[str, Any] = {
        "filename": filename,
        "size": size,
        "options": options,
        "seen": seen,
        "tokenizer_factory": tokenizer_factory,
    }
    with contextlib.closing(open_stream()) as stream:
        checked = prepare(stream, progress=progress, **kwargs)
    if not checked.ok:
        return checked
    with contextlib.closing(open_stream()) as stream:
        return prepare(stream, sink=sink, **kwargs)

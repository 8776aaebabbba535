"""One streaming pass over an upload: detect, convert, validate, deduplicate, split, report.

Hashes per example: the whole example's, exact and near (same prompt and same answer: a
duplicate, dropped; near: equal after NFKC, case folding, whitespace and trailing punctuation,
dropped unless ``dedupe: exact``), and its prompt's near key (the split: every answer to one
prompt, or to a near duplicate of it, lands in one split). See :mod:`shared.datasets.convert` for
the keys, :mod:`shared.datasets.split` for the rule, and :func:`prepare_and_write` for the two
passes.
"""

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
from shared.datasets.convert import ColumnsError
from shared.datasets.formats import Source, SourceUnreadableError
from shared.datasets.issues import WARNING_CODES, DatasetWarning, Issue, RecordIssueError, WarningItem
from shared.datasets.limits import (
    RECOMMENDED_MIN_EXAMPLES,
    ModelLimits,
    model_limits,
    recommend_hyperparameters,
)
from shared.datasets.media import MediaChecker, ObjectLookup
from shared.datasets.options import PrepareOptions
from shared.datasets.report import (
    CostEstimate,
    PrepareResult,
    Recommended,
    SplitCounts,
    TaskInfo,
    TokenStats,
    accuracy_half_width,
    resolution_note,
)
from shared.datasets.split import (
    BUCKET_SHIFT,
    BUCKETS,
    MAX_RAISED_TEST_FRACTION,
    MIN_TEST_EXAMPLES,
    SplitAllocator,
    SplitPlan,
    SplitTotals,
)
from shared.datasets.task import TaskInferrer
from shared.datasets.tokens import CounterChoice, EstimateCounter, TokenizerFactory, choose_token_counter
from shared.messages import Task
from shared.pricing import inference_usd

Sink = Callable[[str, bytes], None]
Progress = Callable[[int], None]
_WARNING_LINES = 10
#: Keys (fields, error codes) a warning names one by one; past this many the rest are counted
#: together, so that a file with a new key on every line keeps the report (and memory) small.
MAX_NAMED_ITEMS = 20
#: Example lines a warning quotes per key it names.
ITEM_EXAMPLE_LINES = 3
_OTHER_ITEMS = "(other keys)"
#: Prompt-level duplicates (a prompt repeated with another answer) are a warning from this share of
#: the examples up: a few repeated prompts are normal, many mean multi-answer data or label noise.
PROMPT_DUPLICATE_WARNING_SHARE = 0.01
#: Bits of each 64-bit digest that the duplicate sets keep. A Python int below 2^60 takes 32
#: bytes of memory, a larger one 48, and the two sets are most of a large file's memory (10^6
#: distinct examples: 2 x (32 MB of table + the ints)). Two distinct examples among 10^6 collide
#: (the second is dropped as a duplicate) with a probability below 1 in 2 million.
TRACKED_BITS = 60


class SeenExamples:
    """Which split each prompt went to, shared by the prepare() calls of one multi-file upload.

    Holds one 64-bit hash per prompt (the split key, so a prompt in the train file and again in
    the test file, with the same answer or another, is the same leak). Preparing the same file
    twice (a validate-only pass, then a writing pass) is harmless: only a hash seen in a
    *different* split is an error. A file split ``auto`` claims its prompts in the writing pass
    only, once its split is planned.
    """

    def __init__(self) -> None:
        self._split_of: dict[int, str] = {}

    def claim(self, digest: int, split: str) -> str | None:
        """Record the prompt; returns the other split that already has it, if any."""
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
        # What was dropped, by warning code and name: [count, example lines]. Skipped records
        # are the error codes of records_skipped.
        self.items: dict[str, dict[str, list[Any]]] = {}

    def error(self, issue: Issue, *, record: bool = True) -> None:
        self.error_counts[issue.code] += 1
        if record:
            self.rejected += 1
            self.item("records_skipped", issue.code, issue.line)
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

    def item(self, code: str, name: str, line: int) -> None:
        """Count ``name`` (a key dropped, an error code) under warning ``code``, at ``line``."""
        names = self.items.get(code)
        if names is None:
            names = self.items[code] = {}
        entry = names.get(name)
        if entry is None:
            if len(names) >= MAX_NAMED_ITEMS:
                name = _OTHER_ITEMS
                entry = names.get(name)
            if entry is None:
                entry = names[name] = [0, []]
        entry[0] += 1
        if line and len(entry[1]) < ITEM_EXAMPLE_LINES:
            entry[1].append(line)

    def dropped(self, notes: tuple[cv.Note, ...], line: int) -> None:
        """The notes of one example: each key counted, each warning once for the record."""
        codes: list[str] = []
        for code, name in notes:
            self.item(code, name, line)
            if code not in codes:
                codes.append(code)
                self.warn(code, line)

    def item_list(self, code: str) -> list[WarningItem]:
        return [
            WarningItem(name=name, count=n, lines=lines)
            for name, (n, lines) in sorted(self.items.get(code, {}).items(), key=lambda kv: -kv[1][0])
        ]

    def warning_list(self, source_format: str | None) -> list[DatasetWarning]:
        unit = "record" if source_format in ("json", "json_array") else "line"
        warnings = []
        for code, (n, lines, given) in self.warnings.items():
            items = self.item_list(code) if code in _DROPPING_WARNINGS else []
            message = given
            if code == "unknown_keys_dropped" and source_format in ("csv", "tsv"):
                message = "columns we do not convert were dropped"
            if items:
                message = f"{message}: {', '.join(_describe(item, unit) for item in items)}"
            warnings.append(DatasetWarning(code=code, count=n, lines=lines, message=message, items=items))
        return warnings


#: Warnings whose message names what was dropped, item by item.
_DROPPING_WARNINGS = frozenset({"unknown_keys_dropped", "schema_keywords_dropped", "records_skipped"})

#: Output tokens an evaluation answer may take beyond twice its reference (as
#: ``shared.evaluation.runner.OUTPUT_MARGIN_TOKENS``, which ingest does not import).
BASELINE_OUTPUT_MARGIN_TOKENS = 16


def _describe(item: WarningItem, unit: str) -> str:
    """One thing dropped, how often and where, as "`label` (1,204 lines, e.g. 1, 2, 5)"."""
    name = item.name if item.name == _OTHER_ITEMS else f"`{item.name}`"
    where = ", ".join(map(str, item.lines))
    if item.count == 1:
        return f"{name} ({unit} {where})" if where else name
    if item.count == len(item.lines):
        return f"{name} ({item.count:,} {unit}s: {where})"
    return f"{name} ({item.count:,} {unit}s, e.g. {where})" if where else f"{name} ({item.count:,} times)"


def _too_many_tokens(line: int, tokens: int, method: str, limits: ModelLimits) -> Issue:
    return Issue(
        line=line,
        field="",
        code="too_many_tokens",
        message=f"the example has {tokens:,} tokens ({method}); {limits.name} accepts {limits.max_tokens_per_example:,}",
    )


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
    split_plan: SplitPlan | None = None,
    object_facts: ObjectLookup | None = None,
    media_base: str | None = None,
) -> PrepareResult:
    """Read ``stream`` once and return the result; see the package docstring for the contract.

    With ``options.split == "auto"`` the split needs the counts of the whole file (the minimum test
    size, the validation limit): without ``split_plan`` this pass only counts, and its result
    reports the split the plan it makes will give (``result.split.plan()``); writing (a ``sink``)
    needs that plan, from a validate-only pass over the same bytes, as :func:`prepare_and_write`
    does.

    ``object_facts`` looks up the objects that ``fileData`` parts name (:mod:`shared.datasets.media`);
    without it only their shape, counts and MIME types are checked, and a warning says so.
    ``media_base`` (``gs://bucket/<folder of the upload>/``) is where the ``images`` paths of a
    placeholder (LLaVA-style) dataset resolve.
    """
    if sink is not None and options.split == "auto" and split_plan is None:
        raise ValueError(
            "writing an auto-split file needs the split plan of a validate-only pass over the same bytes: "
            "use prepare_and_write, or pass split_plan=checked.split.plan()"
        )
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
        plan=split_plan,
    )
    inferrer = TaskInferrer()
    token_counts = array("I")  # 4 bytes each: an example over max_tokens_per_example is not kept
    # Bytes of prepared/<id>/train.jsonl are counted (per hash bucket, by the allocator) in the
    # validate-only pass too, so that a file that grows past Vertex AI's limit when converted is
    # rejected before anything is written. Until the split is planned every line is counted.
    # The sets hold digests cut to TRACKED_BITS (see there); the split reads the full prompt digest.
    # With dedupe "near", first_of maps the near digest of each kept example to its exact digest
    # (which tells an exact duplicate from a near one); with "exact", hashes holds exact digests.
    near = options.dedupe == "near"
    first_of: dict[int, int] = {}
    hashes: set[int] = set()
    prompts: set[int] = set()
    several: set[int] = set()  # prompts with more than one answer
    prompt_duplicate_lines: list[int] = []
    # Past this many distinct examples the file is invalid anyway; stop growing the hash sets.
    max_tracked = limits.max_training_examples + limits.max_validation_examples + limits.max_test_examples
    duplicates = 0
    near_duplicates = 0
    prompt_duplicates = 0
    records_in = 0
    converter = cv.FileConverter(
        options.column_mapping, preference_mode=options.preference_mode, skip_invalid=options.skip_invalid
    )
    rejected_answers = 0  # of preference pairs, left out (preference_mode: chosen)
    source_format: str | None = None
    bytes_read = 0
    seed = options.split_seed & 0xFFFFFFFFFFFFFFFF
    hash64 = xxhash.xxh3_64_intdigest
    tracked_mask = (1 << TRACKED_BITS) - 1
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    max_tokens = limits.max_tokens_per_example
    max_files = limits.max_files_per_example
    media = MediaChecker(object_facts)
    if media_base is not None:
        converter.media_base = media_base

    if size is not None and size > limits.max_file_bytes:
        run.file_error(
            "file_too_large", f"the file has {size:,} bytes; the limit is {limits.max_file_bytes:,}"
        )
    else:
        try:
            source = Source(stream, filename, max_bytes=limits.max_file_bytes, progress=progress)
            source_format = source.format.value
            converter.delimited = source_format in ("csv", "tsv")
            # The loop runs once per record: its names are bound once here, and the common case
            # (a new, valid example) takes no call it can avoid.
            convert = converter.convert
            count = counter.count
            splits = allocator.splits
            add = allocator.histogram.add
            observe = inferrer.observe
            strict = not options.skip_invalid
            # Plain Gemini text lines (most lines of most files) are decoded by type and converted
            # without dicts (convert.PLAIN_DECODER, GeminiConverter.plain); any other line, and a
            # plain one plain() declines, takes the general path below with orjson's values. The
            # estimate is the only count that needs nothing but the texts' lengths.
            typed = cv.PLAIN_DECODER if type(counter) is EstimateCounter else None
            plain = converter.gemini.plain
            count_text = EstimateCounter.count_text
            observe_plain = inferrer.observe_plain
            plain_line = converter.gemini.plain_line
            loads = orjson.loads
            for line, read, issue in source.records(typed):
                records_in += 1
                if issue is not None:
                    run.error(issue)
                    continue
                fast: cv.PlainExample | None = None
                value = read
                if type(read) is tuple:  # formats.Typed: (a PlainRecord, the line)
                    plain_record, raw = read
                    # converter.convert's shortcut: once the first record has made the file Gemini.
                    fast = plain(plain_record) if converter.shape == cv.GEMINI else None
                    if fast is None:
                        value = loads(raw)
                if fast is not None:
                    key, prompt_key, answer_key, text_bytes, turns, answer, plain_bytes, prefix, body = fast
                    tokens = count_text(text_bytes, turns)
                    if tokens > max_tokens:
                        run.error(_too_many_tokens(line, tokens, counter.method, limits))
                        continue
                else:
                    try:
                        example = convert(value, line)
                    except RecordIssueError as bad:
                        run.error(Issue(line=line, field=bad.field, code=bad.code, message=bad.message))
                        continue
                    except cv.UndesirableExampleError:
                        run.warn("undesirable_examples_dropped", line)
                        continue
                    except ColumnsError as columns:
                        header_line = 1 if converter.delimited else line
                        run.file_error(columns.code, str(columns), line=header_line)
                        break
                    tokens = count(example)
                    if tokens > max_tokens:
                        run.error(_too_many_tokens(line, tokens, counter.method, limits))
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
                    if example.files or (type(value) is dict and "generationConfig" in value):
                        media_issues = media.check(example.record, value, line)
                        if media_issues:
                            for media_issue in media_issues[:-1]:
                                run.error(media_issue, record=False)
                            run.error(media_issues[-1])
                            continue
                    if example.notes:
                        run.dropped(example.notes, line)
                    if example.rejected_answers:
                        rejected_answers += example.rejected_answers
                        run.warn("rejected_answers_dropped", line)
                    key, prompt_key, answer_key = example.key, example.prompt_key, example.answer_key
                digest = hash64(key, seed) & tracked_mask
                prompt = hash64(prompt_key, seed)
                if near:
                    # The answer's hash seeded with the prompt's: the near key's hash, without
                    # joining the two keys or hashing the prompt twice.
                    near_digest = hash64(answer_key, prompt) & tracked_mask
                    first = first_of.get(near_digest)
                    if first is not None:
                        if first == digest:
                            duplicates += 1
                            run.warn("duplicates_removed", line)
                        else:
                            near_duplicates += 1
                            run.warn("near_duplicates_removed", line)
                        continue
                    if len(first_of) < max_tracked:
                        first_of[near_digest] = digest
                elif digest in hashes:
                    duplicates += 1
                    run.warn("duplicates_removed", line)
                    continue
                elif len(hashes) < max_tracked:
                    hashes.add(digest)
                split_name = None if splits is None else splits[prompt >> BUCKET_SHIFT]
                if seen is not None and split_name is not None:
                    other = seen.claim(prompt, split_name)
                    if other is not None:
                        run.error(
                            Issue(
                                line=line,
                                field="",
                                code="example_in_multiple_splits",
                                message=f"this example's prompt is also in the {other} file (with this answer or another); "
                                "train, validation and test must not share prompts",
                            )
                        )
                        continue
                tracked = prompt & tracked_mask
                new_prompt = tracked not in prompts
                if new_prompt:
                    if len(prompts) < max_tracked:
                        prompts.add(tracked)
                else:
                    prompt_duplicates += 1
                    several.add(tracked)
                    if len(prompt_duplicate_lines) < _WARNING_LINES:
                        prompt_duplicate_lines.append(line)
                token_counts.append(tokens)
                # Bytes of the prepared line: written, or counted (train only: see above).
                prepared_line: bytes | None = None
                if sink is not None and split_name is not None and (not strict or not run.error_counts):
                    if fast is None:
                        prepared_line = dumps(example.record, option=newline)
                    else:
                        prepared_line = plain_line(prefix, body, plain_record, raw)
                line_bytes = 0
                if split_name is None or split_name == "train":
                    if prepared_line is not None:
                        line_bytes = len(prepared_line)
                    elif fast is None:
                        line_bytes = len(dumps(example.record, option=newline))
                    else:
                        line_bytes = plain_bytes
                add(prompt, new_prompt, tokens, line_bytes)
                if fast is None:
                    observe(example)
                else:
                    observe_plain(answer, plain_record)
                if prepared_line is not None:
                    sink(split_name, prepared_line)  # type: ignore[arg-type]  # set when writing
            bytes_read = source.bytes_read
        except SourceUnreadableError as unreadable:
            run.fatal = True
            run.error(unreadable.issue, record=False)
        capped = media.dataset_issue()
        if capped is not None:
            run.file_error(capped.code, capped.message)
        if media.unchecked:
            lines = ", ".join(map(str, media.unchecked_lines))
            run.warnings["media_not_checked"] = [
                media.unchecked,
                list(media.unchecked_lines),
                f"{media.unchecked:,} examples have fileData parts whose objects were not checked (no bucket to "
                f"look them up in, or an https:// URI; e.g. lines {lines}): their existence, size and type are "
                "checked when the dataset is uploaded to the bucket",
            ]
    totals = _Totals(
        records_in=records_in,
        duplicates=duplicates,
        near_duplicates=near_duplicates if near else None,
        prompt_duplicates=prompt_duplicates,
        prompts_with_several_answers=len(several),
        prompt_duplicate_lines=prompt_duplicate_lines,
        token_counts=token_counts,
        split=allocator.finish(),
        inferrer=inferrer,
        shape=converter.shape,
        source_format=source_format,
        bytes_read=bytes_read,
        column_task_hint=converter.task_hint,
        choice=choice,
        rejected_answers=rejected_answers,
    )
    del first_of, hashes, prompts, several  # the largest objects of the pass: freed before _finish sorts
    return _finish(run, totals, filename=filename)


@dataclass(slots=True, kw_only=True)
class _Totals:
    records_in: int
    duplicates: int
    near_duplicates: int | None
    prompt_duplicates: int
    prompts_with_several_answers: int
    prompt_duplicate_lines: list[int]
    token_counts: array
    split: SplitTotals
    inferrer: TaskInferrer
    shape: str | None
    source_format: str | None
    bytes_read: int
    column_task_hint: str | None
    choice: CounterChoice
    rejected_answers: int = 0


def _finish(run: _Run, totals: _Totals, *, filename: str) -> PrepareResult:
    options, limits, t = run.options, run.limits, totals
    counts = t.split.examples
    train_bytes = t.split.line_bytes["train"]
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
        if train_bytes > limits.max_training_file_bytes:
            run.file_error(
                "training_file_too_large",
                f"the prepared training file (Gemini JSONL, {counts['train']:,} examples) would have "
                f"{train_bytes:,} bytes; Vertex AI accepts at most {limits.max_training_file_bytes:,} "
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
    _split_warnings(run, t, valid)
    if t.duplicates:
        run.warnings["duplicates_removed"][2] = (
            f"{t.duplicates:,} {'example repeats' if t.duplicates == 1 else 'examples repeat'} an earlier "
            "one (the same prompt and answer, whitespace ignored) and were removed; the first of each is kept"
        )
    if t.near_duplicates:
        run.warnings["near_duplicates_removed"][2] = (
            f"{t.near_duplicates:,} {'example is a near duplicate' if t.near_duplicates == 1 else 'examples are near duplicates'} "
            "of an earlier one (the same once Unicode NFKC, case, whitespace and trailing punctuation are "
            "ignored) and were removed; the first of each is kept. Upload with dedupe: exact to keep them"
        )
    _preference_warnings(run, t)
    if options.skip_invalid and run.rejected:
        run.warn("records_skipped", 0, f"{run.rejected:,} invalid records were skipped (skip_invalid)")
    if limits.assumed_from is not None:
        run.warn("model_limits_assumed", 0, limits.assumed_note)
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
    billable = t.split.tokens["train"] * epochs
    price = options.price_per_m_tokens
    test_examples, test_tokens = t.split.examples["test"], t.split.tokens["test"]
    # Test tokens count prompt and answer; an answer may take twice its tokens + 16 (the output
    # budget), so the output side is bounded by twice the test tokens plus the margins.
    baseline_output = 2 * test_tokens + BASELINE_OUTPUT_MARGIN_TOKENS * test_examples
    cost = CostEstimate(
        billable_tokens=billable,
        epochs=epochs,
        epochs_source=epochs_source,
        usd_per_m_tokens=price,
        usd=None if price is None else round(billable / 1_000_000 * price, 2),
        baseline_calls=test_examples,
        baseline_input_tokens=test_tokens,
        baseline_usd=inference_usd(options.base_model, test_tokens, baseline_output)
        if test_examples
        else None,
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
        warnings=run.warning_list(t.source_format),
        tokens=stats,
        duplicates=t.duplicates,
        near_duplicates=t.near_duplicates,
        dedupe=options.dedupe,
        split=_split_counts(options, t),
        task=task,
        recommended=recommended,
        hyperparameters=effective,
        estimated_cost=cost,
    )


def _split_counts(options: PrepareOptions, t: _Totals) -> SplitCounts:
    counts = t.split.examples
    test_prompts = t.split.prompts["test"]
    bands: dict[str, float] = {}
    if options.split == "auto":
        test_below, validation_from, validation_below = t.split.decision.plan.fractions()
        bands = {
            "test_hash_below": test_below,
            "validation_hash_from": validation_from,
            "validation_hash_below": validation_below,
        }
    return SplitCounts(
        **counts,
        mode=options.split,
        seed=options.split_seed,
        validation_fraction=options.validation_fraction,
        test_fraction=options.test_fraction,
        test_prompts=test_prompts,
        prompt_duplicates=t.prompt_duplicates,
        prompts_with_several_answers=t.prompts_with_several_answers,
        min_test_examples=MIN_TEST_EXAMPLES,
        **bands,
        test_points_per_example=round(100 / test_prompts, 2) if test_prompts else None,
        test_ci95_half_width=round(accuracy_half_width(test_prompts), 3) if test_prompts else None,
    )


def _preference_warnings(run: _Run, t: _Totals) -> None:
    """Say how many rejected and undesirable answers were left out: the user must know the file was
    not tuned on as uploaded."""
    unit = "record" if t.source_format in ("json", "json_array") else "line"
    pairs = run.warnings.get("rejected_answers_dropped")
    if pairs is not None:
        pairs[2] = (
            f"preference_mode: chosen: {pairs[0]:,} preference {'pair is' if pairs[0] == 1 else 'pairs are'} "
            f"tuned on the preferred answer only; {t.rejected_answers:,} rejected "
            f"{'answer was' if t.rejected_answers == 1 else 'answers were'} dropped, never trained on"
        )
    undesirable = run.warnings.get("undesirable_examples_dropped")
    if undesirable is not None:
        n, lines = undesirable[0], undesirable[1]
        where = ", ".join(map(str, lines))
        example_lines = f"{unit}s {where}" if n == len(lines) else f"e.g. {unit}s {where}"
        why = "preference_mode: chosen" if run.options.preference_mode == "chosen" else "skip_invalid"
        undesirable[2] = (
            f"{n:,} KTO {'example' if n == 1 else 'examples'} labelled false (undesirable answers; "
            f"{example_lines}) {'was' if n == 1 else 'were'} dropped ({why}), never trained on; "
            "the examples labelled true are tuned on as chat"
        )


def _split_warnings(run: _Run, t: _Totals, valid: int) -> None:
    """What the split did that a user must know: prompts with several answers, a small test split."""
    options, limits = run.options, run.limits
    decision = t.split.decision
    if t.prompt_duplicates and t.prompt_duplicates >= PROMPT_DUPLICATE_WARNING_SHARE * valid:
        run.warnings["prompt_duplicates"] = [
            t.prompt_duplicates,
            t.prompt_duplicate_lines,
            f"{t.prompts_with_several_answers:,} prompts have several different answers "
            f"({t.prompt_duplicates:,} examples repeat a prompt already in the file with another answer). "
            "They are kept, every answer of a prompt in the same split (so no test prompt is trained on); "
            "if the answers are meant to agree (labels), they are inconsistent: check them",
        ]
    capped = decision.capped_test + decision.capped_validation
    if capped:
        which = " and ".join(
            name
            for name, n in (("test", decision.capped_test), ("validation", decision.capped_validation))
            if n
        )
        run.warn(
            "validation_capped",
            0,
            f"{capped:,} held-out examples over the limit of {limits.max_validation_examples:,} per split "
            f"({which}) went to train (those of the highest prompt hashes, whatever the order of the file)",
        )
    test_prompts = t.split.prompts["test"]
    if decision.raised_from is not None:
        share = decision.plan.test_end / BUCKETS
        run.warn(
            "test_split_raised",
            0,
            f"the configured test fraction ({options.test_fraction:g}) held out {decision.raised_from} distinct "
            f"prompts, fewer than the minimum of {MIN_TEST_EXAMPLES}; the test share was raised to {share:.3f} "
            f"of the hash range so that {test_prompts} are held out (train gives up the difference)",
        )
    if decision.all_train:
        run.warn(
            "small_test_split",
            0,
            f"WARNING: the dataset is far too small to hold anything out ({valid} examples): every example is "
            "in train, the test split is empty and the evaluation has nothing to score. Upload at least "
            f"{int(MIN_TEST_EXAMPLES / MAX_RAISED_TEST_FRACTION)} distinct prompts, or a test file of your own "
            "(a manifest's test)",
        )
        return
    wants_test = (options.split == "auto" and options.test_fraction > 0) or options.split == "test"
    if wants_test and valid and test_prompts < MIN_TEST_EXAMPLES:
        why = (
            f"the dataset has {t.split.prompts['train'] + t.split.prompts['validation'] + test_prompts} distinct "
            f"prompts, too few to hold out {MIN_TEST_EXAMPLES} without taking more than "
            f"{MAX_RAISED_TEST_FRACTION:.0%} of them from training"
            if options.split == "auto"
            else "this is the whole test file"
        )
        run.warn(
            "small_test_split",
            0,
            f"WARNING: the test split has only {test_prompts} distinct prompts (the minimum is "
            f"{MIN_TEST_EXAMPLES}; {why}). {resolution_note(test_prompts)} Treat its scores, and the verdict "
            "improved / regressed, as anecdotes; upload more examples or a larger test file",
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
    object_facts: ObjectLookup | None = None,
    media_base: str | None = None,
) -> PrepareResult:
    """Validate in a first pass and write in a second only when the file is accepted.

    The first pass also plans the split (:mod:`shared.datasets.split`: the minimum test size and
    the validation limit need the file's counts); the second applies that plan. ``sink`` is never
    called for a rejected file. ``open_stream`` is called once or twice and
    each stream is closed here. Both passes see the same bytes, so the second result equals the
    first.
    """
    kwargs: dict[str, Any] = {
        "filename": filename,
        "size": size,
        "options": options,
        "seen": seen,
        "tokenizer_factory": tokenizer_factory,
        "object_facts": object_facts,
        "media_base": media_base,
    }
    with contextlib.closing(open_stream()) as stream:
        checked = prepare(stream, progress=progress, **kwargs)
    if not checked.ok:
        return checked
    with contextlib.closing(open_stream()) as stream:
        return prepare(stream, sink=sink, split_plan=checked.split.plan(), **kwargs)

"""The result of preparing one file (:class:`PrepareResult`) and its readable report.

``PrepareResult.model_dump(mode="json")`` is exactly the ``sftpipe validate --json`` contract and
what the ingest function stores as ``report.json``; :func:`render_report` makes the Markdown
version for people.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from shared.datasets.issues import ERROR_CODES, DatasetWarning, Issue
from shared.datasets.split import SplitPlan


class TokenStats(BaseModel):
    total: int = 0
    min: int = 0
    max: int = 0
    mean: float = 0.0
    p50: int = 0
    p95: int = 0
    method: str = "estimate"
    #: How the counts were made (for an estimate: the formula and what it rests on).
    description: str = ""
    #: Why the estimate ran instead of the exact count; None when exact.
    fallback_reason: str | None = None
    limit_per_example: int = 0


def accuracy_half_width(n: int, p: float = 0.5) -> float:
    """Half-width of a 95 % interval on an accuracy ``p`` measured on ``n`` test items.

    The normal approximation ``1.96 * sqrt(p * (1 - p) / n)``: simple, and enough to say how coarse
    a test split is. It is widest at ``p = 0.5``. 20 items: about ±0.22 at 0.5, ±0.18 at 0.8;
    100 items: ±0.10 at 0.5; 1,000: ±0.03. ``n`` counts distinct prompts, since several answers to
    one prompt are not independent measurements.
    """
    if n <= 0:
        raise ValueError("no test items")
    return 1.96 * math.sqrt(p * (1 - p) / n)


def resolution_note(n: int) -> str:
    """One sentence on what a test split of ``n`` items can tell apart."""
    if n <= 0:
        return "The test split is empty: the evaluation has nothing to score."
    return (
        f"With {n:,} test prompts one example moves an accuracy by {100 / n:.1f} points; a 95 % interval "
        f"on an accuracy of 0.5 is about ±{accuracy_half_width(n):.2f} "
        f"(±{accuracy_half_width(n, 0.8):.2f} at 0.8), so smaller differences between two models are noise."
    )


class SplitCounts(BaseModel):
    train: int = 0
    validation: int = 0
    test: int = 0
    mode: str = "auto"
    seed: int = 0
    validation_fraction: float = 0.0
    test_fraction: float = 0.0
    #: Distinct prompts in the test split: the independent items a test score rests on.
    test_prompts: int | None = None
    #: Examples kept whose prompt is already in the file with another answer (same split as it).
    prompt_duplicates: int | None = None
    #: Prompts that have more than one answer in the file.
    prompts_with_several_answers: int | None = None
    #: The smallest test split (distinct prompts) held out of a dataset large enough to give it.
    min_test_examples: int | None = None
    #: The bands of the prompt hash (mapped to [0, 1)) used in ``auto`` mode: test is
    #: ``hash < test_hash_below``, validation ``validation_hash_from <= hash < validation_hash_below``.
    #: The configured fractions unless the minimum test size or the validation limit moved them.
    test_hash_below: float | None = None
    validation_hash_from: float | None = None
    validation_hash_below: float | None = None
    #: Points of accuracy one test prompt is worth (100 / test_prompts).
    test_points_per_example: float | None = None
    #: Half-width of a 95 % interval on an accuracy of 0.5 over the test prompts.
    test_ci95_half_width: float | None = None

    def plan(self) -> SplitPlan | None:
        """The bands as a plan for the writing pass (``prepare(..., split_plan=...)``); None unless auto."""
        if (
            self.test_hash_below is None
            or self.validation_hash_from is None
            or self.validation_hash_below is None
        ):
            return None
        return SplitPlan.from_fractions(
            self.test_hash_below, self.validation_hash_from, self.validation_hash_below
        )


class Recommended(BaseModel):
    epochs: int | None = None
    learning_rate_multiplier: float | None = None
    adapter_size: int | None = None
    basis: str = ""


class CostEstimate(BaseModel):
    #: Training-split tokens x epochs (validation and test tokens are not billed for training).
    billable_tokens: int = 0
    epochs: int = 0
    #: "given" (upload or settings), "recommended", or "assumed" (the limits table's assumption).
    epochs_source: str = ""
    usd_per_m_tokens: float | None = None
    usd: float | None = None
    #: The baseline before tuning (the base model answers the test split, ``shared.evaluation.
    #: baseline``): one call per test example, the test split's tokens in, at most twice the
    #: answers' tokens + 16 each out (the evaluation's output budget, ``OUTPUT_MARGIN_TOKENS``).
    baseline_calls: int = 0
    baseline_input_tokens: int = 0
    baseline_usd: float | None = None


class TaskInfo(BaseModel):
    """The task decision (``shared.evaluation.task_rule``): the task, who decided, the evidence."""

    value: str
    #: "given" (the upload named it) or "inferred" (the rule decided it from the data).
    source: str
    #: The evidence, with its numbers.
    reason: str = ""
    #: The dataset's class labels, normalised (case, spaces, wrapping punctuation), counted over
    #: every example of the file; empty unless the task is classification or too many to track.
    labels: list[str] = Field(default_factory=list)


class PrepareResult(BaseModel):
    """Everything a caller needs to know about one prepared file."""

    model_config = ConfigDict(extra="forbid")

    ok: bool
    filename: str
    format: str | None = None
    shape: str | None = None
    base_model: str
    skip_invalid: bool = False
    bytes_read: int = 0
    records_in: int = 0
    #: Examples written to the outputs: 0 when the file is rejected.
    examples: int = 0
    #: Valid, distinct examples found (what ``examples`` would be if the file were accepted).
    valid_examples: int = 0
    #: Records with an error (skipped with skip_invalid, else the reason for rejection).
    rejected: int = 0
    errors: list[Issue] = Field(default_factory=list)
    errors_truncated: bool = False
    error_counts: dict[str, int] = Field(default_factory=dict)
    warnings: list[DatasetWarning] = Field(default_factory=list)
    tokens: TokenStats = Field(default_factory=TokenStats)
    #: Exact duplicates removed (the same prompt and answer but for whitespace).
    duplicates: int = 0
    #: Near duplicates removed besides (the same once NFKC, case, whitespace and trailing
    #: punctuation are ignored); None with ``dedupe: exact``, which keeps them.
    near_duplicates: int | None = 0
    #: "near" (exact and near duplicates removed) or "exact" (exact duplicates only).
    dedupe: str = "near"
    split: SplitCounts = Field(default_factory=SplitCounts)
    task: TaskInfo | None = None
    recommended: Recommended = Field(default_factory=Recommended)
    #: The hyperparameters to submit: the user's where given, else the recommendation.
    hyperparameters: Recommended = Field(default_factory=Recommended)
    estimated_cost: CostEstimate = Field(default_factory=CostEstimate)


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _duplicates(result: PrepareResult) -> str:
    exact = f"{_fmt_int(result.duplicates)} exact"
    if result.near_duplicates is None:
        return f"{exact} (near duplicates kept: dedupe exact)"
    return f"{exact}, {_fmt_int(result.near_duplicates)} near"


def _split_rule(split: SplitCounts) -> str:
    if split.mode != "auto":
        return (
            f"The file is the test split: {split.test:,} examples, {split.test_prompts:,} distinct prompts."
        )
    bands = ""
    if split.test_hash_below is not None and split.validation_hash_below is not None:
        bands = (
            f" (test below {split.test_hash_below:.4f}, validation from {split.validation_hash_from:.4f} "
            f"below {split.validation_hash_below:.4f}; configured {split.test_fraction:g} / "
            f"{split.validation_fraction:g})"
        )
    return (
        f"{split.test:,} test examples, {split.test_prompts:,} distinct prompts. Each example's split is decided "
        f"by the seeded hash of its prompt alone{bands}, so every answer to one prompt is in one split and the "
        "order of the file does not matter."
    )


#: Errors that preference_mode: chosen resolves (a preference or KTO file as uploaded).
_PREFERENCE_ERRORS = frozenset({"unsupported_preference_pairs", "kto_labels_present"})


def render_report(result: PrepareResult) -> str:
    """A Markdown report a person can read top to bottom."""
    verdict = "ACCEPTED" if result.ok else "REJECTED"
    lines = [f"# Dataset report: {result.filename}", "", f"**{verdict}** for tuning `{result.base_model}`."]
    if not result.ok:
        if _PREFERENCE_ERRORS.intersection(result.error_counts):
            # skip_invalid would skip every pair: the way out is the preferred answers.
            way_out = ", or upload it with preference_mode: chosen to tune on the preferred answers only."
        elif result.skip_invalid:
            way_out = "."
        else:
            way_out = ", or upload it with skip_invalid to drop the invalid records."
        lines.append("Nothing was written. Fix the errors below and upload the file again" + way_out)
    lines += [
        "",
        "| | |",
        "|---|---|",
        f"| format / shape | {result.format or '?'} / {result.shape or '?'} |",
        f"| records read | {_fmt_int(result.records_in)} |",
        f"| valid distinct examples | {_fmt_int(result.valid_examples)} |",
        f"| examples written | {_fmt_int(result.examples)} |",
        f"| records with errors | {_fmt_int(result.rejected)} |",
        f"| duplicates removed | {_duplicates(result)} |",
    ]
    split = result.split
    if split.prompt_duplicates is not None:
        lines.append(
            f"| prompt-level duplicates kept (same prompt, another answer) | {_fmt_int(split.prompt_duplicates)}"
            f" ({_fmt_int(split.prompts_with_several_answers or 0)} prompts with several answers) |"
        )
    lines.append(f"| split train / validation / test | {split.train} / {split.validation} / {split.test} |")
    if result.task is not None:
        lines.append(f"| task | {result.task.value} ({result.task.source}: {result.task.reason}) |")
    t = result.tokens
    lines += [
        "",
        "## Tokens per example",
        f"total {_fmt_int(t.total)}, min {t.min}, mean {t.mean:.0f}, median {t.p50}, p95 {t.p95}, "
        f"max {t.max} (limit {_fmt_int(t.limit_per_example)}).",
        f"Method: {t.description}" + (f" Why not exact: {t.fallback_reason}." if t.fallback_reason else ""),
    ]
    if split.test_prompts is not None and split.mode in ("auto", "test"):
        lines += ["", "## Test split", _split_rule(split), "", resolution_note(split.test_prompts)]
    lines += ["", "## Hyperparameters"]
    r, h, c = result.recommended, result.hyperparameters, result.estimated_cost

    def show(value: object) -> str:
        return "Vertex default" if value is None else str(value)

    lines += [
        "| | recommended | to submit |",
        "|---|---|---|",
        f"| epochs | {show(r.epochs)} | {show(h.epochs)} |",
        f"| learning-rate multiplier | {show(r.learning_rate_multiplier)} | {show(h.learning_rate_multiplier)} |",
        f"| adapter size | {show(r.adapter_size)} | {show(h.adapter_size)} |",
        "",
        f"Basis: {r.basis}.",
        "",
        "## Estimated cost",
    ]
    not_billed = "Only the training split is billed; validation and test tokens are not."
    if c.usd is None:
        lines.append(
            f"{_fmt_int(c.billable_tokens)} billable training tokens (training-split tokens x {c.epochs} epochs, "
            f"{c.epochs_source}); no price is configured for this model. {not_billed}"
        )
    else:
        lines.append(
            f"{_fmt_int(c.billable_tokens)} billable training tokens (training-split tokens x {c.epochs} epochs, "
            f"{c.epochs_source}) at ${c.usd_per_m_tokens}/M tokens: about **${c.usd:,.2f}** "
            f"(token counts by {t.method}). {not_billed}"
        )
    if c.baseline_calls:
        price = (
            "no inference price is known for this model"
            if c.baseline_usd is None
            else f"about **${c.baseline_usd:,.2f}**"
        )
        lines += [
            "",
            f"Baseline before tuning (with `SFTPIPE_BASELINE_BEFORE_TUNING`, on by default): {_fmt_int(c.baseline_calls)} "
            f"calls of the base model, about {_fmt_int(c.baseline_input_tokens)} input tokens: {price} "
            "(its answers are reused by the final evaluation, which then asks only the tuned model).",
        ]
    if result.warnings:
        lines += ["", "## Warnings"]
        for w in result.warnings:
            # A warning that names its items quotes their lines in its message already.
            where = (
                f" (lines {', '.join(map(str, w.lines))}{', ...' if w.count > len(w.lines) else ''})"
                if w.lines and not w.items
                else ""
            )
            lines.append(f"- `{w.code}`: {w.message}{where}")
    if result.error_counts:
        lines += ["", "## Errors", "", "| code | count | meaning |", "|---|---|---|"]
        for code, n in sorted(result.error_counts.items(), key=lambda kv: -kv[1]):
            lines.append(f"| `{code}` | {n} | {ERROR_CODES.get(code, '')} |")
        where = "record" if result.format in ("json", "json_array") else "line"
        lines += ["", f"| {where} | field | code | message |", "|---|---|---|---|"]
        for e in result.errors:
            message = e.message.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {e.line or 'file'} | `{e.field}` | `{e.code}` | {message} |")
        if result.errors_truncated:
            lines.append(
                f"\nOnly the first {len(result.errors)} errors are listed; the counts above are complete."
            )
    return "\n".join(lines) + "\n"

"""The result of preparing one file (:class:`PrepareResult`) and its readable report.

``PrepareResult.model_dump(mode="json")`` is exactly the ``sftpipe validate --json`` contract and
what the ingest function stores as ``report.json``; :func:`render_report` makes the Markdown
version for people.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.datasets.issues import ERROR_CODES, DatasetWarning, Issue


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


class SplitCounts(BaseModel):
    train: int = 0
    validation: int = 0
    test: int = 0
    mode: str = "auto"
    seed: int = 0
    validation_fraction: float = 0.0
    test_fraction: float = 0.0


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
    duplicates: int = 0
    split: SplitCounts = Field(default_factory=SplitCounts)
    task: TaskInfo | None = None
    recommended: Recommended = Field(default_factory=Recommended)
    #: The hyperparameters to submit: the user's where given, else the recommendation.
    hyperparameters: Recommended = Field(default_factory=Recommended)
    estimated_cost: CostEstimate = Field(default_factory=CostEstimate)


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def render_report(result: PrepareResult) -> str:
    """A Markdown report a person can read top to bottom."""
    verdict = "ACCEPTED" if result.ok else "REJECTED"
    lines = [f"# Dataset report: {result.filename}", "", f"**{verdict}** for tuning `{result.base_model}`."]
    if not result.ok:
        lines.append(
            "Nothing was written. Fix the errors below and upload the file again"
            + (
                "."
                if result.skip_invalid
                else ", or upload it with skip_invalid to drop the invalid records."
            )
        )
    lines += [
        "",
        "| | |",
        "|---|---|",
        f"| format / shape | {result.format or '?'} / {result.shape or '?'} |",
        f"| records read | {_fmt_int(result.records_in)} |",
        f"| valid distinct examples | {_fmt_int(result.valid_examples)} |",
        f"| examples written | {_fmt_int(result.examples)} |",
        f"| records with errors | {_fmt_int(result.rejected)} |",
        f"| duplicates removed | {_fmt_int(result.duplicates)} |",
        f"| split train / validation / test | {result.split.train} / {result.split.validation} / {result.split.test} |",
    ]
    if result.task is not None:
        lines.append(f"| task | {result.task.value} ({result.task.source}: {result.task.reason}) |")
    t = result.tokens
    lines += [
        "",
        "## Tokens per example",
        f"total {_fmt_int(t.total)}, min {t.min}, mean {t.mean:.0f}, median {t.p50}, p95 {t.p95}, "
        f"max {t.max} (limit {_fmt_int(t.limit_per_example)}).",
        f"Method: {t.description}" + (f" Why not exact: {t.fallback_reason}." if t.fallback_reason else ""),
        "",
        "## Hyperparameters",
    ]
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
    if result.warnings:
        lines += ["", "## Warnings"]
        for w in result.warnings:
            where = (
                f" (lines {', '.join(map(str, w.lines))}{', ...' if w.count > len(w.lines) else ''})"
                if w.lines
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

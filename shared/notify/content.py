"""What a notification says, independent of the channel that carries it.

Outcomes come in five kinds: a job was evaluated (metrics and verdict), a job ended without a
model (failed, cancelled, expired, baseline_met: the reason), a running job stalled (no progress
for ``SFTPIPE_STALL_AFTER_S``), an uploaded dataset was rejected (the report and the first
errors), and the base model's baseline was taken before tuning (its scores; the job is queued). Each becomes a :class:`Notification` that the Slack and email formatters
render the same way, so both channels always say the same thing.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.evaluation.confidence import CONFIDENCE_LEVEL
from shared.evaluation.report import (
    EvaluationSummary,
    format_delta,
    format_duration,
    format_interval,
    format_score,
    undecided_text,
    verdict_words,
    vertex_counts_text,
)
from shared.tuning.backend import served_as

#: Errors listed in a rejection notice; the report has all of them.
TOP_ERRORS_SHOWN = 10
ERROR_TEXT_LIMIT = 300


class EvaluatedOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["evaluated"] = "evaluated"
    summary: EvaluationSummary
    report_url: str | None = None

    @property
    def event_key(self) -> str:
        return self.kind


class _JobOutcome(BaseModel):
    """What every notice about one tuning job carries."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    dataset_id: str
    base_model: str
    state: str
    tuning_job_name: str | None = None
    link: str | None = None

    @property
    def short_state(self) -> str:
        return self.state.removeprefix("JOB_STATE_").lower()


class JobEndedOutcome(_JobOutcome):
    """A tuning job that ended without a model to evaluate."""

    kind: Literal["job_ended"] = "job_ended"
    state: str = Field(description="JobState name (JOB_STATE_FAILED) or short form (FAILED).")
    reason: str
    duration_s: float | None = None

    @property
    def event_key(self) -> str:
        return f"{self.kind}:{self.short_state}"


class JobStalledOutcome(_JobOutcome):
    """A tuning job without progress for ``SFTPIPE_STALL_AFTER_S``: the poller's ``stalled`` event."""

    kind: Literal["job_stalled"] = "job_stalled"
    state: str = Field(description="The job's status when the alert was raised (JOB_STATE_RUNNING...).")
    #: When the poller raised the alert: it tells one stall from the next.
    occurred_at: datetime
    last_progress_at: datetime | None = None
    #: Set when the job waits for Vertex AI rather than stalls: the sub-state
    #: (TUNING_JOB_STATE_WAITING_FOR_QUOTA / _CAPACITY) and since when.
    waiting: str | None = None
    waiting_since: datetime | None = None

    @property
    def event_key(self) -> str:
        # One key per stall, the same second the poller's outbox id uses: a redelivered alert
        # finds its notice recorded, a later stall (after progress resumed) has a key of its own.
        return f"{self.kind}:{int(self.occurred_at.timestamp())}"


class DatasetRejectedOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["dataset_rejected"] = "dataset_rejected"
    dataset_id: str
    source_uri: str
    error_count: int
    top_errors: list[str]
    report_url: str | None = None

    @property
    def event_key(self) -> str:
        return self.kind


class BaselineOutcome(BaseModel):
    """The base model scored on the test split before any tuning job exists; the job is queued."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["baseline"] = "baseline"
    job_id: str
    dataset_id: str
    base_model: str
    #: ``macro_f1 0.420 on 120 test examples (zero-shot)``; empty when no baseline was taken.
    summary_line: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    gate_note: str = ""
    #: Why no baseline could be taken (the job is queued all the same).
    error: str = ""
    #: The local model that answered for the base model (None: Vertex AI answered).
    served_locally_by: str | None = None

    @property
    def event_key(self) -> str:
        return self.kind


AnyOutcome = EvaluatedOutcome | JobEndedOutcome | JobStalledOutcome | DatasetRejectedOutcome | BaselineOutcome
Outcome = Annotated[AnyOutcome, Field(discriminator="kind")]


class Table(BaseModel):
    model_config = ConfigDict(frozen=True)

    headers: list[str]
    rows: list[list[str]]
    footnote: str = ""


def text_table(table: Table) -> str:
    """The table in monospace: first column left-aligned, numbers right-aligned."""
    rows = [table.headers, *table.rows]
    footnote = f"\n{table.footnote}" if table.footnote else ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(table.headers))]
    return (
        "\n".join(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        )
        + footnote
    )


#: Bidirectional embeddings, overrides and isolates: invisible, yet they reorder what a reader
#: sees (``report\u202egpj.exe`` shows as ``reportexe.jpg``), so a file name could pose as another.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """``text`` without the characters that no channel should pass on as they are.

    Line breaks become ``\\n`` (a lone CR would start a new header line in a mail); other control
    characters, U+2028/U+2029 and bidi controls become U+FFFD, so what was there stays visible.
    Every script's letters are kept as they are.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(
        "\ufffd"
        if char in _BIDI_CONTROLS or (char not in "\n\t" and unicodedata.category(char) in ("Cc", "Zl", "Zp"))
        else char
        for char in text
    )


def one_line(text: str) -> str:
    """:func:`printable`, and every run of whitespace (line breaks included) one space."""
    return " ".join(printable(text).split())


class Notification(BaseModel):
    """Channel-neutral content, each string plain text that may quote an uploader (object names,
    metadata, file content). Control characters are neutralised here, once for every channel
    (:func:`printable`); each channel then escapes for its own syntax (mrkdwn, HTML, headers).
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["evaluated", "job_ended", "job_stalled", "dataset_rejected", "baseline"]
    status: str = Field(
        description=(
            "improved, regressed, not_distinguishable, failed, cancelled, expired, baseline_met, "
            "stalled, rejected, or baseline (taken before tuning)."
        )
    )
    subject: str
    summary: str
    facts: list[tuple[str, str]]
    table: Table | None = None
    items_title: str = ""
    items: list[str] = Field(default_factory=list)
    link: str | None = None
    link_label: str = "Open the report"
    #: Remarks about the delivery itself, such as a requested target that was not notified.
    notes: list[str] = Field(default_factory=list)

    @field_validator("subject")
    @classmethod
    def _subject_on_one_line(cls, value: str) -> str:
        return one_line(value)

    @field_validator("link")
    @classmethod
    def _link_on_one_line(cls, value: str | None) -> str | None:
        return one_line(value) if value is not None else None

    @field_validator("summary", "items_title", "link_label")
    @classmethod
    def _printable(cls, value: str) -> str:
        return printable(value)

    # Facts, items and notes are one line each in every layout (a field, a bullet, a table row).
    @field_validator("facts")
    @classmethod
    def _facts_on_one_line(cls, value: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(one_line(label), one_line(text)) for label, text in value]

    @field_validator("items", "notes")
    @classmethod
    def _items_on_one_line(cls, value: list[str]) -> list[str]:
        return [one_line(item) for item in value]


def browser_url(uri: str) -> str:
    """A link a person can open: ``gs://bucket/path`` becomes the Cloud Console's object URL."""
    if uri.startswith("gs://"):
        bucket, _, path = uri.removeprefix("gs://").partition("/")
        return f"https://storage.cloud.google.com/{bucket}/{quote(path)}"
    return uri


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def evaluated_notification(outcome: EvaluatedOutcome) -> Notification:
    summary = outcome.summary
    primary = summary.primary
    wording = {
        "improved": "improved",
        "regressed": "regressed",
        "not_distinguishable": "is not distinguishable from the base model",
    }[summary.verdict]
    interval = (
        f", {CONFIDENCE_LEVEL:.0%} CI {format_interval(primary.delta_ci, signed=True)}"
        if primary.delta_ci
        else ""
    )
    undecided = (
        "; "
        + undecided_text(
            primary, summary.examples_needed, summary.counts.test_examples, summary.verdict_tolerance
        )
        if summary.verdict == "not_distinguishable"
        else ""
    )
    counts = summary.counts
    facts = [
        ("Job", summary.job_id),
        ("Base model", served_as(summary.base_model, summary.served_locally_by)),
        ("Dataset", summary.dataset_id),
        ("Task", f"{summary.task.value} ({summary.task_decided_by})"),
        ("Tuning duration", format_duration(summary.tuning_duration_s)),
        (
            "Test examples",
            f"{counts.test_examples:,} (failed calls: base {counts.base_failures}, "
            f"tuned {counts.tuned_failures}{counts.truncation_text()})",
        ),
    ]
    if summary.tuned_endpoint:
        facts.append(("Tuned endpoint", summary.tuned_endpoint))
    champion = summary.champion
    if champion is not None:
        words = {
            "challenger_better": "better",
            "champion_better": "worse",
            "not_distinguishable": "not distinguishable",
        }[champion.verdict]
        facts.append(("Against the champion", f"{words} than job {champion.job_id}: {champion.reason}"))
    best = summary.best_checkpoint_score
    if best is not None:
        facts.append(
            (
                "Best checkpoint",
                f"{best.checkpoint_id} (epoch {best.epoch}, chosen on the validation split of "
                f"{len(summary.checkpoints)} checkpoints): {best.endpoint}",
            )
        )
    if summary.cost:
        facts.append(("Estimated training cost", f"${summary.cost.dollars:,.2f}"))
    if summary.vertex_counts:
        facts.append(("Counted by Vertex AI", vertex_counts_text(summary.vertex_counts)))
    if summary.judge and summary.judge.win_rate:
        rate, judge = summary.judge.win_rate, summary.judge
        stand_in = ", local stand-in: noisy" if judge.local_stand_in else ""
        facts.append(
            (
                "Judge win rate",
                f"tuned {rate.tuned:.0%} · tie {rate.tie:.0%} · base {rate.base:.0%} of "
                f"{judge.examples_judged:,} ({judge.model}{stand_in})",
            )
        )
    return Notification(
        kind="evaluated",
        status=summary.verdict,
        subject=(
            f"[sftpipe] {verdict_words(summary.verdict)}: {summary.job_id} "
            f"({summary.base_model} on {summary.dataset_id})"
        ),
        summary=(
            f"The tuned model {wording} on {primary.name}: {format_score(primary.base)} → "
            f"{format_score(primary.tuned)} ({format_delta(primary.delta)}{interval}){undecided}."
        ),
        facts=facts,
        table=Table(
            headers=["metric", "base", "tuned", "Δ"],
            rows=[
                [
                    m.name + (" *" if m.primary else ""),
                    format_score(m.base),
                    format_score(m.tuned),
                    format_delta(m.delta),
                ]
                for m in summary.metrics
            ],
            footnote=(
                "* primary metric: it decides the verdict (its Δ interval must exclude 0 and the change "
                f"exceed the tolerance ±{summary.verdict_tolerance:g})"
            ),
        ),
        link=browser_url(outcome.report_url) if outcome.report_url else None,
    )


def job_ended_notification(outcome: JobEndedOutcome) -> Notification:
    facts = [
        ("Job", outcome.job_id),
        ("Base model", outcome.base_model),
        ("Dataset", outcome.dataset_id),
        ("State", outcome.state),
        ("Duration", format_duration(outcome.duration_s)),
    ]
    if outcome.tuning_job_name:
        facts.append(("Vertex AI job", outcome.tuning_job_name))
    return Notification(
        kind="job_ended",
        status=outcome.short_state,
        subject=f"[sftpipe] {outcome.short_state}: {outcome.job_id} ({outcome.base_model} on {outcome.dataset_id})",
        summary=f"Tuning job {outcome.job_id} {outcome.short_state}: {outcome.reason}",
        facts=facts,
        link=browser_url(outcome.link) if outcome.link else None,
        link_label="Open the job",
    )


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def job_stalled_notification(outcome: JobStalledOutcome) -> Notification:
    if outcome.waiting:
        return _job_waiting_notification(outcome)
    if outcome.last_progress_at is not None:
        stalled_for = format_duration((outcome.occurred_at - outcome.last_progress_at).total_seconds())
        since = f"for {stalled_for} (last progress {_utc(outcome.last_progress_at)})"
    else:
        since = "since it was submitted"
    return _job_alert(
        outcome,
        headline="stalled",
        state=outcome.state,
        timeline=[
            ("Last progress", _utc(outcome.last_progress_at) if outcome.last_progress_at else "none seen")
        ],
        summary=f"Tuning job {outcome.job_id} is still {outcome.short_state} but has made no progress {since}.",
    )


def _job_alert(
    outcome: JobStalledOutcome, *, headline: str, state: str, timeline: list[tuple[str, str]], summary: str
) -> Notification:
    """A notice about a running job that needs a look (stalled, or waiting for Vertex AI)."""
    facts = [
        ("Job", outcome.job_id),
        ("Base model", outcome.base_model),
        ("Dataset", outcome.dataset_id),
        ("State", state),
        *timeline,
        ("Alert raised", _utc(outcome.occurred_at)),
    ]
    if outcome.tuning_job_name:
        facts.append(("Vertex AI job", outcome.tuning_job_name))
    return Notification(
        kind="job_stalled",
        status="stalled",
        subject=f"[sftpipe] {headline}: {outcome.job_id} ({outcome.base_model} on {outcome.dataset_id})",
        summary=f"{summary} Nothing is cancelled automatically: `sftpipe cancel {outcome.job_id}` stops it.",
        facts=facts,
        link=browser_url(outcome.link) if outcome.link else None,
        link_label="Open the job",
    )


#: What a waiting sub-state means for the reader, and what they can do.
_WAITING_FOR = {
    "TUNING_JOB_STATE_WAITING_FOR_QUOTA": (
        "quota",
        "Vertex AI starts it when the project's tuning quota frees up (another job ends); raise the "
        "quota in the Cloud Console to start it sooner.",
    ),
    "TUNING_JOB_STATE_WAITING_FOR_CAPACITY": (
        "capacity",
        "Vertex AI starts it when accelerators are free in the region; nothing is billed while it waits.",
    ),
}


def _job_waiting_notification(outcome: JobStalledOutcome) -> Notification:
    waiting = outcome.waiting or ""
    what, advice = _WAITING_FOR.get(waiting, ("Vertex AI", "Vertex AI starts it when it can."))
    since = outcome.waiting_since or outcome.occurred_at
    waited = format_duration((outcome.occurred_at - since).total_seconds())
    return _job_alert(
        outcome,
        headline=f"waiting for {what}",
        state=f"{outcome.state} ({waiting})",
        timeline=[("Waiting since", _utc(since))],
        summary=f"Tuning job {outcome.job_id} has been waiting for {what} for {waited} ({waiting}). {advice}",
    )


def dataset_rejected_notification(outcome: DatasetRejectedOutcome) -> Notification:
    shown = [_clip(error, ERROR_TEXT_LIMIT) for error in outcome.top_errors[:TOP_ERRORS_SHOWN]]
    more = outcome.error_count - len(shown)
    return Notification(
        kind="dataset_rejected",
        status="rejected",
        subject=f"[sftpipe] dataset rejected: {outcome.dataset_id}",
        summary=(
            f"{outcome.source_uri} was rejected with {outcome.error_count:,} "
            f"error{'s' if outcome.error_count != 1 else ''}; no tuning job was started."
        ),
        facts=[
            ("Dataset", outcome.dataset_id),
            ("File", outcome.source_uri),
            ("Errors", f"{outcome.error_count:,}"),
        ],
        items_title="First errors" + (f" ({more:,} more in the report)" if more > 0 else ""),
        items=shown,
        link=browser_url(outcome.report_url) if outcome.report_url else None,
        link_label="Open the validation report",
    )


def baseline_notification(outcome: BaselineOutcome) -> Notification:
    if outcome.error:
        summary = f"{outcome.error}; tuning job queued all the same."
    else:
        summary = f"Baseline: {outcome.summary_line}; tuning job queued."
        if outcome.gate_note:
            summary += f" ({outcome.gate_note}.)"
    facts = [
        ("Job", outcome.job_id),
        ("Base model", served_as(outcome.base_model, outcome.served_locally_by)),
        ("Dataset", outcome.dataset_id),
    ]
    facts += [(name, format_score(value)) for name, value in sorted(outcome.metrics.items())]
    return Notification(
        kind="baseline",
        status="baseline",
        subject=f"[sftpipe] baseline: {outcome.job_id} ({outcome.base_model} on {outcome.dataset_id})",
        summary=summary,
        facts=facts,
    )


def build_notification(outcome: AnyOutcome) -> Notification:
    if isinstance(outcome, EvaluatedOutcome):
        return evaluated_notification(outcome)
    if isinstance(outcome, JobEndedOutcome):
        return job_ended_notification(outcome)
    if isinstance(outcome, JobStalledOutcome):
        return job_stalled_notification(outcome)
    if isinstance(outcome, BaselineOutcome):
        return baseline_notification(outcome)
    return dataset_rejected_notification(outcome)

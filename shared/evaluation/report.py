"""The evaluation summary (``summary.json``) and the human report (``report.html``).

The summary is a pydantic model, so the completion handler stores exactly what the report and the
notifications show. The report is one self-contained HTML file: inline CSS, charts as inline SVG
drawn here, no JavaScript, no external resource, so it opens the same from GCS, a mail attachment
or a laptop. Every piece of dataset or model text goes through :func:`html.escape` (a dataset may
well contain ``<script>``), and that includes labels and names inside the SVG charts.

Every score comes with its 95% interval (:mod:`shared.evaluation.confidence`), and the verdict
says "improved" or "regressed" only when the primary metric's paired interval excludes zero and
the change exceeds :data:`VERDICT_TOLERANCE`; otherwise the tuned model is "not distinguishable
from the base model", with the number of test examples a clear answer would need.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.evaluation.confidence import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE_LEVEL,
    MAX_EXAMPLES_NEEDED,
    examples_needed,
    excludes_zero,
    paired_bootstrap,
)
from shared.evaluation.judge import SCORE_MAX, SCORE_MIN, JudgeSummary, judge_cost_note, judge_note
from shared.evaluation.metrics import (
    PRIMARY_METRIC,
    ClassScores,
    ConfusionMatrix,
    MetricResult,
    TaskChoice,
    confusion_labels,
    confusion_matrix,
)
from shared.messages import Task
from shared.tuning.backend import served_as

Verdict = Literal["improved", "regressed", "not_distinguishable"]
Interval = tuple[float, float]

#: Smallest change of the primary metric (0-1 scale) that "improved" or "regressed" may report,
#: on top of an interval that excludes zero: a real change of half a point is not worth a
#: "better" or "worse" headline.
VERDICT_TOLERANCE = 0.01
#: Metrics where a smaller value is better (the verdict and the colours take it into account).
LOWER_IS_BETTER = frozenset({"out_of_label_rate"})
#: Text longer than this is cut in the report's examples (the full text is in the per-example file).
EXAMPLE_TEXT_LIMIT = 1_500
# Loss-curve signals from the Vertex AI tuning best-practices guide. The guide names the signs, not
# numbers: validation loss 5% above its minimum while training loss fell counts as over-fitting,
# and a last quarter of steps that still brings 10% of the whole fall of training loss counts as
# not converged.
INITIAL_LOSS_ALARM = 10.0
RISE_FROM_MINIMUM = 0.05
STILL_FALLING = 0.10


def utcnow() -> datetime:
    return datetime.now(UTC)


class LossPoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    step: int
    value: float


class MetricComparison(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    base: float
    tuned: float
    delta: float
    primary: bool = False
    higher_is_better: bool = True
    #: 95% intervals ([low, high]) of the base and tuned score and of the paired delta; None only
    #: in a summary written before they existed.
    base_ci: Interval | None = None
    tuned_ci: Interval | None = None
    delta_ci: Interval | None = None
    #: The delta's interval excludes zero.
    significant: bool = False


class ConfidenceMethod(BaseModel):
    """How the intervals were computed, so that a report can be reproduced from its predictions."""

    model_config = ConfigDict(frozen=True)

    method: str = "paired percentile bootstrap over test examples"
    level: float = CONFIDENCE_LEVEL
    resamples: int = BOOTSTRAP_RESAMPLES
    seed: int = BOOTSTRAP_SEED


class ExampleCounts(BaseModel):
    model_config = ConfigDict(frozen=True)

    test_examples: int
    base_failures: int
    tuned_failures: int
    #: Answers cut off by the output limit (finish reason MAX_TOKENS) before any text: scored as
    #: empty answers, counted apart from failed calls.
    base_truncated: int = 0
    tuned_truncated: int = 0

    def truncation_text(self) -> str:
        """The clause naming the answers cut off by the output limit, for the fact lines ("": none)."""
        if not (self.base_truncated or self.tuned_truncated):
            return ""
        return (
            f"; cut off by the output limit (MAX_TOKENS): base {self.base_truncated:,}, "
            f"tuned {self.tuned_truncated:,}"
        )


def truncation_note(count: int) -> str:
    """The summary note for ``count`` answers of one model that the output limit cut off."""
    answers = "answer was" if count == 1 else "answers were"
    return (
        f"{count:,} {answers} cut off by the output limit (MAX_TOKENS) before any text and scored "
        "as empty; a thinking model may need a larger SFTPIPE_THINKING_BUDGET or "
        "SFTPIPE_EVALUATION_MAX_OUTPUT_TOKENS"
    )


class CostEstimate(BaseModel):
    model_config = ConfigDict(frozen=True)

    billable_tokens: int = Field(
        description="Training-split tokens x epochs; validation and test examples are not billed."
    )
    price_per_m_tokens: float
    dollars: float
    tokens_counted: Literal["exact", "estimated"]
    note: str = ""


class VertexCounts(BaseModel):
    """Vertex AI's own count of the training set, beside ingest's pre-flight estimate."""

    model_config = ConfigDict(frozen=True)

    billable_tokens: int = Field(description="Tokens Vertex AI bills (training split x epochs).")
    #: Ingest's estimate of the same, and its error relative to Vertex's count, in percent
    #: (positive: the estimate was high); None without an estimate.
    estimated_tokens: int | None = None
    estimate_error_percent: float | None = None
    #: The training cost from Vertex's count, at the estimate's price (None: no price known).
    dollars: float | None = None
    examples: int | None = None
    truncated_examples: int = 0
    truncated_indices: list[int] = Field(default_factory=list)
    dropped_reasons: list[str] = Field(default_factory=list)
    input_tokens_median: float | None = None
    input_tokens_p95: float | None = None
    output_tokens_median: float | None = None
    output_tokens_p95: float | None = None


def vertex_counts(stats: Mapping[str, Any] | None, estimate: CostEstimate | None) -> VertexCounts | None:
    """The report's view of a job's ``tuning_data_stats`` (None until Vertex has counted)."""
    if not stats or stats.get("total_billable_token_count") is None:
        return None
    billable = int(stats["total_billable_token_count"])
    error = None
    if estimate is not None and billable > 0:
        error = round((estimate.billable_tokens - billable) / billable * 100, 1)
    inputs = stats.get("user_input_token_distribution") or {}
    outputs = stats.get("user_output_token_distribution") or {}
    return VertexCounts(
        billable_tokens=billable,
        estimated_tokens=estimate.billable_tokens if estimate else None,
        estimate_error_percent=error,
        dollars=round(billable / 1_000_000 * estimate.price_per_m_tokens, 2) if estimate else None,
        examples=stats.get("tuning_dataset_example_count"),
        truncated_examples=int(stats.get("total_truncated_example_count") or 0),
        truncated_indices=[int(i) for i in stats.get("truncated_example_indices") or []],
        dropped_reasons=list(stats.get("dropped_example_reasons") or []),
        input_tokens_median=inputs.get("median"),
        input_tokens_p95=inputs.get("p95"),
        output_tokens_median=outputs.get("median"),
        output_tokens_p95=outputs.get("p95"),
    )


def prompting_label(few_shot: int | None) -> str:
    """How the baseline asked the base model: ``zero-shot`` or ``K-shot``."""
    return f"{few_shot}-shot" if few_shot else "zero-shot"


class BaselineFacts(BaseModel):
    """The base model's scores on the test split, taken before the tuning job was created
    (``shared.evaluation.baseline``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    metrics: dict[str, float]
    examples: int
    evaluated_at: datetime
    #: Training examples in each of the base model's prompts (0: zero-shot).
    few_shot: int = 0
    primary_metric: str = ""
    gate: str | None = None
    gate_met: bool | None = None
    gate_note: str = ""
    #: Whether the comparison's base answers are the baseline's (the base model was not asked again).
    reused: bool = False
    seconds: float | None = None
    cost: dict[str, int | float | None] | None = None


class CheckpointScore(BaseModel):
    """One checkpoint endpoint scored on the validation split (``shared.evaluation.checkpoints``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    checkpoint_id: str
    epoch: int | None = None
    step: int | None = None
    endpoint: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    #: Validation examples asked, and the seconds their calls took.
    examples: int = 0
    seconds: float | None = None


ChampionVerdict = Literal["challenger_better", "champion_better", "not_distinguishable"]


class ChampionMetric(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    champion: float
    challenger: float
    delta: float
    delta_ci: tuple[float, float] | None = None
    significant: bool = False
    primary: bool = False


class ChampionComparison(BaseModel):
    """summary.json's ``champion``: the newest earlier model of the same lineage against this
    one (``shared.evaluation.champion``)."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    endpoint: str
    lineage: str
    ended_at: datetime | None = None
    examples: int
    #: Champion calls that failed (scored as empty answers) or could not start in time.
    failed: int = 0
    #: Wall-clock seconds the champion's calls took.
    seconds: float | None = None
    metrics: list[ChampionMetric] = Field(default_factory=list)
    verdict: ChampionVerdict = "not_distinguishable"
    reason: str = ""


class VertexEvaluation(BaseModel):
    """What Vertex AI's Gen AI evaluation service reported for the job (``evaluation_config``)."""

    model_config = ConfigDict(frozen=True)

    metrics: list[str]
    output_uri_prefix: str
    #: One per evaluated checkpoint: ``{checkpoint_id, evaluation_run, error, output_directory,
    #: scores: {"rouge/AVERAGE": 0.41, ...}}``; empty when Vertex reported none (yet).
    runs: list[dict[str, Any]] = Field(default_factory=list)


class TuningFacts(BaseModel):
    """When the tuning job was submitted and ended (RFC 3339), and its Vertex AI name."""

    model_config = ConfigDict(frozen=True)

    submitted_at: datetime | None = None
    ended_at: datetime | None = None
    tuning_job_name: str | None = None


class ExampleComparison(BaseModel):
    """One test example as both models answered it (None: the model call failed)."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    reference: str
    base_output: str | None
    tuned_output: str | None


class EvaluationSummary(BaseModel):
    """The content of ``reports/<job_id>/summary.json``."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)
    SCHEMA: ClassVar[str] = "evaluation-summary/v1"

    schema_: Literal["evaluation-summary/v1"] = Field("evaluation-summary/v1", alias="schema")
    job_id: str
    dataset_id: str
    base_model: str
    tuned_model: str | None = None
    tuned_endpoint: str | None = None
    task: Task
    task_decided_by: Literal["explicit", "inferred"]
    task_reason: str
    primary_metric: str
    #: Why this metric is primary, when the data decided it (generation: BLEU or chrF).
    primary_reason: str = ""
    metrics: list[MetricComparison]
    per_class: dict[str, dict[Literal["base", "tuned"], ClassScores]] = Field(default_factory=dict)
    #: Classification: each model's confusion matrix of strict answers, over the same classes.
    confusion: dict[Literal["base", "tuned"], ConfusionMatrix] = Field(default_factory=dict)
    verdict: Verdict
    verdict_tolerance: float
    verdict_reason: str
    #: When the verdict is not_distinguishable: about how many test examples would make the
    #: primary delta's interval exclude zero. None when the verdict is clear, or when no test
    #: split would settle it (no change beyond the tolerance, or more than MAX_EXAMPLES_NEEDED).
    examples_needed: int | None = None
    confidence: ConfidenceMethod | None = None
    counts: ExampleCounts
    tuning_duration_s: float | None = None
    evaluation_duration_s: float | None = None
    cost: CostEstimate | None = None
    #: Vertex AI's own count of the training set (None: the job carried none).
    vertex_counts: VertexCounts | None = None
    #: The local model that answered for every Gemini name (None: Vertex AI answered).
    served_locally_by: str | None = None
    dataset_statistics: dict[str, str | int | float] = Field(default_factory=dict)
    loss_curves: dict[str, list[LossPoint]] = Field(default_factory=dict)
    loss_signals: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    #: The judge model's verdicts (None: no judge, SFTPIPE_JUDGE_MODEL empty).
    judge: JudgeSummary | None = None
    #: The baseline taken before tuning (None: none was taken, e.g. SFTPIPE_BASELINE_BEFORE_TUNING off).
    baseline: BaselineFacts | None = None
    tuning: TuningFacts | None = None
    #: Each checkpoint's scores on the validation split, in training order (empty: not compared).
    checkpoints: list[CheckpointScore] = Field(default_factory=list)
    #: The checkpoint the test split was evaluated on (its endpoint is ``tuned_endpoint``).
    best_checkpoint: str | None = None
    #: Vertex AI's own evaluation, when the request asked for it (None: not asked).
    vertex_evaluation: VertexEvaluation | None = None
    #: The newest earlier tuned model of the same lineage against this one (None: there is none).
    champion: ChampionComparison | None = None
    generated_at: datetime = Field(default_factory=utcnow)

    @field_validator("verdict", mode="before")
    @classmethod
    def _legacy_verdict(cls, value: object) -> object:
        # A summary written before the intervals said "unchanged"; an evaluation finalized by the
        # old code is still notified by the new one.
        return "not_distinguishable" if value == "unchanged" else value

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True), option=orjson.OPT_INDENT_2)

    @property
    def primary(self) -> MetricComparison:
        return next(m for m in self.metrics if m.primary)

    @property
    def best_checkpoint_score(self) -> CheckpointScore | None:
        return next((c for c in self.checkpoints if c.checkpoint_id == self.best_checkpoint), None)


# --- Building the summary ----------------------------------------------------------------------


def decide_verdict(
    delta: float,
    delta_ci: Interval | None,
    tolerance: float = VERDICT_TOLERANCE,
    *,
    higher_is_better: bool = True,
) -> Verdict:
    """improved when the delta's interval lies entirely on the better side of zero and the delta
    exceeds ``tolerance``; regressed, the same on the worse side; else not_distinguishable (also
    without an interval: nothing says the change is more than noise)."""
    if delta_ci is None:
        return "not_distinguishable"
    low, high = delta_ci
    gain, gain_low, gain_high = (delta, low, high) if higher_is_better else (-delta, -high, -low)
    if gain > tolerance and gain_low > 0:
        return "improved"
    if gain < -tolerance and gain_high < 0:
        return "regressed"
    return "not_distinguishable"


def format_interval(interval: Interval, *, signed: bool = False) -> str:
    """``[0.550, 0.700]``, or ``[-0.020, +0.130]`` for a delta."""
    low, high = interval
    return f"[{low:+.3f}, {high:+.3f}]" if signed else f"[{low:.3f}, {high:.3f}]"


def undecided_text(
    comparison: MetricComparison, needed: int | None, test_examples: int, tolerance: float
) -> str:
    """Why a not_distinguishable verdict is not a clear answer, and what would make it one."""
    gain = comparison.delta if comparison.higher_is_better else -comparison.delta
    if comparison.delta == 0:
        return "no difference at all: no number of test examples would show one of this size"
    if abs(gain) <= tolerance:
        real = "real, " if comparison.significant else ""
        return (
            f"the change is {real}within the tolerance ±{tolerance:g}: no number of test examples "
            "would make a change this small a clear answer"
        )
    if needed is None:
        return (
            f"a clear answer would need more than {MAX_EXAMPLES_NEEDED:,} test examples "
            f"(this test split has {test_examples:,})"
        )
    return f"a clear answer would need about {needed:,} test examples (this test split has {test_examples:,})"


def estimate_training_cost(
    *,
    training_tokens: int,
    epochs: int,
    base_model: str,
    prices_per_m_tokens: Mapping[str, float],
    tokens_counted: Literal["exact", "estimated"],
) -> CostEstimate | None:
    """Training cost = training-split tokens x epochs x price; None when the model has no known price.

    Only the training split is billed: the validation and test splits are not training tokens.

    ``prices_per_m_tokens`` is ``Settings.training_price_per_m_tokens``. The model may be given as
    a resource name (``publishers/google/models/gemini-2.5-flash``).
    """
    model = base_model.rsplit("/", 1)[-1]
    price = prices_per_m_tokens.get(model)
    if price is None:
        return None
    billable = training_tokens * epochs
    return CostEstimate(
        billable_tokens=billable,
        price_per_m_tokens=price,
        dollars=round(billable / 1_000_000 * price, 2),
        tokens_counted=tokens_counted,
        note=(
            f"{training_tokens:,} training-split tokens x {epochs} epochs at ${price:g} per million "
            "tokens; only the training split is billed (validation and test examples are not)"
        ),
    )


def loss_signals(loss_curves: Mapping[str, Sequence[LossPoint]]) -> list[str]:
    """What the loss curves suggest, in the words of the Vertex AI tuning guide.

    Expects the series named "training" and (optionally) "validation".
    """
    signals: list[str] = []
    training = list(loss_curves.get("training", []))
    validation = list(loss_curves.get("validation", []))
    if training and training[0].value > INITIAL_LOSS_ALARM:
        signals.append(
            f"Initial training loss {training[0].value:.2f} is above {INITIAL_LOSS_ALARM:g}: "
            "look for a data problem such as truncated examples."
        )
    if len(validation) >= 3 and len(training) >= 2:
        lowest = min(point.value for point in validation)
        if validation[-1].value > lowest * (1 + RISE_FROM_MINIMUM) and training[-1].value < training[0].value:
            signals.append(
                "Validation loss rises while training loss falls: the model is over-fitting; try fewer epochs."
            )
    if len(training) >= 4:
        tail = training[len(training) * 3 // 4 - 1 :]
        # Measured against the whole fall, not the tail's own level: 0.003 -> 0.001 is a large
        # relative drop of a loss that has long converged.
        total_fall = training[0].value - training[-1].value
        still_falling = total_fall > 0 and (tail[0].value - tail[-1].value) / total_fall > STILL_FALLING
        validation_falling = len(validation) < 2 or validation[-1].value < validation[-2].value
        if still_falling and validation_falling and not any("over-fitting" in s for s in signals):
            signals.append(
                "Loss was still falling clearly at the end: the model may be under-fitted; "
                "try more epochs or a larger learning-rate multiplier."
            )
    return signals


def build_summary(
    *,
    job_id: str,
    dataset_id: str,
    base_model: str,
    task_choice: TaskChoice,
    base: MetricResult,
    tuned: MetricResult,
    tuned_model: str | None = None,
    tuned_endpoint: str | None = None,
    tuning_duration_s: float | None = None,
    evaluation_duration_s: float | None = None,
    cost: CostEstimate | None = None,
    dataset_statistics: Mapping[str, str | int | float] | None = None,
    loss_curves: Mapping[str, Sequence[LossPoint]] | None = None,
    tolerance: float = VERDICT_TOLERANCE,
    base_truncated: int = 0,
    tuned_truncated: int = 0,
    judge: JudgeSummary | None = None,
) -> EvaluationSummary:
    """Compare the base and tuned model's scores and decide the verdict on the primary metric.

    The primary metric is the one the scores name (both are scored on the same references, so
    they agree): for generation it depends on the references' length (``primary_metric_for``).
    ``*_truncated``: answers cut off by the output limit before any text (in the counts and the
    notes); they are among the scored answers, as empty ones, and not among the failed calls.

    Both results must carry their per-example scores (:func:`compute_metrics` keeps them): the
    intervals and the verdict are computed from them.
    """
    if base.examples is None or tuned.examples is None:
        raise ValueError("build_summary needs the per-example scores compute_metrics keeps")
    intervals = paired_bootstrap(base.examples, tuned.examples)
    primary = base.primary_metric if base.task is task_choice.task else PRIMARY_METRIC[task_choice.task]
    comparisons = []
    for name, base_score in base.scores.items():
        tuned_score = tuned.scores.get(name, 0.0)
        interval = intervals.get(name)
        comparisons.append(
            MetricComparison(
                name=name,
                base=base_score,
                tuned=tuned_score,
                delta=tuned_score - base_score,
                primary=name == primary,
                higher_is_better=name not in LOWER_IS_BETTER,
                base_ci=interval.base if interval else None,
                tuned_ci=interval.tuned if interval else None,
                delta_ci=interval.delta if interval else None,
                significant=excludes_zero(interval.delta) if interval else False,
            )
        )
    primary_comparison = next(c for c in comparisons if c.primary)
    verdict = decide_verdict(
        primary_comparison.delta,
        primary_comparison.delta_ci,
        tolerance,
        higher_is_better=primary_comparison.higher_is_better,
    )
    primary_interval = intervals.get(primary)
    needed = (
        examples_needed(base.count, primary_comparison.delta, primary_interval.delta_se)
        if verdict == "not_distinguishable"
        and primary_interval is not None
        and abs(primary_comparison.delta) > tolerance
        else None
    )
    reason = (
        f"{primary} {primary_comparison.base:.3f} -> {primary_comparison.tuned:.3f} "
        f"({primary_comparison.delta:+.3f}"
        + (
            f", {CONFIDENCE_LEVEL:.0%} CI {format_interval(primary_comparison.delta_ci, signed=True)}"
            if primary_comparison.delta_ci
            else ""
        )
        + f"; tolerance ±{tolerance:g})"
    )
    if verdict == "not_distinguishable":
        reason = f"not distinguishable from the base model: {reason}; " + undecided_text(
            primary_comparison, needed, base.count, tolerance
        )
    per_class: dict[str, dict[Literal["base", "tuned"], ClassScores]] = {
        label: {"base": scores, "tuned": tuned.per_class[label]}
        for label, scores in base.per_class.items()
        if label in tuned.per_class
    }
    confusion: dict[Literal["base", "tuned"], ConfusionMatrix] = {}
    if base.examples.labels and tuned.examples.labels:
        classes = confusion_labels(base.examples, tuned.examples)
        confusion = {
            "base": confusion_matrix(base.examples, classes),
            "tuned": confusion_matrix(tuned.examples, classes),
        }
    curves = {name: list(points) for name, points in (loss_curves or {}).items()}
    notes = [f"base model: {note}" for note in base.notes] + [f"tuned model: {note}" for note in tuned.notes]
    notes += [
        f"{model} model: {truncation_note(count)}"
        for model, count in (("base", base_truncated), ("tuned", tuned_truncated))
        if count
    ]
    if judge is not None:
        notes.append(judge_note(judge))
        if judge.cost is not None:
            notes.append(judge_cost_note(judge))
    return EvaluationSummary(
        job_id=job_id,
        dataset_id=dataset_id,
        base_model=base_model,
        tuned_model=tuned_model,
        tuned_endpoint=tuned_endpoint,
        task=task_choice.task,
        task_decided_by=task_choice.decided_by,
        task_reason=task_choice.reason,
        primary_metric=primary,
        primary_reason=base.primary_reason if primary == base.primary_metric else "",
        metrics=comparisons,
        per_class=per_class,
        confusion=confusion,
        verdict=verdict,
        verdict_tolerance=tolerance,
        verdict_reason=reason,
        examples_needed=needed,
        confidence=ConfidenceMethod(),
        counts=ExampleCounts(
            test_examples=base.count,
            base_failures=base.failed,
            tuned_failures=tuned.failed,
            base_truncated=base_truncated,
            tuned_truncated=tuned_truncated,
        ),
        tuning_duration_s=tuning_duration_s,
        evaluation_duration_s=evaluation_duration_s,
        cost=cost,
        dataset_statistics=dict(dataset_statistics or {}),
        loss_curves=curves,
        loss_signals=loss_signals(curves),
        notes=notes,
        judge=judge,
    )


# --- Formatting shared with the notifications --------------------------------------------------


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def verdict_words(verdict: Verdict) -> str:
    """The verdict as a reader sees it: ``not distinguishable``."""
    return verdict.replace("_", " ")


def format_score(value: float) -> str:
    return f"{value:.3f}"


def format_delta(value: float) -> str:
    # "-0.000" reads as a regression; a change that rounds to nothing is shown as ±0.000.
    return "±0.000" if abs(value) < 0.0005 else f"{value:+.3f}"


def delta_direction(comparison: MetricComparison, tolerance: float) -> Verdict:
    """What the verdict rule says about this metric (the verdict itself reads the primary one)."""
    return decide_verdict(
        comparison.delta, comparison.delta_ci, tolerance, higher_is_better=comparison.higher_is_better
    )


# --- HTML --------------------------------------------------------------------------------------

_e = html.escape

BASE_COLOUR = "#8c8c8c"
TUNED_COLOUR = "#1a73e8"
SERIES_COLOURS = ("#1a73e8", "#e8710a", "#188038", "#a142f4", "#d93025")
VERDICT_COLOURS: dict[Verdict, str] = {
    "improved": "#188038",
    "regressed": "#d93025",
    "not_distinguishable": "#5f6368",
}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;color:#202124;background:#f8f9fa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.6rem;margin:0 0 4px}h2{font-size:1.2rem;margin:32px 0 12px;border-bottom:1px solid #dadce0;padding-bottom:4px}
.muted{color:#5f6368}.verdict{display:inline-block;padding:4px 12px;border-radius:14px;color:#fff;font-weight:600}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:6px 18px;margin:0}
dl.facts dt{color:#5f6368}dl.facts dd{margin:0;word-break:break-all}
table{border-collapse:collapse;background:#fff;min-width:420px}
th,td{padding:6px 12px;border-bottom:1px solid #e8eaed;text-align:left}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.improved{color:#188038;font-weight:600}.regressed{color:#d93025;font-weight:600}.not_distinguishable{color:#5f6368}
.up{color:#188038}.down{color:#d93025}.ci{color:#5f6368;font-size:.85em;white-space:nowrap}
.scroll{overflow-x:auto;margin:0 0 16px}table.confusion{min-width:0}
table.confusion th{max-width:10em;overflow-wrap:anywhere;font-weight:500}
table.confusion td.diagonal{font-weight:700;background:#e6f4ea}table.confusion td.zero{color:#bdc1c6}
.card{background:#fff;border:1px solid #dadce0;border-radius:8px;padding:16px;margin:0 0 16px}
.examples{display:grid;grid-template-columns:1fr 1fr 1fr;gap:12px}
pre{white-space:pre-wrap;word-break:break-word;margin:4px 0 0;font:13px/1.45 ui-monospace,Menlo,Consolas,monospace;
background:#f1f3f4;padding:8px;border-radius:4px;max-height:320px;overflow:auto}
.label{font-size:.8rem;color:#5f6368;text-transform:uppercase;letter-spacing:.04em}
.failed{color:#d93025;font-style:italic}svg{background:#fff;border:1px solid #dadce0;border-radius:8px}
ul.signals li{margin:4px 0}
"""


def _truncate(text: str, limit: int = EXAMPLE_TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit:,} more characters)"


def metric_bars_svg(metrics: Sequence[MetricComparison], *, width: int = 720) -> str:
    """Horizontal grouped bars, base and tuned per metric, on the 0-1 scale."""
    label_width, value_width, bar_height, gap = 170, 60, 16, 18
    plot_width = width - label_width - value_width - 20
    height = 56 + len(metrics) * (2 * bar_height + gap)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Metrics, base and tuned model">',
        "<title>Metrics, base and tuned model</title>",
        f'<rect x="{label_width}" y="8" width="12" height="12" fill="{BASE_COLOUR}"/>'
        f'<text x="{label_width + 18}" y="19" font-size="12">base</text>'
        f'<rect x="{label_width + 70}" y="8" width="12" height="12" fill="{TUNED_COLOUR}"/>'
        f'<text x="{label_width + 88}" y="19" font-size="12">tuned</text>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = label_width + tick * plot_width
        parts.append(
            f'<line x1="{x:.1f}" y1="30" x2="{x:.1f}" y2="{height - 20}" stroke="#e8eaed"/>'
            f'<text x="{x:.1f}" y="{height - 6}" font-size="11" fill="#5f6368" text-anchor="middle">{tick:g}</text>'
        )
    y = 34
    for metric in metrics:
        name = metric.name + (" ★" if metric.primary else "")
        parts.append(
            f'<text x="{label_width - 8}" y="{y + bar_height + 4}" font-size="13" text-anchor="end">{_e(name)}</text>'
        )
        for value, colour in ((metric.base, BASE_COLOUR), (metric.tuned, TUNED_COLOUR)):
            bar = max(0.0, min(1.0, value)) * plot_width
            parts.append(
                f'<rect x="{label_width}" y="{y}" width="{bar:.1f}" height="{bar_height}" fill="{colour}" rx="2"/>'
                f'<text x="{label_width + bar + 6:.1f}" y="{y + bar_height - 3}" font-size="12">{format_score(value)}</text>'
            )
            y += bar_height
        y += gap
    parts.append("</svg>")
    return "".join(parts)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step / 2:
        ticks.append(round(value, 10))
        value += step
    return ticks


def loss_curves_svg(
    curves: Mapping[str, Sequence[LossPoint]],
    *,
    width: int = 720,
    height: int = 320,
    title: str = "Loss curves",
) -> str:
    """Line chart of each series (losses, or a metric by checkpoint) against the training step."""
    points = [p for series in curves.values() for p in series]
    if not points:
        return ""
    left, right, top, bottom = 60, 20, 36, 40
    min_step, max_step = min(p.step for p in points), max(p.step for p in points)
    y_ticks = _nice_ticks(0.0, max(p.value for p in points))  # losses are never negative
    y_low, y_high = y_ticks[0], y_ticks[-1]
    x_span = max(1, max_step - min_step)

    def x_of(step: int) -> float:
        return left + (step - min_step) / x_span * (width - left - right)

    def y_of(value: float) -> float:
        return top + (y_high - value) / (y_high - y_low) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
        f"<title>{_e(title)}</title>",
    ]
    for tick in y_ticks:
        y = y_of(tick)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e8eaed"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" fill="#5f6368" text-anchor="end">{tick:g}</text>'
        )
    for step in _nice_ticks(min_step, max_step):
        if min_step <= step <= max_step:
            x = x_of(int(step))
            parts.append(
                f'<text x="{x:.1f}" y="{height - bottom + 16}" font-size="11" fill="#5f6368" '
                f'text-anchor="middle">{step:g}</text>'
            )
    parts.append(
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - 6}" font-size="12" fill="#5f6368" '
        'text-anchor="middle">step</text>'
    )
    legend_x = left
    for index, (name, series) in enumerate(curves.items()):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        ordered = sorted(series, key=lambda p: p.step)
        coordinates = " ".join(f"{x_of(p.step):.1f},{y_of(p.value):.1f}" for p in ordered)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coordinates}"/>')
        if len(ordered) == 1:
            parts.append(
                f'<circle cx="{x_of(ordered[0].step):.1f}" cy="{y_of(ordered[0].value):.1f}" r="3" fill="{colour}"/>'
            )
        parts.append(
            f'<rect x="{legend_x}" y="10" width="12" height="12" fill="{colour}"/>'
            f'<text x="{legend_x + 18}" y="21" font-size="12">{_e(name)}</text>'
        )
        legend_x += 30 + 8 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def _with_interval(value: str, interval: Interval | None, *, signed: bool = False) -> str:
    if interval is None:
        return value
    return f"{value} <span class='ci'>{format_interval(interval, signed=signed)}</span>"


def _metric_table(summary: EvaluationSummary) -> str:
    rows = []
    for metric in summary.metrics:
        direction = delta_direction(metric, summary.verdict_tolerance)
        name = _e(metric.name) + (" <span class='muted'>(primary)</span>" if metric.primary else "")
        hint = "" if metric.higher_is_better else " <span class='muted'>(lower is better)</span>"
        mark = " <span title='the interval excludes zero'>✱</span>" if metric.significant else ""
        rows.append(
            f"<tr><td>{name}{hint}</td><td class='num'>{_with_interval(format_score(metric.base), metric.base_ci)}</td>"
            f"<td class='num'>{_with_interval(format_score(metric.tuned), metric.tuned_ci)}</td>"
            f"<td class='num {direction}'>"
            f"{_with_interval(format_delta(metric.delta), metric.delta_ci, signed=True)}{mark}</td></tr>"
        )
    return (
        "<table><thead><tr><th>metric</th><th class='num'>base</th><th class='num'>tuned</th>"
        f"<th class='num'>Δ</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _confidence_note(summary: EvaluationSummary) -> str:
    method = summary.confidence
    if method is None:
        return ""
    return (
        f"In brackets: {method.level:.0%} intervals, a {method.method} "
        f"({method.resamples:,} resamples of the {summary.counts.test_examples:,} examples, seed "
        f"{method.seed}; both models on the same resamples, so the Δ interval is the paired one). "
        "✱ the Δ interval excludes zero. "
    )


def _per_class_table(summary: EvaluationSummary) -> str:
    if not summary.per_class:
        return ""
    rows = []
    for label, scores in summary.per_class.items():
        delta = scores["tuned"].f1 - scores["base"].f1
        # No interval per class: the colour only says the change passes the tolerance.
        direction = (
            "up"
            if delta > summary.verdict_tolerance
            else "down"
            if delta < -summary.verdict_tolerance
            else ""
        )
        rows.append(
            f"<tr><td>{_e(label)}</td><td class='num'>{scores['base'].support}</td>"
            f"<td class='num'>{format_score(scores['base'].f1)}</td><td class='num'>{format_score(scores['tuned'].f1)}</td>"
            f"<td class='num {direction}'>{format_delta(delta)}</td></tr>"
        )
    return (
        "<h2>Per class (F1)</h2><table><thead><tr><th>class</th><th class='num'>support</th>"
        "<th class='num'>base</th><th class='num'>tuned</th><th class='num'>Δ</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        "<p class='muted'>Per-class changes have no interval: read them as hints, not verdicts.</p>"
    )


def _confusion_table(name: str, matrix: ConfusionMatrix) -> str:
    header = "".join(f"<th class='num'>{_e(label)}</th>" for label in matrix.labels)
    rows = []
    for number, (row_label, row) in enumerate(zip(matrix.labels, matrix.matrix, strict=True)):
        cells = "".join(
            f"<td class='num {'diagonal' if column == number else 'zero' if count == 0 else ''}'>{count:,}</td>"
            for column, count in enumerate(row)
        )
        rows.append(f"<tr><th>{_e(row_label)}</th>{cells}</tr>")
    left_out = (
        f"<p class='muted'>{matrix.omitted_labels:,} rarer classes are left out "
        f"({matrix.omitted_examples:,} test examples have one as their reference; an answer naming "
        "one counts as other).</p>"
        if matrix.omitted_labels
        else ""
    )
    return (
        f"<h3>{_e(name)}</h3><div class='scroll'><table class='confusion'><thead><tr>"
        f"<th>reference ↓ · answer →</th>{header}<th class='num'>other</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>{left_out}"
    )


def _confusion_section(summary: EvaluationSummary) -> str:
    if not summary.confusion:
        return ""
    tables = "".join(
        _confusion_table(f"{model} model", summary.confusion[model])
        for model in ("base", "tuned")
        if model in summary.confusion
    )
    return (
        "<h2>Confusion matrices</h2><p class='muted'>Strict answers: one row per reference label, "
        "one column per answer; “other” is an answer outside the label set.</p>" + tables
    )


def _output_block(label: str, text: str | None) -> str:
    body = (
        "<pre class='failed'>model call failed</pre>" if text is None else f"<pre>{_e(_truncate(text))}</pre>"
    )
    return f"<div><div class='label'>{_e(label)}</div>{body}</div>"


def _examples_section(examples: Sequence[ExampleComparison]) -> str:
    if not examples:
        return ""
    cards = []
    for number, example in enumerate(examples, start=1):
        cards.append(
            f"<div class='card'><div class='label'>example {number} · prompt</div><pre>{_e(_truncate(example.prompt))}</pre>"
            "<div class='examples'>"
            f"{_output_block('reference', example.reference)}{_output_block('base model', example.base_output)}"
            f"{_output_block('tuned model', example.tuned_output)}</div></div>"
        )
    return f"<h2>Examples, side by side</h2>{''.join(cards)}"


JUDGE_COLOURS = {"tuned": TUNED_COLOUR, "tie": "#dadce0", "base": BASE_COLOUR}


def win_rate_svg(judge: JudgeSummary, *, width: int = 720) -> str:
    """One stacked bar: the share of judged examples the tuned model won, tied, the base model won."""
    if judge.win_rate is None:
        return ""
    rate = judge.win_rate
    left, bar_width, height = 10, width - 20, 64
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Judge win rate">',
        "<title>Judge win rate: tuned, tie, base</title>",
    ]
    x = float(left)
    for side, share in (("tuned", rate.tuned), ("tie", rate.tie), ("base", rate.base)):
        span = max(0.0, min(1.0, share)) * bar_width
        parts.append(
            f'<rect x="{x:.1f}" y="10" width="{span:.1f}" height="24" fill="{JUDGE_COLOURS[side]}"/>'
        )
        if span >= 40:
            parts.append(
                f'<text x="{x + span / 2:.1f}" y="27" font-size="12" text-anchor="middle" '
                f'fill="{"#202124" if side == "tie" else "#fff"}">{_e(side)} {share:.0%}</text>'
            )
        x += span
    parts.append(
        f'<text x="{left}" y="54" font-size="12" fill="#5f6368">tuned {rate.tuned:.1%} · tie {rate.tie:.1%} · '
        f"base {rate.base:.1%} of {judge.examples_judged:,} judged examples</text></svg>"
    )
    return "".join(parts)


CHAMPION_WORDS = {
    "challenger_better": "better than the champion",
    "champion_better": "worse than the champion",
    "not_distinguishable": "not distinguishable from the champion",
}


def _champion_section(summary: EvaluationSummary) -> str:
    champion = summary.champion
    if champion is None:
        return ""
    head = (
        f"<h2>Champion and challenger</h2><p class='muted'>The newest earlier model of lineage "
        f"“{_e(champion.lineage)}” (job {_e(champion.job_id)}, endpoint {_e(champion.endpoint)}) asked the "
        f"first {champion.examples:,} test examples with the same settings"
        + (f"; {champion.failed:,} of its calls failed and score as empty answers" if champion.failed else "")
        + ".</p>"
    )
    if not champion.metrics:
        return f"{head}<p class='regressed'>{_e(champion.reason)}.</p>"
    rows = "".join(
        f"<tr><td>{_e(m.name)}{' ★' if m.primary else ''}</td><td class='num'>{m.champion:.3f}</td>"
        f"<td class='num'>{m.challenger:.3f}</td><td class='num'>{format_delta(m.delta)}</td>"
        f"<td class='num'>{_e(format_interval(m.delta_ci, signed=True) if m.delta_ci else '')}</td></tr>"
        for m in champion.metrics
    )
    return (
        f"{head}<p><b>This model is {_e(CHAMPION_WORDS[champion.verdict])}</b>: {_e(champion.reason)}.</p>"
        "<table><thead><tr><th>metric</th><th class='num'>champion</th><th class='num'>this model</th>"
        f"<th class='num'>Δ</th><th class='num'>Δ 95% CI</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _vertex_evaluation_section(summary: EvaluationSummary) -> str:
    evaluation = summary.vertex_evaluation
    if evaluation is None:
        return ""
    if not evaluation.runs:
        body = "<p class='muted'>Vertex AI reported no evaluation run for this job.</p>"
    else:
        rows = "".join(
            f"<tr><td>{_e(str(run.get('checkpoint_id') or 'tuned model'))}</td>"
            f"<td>{_e(', '.join(f'{k} {v:.3f}' for k, v in sorted((run.get('scores') or {}).items())) or (run.get('error') or 'no scores'))}</td>"
            f"<td>{_e(str(run.get('output_directory') or ''))}</td></tr>"
            for run in evaluation.runs
        )
        body = (
            "<table><thead><tr><th>checkpoint</th><th>scores</th><th>output</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    return (
        f"<h2>Vertex AI evaluation</h2><p class='muted'>The Gen AI evaluation service's own scores "
        f"({_e(', '.join(evaluation.metrics))}) of the job's checkpoints, written under "
        f"{_e(evaluation.output_uri_prefix)}.</p>{body}"
    )


def _checkpoints_section(summary: EvaluationSummary) -> str:
    if not summary.checkpoints:
        return ""
    primary = summary.primary_metric
    rows = "".join(
        f"<tr><td>{_e(c.checkpoint_id)}{' ★' if c.checkpoint_id == summary.best_checkpoint else ''}</td>"
        f"<td class='num'>{c.epoch if c.epoch is not None else ''}</td><td class='num'>{c.step if c.step is not None else ''}</td>"
        f"<td class='num'>{c.metrics.get(primary, 0.0):.3f}</td><td>{_e(c.endpoint or '')}</td></tr>"
        for c in summary.checkpoints
    )
    series = {
        f"validation {primary}": [
            LossPoint(step=c.step or 0, value=c.metrics.get(primary, 0.0)) for c in summary.checkpoints
        ]
    }
    return (
        f"<h2>Checkpoints, validation split</h2><p class='muted'>Each checkpoint endpoint asked the "
        f"validation split; ★ the best by {_e(primary)} (the later one on a tie), the one evaluated on the "
        f"test split above.</p>{loss_curves_svg(series, title=f'Validation {primary} by checkpoint')}"
        f"<table class='checkpoints'><thead><tr><th>checkpoint</th><th class='num'>epoch</th>"
        f"<th class='num'>step</th><th class='num'>{_e(primary)}</th><th>endpoint</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _baseline_section(summary: EvaluationSummary) -> str:
    baseline = summary.baseline
    if baseline is None:
        return ""
    prompting = prompting_label(baseline.few_shot)
    submitted = summary.tuning.submitted_at if summary.tuning else None
    when = f"at {baseline.evaluated_at.isoformat(timespec='seconds')}" + (
        f", before the tuning job was submitted at {submitted.isoformat(timespec='seconds')}"
        if submitted
        else ""
    )
    reuse = (
        "The base model's answers compared above are these: it was not asked again."
        if baseline.reused
        else "The base model was asked again for the comparison above (see the notes)."
    )
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td class='num'>{value:.3f}</td></tr>"
        for name, value in sorted(baseline.metrics.items())
    )
    gate = f"<p>{_e(baseline.gate_note)}.</p>" if baseline.gate_note else ""
    return (
        f"<h2>Baseline, before tuning</h2><p class='muted'>The base model ({prompting}) on "
        f"{baseline.examples:,} test examples, {_e(when)}. {_e(reuse)}</p>"
        f"<table class='baseline'><thead><tr><th>metric</th><th class='num'>base model</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{gate}"
    )


def _judge_section(summary: EvaluationSummary) -> str:
    judge = summary.judge
    if judge is None:
        return ""
    stand_in = (
        f"<p class='regressed'>judge: local stand-in ({_e(judge.model)}), verdicts are noisy.</p>"
        if judge.local_stand_in
        else ""
    )
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td class='num'>{scores['base']:.2f}</td><td class='num'>{scores['tuned']:.2f}</td>"
        f"<td class='num'>{format_delta(scores['tuned'] - scores['base'])}</td></tr>"
        for name, scores in judge.pointwise.items()
    )
    table = (
        f"<h3>Rubric scores ({SCORE_MIN}–{SCORE_MAX}, mean)</h3><table><thead><tr><th>criterion</th>"
        "<th class='num'>base</th><th class='num'>tuned</th><th class='num'>Δ</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    unanswered = (
        f" {judge.examples_unanswered:,} of {judge.examples_planned:,} examples were not judged "
        "(a call failed or could not end in time)."
        if judge.examples_unanswered
        else ""
    )
    return (
        f"<h2>Judge · {_e(judge.model)}</h2>{stand_in}{win_rate_svg(judge)}"
        "<p class='muted'>Each pair was asked twice, tuned first and base first; a model wins an "
        "example only when both orders pick it, else it is a tie. "
        f"Unparsable verdicts (not one JSON object as asked), left out: {judge.unparsable:,} pairwise, "
        f"{judge.pointwise_unparsable:,} rubric.{_e(unanswered)}</p>{table}"
    )


def _facts(items: Sequence[tuple[str, str]]) -> str:
    return "<dl class='facts'>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>"


def render_report_html(summary: EvaluationSummary, examples: Sequence[ExampleComparison] = ()) -> str:
    """The self-contained report.html for one evaluated job."""
    counts = summary.counts
    facts = [
        ("job", summary.job_id),
        ("dataset", summary.dataset_id),
        ("base model", served_as(summary.base_model, summary.served_locally_by)),
        ("tuned model", summary.tuned_model or "—"),
        ("tuned endpoint", summary.tuned_endpoint or "—"),
        ("task", f"{summary.task.value} ({summary.task_decided_by}: {summary.task_reason})"),
        (
            "primary metric",
            summary.primary_metric + (f" ({summary.primary_reason})" if summary.primary_reason else ""),
        ),
        (
            "test examples",
            f"{counts.test_examples:,} (failed calls: base {counts.base_failures:,}, "
            f"tuned {counts.tuned_failures:,}{counts.truncation_text()})",
        ),
        ("tuning duration", format_duration(summary.tuning_duration_s)),
        ("evaluation duration", format_duration(summary.evaluation_duration_s)),
    ]
    cost = (
        _facts(
            [
                ("estimated training cost", f"${summary.cost.dollars:,.2f}"),
                ("billable tokens", f"{summary.cost.billable_tokens:,} ({summary.cost.tokens_counted})"),
                ("how", summary.cost.note),
            ]
        )
        if summary.cost
        else "<p class='muted'>No price known for this base model.</p>"
    ) + _vertex_counts_html(summary.vertex_counts)
    statistics = (
        "<table><tbody>"
        + "".join(
            f"<tr><td>{_e(str(k))}</td><td class='num'>{_e(f'{v:,}' if isinstance(v, int) else str(v))}</td></tr>"
            for k, v in summary.dataset_statistics.items()
        )
        + "</tbody></table>"
        if summary.dataset_statistics
        else "<p class='muted'>No statistics recorded.</p>"
    )
    losses = ""
    if summary.loss_curves:
        signals = "".join(f"<li>{_e(s)}</li>" for s in summary.loss_signals) or "<li>No warning signs.</li>"
        losses = (
            f"<h2>Loss curves</h2>{loss_curves_svg(summary.loss_curves)}<ul class='signals'>{signals}</ul>"
        )
    notes = (
        "<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in summary.notes) + "</ul>"
        if summary.notes
        else ""
    )
    verdict_colour = VERDICT_COLOURS[summary.verdict]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        # No script, no remote resource: the policy makes the browser enforce what the code promises.
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>Tuning report · {_e(summary.job_id)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>Tuning report · {_e(summary.job_id)}</h1>{_stand_in_banner(summary)}"
        f"<p><span class='verdict' style='background:{verdict_colour}'>{_e(verdict_words(summary.verdict))}</span> "
        f"<span class='muted'>{_e(summary.verdict_reason)}</span></p>"
        f"<div class='card'>{_facts(facts)}</div>"
        f"<h2>Metrics, base vs tuned</h2>{_metric_table(summary)}"
        "<p class='muted'>Scores on a 0–1 scale (BLEU and chrF are sacreBLEU's / 100). "
        "lenient_* count the one allowed label a verbose answer names (“The sentiment is positive.”). "
        f"{_e(_confidence_note(summary))}★ primary metric: the verdict is “improved” or “regressed” "
        f"when its Δ interval excludes zero and it moves by more than {summary.verdict_tolerance:g}, "
        "else “not distinguishable from the base model”.</p>"
        f"{metric_bars_svg(summary.metrics)}{_per_class_table(summary)}{_confusion_section(summary)}"
        f"{_baseline_section(summary)}{_judge_section(summary)}{losses}{_checkpoints_section(summary)}"
        f"{_vertex_evaluation_section(summary)}{_champion_section(summary)}"
        f"{_examples_section(examples)}"
        f"<h2>Dataset</h2>{statistics}<h2>Cost</h2>{cost}{notes}"
        f"<p class='muted'>Generated {_e(summary.generated_at.isoformat(timespec='seconds'))} by sftpipe.</p>"
        "</main></body></html>"
    )


def vertex_counts_text(counts: VertexCounts) -> str:
    """One line: Vertex's billable tokens, the estimate and its error, the cost from the count."""
    text = f"{counts.billable_tokens:,} billable tokens counted by Vertex AI"
    if counts.estimated_tokens is not None and counts.estimate_error_percent is not None:
        text += f" (pre-flight estimate {counts.estimated_tokens:,}, {counts.estimate_error_percent:+.1f}%)"
    if counts.dollars is not None:
        text += f"; training cost ${counts.dollars:,.2f}"
    return text


def _vertex_counts_html(counts: VertexCounts | None) -> str:
    if counts is None:
        return "<p class='muted'>Vertex AI's own token count is not on the job (yet).</p>"
    rows: list[tuple[str, str]] = [("Vertex AI's count", vertex_counts_text(counts))]
    if counts.examples is not None:
        rows.append(("training examples counted", f"{counts.examples:,}"))
    truncated = f"{counts.truncated_examples:,}"
    if counts.truncated_indices:
        shown = ", ".join(str(i) for i in counts.truncated_indices[:10])
        truncated += f" (examples {shown}{' ...' if len(counts.truncated_indices) > 10 else ''})"
    rows.append(("truncated examples", truncated))
    rows.append(("dropped examples", "; ".join(counts.dropped_reasons[:10]) or "none"))
    for label, median, p95 in (
        ("input tokens per example", counts.input_tokens_median, counts.input_tokens_p95),
        ("output tokens per example", counts.output_tokens_median, counts.output_tokens_p95),
    ):
        if median is not None and p95 is not None:
            rows.append((label, f"median {median:,.0f}, p95 {p95:,.0f}"))
    return _facts(rows)


def stand_in_text(summary: EvaluationSummary) -> str:
    """Who answered, when the local tuning service stood in for Vertex AI ("" on Vertex)."""
    if not summary.served_locally_by:
        return ""
    return (
        f"Every model call here was answered by {summary.served_locally_by} on the local tuning "
        f"service, standing in for {summary.base_model} and the tuned model: no figure is a Gemini result."
    )


def _stand_in_banner(summary: EvaluationSummary) -> str:
    text = stand_in_text(summary)
    return f"<p class='card'><strong>Local run.</strong> {_e(text)}</p>" if text else ""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from shared.config import DEFAULT_TRAINING_PRICES
from shared.evaluation.metrics import MetricResult, TaskChoice
from shared.evaluation.report import (
    EvaluationSummary,
    ExampleComparison,
    LossPoint,
    build_summary,
    decide_verdict,
    estimate_training_cost,
    format_delta,
    format_duration,
    loss_signals,
    render_report_html,
)
from shared.messages import Task

XSS = "<script>alert(1)</script>"


def _qa_summary(base_f1: float, tuned_f1: float) -> EvaluationSummary:
    choice = TaskChoice(task=Task.EXTRACTIVE_QA, decided_by="explicit", reason="given in the request")
    return build_summary(
        job_id="job-1",
        dataset_id="ds-1",
        base_model="gemini-2.5-flash",
        task_choice=choice,
        base=MetricResult(
            task=Task.EXTRACTIVE_QA, scores={"exact_match": 0.5, "f1": base_f1}, count=10, failed=1
        ),
        tuned=MetricResult(
            task=Task.EXTRACTIVE_QA, scores={"exact_match": 0.7, "f1": tuned_f1}, count=10, failed=0
        ),
    )


@pytest.mark.parametrize(
    ("base_f1", "tuned_f1", "verdict"),
    [
        (0.60, 0.70, "improved"),
        (0.60, 0.50, "regressed"),
        (0.60, 0.605, "unchanged"),
        (0.60, 0.595, "unchanged"),
    ],
)
def test_verdict_follows_the_primary_metric_with_a_tolerance(
    base_f1: float, tuned_f1: float, verdict: str
) -> None:
    summary = _qa_summary(base_f1, tuned_f1)
    assert summary.verdict == verdict
    assert summary.primary_metric == "f1"
    assert summary.primary.delta == pytest.approx(tuned_f1 - base_f1)


def test_summary_json_has_deltas_counts_and_schema() -> None:
    summary = _qa_summary(0.6, 0.7)
    document = json.loads(summary.to_json())
    assert document["schema"] == "evaluation-summary/v1"
    assert document["verdict"] == "improved"
    assert document["verdict_tolerance"] == 0.01
    assert document["verdict_reason"] == "f1 0.600 -> 0.700 (+0.100; tolerance ±0.01)"
    assert document["counts"] == {
        "test_examples": 10,
        "base_failures": 1,
        "tuned_failures": 0,
        "base_truncated": 0,
        "tuned_truncated": 0,
    }
    metrics = {m["name"]: m for m in document["metrics"]}
    assert metrics["exact_match"]["delta"] == pytest.approx(0.2)
    assert metrics["f1"]["primary"] is True
    assert EvaluationSummary.model_validate(document) == summary


def test_lower_is_better_metrics_invert_the_verdict() -> None:
    assert decide_verdict(-0.05, higher_is_better=False) == "improved"
    assert decide_verdict(0.05, higher_is_better=False) == "regressed"
    assert decide_verdict(0.01) == "unchanged"


def test_training_cost_is_tokens_times_epochs_times_price() -> None:
    cost = estimate_training_cost(
        training_tokens=2_000_000,
        epochs=3,
        base_model="publishers/google/models/gemini-2.5-flash",
        prices_per_m_tokens=DEFAULT_TRAINING_PRICES,
        tokens_counted="exact",
    )
    assert cost is not None
    assert (cost.billable_tokens, cost.price_per_m_tokens, cost.dollars) == (6_000_000, 5.0, 30.0)
    assert (
        estimate_training_cost(
            training_tokens=1,
            epochs=1,
            base_model="unknown-model",
            prices_per_m_tokens={},
            tokens_counted="exact",
        )
        is None
    )


def test_loss_signals_name_the_guide_s_warning_signs() -> None:
    exploding = {"training": [LossPoint(step=0, value=14.2), LossPoint(step=10, value=2.0)]}
    assert loss_signals(exploding)[0].startswith("Initial training loss 14.20 is above 10")

    overfitting = {
        "training": [LossPoint(step=s, value=v) for s, v in [(0, 3.0), (10, 1.5), (20, 0.8), (30, 0.4)]],
        "validation": [LossPoint(step=s, value=v) for s, v in [(0, 3.0), (10, 1.6), (20, 1.5), (30, 1.9)]],
    }
    assert loss_signals(overfitting) == [
        "Validation loss rises while training loss falls: the model is over-fitting; try fewer epochs."
    ]

    not_converged = {
        "training": [LossPoint(step=s, value=3.0 - 0.3 * i) for i, s in enumerate(range(0, 80, 10))]
    }
    assert "under-fitted" in loss_signals(not_converged)[0]

    converged = {
        "training": [LossPoint(step=s, value=v) for s, v in [(0, 3.0), (10, 1.0), (20, 0.51), (30, 0.5)]]
    }
    assert loss_signals(converged) == []

    converged_near_zero = {  # large relative changes of a tiny loss are not "still falling"
        "training": [LossPoint(step=s, value=v) for s, v in [(0, 1.5), (10, 0.1), (20, 0.003), (30, 0.001)]]
    }
    assert loss_signals(converged_near_zero) == []


def test_formatting_of_durations_and_deltas() -> None:
    assert format_duration(3725) == "1 h 02 min"
    assert format_duration(212) == "3 min 32 s"
    assert format_duration(None) == "unknown"
    assert format_delta(0.0002) == "±0.000"
    assert format_delta(-0.0123) == "-0.012"


class _ElementCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_renders_dataset_and_model_text_as_text(
    hostile_summary: EvaluationSummary, hostile_examples: list[ExampleComparison]
) -> None:
    page = render_report_html(hostile_summary, hostile_examples)

    parsed = _ElementCollector()
    parsed.feed(page)
    assert "script" not in parsed.tags
    assert "img" not in parsed.tags
    assert not [name for name in parsed.attributes if name.startswith("on")]
    text = "".join(parsed.text)
    # Job id, dataset, tuned model, class label, statistics, loss series, examples, task reason.
    assert text.count(XSS) >= 10
    assert "<img src=x onerror=alert(2)>" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_report_is_self_contained(hostile_summary: EvaluationSummary) -> None:
    page = render_report_html(hostile_summary)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    assert "<link" not in page
    assert "default-src 'none'" in page


def test_report_shows_metrics_verdict_examples_and_cost(
    hostile_summary: EvaluationSummary, hostile_examples: list[ExampleComparison]
) -> None:
    page = render_report_html(hostile_summary, hostile_examples)
    assert hostile_summary.verdict == "improved"
    assert "<span class='verdict' style='background:#188038'>improved</span>" in page
    assert "<td>macro_f1 <span class='muted'>(primary)</span></td>" in page
    assert "$18.52" in page  # 1,234,567 tokens x 3 epochs x $5 per million
    assert "model call failed" in page
    assert page.count("<svg") == 2
    assert "1 h 02 min" in page

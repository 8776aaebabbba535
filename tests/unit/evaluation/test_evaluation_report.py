from __future__ import annotations

import json
import random
from html.parser import HTMLParser

import pytest

from shared.config import DEFAULT_TRAINING_PRICES
from shared.evaluation.confidence import examples_needed, paired_bootstrap
from shared.evaluation.metrics import TaskChoice, compute_metrics
from shared.evaluation.report import (
    EvaluationSummary,
    ExampleComparison,
    LossPoint,
    build_summary,
    decide_verdict,
    estimate_training_cost,
    format_delta,
    format_duration,
    format_interval,
    loss_signals,
    render_report_html,
)
from shared.messages import Task

XSS = "<script>alert(1)</script>"


def _answers(right: range, count: int) -> list[str | None]:
    """QA answers to :data:`REFERENCE`, right (exact match and F1 1) on the examples in ``right``."""
    return [REFERENCE if n in right else "Big Ben" for n in range(count)]


REFERENCE = "Eiffel Tower"


def _qa_summary(base: list[str | None], tuned: list[str | None]) -> EvaluationSummary:
    choice = TaskChoice(task=Task.EXTRACTIVE_QA, decided_by="explicit", reason="given in the request")
    references = [REFERENCE] * len(base)
    return build_summary(
        job_id="job-1",
        dataset_id="ds-1",
        base_model="gemini-2.5-flash",
        task_choice=choice,
        base=compute_metrics(Task.EXTRACTIVE_QA, references, base),
        tuned=compute_metrics(Task.EXTRACTIVE_QA, references, tuned),
    )


@pytest.mark.parametrize(
    ("base_right", "tuned_right", "verdict"),
    [
        # 400 examples; the models agree except on the examples one of them adds.
        (range(240), range(280), "improved"),  # +0.100
        (range(240), range(200), "regressed"),  # -0.100
        (range(240), range(242), "not_distinguishable"),  # +0.005: within the tolerance
        (range(240), range(238), "not_distinguishable"),  # -0.005
        # +0.025, past the tolerance, but the models disagree on 210 examples: noise.
        (range(240), range(100, 350), "not_distinguishable"),
    ],
)
def test_verdict_needs_an_interval_that_excludes_zero_and_a_change_past_the_tolerance(
    base_right: range, tuned_right: range, verdict: str
) -> None:
    summary = _qa_summary(_answers(base_right, 400), _answers(tuned_right, 400))
    assert summary.verdict == verdict
    assert summary.primary_metric == "f1"
    primary = summary.primary
    assert primary.delta == pytest.approx((len(tuned_right) - len(base_right)) / 400)
    assert primary.delta_ci is not None
    assert primary.significant == (primary.delta_ci[0] > 0 or primary.delta_ci[1] < 0)
    if verdict != "not_distinguishable":
        assert primary.significant
        assert summary.examples_needed is None


def test_identical_answers_are_not_distinguishable_and_need_no_number_of_examples() -> None:
    answers = _answers(range(0, 300, 2), 300)
    summary = _qa_summary(answers, list(answers))
    assert summary.verdict == "not_distinguishable"
    assert all(not m.significant and m.delta_ci == (0.0, 0.0) for m in summary.metrics)
    assert summary.examples_needed is None
    assert summary.verdict_reason == (
        "not distinguishable from the base model: f1 0.500 -> 0.500 (+0.000, 95% CI [+0.000, +0.000]; "
        "tolerance ±0.01); no difference at all: no number of test examples would show one of this size"
    )


def test_equal_scores_with_random_disagreements_are_not_distinguishable() -> None:
    rng = random.Random(11)
    base = _answers(range(0), 300)
    tuned = list(base)
    for n in rng.sample(range(300), 180):
        base[n] = REFERENCE
    for n in rng.sample(range(300), 180):
        tuned[n] = REFERENCE
    summary = _qa_summary(base, tuned)
    assert summary.primary.delta == 0
    low, high = summary.primary.delta_ci or (0, 0)
    assert low < 0 < high
    assert summary.verdict == "not_distinguishable"
    assert not summary.primary.significant


def test_a_clear_gain_is_improved_and_significant() -> None:
    # Tuned right on all 100 examples, base on 20 of them.
    summary = _qa_summary(_answers(range(20), 100), _answers(range(100), 100))
    assert summary.verdict == "improved"
    assert all(m.significant for m in summary.metrics)
    assert summary.primary.delta_ci is not None
    assert summary.primary.delta_ci[0] > 0.7


def test_an_unclear_change_says_how_many_examples_would_settle_it() -> None:
    summary = _qa_summary(_answers(range(240), 400), _answers(range(100, 350), 400))
    interval = paired_bootstrap(
        *(
            compute_metrics(Task.EXTRACTIVE_QA, [REFERENCE] * 400, answers).examples
            for answers in (_answers(range(240), 400), _answers(range(100, 350), 400))
        )
    )["f1"]
    expected = examples_needed(400, 0.025, interval.delta_se)
    assert expected is not None
    assert summary.examples_needed == expected
    # 210 disagreements: se = sqrt(210) / 400 = 0.036, so 400 x (1.96 x 0.036 / 0.025)^2 = 3,240.
    assert 2_500 < expected < 4_000
    assert summary.verdict_reason.startswith(
        "not distinguishable from the base model: f1 0.600 -> 0.625 (+0.025, 95% CI [-"
    )
    assert summary.verdict_reason.endswith(
        f"a clear answer would need about {expected:,} test examples (this test split has 400)"
    )


def test_a_real_change_within_the_tolerance_is_not_a_headline() -> None:
    # 4,000 examples, the tuned model right on 20 more: +0.005 and an interval above zero.
    summary = _qa_summary(_answers(range(2_000), 4_000), _answers(range(2_020), 4_000))
    assert summary.primary.significant
    assert summary.verdict == "not_distinguishable"
    assert summary.examples_needed is None
    assert summary.verdict_reason.endswith(
        "the change is real, within the tolerance ±0.01: no number of test examples would make a change "
        "this small a clear answer"
    )


def test_summary_json_has_intervals_deltas_counts_and_schema() -> None:
    base = _answers(range(240), 400)
    base[-1] = None  # a failed call
    summary = _qa_summary(base, _answers(range(280), 400))
    document = json.loads(summary.to_json())
    assert document["schema"] == "evaluation-summary/v1"
    assert document["verdict"] == "improved"
    assert document["verdict_tolerance"] == 0.01
    assert document["verdict_reason"].startswith("f1 0.600 -> 0.700 (+0.100, 95% CI [+0.0")
    assert document["verdict_reason"].endswith("]; tolerance ±0.01)")
    assert document["examples_needed"] is None
    assert document["confidence"] == {
        "method": "paired percentile bootstrap over test examples",
        "level": 0.95,
        "resamples": 1000,
        "seed": 15,
    }
    assert document["counts"] == {
        "test_examples": 400,
        "base_failures": 1,
        "tuned_failures": 0,
        "base_truncated": 0,
        "tuned_truncated": 0,
    }
    metrics = {m["name"]: m for m in document["metrics"]}
    assert metrics["exact_match"]["delta"] == pytest.approx(0.1)
    assert metrics["f1"]["primary"] is True
    for metric in metrics.values():
        low, high = metric["delta_ci"]
        assert low <= metric["delta"] <= high
        assert metric["base_ci"][0] <= metric["base"] <= metric["base_ci"][1]
        assert metric["tuned_ci"][0] <= metric["tuned"] <= metric["tuned_ci"][1]
        assert metric["significant"] is True
    assert EvaluationSummary.model_validate(document) == summary


def test_a_summary_written_before_the_intervals_still_reads() -> None:
    document = json.loads(_qa_summary(_answers(range(5), 10), _answers(range(5), 10)).to_json())
    document["verdict"] = "unchanged"
    del document["examples_needed"], document["confidence"]
    for metric in document["metrics"]:
        del metric["base_ci"], metric["tuned_ci"], metric["delta_ci"], metric["significant"]
    legacy = EvaluationSummary.model_validate(document)
    assert legacy.verdict == "not_distinguishable"
    assert legacy.primary.delta_ci is None
    assert "not distinguishable" in render_report_html(legacy)


def test_lower_is_better_metrics_invert_the_verdict() -> None:
    assert decide_verdict(-0.05, (-0.08, -0.02), higher_is_better=False) == "improved"
    assert decide_verdict(0.05, (0.02, 0.08), higher_is_better=False) == "regressed"
    assert decide_verdict(-0.05, (-0.08, 0.01), higher_is_better=False) == "not_distinguishable"
    assert decide_verdict(0.05, (0.02, 0.08)) == "improved"
    assert decide_verdict(0.05, (-0.01, 0.08)) == "not_distinguishable"
    assert decide_verdict(0.005, (0.002, 0.008)) == "not_distinguishable"
    assert decide_verdict(0.05, None) == "not_distinguishable"


def test_report_shows_each_interval_and_marks_significant_deltas() -> None:
    summary = _qa_summary(_answers(range(240), 400), _answers(range(280), 400))
    page = render_report_html(summary)
    for metric in summary.metrics:
        assert metric.base_ci is not None
        assert metric.tuned_ci is not None
        assert metric.delta_ci is not None
        assert f"0.600 <span class='ci'>{format_interval(metric.base_ci)}</span>" in page
        assert f"0.700 <span class='ci'>{format_interval(metric.tuned_ci)}</span>" in page
        assert f"+0.100 <span class='ci'>{format_interval(metric.delta_ci, signed=True)}</span>" in page
    assert page.count("title='the interval excludes zero'>✱</span>") == 2
    assert "95% intervals, a paired percentile bootstrap over test examples (1,000 resamples" in page

    undecided = render_report_html(_qa_summary(_answers(range(240), 400), _answers(range(100, 350), 400)))
    assert "✱</span></td>" not in undecided
    assert "<span class='verdict' style='background:#5f6368'>not distinguishable</span>" in undecided
    assert "a clear answer would need about" in undecided


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
    assert hostile_summary.primary.significant
    assert "<td>macro_f1 <span class='muted'>(primary)</span></td>" in page
    assert "$18.52" in page  # 1,234,567 tokens x 3 epochs x $5 per million
    assert "model call failed" in page
    assert page.count("<svg") == 2
    assert "1 h 02 min" in page

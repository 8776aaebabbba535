"""Champion and challenger, without a service: which lineage a job belongs to, and how the two
models' answers on the same examples become a verdict that only speaks when the interval does."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.evaluation.champion import compare
from shared.evaluation.metrics import TaskChoice
from shared.evaluation.report import ChampionComparison, ChampionMetric, EvaluationSummary
from shared.messages import Task
from shared.state.jobs import lineage_of

CHOICE = TaskChoice(task=Task.CLASSIFICATION, decided_by="explicit", reason="given", labels=("pos", "neg"))
REFERENCES = ["pos", "neg"] * 20


def test_the_lineage_is_the_label_else_the_display_name() -> None:
    assert lineage_of({"labels": {"lineage": "support-bot"}, "display_name": "a.jsonl"}) == "support-bot"
    assert lineage_of({"display_name": "reviews.jsonl"}) == "reviews.jsonl"
    assert lineage_of({"labels": {}}) is None


def test_the_same_answers_are_not_distinguishable() -> None:
    answers = ["pos"] * 40
    metrics, verdict, reason = compare(answers, answers, REFERENCES, CHOICE)
    primary = next(m for m in metrics if m.primary)
    assert (primary.name, primary.delta, primary.significant) == ("macro_f1", 0.0, False)
    assert verdict == "not_distinguishable"
    assert reason.startswith("macro_f1 0.333 (champion) -> 0.333 (this model)")


def test_a_clearly_better_challenger_wins_and_a_worse_one_loses() -> None:
    weak = ["pos"] * 40
    verdict_better = compare(weak, REFERENCES, REFERENCES, CHOICE)[1]
    verdict_worse = compare(REFERENCES, weak, REFERENCES, CHOICE)[1]
    assert (verdict_better, verdict_worse) == ("challenger_better", "champion_better")


def test_a_small_difference_on_few_examples_is_not_called() -> None:
    references = ["pos", "neg", "pos", "neg"]
    champion = ["pos", "neg", "pos", "pos"]
    challenger = ["pos", "neg", "pos", "neg"]
    metrics, verdict, _ = compare(champion, challenger, references, CHOICE)
    assert next(m for m in metrics if m.primary).delta > 0
    assert verdict == "not_distinguishable"


def test_failed_champion_calls_score_as_empty_answers() -> None:
    metrics, _, _ = compare([None] * 40, REFERENCES, REFERENCES, CHOICE)
    primary = next(m for m in metrics if m.primary)
    assert primary.champion == 0.0
    assert primary.challenger == 1.0


def test_the_summary_carries_the_comparison() -> None:
    comparison = ChampionComparison(
        job_id="old",
        endpoint="projects/p/locations/l/endpoints/1",
        lineage="reviews.jsonl",
        ended_at=datetime(2026, 11, 1, tzinfo=UTC),
        examples=40,
        metrics=[ChampionMetric(name="macro_f1", champion=0.5, challenger=0.7, delta=0.2, primary=True)],
        verdict="challenger_better",
        reason="macro_f1 0.500 (champion) -> 0.700 (this model)",
    )
    assert ChampionComparison.model_validate_json(comparison.model_dump_json()) == comparison
    assert "champion" in EvaluationSummary.model_fields

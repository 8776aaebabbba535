"""Issue 15, part 4: the statistics behind every interval (paired bootstrap over test examples)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from shared.evaluation import confidence
from shared.evaluation.confidence import (
    BOOTSTRAP_RESAMPLES,
    MAX_EXAMPLES_NEEDED,
    examples_needed,
    excludes_zero,
    paired_bootstrap,
    percentile_interval,
    resample_indices,
    resampled_scores,
)
from shared.evaluation.metrics import (
    ExampleScores,
    bleu_from_statistics,
    classification_metrics,
    compute_metrics,
)
from shared.messages import Task


def _bernoulli(correct: int, count: int) -> ExampleScores:
    return ExampleScores(count=count, means={"exact_match": [1.0] * correct + [0.0] * (count - correct)})


def _first_rows(count: int, rows: int) -> np.ndarray:
    return next(resample_indices(count))[:rows]


# --- Intervals against known values --------------------------------------------------------------


def test_the_interval_of_a_proportion_is_the_normal_approximation() -> None:
    # 280 of 400 right: p = 0.7, p ± 1.96 sqrt(p(1-p)/n) = [0.655, 0.745].
    scores = _bernoulli(280, 400)
    interval = paired_bootstrap(scores, scores)["exact_match"]
    half_width = 1.96 * math.sqrt(0.7 * 0.3 / 400)
    assert interval.base[0] == pytest.approx(0.7 - half_width, abs=0.008)
    assert interval.base[1] == pytest.approx(0.7 + half_width, abs=0.008)
    assert interval.tuned == interval.base


def test_a_model_right_on_every_example_has_the_interval_one_to_one() -> None:
    interval = paired_bootstrap(_bernoulli(50, 50), _bernoulli(50, 50))["exact_match"]
    assert interval.base == (1.0, 1.0)
    assert interval.delta == (0.0, 0.0)
    assert not excludes_zero(interval.delta)


def test_identical_predictions_have_no_delta_at_all() -> None:
    references = [random.Random(n).choice(["a", "b", "c"]) for n in range(200)]
    answers = [r if n % 3 else "a" for n, r in enumerate(references)]
    result = compute_metrics(Task.CLASSIFICATION, references, answers)
    assert result.examples is not None
    for interval in paired_bootstrap(result.examples, result.examples).values():
        assert interval.delta == (0.0, 0.0)
        assert interval.delta_se == 0.0


def test_equal_accuracy_with_random_disagreements_has_an_interval_around_zero() -> None:
    rng = random.Random(7)
    base_right = set(rng.sample(range(300), 180))
    tuned_right = set(rng.sample(range(300), 180))  # same accuracy, other examples
    base = ExampleScores(count=300, means={"exact_match": [float(n in base_right) for n in range(300)]})
    tuned = ExampleScores(count=300, means={"exact_match": [float(n in tuned_right) for n in range(300)]})
    low, high = paired_bootstrap(base, tuned)["exact_match"].delta
    assert low < 0 < high
    assert not excludes_zero((low, high))


def test_a_clear_effect_excludes_zero() -> None:
    interval = paired_bootstrap(_bernoulli(20, 100), _bernoulli(100, 100))["exact_match"]
    assert interval.delta[0] > 0.6
    assert excludes_zero(interval.delta)


def test_the_same_inputs_give_the_same_intervals() -> None:
    base, tuned = _bernoulli(120, 250), _bernoulli(150, 250)
    assert paired_bootstrap(base, tuned) == paired_bootstrap(base, tuned)
    assert paired_bootstrap(base, tuned, seed=1) != paired_bootstrap(base, tuned)


def test_pairing_narrows_the_delta_when_the_models_agree_on_most_examples() -> None:
    # Both models right on the same 150 of 300 examples; the tuned one also on 15 more.
    base = ExampleScores(count=300, means={"exact_match": [float(n < 150) for n in range(300)]})
    tuned = ExampleScores(count=300, means={"exact_match": [float(n < 165) for n in range(300)]})
    paired = paired_bootstrap(base, tuned)["exact_match"].delta
    # Unpaired: each model on its own resamples.
    base_alone = np.concatenate([resampled_scores(base, i)["exact_match"] for i in resample_indices(300)])
    tuned_alone = np.concatenate(
        [resampled_scores(tuned, i)["exact_match"] for i in resample_indices(300, seed=99)]
    )
    unpaired = percentile_interval(tuned_alone - base_alone)
    assert paired[1] - paired[0] < 0.5 * (unpaired[1] - unpaired[0])
    assert excludes_zero(paired)
    assert not excludes_zero(unpaired)


def test_the_percentile_interval_takes_the_two_tails() -> None:
    values = np.arange(1001, dtype=np.float64) / 1000
    assert percentile_interval(values) == pytest.approx((0.025, 0.975))
    assert percentile_interval(values, 0.5) == pytest.approx((0.25, 0.75))


def test_resamples_are_drawn_in_batches_that_bound_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(confidence, "BATCH_CELLS", 1_000)
    batches = list(resample_indices(300))
    assert {batch.shape[1] for batch in batches} == {300}
    assert max(batch.shape[0] for batch in batches) == 3
    assert sum(batch.shape[0] for batch in batches) == BOOTSTRAP_RESAMPLES
    base, tuned = _bernoulli(100, 300), _bernoulli(140, 300)
    assert paired_bootstrap(base, tuned) == paired_bootstrap(base, tuned)


def test_paired_examples_must_be_the_same_examples() -> None:
    with pytest.raises(ValueError, match="not paired"):
        paired_bootstrap(_bernoulli(1, 10), _bernoulli(1, 11))
    assert paired_bootstrap(_bernoulli(0, 0), _bernoulli(0, 0)) == {}


# --- Corpus scores are recomputed on the resample ----------------------------------------------


def _classification_case() -> tuple[list[str], list[str], list[str]]:
    rng = random.Random(3)
    labels = ["billing", "refund", "bug", "praise", "other", "never used"]
    references = [rng.choice(labels[:4]) for _ in range(120)]
    answers = [
        r
        if rng.random() < 0.55
        else rng.choice([*labels[:5], "I think it is a refund", "The answer is bug.", "no idea"])
        for r in references
    ]
    # A class with one example: resamples without it leave it out of the macro average.
    return [*references, "rare"], [*answers, "rare"], [*labels, "rare"]


def test_resampled_classification_scores_match_a_direct_recomputation() -> None:
    references, answers, labels = _classification_case()
    result = compute_metrics(Task.CLASSIFICATION, references, answers, labels=labels)
    assert result.examples is not None
    rows = _first_rows(len(references), 5)
    fast = resampled_scores(result.examples, rows)
    for row, indices in enumerate(rows):
        # The label set stays the whole split's: a resample that draws no "bug" reference still
        # counts an answer "bug" as a false positive, not as an answer outside the label set.
        slow, _ = classification_metrics(
            [references[i] for i in indices], [answers[i] for i in indices], result.examples.labels
        )
        assert set(fast) == set(slow)
        for name, value in slow.items():
            assert fast[name][row] == pytest.approx(value, abs=1e-12), name
    # Macro F1 is a corpus score: the mean of per-example scores would be something else.
    assert not np.allclose(fast["macro_f1"], fast["accuracy"])


def test_bleu_is_recomputed_from_summed_ngram_counts() -> None:
    rng = random.Random(5)
    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "log", "red", "big"]
    references = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 9))) for _ in range(60)]
    answers = [
        r if rng.random() < 0.3 else " ".join(rng.choice(words) for _ in range(rng.randint(1, 9)))
        for r in references
    ]
    result = compute_metrics(Task.GENERATION, references, answers)
    assert result.examples is not None
    assert result.primary_metric == "bleu"
    rows = _first_rows(len(references), 6)
    fast = resampled_scores(result.examples, rows)["bleu"]
    for row, indices in enumerate(rows):
        slow = bleu_from_statistics([result.examples.bleu[i] for i in indices])
        assert fast[row] == pytest.approx(slow, abs=1e-12)
        assert slow == pytest.approx(
            compute_metrics(
                Task.GENERATION, [references[i] for i in indices], [answers[i] for i in indices]
            ).scores["bleu"],
            abs=1e-12,
        )


def test_bleu_smooths_an_order_without_matches_as_sacrebleu_does() -> None:
    # Trigrams match, 4-grams never: sacreBLEU's exponential smoothing keeps the score above 0.
    result = compute_metrics(
        Task.GENERATION, ["one two three four five six"] * 4, ["one two three seven eight nine"] * 4
    )
    assert result.examples is not None
    everything = np.arange(4, dtype=np.int64)[None, :]
    assert resampled_scores(result.examples, everything)["bleu"][0] == pytest.approx(
        result.scores["bleu"], abs=1e-12
    )
    assert result.scores["bleu"] > 0


def test_bleu_without_any_match_or_without_four_grams_is_zero() -> None:
    no_match = compute_metrics(Task.GENERATION, ["one two three four five"] * 3, ["six seven"] * 3)
    assert no_match.examples is not None
    rows = _first_rows(3, 4)
    assert (resampled_scores(no_match.examples, rows)["bleu"] == 0).all()
    short = ExampleScores(count=1, bleu=[[3, 3, 3, 2, 1, 0, 3, 2, 1, 0]])  # no 4-gram at all
    assert (
        resampled_scores(short, np.zeros((1, 1), dtype=np.int64))["bleu"][0]
        == bleu_from_statistics(short.bleu)
        == 0.0
    )


@pytest.mark.parametrize(
    ("task", "references", "answers", "kw"),
    [
        (Task.CLASSIFICATION, *_classification_case()[:2], {"labels": _classification_case()[2]}),
        (
            Task.EXTRACTIVE_QA,
            ["Paris", "Lyon", "Rome", "1889", "1889"],
            ["paris", "Lyon.", None, "in 1889", "1890"],
            {"prompts": ["p1", "p1", "p2", "p3", "p3"]},
        ),
        (
            Task.SUMMARIZATION,
            ["The cat sat. It purred.", "Rain fell all day."],
            ["It purred. The cat sat.", "It was sunny."],
            {},
        ),
        (
            Task.GENERATION,
            ["the cat sat on the mat", "a quick brown fox jumps", "hello there my friend"],
            ["the cat sat on a mat", "a slow brown fox", None],
            {},
        ),
        (Task.GENERATION, ["yes", "no", "maybe"], ["yes", "No.", "perhaps"], {}),
    ],
)
def test_every_score_on_the_whole_split_is_the_reported_one(
    task: Task, references: list[str], answers: list[str | None], kw: dict
) -> None:
    result = compute_metrics(task, references, answers, **kw)
    assert result.examples is not None
    everything = np.arange(len(references), dtype=np.int64)[None, :]
    recomputed = {
        name: float(values[0]) for name, values in resampled_scores(result.examples, everything).items()
    }
    assert recomputed == pytest.approx(result.scores, abs=1e-12)


# --- How many examples a clear answer needs ----------------------------------------------------


def test_examples_needed_scales_the_split_by_the_squared_ratio() -> None:
    # z = 1.95996: 100 x (1.95996 x 0.05 / 0.05)^2 = 384.15 -> 385.
    assert examples_needed(100, 0.05, 0.05) == 385
    assert examples_needed(100, -0.05, 0.05) == 385
    # An interval twice as wide needs four times the examples.
    assert examples_needed(100, 0.05, 0.1) == 1537


def test_examples_needed_has_no_answer_for_no_difference_or_an_absurd_one() -> None:
    assert examples_needed(200, 0.0, 0.02) is None
    assert examples_needed(200, 1e-9, 0.02) is None
    assert examples_needed(200, 1e-300, 0.02) is None
    # 100 x (1.95996 / 0.02)^2 = 960,365 is stated; twice the split, 1,920,730, is past the cap.
    assert examples_needed(100, 0.02, 1.0) == 960_365 < MAX_EXAMPLES_NEEDED
    assert examples_needed(200, 0.02, 1.0) is None


def test_examples_needed_is_more_than_the_split_that_did_not_settle_it() -> None:
    assert examples_needed(200, 0.1, 0.01) == 201

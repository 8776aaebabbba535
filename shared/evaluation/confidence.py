"""How sure the comparison is: 95% intervals by a paired bootstrap over the test examples.

Every resample draws the test examples with replacement; both models are scored on the *same*
draw (paired), so what they have in common (hard examples, easy ones) cancels out of the delta,
and its interval is much narrower than one made of two independent intervals. Each score is
recomputed on the draw from the per-example statistics the scoring kept
(:class:`shared.evaluation.metrics.ExampleScores`): means of per-example values, confusion counts
for accuracy and micro / macro F1, summed n-gram counts for corpus BLEU. A corpus score is
therefore the corpus score of the resample, never an average of per-example scores. The interval
is the percentile one: the 2.5th and 97.5th percentiles of the :data:`BOOTSTRAP_RESAMPLES`
recomputed scores.

What stays fixed on a resample is what the whole split decided: the label set of classification
(an answer naming a label no drawn reference has is still that label's false positive), and each
extractive-QA example's score, the best over every answer of its prompt (examples are resampled,
not prompts).

The draws come from a numpy Generator seeded with :data:`BOOTSTRAP_SEED` and depend on nothing
but the number of examples, so the same predictions always give the same report.

Cost, measured by ``benchmarks/bootstrap_cost.py`` (CPU time, one thread) for 1,000 resamples of
2,000 test examples, both models: classification about 0.13 s with 5 labels and 0.5 s with 1,000,
generation with BLEU 0.07 s, summarization 0.05 s, extractive QA 0.04 s; scoring the texts in the
first place takes 0.03-3.7 s and the model calls minutes. Peak memory 32-51 MB, and bounded
whatever the test split's size: resamples are drawn :data:`BATCH_CELLS` example draws at a time.

numpy is imported inside the functions: a cold start of a function that does not evaluate does
not pay for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

from shared.evaluation.metrics import ExampleScores

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]
    IntArray = npt.NDArray[np.int64]

__all__ = [
    "BATCH_CELLS",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CONFIDENCE_LEVEL",
    "MAX_EXAMPLES_NEEDED",
    "MetricInterval",
    "draw_counts",
    "examples_needed",
    "excludes_zero",
    "paired_bootstrap",
    "percentile_interval",
    "resample_indices",
    "resampled_scores",
]

#: Resamples per bootstrap. With 1,000, each end of an interval moves by about 2% of its width
#: from one seed to another (the Monte Carlo error of a 2.5th percentile); the cost is in the
#: module docstring.
BOOTSTRAP_RESAMPLES = 1_000
#: Seed of the resampling: fixed, so a report is reproducible from its predictions.
BOOTSTRAP_SEED = 15
#: Coverage of every interval in the summary and the report.
CONFIDENCE_LEVEL = 0.95
#: Largest "test examples a clear answer would need" that is stated as a number; beyond it the
#: summary says no realistic test split would settle the question.
MAX_EXAMPLES_NEEDED = 1_000_000
#: Example draws (resamples x test examples) held in memory at once: a batch's arrays are about
#: 8 MB each, so a large test split does not exhaust a 1 GiB function.
BATCH_CELLS = 1_000_000


@dataclass(frozen=True)
class MetricInterval:
    """One metric's intervals, base, tuned and the paired delta (tuned - base)."""

    base: tuple[float, float]
    tuned: tuple[float, float]
    delta: tuple[float, float]
    #: Standard deviation of the resampled deltas: the bootstrap standard error of the delta.
    delta_se: float


def resample_indices(
    count: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> Iterator[IntArray]:
    """The resamples as batches of example indices, each of shape (resamples in batch, count).

    The batches depend only on ``count``, ``resamples`` and ``seed``: the same call always yields
    the same indices.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    per_batch = max(1, BATCH_CELLS // max(count, 1))
    done = 0
    while done < resamples:
        size = min(per_batch, resamples - done)
        yield rng.integers(0, count, size=(size, count), dtype=np.int64)
        done += size


def draw_counts(indices: IntArray) -> FloatArray:
    """How often each example is drawn in each resample: shape (resamples, examples)."""
    import numpy as np

    resamples, count = indices.shape
    # Resample b's example i is cell b x count + i: one bincount counts every resample at once.
    offsets = np.arange(resamples, dtype=np.int64)[:, None] * count
    counts = np.bincount((indices + offsets).ravel(), minlength=resamples * count)
    return counts.reshape(resamples, count).astype(np.float64)


def resampled_scores(examples: ExampleScores, indices: IntArray) -> dict[str, FloatArray]:
    """Every score of ``examples`` recomputed on each row of ``indices`` (one resample a row)."""
    return _scores(examples, draw_counts(indices))


def _scores(examples: ExampleScores, draws: FloatArray) -> dict[str, FloatArray]:
    import numpy as np

    scores: dict[str, FloatArray] = {}
    # A sum over a resample is the product of the draw counts with the per-example values.
    if examples.means:
        names = list(examples.means)
        values = np.array([examples.means[name] for name in names], dtype=np.float64).T
        means = draws @ values / examples.count
        scores.update({name: means[:, column] for column, name in enumerate(names)})
    if examples.bleu:
        scores["bleu"] = _bleu(draws @ np.array(examples.bleu, dtype=np.float64))
    if examples.labels:
        scores.update(_label_scores(examples, draws))
    return scores


def _label_scores(examples: ExampleScores, draws: FloatArray) -> dict[str, FloatArray]:
    """Accuracy, micro / macro F1 and the out-of-label rate of each resample, strict and lenient,
    as :func:`shared.evaluation.metrics.classification_metrics` defines them: an answer outside
    the label set (-1) is a miss for its true class and nobody's false positive; the macro
    average runs over the classes the resample's references or answers use."""
    import numpy as np

    count = examples.count
    gold = np.array(examples.gold, dtype=np.int64)
    answers = {
        "": np.array(examples.strict, dtype=np.int64),
        "lenient_": np.array(examples.lenient, dtype=np.int64),
    }
    # Only the classes some example uses: a dataset may allow 1,000 labels the test split never names.
    used = np.unique(np.concatenate([gold, *(guessed[guessed >= 0] for guessed in answers.values())]))
    gold = np.searchsorted(used, gold)
    support = _class_sums(draws, np.ones(count, dtype=bool), gold, used.size)
    scores: dict[str, FloatArray] = {}
    for prefix, guessed in answers.items():
        right = gold == np.where(guessed >= 0, np.searchsorted(used, guessed), -1)
        true_positive = _class_sums(draws, right, gold, used.size)
        wrong_label = ~right & (guessed >= 0)
        false_positive = _class_sums(draws, wrong_label, np.searchsorted(used, guessed), used.size)
        false_negative = support - true_positive
        # F1 = 2PR / (P + R) = 2 tp / (2 tp + fp + fn), and 0 without a true positive.
        denominator = 2 * true_positive + false_positive + false_negative
        f1 = np.divide(2 * true_positive, denominator, out=np.zeros(denominator.shape), where=denominator > 0)
        in_use = denominator > 0
        tp = true_positive.sum(1)
        scores[f"{prefix}accuracy"] = tp / count
        scores[f"{prefix}macro_f1"] = (f1 * in_use).sum(1) / np.maximum(in_use.sum(1), 1)
        if not prefix:
            micro_denominator = 2 * tp + false_positive.sum(1) + false_negative.sum(1)
            scores["micro_f1"] = np.divide(
                2 * tp, micro_denominator, out=np.zeros(tp.shape), where=micro_denominator > 0
            )
            scores["out_of_label_rate"] = draws[:, guessed < 0].sum(1) / count
    return scores


def _class_sums(
    draws: FloatArray, selected: npt.NDArray[np.bool_], classes: IntArray, class_count: int
) -> FloatArray:
    """Per resample and class, how many of the ``selected`` examples of that class it drew."""
    import numpy as np

    sums = np.zeros((draws.shape[0], class_count))
    columns = np.flatnonzero(selected)
    if columns.size:
        columns = columns[np.argsort(classes[columns], kind="stable")]
        ordered = classes[columns]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        sums[:, ordered[starts]] = np.add.reduceat(draws[:, columns], starts, axis=1)
    return sums


def _bleu(sums: FloatArray) -> FloatArray:
    """Corpus BLEU (0-1) of each row of summed sacreBLEU statistics, exactly as sacreBLEU's
    ``compute_bleu`` with its default exponential smoothing computes it, for every row at once."""
    import numpy as np

    sys_len, ref_len = sums[:, 0], sums[:, 1]
    correct, total = sums[:, 2:6], sums[:, 6:10]
    with np.errstate(divide="ignore", invalid="ignore"):
        brevity = np.where(sys_len < ref_len, np.where(sys_len > 0, np.exp(1 - ref_len / sys_len), 0.0), 1.0)
        missing = correct == 0
        # "exp" smoothing: the k-th order without a match counts as 1 / (2^k x its total).
        halvings = np.cumsum(missing, axis=1)
        precision = np.where(missing, 1.0 / (2.0**halvings * total), correct / total)
        score = brevity * np.exp(np.log(precision).mean(axis=1))
    # sacreBLEU scores 0 without any match, or when some order has no n-gram at all.
    defined = (total > 0).all(axis=1) & ~missing.all(axis=1)
    return np.where(defined, score, 0.0)


def percentile_interval(values: FloatArray, level: float = CONFIDENCE_LEVEL) -> tuple[float, float]:
    import numpy as np

    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def paired_bootstrap(
    base: ExampleScores,
    tuned: ExampleScores,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CONFIDENCE_LEVEL,
) -> dict[str, MetricInterval]:
    """Intervals of every score both models have, base and tuned scored on the same resamples."""
    import numpy as np

    if base.count != tuned.count:
        raise ValueError(f"{base.count} base examples but {tuned.count} tuned ones: not paired")
    if base.count == 0:
        return {}
    base_parts: dict[str, list[FloatArray]] = {}
    tuned_parts: dict[str, list[FloatArray]] = {}
    for indices in resample_indices(base.count, resamples, seed):
        draws = draw_counts(indices)
        for parts, examples in ((base_parts, base), (tuned_parts, tuned)):
            for name, values in _scores(examples, draws).items():
                parts.setdefault(name, []).append(values)
    intervals: dict[str, MetricInterval] = {}
    for name in base_parts.keys() & tuned_parts.keys():
        base_values, tuned_values = np.concatenate(base_parts[name]), np.concatenate(tuned_parts[name])
        delta = tuned_values - base_values
        intervals[name] = MetricInterval(
            base=percentile_interval(base_values, level),
            tuned=percentile_interval(tuned_values, level),
            delta=percentile_interval(delta, level),
            delta_se=float(np.std(delta, ddof=1)) if resamples > 1 else 0.0,
        )
    return intervals


def excludes_zero(interval: tuple[float, float]) -> bool:
    low, high = interval
    return low > 0 or high < 0


def examples_needed(count: int, delta: float, delta_se: float, level: float = CONFIDENCE_LEVEL) -> int | None:
    """About how many test examples would make the delta's interval exclude zero, if the delta
    stayed what it is: the standard error shrinks as 1 / sqrt(n), so n x (z x se / |delta|)^2.

    None when no test split would: the delta is zero, or the estimate is above
    :data:`MAX_EXAMPLES_NEEDED`. At least ``count + 1``: it is asked only when the percentile
    interval of ``count`` examples did not exclude zero, whatever the normal approximation says.
    """
    if delta == 0 or count == 0:
        return None
    z = NormalDist().inv_cdf(0.5 + level / 2)
    # Compared before dividing: a delta of 1e-300 would overflow the quotient.
    spread = count * (z * delta_se) ** 2
    if spread > MAX_EXAMPLES_NEEDED * delta**2:
        return None
    return max(math.ceil(spread / delta**2), count + 1)

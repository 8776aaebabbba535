"""What the confidence intervals cost: the paired bootstrap of every task, on one thread.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bootstrap_cost.py [--examples 2000]

Builds deterministic predictions of a base and a tuned model for each task (classification with
5 and with 1,000 labels, generation with BLEU, summarization, extractive QA), scores them with
``compute_metrics`` as the completion does, then times ``paired_bootstrap`` (1,000 resamples,
both models) as CPU time, the best of three, and its peak traced memory. Prints one line a task
next to what scoring the texts took. Target: a few seconds at most for 2,000 examples.
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc

from shared.evaluation.confidence import BOOTSTRAP_RESAMPLES, paired_bootstrap
from shared.evaluation.metrics import ExampleScores, compute_metrics
from shared.messages import Task

WORDS = ["the", "cat", "sat", "on", "a", "mat", "with", "big", "red", "hat", "and", "dog", "ran", "far"]
Case = tuple[Task, list[str], list[str | None], list[str | None], list[str] | None]


def _cases(count: int) -> dict[str, Case]:
    rng = random.Random(1)

    def sentence(length: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(length))

    cases: dict[str, Case] = {}
    for name, label_count in (("classification, 5 labels", 5), ("classification, 1,000 labels", 1000)):
        labels = [f"label {k}" for k in range(label_count)]
        references = [rng.choice(labels) for _ in range(count)]
        base: list[str | None] = [r if rng.random() < 0.6 else rng.choice(labels) for r in references]
        tuned: list[str | None] = [
            r if rng.random() < 0.7 else rng.choice([rng.choice(labels), "no idea"]) for r in references
        ]
        cases[name] = (Task.CLASSIFICATION, references, base, tuned, labels)
    long = [sentence(12) for _ in range(count)]
    cases["generation (BLEU)"] = (
        Task.GENERATION,
        long,
        [r if rng.random() < 0.5 else sentence(12) for r in long],
        [r if rng.random() < 0.6 else sentence(12) for r in long],
        None,
    )
    cases["summarization"] = (
        Task.SUMMARIZATION,
        long,
        [sentence(10) for _ in long],
        [sentence(10) for _ in long],
        None,
    )
    short = [sentence(3) for _ in range(count)]
    cases["extractive QA"] = (
        Task.EXTRACTIVE_QA,
        short,
        [s if rng.random() < 0.4 else sentence(3) for s in short],
        [s if rng.random() < 0.5 else sentence(3) for s in short],
        None,
    )
    return cases


def _bootstrap_cost(base: ExampleScores, tuned: ExampleScores) -> tuple[float, float]:
    """(best CPU seconds of three runs, peak traced MB of one)."""
    runs = []
    for _ in range(3):
        started = time.process_time()
        paired_bootstrap(base, tuned)
        runs.append(time.process_time() - started)
    tracemalloc.start()
    paired_bootstrap(base, tuned)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return min(runs), peak / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000)
    args = parser.parse_args()
    print(f"{args.examples:,} test examples, {BOOTSTRAP_RESAMPLES:,} resamples, both models")
    for name, (task, references, base, tuned, labels) in _cases(args.examples).items():
        started = time.process_time()
        scored = [compute_metrics(task, references, answers, labels=labels) for answers in (base, tuned)]
        scoring = time.process_time() - started
        base_examples, tuned_examples = (result.examples for result in scored)
        assert base_examples is not None
        assert tuned_examples is not None
        seconds, megabytes = _bootstrap_cost(base_examples, tuned_examples)
        print(f"{name:30} bootstrap {seconds:6.3f} s CPU, {megabytes:5.1f} MB   (scoring {scoring:5.2f} s)")


if __name__ == "__main__":
    main()

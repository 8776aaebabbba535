"""Issue 15, part 4: classification gets a confusion matrix, in summary.json and report.html."""

from __future__ import annotations

import json

from shared.evaluation.metrics import (
    TaskChoice,
    compute_metrics,
    confusion_labels,
    confusion_matrix,
)
from shared.evaluation.report import EvaluationSummary, build_summary, render_report_html
from shared.messages import Task

XSS = "<script>alert(1)</script>"


def _examples(references: list[str], answers: list[str | None], labels: list[str] | None = None):
    examples = compute_metrics(Task.CLASSIFICATION, references, answers, labels=labels).examples
    assert examples is not None
    return examples


def test_the_matrix_counts_each_reference_and_answer_pair() -> None:
    references = ["cat", "cat", "cat", "dog", "dog", "bird"]
    answers = ["cat", "Dog.", "a fish, I think", "dog", "bird", None]
    examples = _examples(references, answers, labels=["cat", "dog", "bird", "fish"])

    labels = confusion_labels(examples)
    matrix = confusion_matrix(examples, labels)

    # "fish" is allowed but neither a reference nor an answer: no row, no column.
    assert matrix.labels == ["bird", "cat", "dog"]
    assert matrix.matrix == [
        # bird cat dog other
        [0, 0, 0, 1],  # bird: the failed call, an empty answer
        [0, 1, 1, 1],  # cat: right, "Dog." (normalised: dog), free text
        [1, 0, 1, 0],  # dog: right, bird
    ]
    assert (matrix.omitted_labels, matrix.omitted_examples) == (0, 0)


def test_both_models_get_the_same_classes_even_one_only_the_tuned_model_answers() -> None:
    references = ["a", "a", "b", "b"]
    base = _examples(references, ["a", "a", "a", "a"], labels=["a", "b", "c"])
    tuned = _examples(references, ["a", "c", "b", "b"], labels=["a", "b", "c"])
    labels = confusion_labels(base, tuned)
    assert labels == ["a", "b", "c"]
    assert confusion_matrix(base, labels).matrix == [[2, 0, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]]
    assert confusion_matrix(tuned, labels).matrix == [[1, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0]]


def test_many_classes_keep_the_most_frequent_and_count_the_rest() -> None:
    # 40 classes: class k has 40 - k references, so k = 0..2 are the three most frequent.
    references = [f"c{k:02d}" for k in range(40) for _ in range(40 - k)]
    answers = ["c39" if r == "c00" else r for r in references]  # c00 always answered as c39
    examples = _examples(references, answers)

    labels = confusion_labels(examples, limit=3)
    matrix = confusion_matrix(examples, labels)

    assert labels == ["c00", "c01", "c02"]
    assert matrix.matrix == [[0, 0, 0, 40], [0, 39, 0, 0], [0, 0, 38, 0]]  # c39 is "other" here
    assert matrix.omitted_labels == 37
    assert matrix.omitted_examples == len(references) - 40 - 39 - 38


def _summary(task: Task, references: list[str], base: list[str | None], tuned: list[str | None]):
    return build_summary(
        job_id="job",
        dataset_id="ds",
        base_model="gemini-2.5-flash",
        task_choice=TaskChoice(task=task, decided_by="explicit", reason="given"),
        base=compute_metrics(task, references, base),
        tuned=compute_metrics(task, references, tuned),
    )


def test_summary_json_has_both_matrices_for_classification_only() -> None:
    references = ["yes", "no"] * 20
    summary = _summary(Task.CLASSIFICATION, references, ["yes"] * 40, list(references))
    document = json.loads(summary.to_json())
    assert document["confusion"] == {
        "base": {
            "labels": ["no", "yes"],
            "matrix": [[0, 20, 0], [0, 20, 0]],
            "omitted_labels": 0,
            "omitted_examples": 0,
        },
        "tuned": {
            "labels": ["no", "yes"],
            "matrix": [[20, 0, 0], [0, 20, 0]],
            "omitted_labels": 0,
            "omitted_examples": 0,
        },
    }
    assert EvaluationSummary.model_validate(document) == summary
    assert _summary(Task.EXTRACTIVE_QA, ["Paris"], ["Paris"], ["Rome"]).confusion == {}


def test_report_shows_the_matrices_with_every_label_escaped(hostile_summary: EvaluationSummary) -> None:
    page = render_report_html(hostile_summary)
    assert "<h2>Confusion matrices</h2>" in page
    assert page.count("<table class='confusion'>") == 2
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"<th class='num'>{escaped}</th><th class='num'>negative</th>" in page  # a column
    assert f"<tr><th>{escaped}</th><td class='num diagonal'>10</td>" in page  # base: 10 of 20 right
    assert f"<tr><th>{escaped}</th><td class='num diagonal'>20</td>" in page  # tuned: all 20
    assert "<script>" not in page


def test_the_report_says_when_classes_were_left_out() -> None:
    references = [f"c{k:02d}" for k in range(40) for _ in range(3)]
    page = render_report_html(_summary(Task.CLASSIFICATION, references, list(references), list(references)))
    assert "10 rarer classes are left out (30 test examples have one as their reference" in page

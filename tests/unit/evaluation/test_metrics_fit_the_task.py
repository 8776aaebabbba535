"""Issue 13: a verdict you can trust (the task decision at completion, and metrics that fit it)."""

from __future__ import annotations

import io

import orjson
import pytest

from shared.config import Settings
from shared.datasets import PrepareOptions, prepare
from shared.evaluation.finalize import decide_task
from shared.evaluation.metrics import (
    TaskChoice,
    choose_task,
    compute_metrics,
    corpus_bleu,
    extract_label,
    references_by_prompt,
)
from shared.evaluation.report import build_summary, estimate_training_cost, render_report_html
from shared.events import StorageObject
from shared.ingest.upload import _file_outcome, _tuning_request
from shared.messages import Task
from shared.state.jobs import JobRecord

SHORT_ANSWERS = [
    "Paris",
    "blue whale",
    "George Washington",
    "1889",
    "oxygen",
    "Mount Everest",
    "the Nile",
    "Jupiter",
    "Shakespeare",
    "carbon dioxide",
    "Tokyo",
    "eight",
    "Marie Curie",
    "Pacific Ocean",
    "red",
    "Canberra",
]


def _summary(task: Task, references: list[str], base: list[str | None], tuned: list[str | None], **kw):
    choice = TaskChoice(task=task, decided_by="inferred", reason="test")
    return build_summary(
        job_id="job",
        dataset_id="dataset",
        base_model="gemini-2.5-flash",
        task_choice=choice,
        base=compute_metrics(task, references, base, **kw),
        tuned=compute_metrics(task, references, tuned, **kw),
    )


# --- Generation: no degenerate primary metric --------------------------------------------------


def test_a_perfect_model_on_short_answers_is_improved_against_a_verbose_base() -> None:
    # Before: corpus BLEU 0.020 (verbose base) -> 0.000 (perfect tuned): "regressed". No
    # prediction of 1-3 tokens has a 4-gram, so BLEU is 0 for the perfect model.
    references = SHORT_ANSWERS * 3
    verbose = [f"The answer is {answer}." for answer in references]
    summary = _summary(Task.GENERATION, references, verbose, list(references))
    assert summary.verdict == "improved"
    assert summary.primary_metric == "chrf"
    assert "fewer than the 4 BLEU needs" in summary.primary_reason
    scores = {m.name: (round(m.base, 3), round(m.tuned, 3)) for m in summary.metrics}
    assert "bleu" not in scores  # degenerate here: not reported at all
    assert scores["chrf"] == (0.665, 1.0)
    assert scores["exact_match"] == (0.0, 1.0)


def test_bleu_stays_primary_on_long_references() -> None:
    references = ["the cat sat on the mat today", "a quick brown fox jumps over the dog"]
    result = compute_metrics(Task.GENERATION, references, references)
    assert result.primary_metric == "bleu"
    assert result.scores["bleu"] == pytest.approx(1.0)


def test_one_cjk_reference_does_not_change_how_english_examples_are_tokenised() -> None:
    # Before: one CJK character anywhere switched the whole corpus to character tokens, and
    # BLEU of these English examples went from 0.154 to 0.493 when one Chinese example joined.
    english_refs = [f"the {w} report was published on monday morning" for w in ("annual", "budget", "weekly")]
    english_preds = [f"the {w} report came out on monday" for w in ("annual", "budget", "weekly")]
    english = corpus_bleu(english_preds * 3, [english_refs * 3])
    mixed = corpus_bleu([*english_preds * 3, "東京"], [[*english_refs * 3, "東京"]])
    assert english == pytest.approx(0.154, abs=0.001)
    # The CJK example adds its own (character) n-grams and nothing else: 0.156.
    assert mixed == pytest.approx(english, abs=0.005)


# --- Classification: strict and lenient, labels of the whole dataset ---------------------------


def test_lenient_extraction_finds_the_one_label_a_verbose_answer_names() -> None:
    labels = ["positive", "negative", "neutral", "very positive"]
    assert extract_label("The sentiment is positive.", labels) == "positive"
    assert extract_label("Label: NEGATIVE", labels) == "negative"
    assert extract_label("**Neutral**", labels) == "neutral"
    assert extract_label("I would say very positive!", labels) == "very positive"
    assert extract_label("positive, not negative", labels) is None  # two labels: refused
    assert extract_label("It is hard to say.", labels) is None
    assert extract_label("The answer is unpositively odd", labels) is None  # whole words only


def test_classification_reports_strict_and_lenient_scores() -> None:
    # Before: "The sentiment is positive." was a miss and out of label, with no lenient score.
    references = ["positive", "negative", "positive", "negative"]
    predictions = ["The sentiment is positive.", "Label: negative", "positive", "positive or negative"]
    result = compute_metrics(Task.CLASSIFICATION, references, predictions)
    assert result.scores["accuracy"] == pytest.approx(0.25)
    assert result.scores["lenient_accuracy"] == pytest.approx(0.75)
    assert result.primary_metric == "macro_f1"


def test_the_label_set_is_the_datasets_not_only_the_test_splits() -> None:
    references = ["billing", "billing", "shipping"]
    predictions = ["billing", "returns", "shipping"]  # "returns" is a label of the dataset
    only_test = compute_metrics(Task.CLASSIFICATION, references, predictions)
    dataset = compute_metrics(
        Task.CLASSIFICATION, references, predictions, labels=["billing", "returns", "shipping"]
    )
    assert only_test.scores["out_of_label_rate"] == pytest.approx(1 / 3)
    assert dataset.scores["out_of_label_rate"] == 0.0
    assert dataset.per_class["returns"].support == 0  # a false positive of a real class


# --- QA and summaries --------------------------------------------------------------------------


def test_qa_scores_the_best_of_every_answer_of_a_prompt() -> None:
    prompts = ["Who wrote Hamlet?", "Who wrote Hamlet?", "Capital of France?"]
    references = ["Shakespeare", "William Shakespeare", "Paris"]
    assert references_by_prompt(prompts, references)[0] == ["Shakespeare", "William Shakespeare"]
    predictions = ["William Shakespeare", "William Shakespeare", "Paris"]
    alone = compute_metrics(Task.EXTRACTIVE_QA, references, predictions)
    grouped = compute_metrics(Task.EXTRACTIVE_QA, references, predictions, prompts=prompts)
    assert alone.scores["exact_match"] == pytest.approx(2 / 3)
    assert grouped.scores["exact_match"] == 1.0


def test_summaries_get_rouge_lsum_which_forgives_reordered_sentences() -> None:
    reference = "The council approved the budget. Parks get more money next year. The vote was close."
    reordered = "The vote was close. Parks get more money next year. The council approved the budget."
    result = compute_metrics(Task.SUMMARIZATION, [reference], [reordered])
    assert result.scores["rougeLsum"] > result.scores["rougeL"] + 0.2
    assert result.scores["rouge1"] == pytest.approx(1.0)


# --- The task decision at completion -----------------------------------------------------------


def _job(request: dict) -> JobRecord:
    return JobRecord(job_id="j", dataset_id="d", request=request, base_model="gemini-2.5-flash", status="x")


def test_completion_reports_an_inferred_task_as_inferred_with_its_evidence() -> None:
    # Before: ingest's guess travelled as `task` and the report said "explicit: given in the request".
    rows = [(f"utterance {i} about topic {i % 30}", f"intent_{i % 30:02d}") for i in range(300)]
    data = b"".join(
        orjson.dumps(
            {
                "contents": [
                    {"role": "user", "parts": [{"text": p}]},
                    {"role": "model", "parts": [{"text": a}]},
                ]
            }
        )
        + b"\n"
        for p, a in rows
    )
    options = PrepareOptions(token_counting="estimate")
    result = prepare(io.BytesIO(data), filename="intents.jsonl", size=len(data), options=options)
    obj = StorageObject(bucket="bucket", name="incoming/intents.jsonl", generation=1, size=len(data))
    request = _tuning_request(
        obj,
        _file_outcome(result, None, options),
        {"train": "gs://bucket/p/train.jsonl"},
        Settings(_env_file=None),
    )
    job = _job(orjson.loads(request.to_json()))

    choice = decide_task(job, ["intent_01", "intent_02"], ["utterance a", "utterance b"])

    assert (choice.task, choice.decided_by) == (Task.CLASSIFICATION, "inferred")
    assert "one of 30 labels (each seen >= 2 times)" in choice.reason
    assert len(choice.labels) == 30  # the dataset's, not the two test references'
    summary = build_summary(
        job_id="j",
        dataset_id="d",
        base_model="gemini-2.5-flash",
        task_choice=choice,
        base=compute_metrics(choice.task, ["intent_01"], ["intent_02"], labels=choice.labels),
        tuned=compute_metrics(choice.task, ["intent_01"], ["intent_01"], labels=choice.labels),
    )
    assert summary.task_decided_by == "inferred"
    assert "classification (inferred: " in render_report_html(summary).replace("&#x27;", "'")


def test_completion_reports_a_task_the_user_set_as_explicit() -> None:
    choice = decide_task(
        _job({"task": "generation", "task_evidence": "set by the manifest ('task')"}),
        ["positive", "negative", "positive", "negative"],
        ["a", "b", "c", "d"],
    )
    assert (choice.task, choice.decided_by, choice.reason) == (
        Task.GENERATION,
        "explicit",
        "set by the manifest ('task')",
    )
    published = decide_task(_job({"task": "extractive_qa"}), ["x"], ["x y"])
    assert (published.decided_by, published.reason) == ("explicit", "given in the request")


def test_completion_decides_with_the_same_rule_when_the_request_has_no_decision() -> None:
    references = [f"intent_{i % 25}" for i in range(100)]
    choice = decide_task(_job({}), references, [f"text {i}" for i in range(100)])
    # Before: at most 20 labels were classification, so 25 intents were "generation".
    assert (choice.task, choice.decided_by) == (Task.CLASSIFICATION, "inferred")
    assert choice.reason.endswith("(decided on the test split)")
    assert choice == choose_task(references, inputs=[f"text {i}" for i in range(100)]).model_copy(
        update={"reason": choice.reason}
    )


def test_the_cost_note_says_only_training_tokens_are_billed() -> None:
    cost = estimate_training_cost(
        training_tokens=1_000_000,
        epochs=3,
        base_model="gemini-2.5-flash",
        prices_per_m_tokens={"gemini-2.5-flash": 5.0},
        tokens_counted="exact",
    )
    assert cost is not None
    assert cost.billable_tokens == 3_000_000
    assert "training-split tokens x 3 epochs" in cost.note
    assert "validation and test examples are not" in cost.note

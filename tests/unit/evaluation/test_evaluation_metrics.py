from __future__ import annotations

import subprocess
import sys

import pytest

from shared.errors import PermanentError
from shared.evaluation.metrics import (
    choose_task,
    classification_metrics,
    compute_metrics,
    corpus_bleu,
    exact_match,
    normalize_answer,
    normalize_label,
    token_f1,
)
from shared.messages import Task

# The example of rouge-score's README. Hand count, after stemming ("jumps" -> "jump", "lazy" ->
# "lazi"): 9 reference tokens, 8 predicted, 6 shared unigrams, 2 shared bigrams out of 8 and 7,
# longest common subsequence "the quick brown jump the" of 5.
ROUGE_REFERENCE = "The quick brown fox jumps over the lazy dog"
ROUGE_PREDICTION = "The quick brown dog jumps on the log."


def test_classification_hand_computed_scores() -> None:
    references = ["cat", "cat", "dog", "dog", "bird", "cat"]
    predictions = ["cat", "dog", "dog", "dog", "cat", "I think it is a fish"]

    scores, per_class = classification_metrics(references, predictions)

    # cat: tp 1, fp 1 (the bird), fn 2 -> P 1/2, R 1/3, F1 0.4
    assert per_class["cat"].precision == pytest.approx(0.5)
    assert per_class["cat"].recall == pytest.approx(1 / 3)
    assert per_class["cat"].f1 == pytest.approx(0.4)
    assert per_class["cat"].support == 3
    # dog: tp 2, fp 1 -> P 2/3, R 1, F1 0.8
    assert per_class["dog"].f1 == pytest.approx(0.8)
    assert per_class["bird"].f1 == 0.0
    assert scores["accuracy"] == pytest.approx(0.5)
    assert scores["macro_f1"] == pytest.approx((0.4 + 0.8 + 0.0) / 3)
    # micro: tp 3, fp 2, fn 3 -> P 0.6, R 0.5 -> F1 6/11; differs from accuracy only because of
    # the answer outside the label set.
    assert scores["micro_f1"] == pytest.approx(6 / 11)
    assert scores["out_of_label_rate"] == pytest.approx(1 / 6)


def test_classification_micro_f1_equals_accuracy_inside_the_label_set() -> None:
    scores, _ = classification_metrics(["a", "b", "b", "c"], ["a", "c", "b", "c"])
    assert scores["micro_f1"] == pytest.approx(scores["accuracy"]) == pytest.approx(0.75)


def test_labels_compare_without_case_and_wrapping_punctuation() -> None:
    assert normalize_label("  **Positive.** ") == "positive"
    assert normalize_label("C++") == "c++"
    result = compute_metrics(Task.CLASSIFICATION, ["positive", "negative"], ["Positive.", '"NEGATIVE"'])
    assert result.scores["accuracy"] == 1.0


def test_squad_normalisation_and_scores() -> None:
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("An apple, a pear and the «plum».") == "apple pear and plum"
    assert exact_match("The Eiffel Tower", "eiffel tower!") == 1.0
    # [in, year, 1889] vs [1889, in, paris]: 2 shared tokens -> P = R = 2/3
    assert token_f1("in the year 1889", "1889 in Paris") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0
    assert token_f1("Paris", "") == 0.0

    result = compute_metrics(
        "extractive_qa", ["The Eiffel Tower", "in the year 1889"], ["eiffel tower", "1889 in Paris"]
    )
    assert result.scores == pytest.approx({"exact_match": 0.5, "f1": (1 + 2 / 3) / 2})


def test_rouge_matches_the_rouge_score_readme_example() -> None:
    result = compute_metrics(Task.SUMMARIZATION, [ROUGE_REFERENCE], [ROUGE_PREDICTION])
    # One sentence each: the summary-level LCS (rougeLsum) is rougeL's.
    assert result.scores == pytest.approx(
        {"rouge1": 12 / 17, "rouge2": 4 / 15, "rougeL": 10 / 17, "rougeLsum": 10 / 17}
    )


def test_rouge_scores_non_latin_text() -> None:
    # rouge-score's own tokenizer drops these characters and would score 0.
    russian = compute_metrics(Task.SUMMARIZATION, ["кошка сидит на окне"], ["кошка сидит на окне"])
    assert russian.scores["rouge1"] == pytest.approx(1.0)
    chinese = compute_metrics(Task.SUMMARIZATION, ["我喜欢猫"], ["我喜欢狗"])
    assert chinese.scores["rouge1"] == pytest.approx(3 / 4)


def test_bleu_matches_the_sacrebleu_readme_example() -> None:
    predictions = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    reference_sets = [
        ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
        ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
    ]
    # sacrebleu's README: "BLEU = 48.53 82.4/50.0/45.5/37.5 ..."
    assert corpus_bleu(predictions, reference_sets) == pytest.approx(0.4853, abs=5e-5)


def test_generation_scores_bleu_chrf_rouge_l_and_exact_match() -> None:
    references = ["the cat sat on the mat", "a quick brown fox"]
    perfect = compute_metrics(Task.GENERATION, references, references)
    assert perfect.scores == pytest.approx({"bleu": 1.0, "chrf": 1.0, "rougeL": 1.0, "exact_match": 1.0})
    assert perfect.primary_metric == "bleu"


def test_failed_predictions_are_counted_and_scored_as_empty() -> None:
    result = compute_metrics(Task.EXTRACTIVE_QA, ["Paris", "Rome"], ["Paris", None])
    assert result.failed == 1
    assert result.count == 2
    assert result.scores["exact_match"] == 0.5
    assert result.notes == ["1 failed model call scored as empty answers"]


def test_length_mismatch_is_permanent() -> None:
    with pytest.raises(PermanentError, match="2 references but 1 predictions"):
        compute_metrics(Task.GENERATION, ["a", "b"], ["a"])


def test_task_given_explicitly_wins() -> None:
    choice = choose_task(["positive", "negative", "positive", "negative"], explicit="generation")
    assert (choice.task, choice.decided_by) == (Task.GENERATION, "explicit")
    with pytest.raises(PermanentError) as raised:
        choose_task(["x"], explicit="translation")
    assert raised.value.field == "task"


def test_small_closed_label_set_is_classification() -> None:
    references = ["positive", "negative", "neutral", "Positive", "negative", "positive."]
    choice = choose_task(references)
    assert (choice.task, choice.decided_by) == (Task.CLASSIFICATION, "inferred")
    # positive x3, negative x2 repeat; neutral once: 5 of 6 answers are repeated labels.
    assert choice.reason.startswith("5 of 6 answers are one of 2 labels (each seen >= 2 times)")
    assert choice.labels == ("negative", "neutral", "positive")


def test_labels_that_never_repeat_are_not_classification() -> None:
    # 4 distinct short answers in 4 examples: no evidence of a closed set.
    assert choose_task(["red", "blue", "green", "yellow"]).task is Task.GENERATION


def test_spans_of_the_prompt_are_extractive_qa() -> None:
    inputs = [
        "Context: The Eiffel Tower was finished in 1889 in Paris. Question: When was it finished?",
        "Context: Marie Curie won two Nobel prizes. Question: Who won two Nobel prizes?",
        "Context: The Nile flows north into the Mediterranean Sea. Question: Where does it flow?",
    ]
    references = ["1889", "Marie Curie", "into the Mediterranean Sea"]
    choice = choose_task(references, inputs=inputs)
    assert choice.task is Task.EXTRACTIVE_QA
    assert "100%" in choice.reason


def test_short_rewrites_of_long_prompts_are_summarization() -> None:
    article = " ".join(["The council met on Monday to discuss the new budget for the city's parks."] * 6)
    references = [
        "The council discussed the parks budget on Monday and postponed the final vote.",
        "Councillors met to debate next year's spending on parks and playgrounds.",
    ]
    choice = choose_task(references, inputs=[article, article])
    assert choice.task is Task.SUMMARIZATION


def test_importing_metrics_does_not_import_rouge_sacrebleu_or_numpy() -> None:
    code = (
        "import sys, shared.evaluation.metrics, shared.evaluation.confidence;"
        "print(sorted(m for m in ('rouge_score', 'sacrebleu', 'nltk', 'numpy') if m in sys.modules))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"

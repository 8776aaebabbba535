"""Ingest's task decision: one rule over a sample of the whole file, with its evidence.

Before issue 13 ingest read the first 1,000 examples only, gave up on classification past 20
labels or one label over 50 characters, and on summaries whose prompts lacked "summar"; its guess
went into the request's ``task`` and was reported as explicit.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from conftest import gemini, jsonl, run

from shared.config import Settings
from shared.datasets import PrepareOptions
from shared.evaluation import task_rule
from shared.events import StorageObject
from shared.ingest.upload import _file_outcome, _tuning_request
from shared.messages import Task, TuningRequestV1

WORDS = (
    "market",
    "river",
    "engine",
    "garden",
    "silver",
    "planet",
    "winter",
    "doctor",
    "signal",
    "window",
    "harbor",
    "paper",
)


def _intents(classes: int, per_class: int, *, seed: int = 1) -> list[tuple[str, str]]:
    """(utterance, intent) pairs: every utterance distinct, intents repeat."""
    rng = random.Random(seed)
    rows = [
        (f"utterance {i}: {' '.join(rng.choices(WORDS, k=8))}", f"intent_{c:03d}")
        for c in range(classes)
        for i in range(c * per_class, (c + 1) * per_class)
    ]
    rng.shuffle(rows)
    return rows


def _data(rows: list[tuple[str, str]]) -> bytes:
    return jsonl(*[gemini(prompt, answer) for prompt, answer in rows])


def test_30_and_150_intents_are_classification_with_every_label() -> None:
    # Before: more than 20 labels were "generation" (then judged by BLEU).
    for classes in (30, 150):
        result, _ = run(_data(_intents(classes, 8)), split="train")
        assert result.task is not None
        assert (result.task.value, result.task.source) == ("classification", "inferred"), result.task
        assert len(result.task.labels) == classes
        assert f"one of {classes} labels (each seen >= 2 times)" in result.task.reason


def test_a_file_sorted_by_label_is_sampled_over_the_whole_file() -> None:
    # Before: the first 1,000 examples were all "billing", one label: "generation".
    rows = [(f"ticket {i} about my invoice", "billing") for i in range(1_200)]
    for label in ("shipping", "returns", "account", "technical"):
        rows += [(f"ticket {label} {i}", label) for i in range(300)]
    result, _ = run(_data(rows), split="train")
    assert result.task is not None
    assert result.task.value == "classification"
    assert result.task.labels == ["account", "billing", "returns", "shipping", "technical"]
    assert "sample spread over all 2,400 examples" in result.task.reason


def test_long_labels_count_when_they_repeat() -> None:
    # Before: one label longer than 50 characters made the whole file "generation".
    labels = [
        "Refund requested: the order arrived damaged and the customer wants money back",
        "Delivery question: the customer asks where the parcel is and when it will arrive",
        "Account problem: the customer cannot log in or reset the password",
    ]
    rows = [
        (f"message {i}: {' '.join(random.Random(i).choices(WORDS, k=6))}", labels[i % 3]) for i in range(60)
    ]
    result, _ = run(_data(rows), split="train")
    assert result.task is not None
    assert result.task.value == "classification"
    assert len(result.task.labels) == 3


def test_labels_differing_in_case_or_trailing_punctuation_are_one_label() -> None:
    answers = ["Positive", "positive.", "POSITIVE", "negative", "Negative!", "negative"]
    result, _ = run(_data([(f"review {i}", answers[i % 6]) for i in range(24)]), split="train")
    assert result.task is not None
    assert result.task.labels == ["negative", "positive"]


def test_summaries_are_found_by_length_ratio_and_overlap_without_the_word_summary() -> None:
    # Before: prompts under 1,000 characters that do not say "summar" were "generation".
    rng = random.Random(3)
    rows = []
    for i in range(40):
        sentences = [" ".join(rng.choices(WORDS, k=12)) + "." for _ in range(5)]
        article = f"Article {i}. " + " ".join(sentences)
        # The answer keeps words of the article: an extractive-ish short version.
        answer = " ".join(sentences[0].split()[:6] + sentences[3].split()[:6])
        rows.append((article, answer))
    result, _ = run(_data(rows), split="train")
    assert result.task is not None
    assert result.task.value == "summarization", result.task
    assert "found in the prompt" in result.task.reason


def test_answers_copied_from_the_prompt_are_extractive_qa() -> None:
    rows = [
        (
            f"Context: The {w} was built in {1800 + i} by the town. Question: When was the {w} built?",
            str(1800 + i),
        )
        for i, w in enumerate(WORDS * 3)
    ]
    result, _ = run(_data(rows), split="train")
    assert result.task is not None
    assert result.task.value == "extractive_qa"
    assert "36 of 36 answers (100%) are spans of their prompt" in result.task.reason


def test_the_decision_is_deterministic() -> None:
    data = _data(_intents(40, 80))  # 3,200 examples: more than the sample
    first, _ = run(data, split="train")
    second, _ = run(data, split="train")
    assert first.task == second.task


def test_holding_sampled_texts_until_the_decision_decides_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sampled texts are held (up to MAX_HELD_TEXT_BYTES) and their features computed at the
    decision; with nothing held every sampled example's features are computed at once, as before."""
    rng = random.Random(5)
    rows = [
        (f"Summarize: {' '.join(rng.choices(WORDS, k=40))} the end", " ".join(rng.choices(WORDS, k=9)))
        for _ in range(5000)
    ] + _intents(12, 300)
    rng.shuffle(rows)
    samples = []
    for held in (task_rule.MAX_HELD_TEXT_BYTES, 20_000, 0):
        monkeypatch.setattr(task_rule, "MAX_HELD_TEXT_BYTES", held)
        sample = task_rule.TaskSample()
        for prompt, answer in rows:
            sample.observe(answer, lambda prompt=prompt: prompt)
        samples.append((sample.decide(), sample.file_labels()))
    assert samples[0] == samples[1] == samples[2]


def test_ascii_tokens_are_the_token_regex_s() -> None:
    texts = [
        "The Eiffel-Tower, in 1889: a_b an  ANSWER!",
        "\u212a is the Kelvin sign, lower-cased to an ASCII k",
        "tab\tand\nnew-line; \x00 control; é and 日本語 mixed",
        "",
        "a an the",
    ]
    for text in texts:
        tokens = task_rule._TOKEN.findall(text.lower())
        assert task_rule.answer_tokens(text) == [t for t in tokens if t not in ("a", "an", "the")], text


def _request(result, *, task: Task | None = None) -> TuningRequestV1:
    options = PrepareOptions(task=task) if task else PrepareOptions()
    settings = Settings(_env_file=None)
    obj = StorageObject(bucket="bucket", name="incoming/intents.jsonl", generation=1, size=10)
    outcome = _file_outcome(result, None, options)
    return _tuning_request(obj, outcome, {"train": "gs://bucket/prepared/d/train.jsonl"}, settings)


def test_an_inferred_task_travels_as_inferred_with_its_evidence_and_labels() -> None:
    # Before: ingest wrote its guess into `task`, and the report said "explicit".
    data = _data(_intents(30, 8))
    result, _ = run(data)
    request = _request(result)
    assert request.task is None
    assert request.inferred_task is Task.CLASSIFICATION
    assert "one of 30 labels" in (request.task_evidence or "")
    assert len(request.task_labels or ()) == 30
    # The labels were counted over every split, not only the test split.
    assert result.split.test < 30 * 8


def test_a_task_the_user_set_travels_as_task() -> None:
    data = _data(_intents(30, 8))
    result, _ = run(data, task="classification")
    request = _request(result, task=Task.CLASSIFICATION)
    assert request.task is Task.CLASSIFICATION
    assert request.inferred_task is None
    assert request.task_evidence == "set by the upload (custom metadata 'task')"
    assert len(request.task_labels or ()) == 30


def test_importing_the_rule_costs_no_metric_library() -> None:
    code = (
        "import sys, shared.datasets.task, shared.evaluation.task_rule;"
        "print(sorted(m for m in ('rouge_score', 'sacrebleu', 'nltk') if m in sys.modules))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"

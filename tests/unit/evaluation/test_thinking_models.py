"""Thinking models in evaluation: room for the thinking budget, and answers the output limit cut off.

Gemini 2.5 Pro cannot turn thinking off, and on 2.5 models the thinking tokens count against
maxOutputTokens. With the answer budget alone (twice the longest reference + 16: 20 tokens for
one-word labels) every Pro answer ended MAX_TOKENS with no text and was scored as a wrong answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from google.genai import types
from local_http import JsonHandler, serving

from shared.config import Settings
from shared.datasets.limits import MODEL_LIMITS, model_thinking
from shared.evaluation.metrics import TaskChoice, compute_metrics
from shared.evaluation.report import build_summary, render_report_html
from shared.evaluation.runner import (
    OUTPUT_MARGIN_TOKENS,
    PRO_MIN_THINKING_BUDGET,
    GenerationOptions,
    ModelAnswer,
    Prediction,
    TestExample,
    make_prediction,
    max_output_tokens_for,
    output_budget,
    response_text,
    run_predictions,
    thinking_budget_for,
    truncation_counts,
)
from shared.messages import Task
from shared.notify.content import EvaluatedOutcome, evaluated_notification

LABELS = [
    TestExample(
        index=i,
        system_instruction=None,
        contents=[{"role": "user", "parts": [{"text": f"Review {i}: fine."}]}],
        reference=label,
    )
    for i, label in enumerate(["positive", "negative", "positive"])
]
#: The answer budget for one-word labels: 8 bytes is 2 estimated tokens, twice over, + 16.
ANSWER_BUDGET = 2 * 2 + OUTPUT_MARGIN_TOKENS


def _response(body: dict[str, Any]) -> types.GenerateContentResponse:
    """A real SDK response object, parsed from the JSON Vertex sends."""
    return types.GenerateContentResponse.model_validate(body)


#: What Gemini 2.5 Pro answers when maxOutputTokens is spent on thinking: no parts at all.
CUT_OFF = {
    "candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS"}],
    "usageMetadata": {"promptTokenCount": 9, "thoughtsTokenCount": 20, "totalTokenCount": 29},
}


def _answer(text: str, reason: str = "STOP") -> dict[str, Any]:
    return {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": reason}],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 1, "totalTokenCount": 10},
    }


# --- Budgets -----------------------------------------------------------------------------------


def test_pro_gets_room_for_its_thinking_budget_on_top_of_the_answer() -> None:
    settings = Settings(evaluation_max_output_tokens=512, thinking_budget=0)

    pro = GenerationOptions.from_settings(settings, "gemini-2.5-pro", LABELS)

    # Before: maxOutputTokens 20 with thinking 128 -> every answer MAX_TOKENS and empty.
    assert pro.thinking_budget == PRO_MIN_THINKING_BUDGET == 128
    assert pro.max_output_tokens >= pro.thinking_budget + ANSWER_BUDGET
    assert pro.max_output_tokens == 148


def test_a_set_thinking_budget_is_added_and_the_sum_is_capped_at_what_the_model_accepts() -> None:
    pro = GenerationOptions.from_settings(Settings(thinking_budget=2048), "gemini-2.5-pro", LABELS)
    assert (pro.thinking_budget, pro.max_output_tokens) == (2048, 2048 + ANSWER_BUDGET)

    # The budget is held inside Pro's range (128-32,768) and the total inside its 65,535 outputs.
    huge = GenerationOptions.from_settings(
        Settings(thinking_budget=100_000, evaluation_max_output_tokens=60_000),
        "gemini-2.5-pro",
        [TestExample(index=0, system_instruction=None, contents=[], reference="x" * 400_000)],
    )
    assert huge.thinking_budget == 32_768
    assert huge.max_output_tokens == MODEL_LIMITS["gemini-2.5-pro"].thinking.max_output_tokens == 65_535


def test_flash_keeps_thinking_off_and_the_answer_budget_alone() -> None:
    settings = Settings(evaluation_max_output_tokens=512, thinking_budget=0)

    for model in ("gemini-2.5-flash", "gemini-2.5-flash-lite"):
        options = GenerationOptions.from_settings(settings, model, LABELS)
        assert (options.thinking_budget, options.max_output_tokens) == (0, ANSWER_BUDGET)
    old = GenerationOptions.from_settings(settings, "gemini-2.0-flash-001", LABELS)
    assert (old.thinking_budget, old.max_output_tokens) == (None, ANSWER_BUDGET)


def test_flash_asked_to_think_gets_the_room_too() -> None:
    options = GenerationOptions.from_settings(Settings(thinking_budget=256), "gemini-2.5-flash", LABELS)

    assert (options.thinking_budget, options.max_output_tokens) == (256, 256 + ANSWER_BUDGET)


@pytest.mark.parametrize(
    ("base_model", "setting", "expected"),
    [
        ("gemini-2.5-pro", 0, 128),
        ("gemini-2.5-pro", 50_000, 32_768),
        ("gemini-2.5-flash", 0, 0),
        ("gemini-2.5-flash", 30_000, 24_576),
        ("gemini-2.5-flash-lite", 0, 0),
        ("gemini-2.5-flash-lite", 100, 512),  # Flash-Lite thinks with at least 512 when it thinks
        ("gemini-1.5-pro-002", 0, None),
        # Models without a row are assumed: Gemini 3 and later to think always, like 2.5 Pro.
        ("gemini-3.5-flash", 0, 128),
        ("projects/p/locations/l/publishers/google/models/gemini-2.5-pro", 0, 128),
    ],
)
def test_thinking_budgets_follow_the_model_table(base_model: str, setting: int, expected: int | None) -> None:
    assert thinking_budget_for(base_model, setting) == expected


def test_one_table_says_which_models_cannot_turn_thinking_off() -> None:
    documented = {name: row for name, row in MODEL_LIMITS.items() if row.assumed_from is None}
    always = sorted(name for name, row in documented.items() if row.thinking.mode == "always")

    assert always == ["gemini-2.5-pro"]
    assert all(not row.thinking.assumed for row in documented.values())
    # Gemini 3 rows are assumed (from 2.5) and say so, as does the rule for a model without a row.
    for name in ("gemini-3.5-flash", "gemini-4-flash"):
        assumed = model_thinking(name)
        assert assumed.mode == "always"
        assert "assumed" in assumed.assumed or "taken to" in assumed.assumed
    assert max_output_tokens_for("gemini-2.5-flash", 20, 0) == 20
    assert max_output_tokens_for("gemini-2.5-pro", 20, 128) == 148
    assert output_budget(LABELS, 512) == ANSWER_BUDGET


# --- Answers cut off by the output limit -------------------------------------------------------


def test_an_empty_max_tokens_response_is_a_truncated_answer_not_a_failed_call() -> None:
    cut = response_text(_response(CUT_OFF))
    partial = response_text(_response(_answer("posi", "MAX_TOKENS")))
    blocked = response_text(_response({"promptFeedback": {"blockReason": "SAFETY"}}))
    whole = response_text(_response(_answer("positive")))

    assert (cut.text, cut.error, cut.finish_reason, cut.truncated) == ("", None, "MAX_TOKENS", True)
    # An empty text part (what a small model that spent its tokens on nothing sends) is the same.
    empty = response_text(_response(_answer("", "MAX_TOKENS")))
    assert (empty.text, empty.error, empty.truncated) == ("", None, True)
    assert (partial.text, partial.finish_reason, partial.truncated) == ("posi", "MAX_TOKENS", False)
    assert blocked.text is None
    assert "blocked" in (blocked.error or "")
    assert not blocked.truncated
    assert (whole.text, whole.finish_reason, whole.truncated) == ("positive", "STOP", False)

    prediction = make_prediction(LABELS[0], cut, ModelAnswer("positive", finish_reason="STOP"))

    assert prediction.base_truncated
    assert not prediction.tuned_truncated
    assert prediction.base_output == ""
    assert prediction.base_error is None
    assert prediction.base_finish_reason == "MAX_TOKENS"
    assert Prediction.model_validate_json(prediction.to_jsonl()) == prediction


def test_truncated_answers_are_counted_and_the_report_says_so() -> None:
    cut = response_text(_response(CUT_OFF))
    right = response_text(_response(_answer("positive")))
    predictions = [
        make_prediction(LABELS[0], cut, right),
        make_prediction(LABELS[1], cut, response_text(_response(_answer("negative")))),
        make_prediction(LABELS[2], ModelAnswer(None, "500 INTERNAL"), right),
    ]
    references = [p.reference for p in predictions]

    base_cut, tuned_cut = truncation_counts(predictions)
    summary = build_summary(
        job_id="j",
        dataset_id="d",
        base_model="gemini-2.5-pro",
        task_choice=TaskChoice(task=Task.CLASSIFICATION, decided_by="explicit", reason="given"),
        base=compute_metrics(Task.CLASSIFICATION, references, [p.base_output for p in predictions]),
        tuned=compute_metrics(Task.CLASSIFICATION, references, [p.tuned_output for p in predictions]),
        base_truncated=base_cut,
        tuned_truncated=tuned_cut,
    )

    assert (base_cut, tuned_cut) == (2, 0)
    counts = summary.counts
    assert (counts.base_failures, counts.base_truncated, counts.tuned_truncated) == (1, 2, 0)
    note = "base model: 2 answers were cut off by the output limit (MAX_TOKENS)"
    assert any(n.startswith(note) for n in summary.notes)
    html = render_report_html(summary)
    assert "cut off by the output limit (MAX_TOKENS): base 2, tuned 0" in html
    assert "2 answers were cut off by the output limit (MAX_TOKENS)" in html
    facts = dict(evaluated_notification(EvaluatedOutcome(summary=summary, report_url="gs://b/r")).facts)
    assert "cut off by the output limit (MAX_TOKENS): base 2" in facts["Test examples"]
    # Stored summaries from before the field read back with no truncated answers.
    legacy = summary.counts.model_validate({"test_examples": 3, "base_failures": 0, "tuned_failures": 0})
    assert legacy.truncation_text() == ""


# --- Through the real SDK ----------------------------------------------------------------------


def _thinking_budget(config: dict[str, Any]) -> int:
    # google-genai 3.x sends the proto field name (thinking_budget); Vertex takes either spelling.
    thinking = config.get("thinkingConfig", {})
    return int(thinking.get("thinkingBudget", thinking.get("thinking_budget", 0)))


class _FakeVertex(JsonHandler):
    """generateContent as Vertex answers it: the base model (Pro) thinks through maxOutputTokens
    when it is below thinking budget + 8 (and answers when it is not); the tuned endpoint answers."""

    requests: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def respond(self, body: dict[str, Any]) -> Any:
        self.requests.append((self.path, body))
        config = body.get("generationConfig", {})
        thinking = _thinking_budget(config)
        room = config.get("maxOutputTokens", 0) - thinking
        return _answer("positive") if "/endpoints/" in self.path or room >= 8 else CUT_OFF


@pytest.fixture
def fake_vertex() -> Iterator[str]:
    _FakeVertex.requests = []
    with serving(_FakeVertex) as url:
        yield url


def test_pro_answers_through_the_sdk_with_the_room_it_needs(fake_vertex: str) -> None:
    settings = Settings(tuning_api_url=fake_vertex, project="p", location="us-central1")
    endpoint = "projects/p/locations/us-central1/endpoints/42"

    answered = run_predictions(
        settings,
        LABELS,
        base_model="gemini-2.5-pro",
        tuned_model=endpoint,
        options=GenerationOptions.from_settings(settings, "gemini-2.5-pro", LABELS),
    )
    # Today's answer budget alone (what was sent before): every base answer is cut off.
    starved = run_predictions(
        settings,
        LABELS,
        base_model="gemini-2.5-pro",
        tuned_model=endpoint,
        options=GenerationOptions(max_output_tokens=ANSWER_BUDGET, thinking_budget=128),
    )

    base_configs = [b["generationConfig"] for path, b in _FakeVertex.requests if "gemini-2.5-pro" in path]
    assert {(c["maxOutputTokens"], _thinking_budget(c)) for c in base_configs} == {
        (148, 128),
        (20, 128),
    }
    assert [p.base_output for p in answered] == ["positive"] * 3
    assert truncation_counts(answered) == (0, 0)
    assert [p.base_output for p in starved] == [""] * 3
    assert all(p.base_finish_reason == "MAX_TOKENS" and p.base_error is None for p in starved)
    assert truncation_counts(starved) == (3, 0)

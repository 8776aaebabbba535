"""The judge: strict verdict parsing, both orders asked, rates, criteria, and its place in the report.

The tally tests inject a plain function as the judge (prompt -> text); the call tests run the real
google-genai client against a small HTTP server that answers as Vertex does.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from local_http import JsonHandler, serving

from shared.budgets import JUDGE_MIN_TIME_S
from shared.config import Settings
from shared.evaluation.completion import finalize_in_new_invocation
from shared.evaluation.judge import (
    CORRECTNESS,
    CRITERIA,
    DEFAULT_JUDGE_MODEL,
    JUDGE_MAX_OUTPUT_TOKENS,
    JudgeItem,
    JudgeSummary,
    combine_orders,
    estimate_cost,
    item_prompts,
    judge_examples,
    judge_model_for,
    judge_wanted,
    parse_pairwise,
    parse_pointwise,
    run_judge,
)
from shared.evaluation.metrics import TaskChoice, compute_metrics
from shared.evaluation.report import EvaluationSummary, build_summary, render_report_html
from shared.messages import Task
from shared.notify.content import EvaluatedOutcome, evaluated_notification

XSS = "<script>alert(1)</script>"

# --- Parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "winner"),
    [
        ('{"winner": "A", "reason": "closer to the reference"}', "A"),
        ('  {"winner": "tie", "reason": ""}\n', "tie"),
        ('```json\n{"winner": "B", "reason": "r"}\n```', "B"),
        ('```\n{"winner": "B", "reason": "r"}\n```', "B"),
    ],
)
def test_a_verdict_that_is_one_json_object_parses(text: str, winner: str) -> None:
    assert parse_pairwise(text) == winner


@pytest.mark.parametrize(
    "text",
    [
        'Answer A is better. {"winner": "A", "reason": "r"}',  # prose around the object
        '{"winner": "A", "reason": "r"} I hope this helps',
        '{"winner": "A", "reason": "r"}\n{"winner": "B", "reason": "r"}',  # two objects
        '{"winner": "a", "reason": "r"}',  # not one of the allowed values
        '{"winner": "both", "reason": "r"}',
        '{"winner": 1, "reason": "r"}',  # wrong type
        '{"winner": "A", "reason": 3}',
        '{"winner": "A"}',  # missing key
        '{"reason": "r"}',
        '["A"]',  # not an object
        '"A"',
        "A",
        "",
        '```json\n{"winner": "A", "reason": "r"}',  # unclosed fence
        None,
    ],
)
def test_anything_else_is_unparsable_never_guessed(text: str | None) -> None:
    assert parse_pairwise(text) is None


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ('{"score": 4}', 4),
        ('```json\n{"score": 1}\n```', 1),
        ('{"score": 5}', 5),
        ('{"score": 0}', None),  # out of the 1-5 scale
        ('{"score": 6}', None),
        ('{"score": 4.5}', None),  # not an integer
        ('{"score": "4"}', None),
        ('{"score": true}', None),  # a bool is an int to Python, not a score
        ('{"points": 4}', None),
        ('Score: {"score": 4}', None),
    ],
)
def test_a_pointwise_score_is_an_integer_on_the_scale(text: str, score: int | None) -> None:
    assert parse_pointwise(text) == score


# --- Both orders --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tuned_first", "base_first", "winner"),
    [
        ("A", "B", "tuned"),  # both orders pick the tuned answer
        ("B", "A", "base"),  # both pick the base answer
        ("A", "A", "tie"),  # the judge picks whatever comes first: position bias, a tie
        ("B", "B", "tie"),  # ... or whatever comes second
        ("tie", "B", "tie"),  # a tie in one order
        ("A", "tie", "tie"),
        ("tie", "tie", "tie"),
        (None, "B", None),  # unparsable in one order: unparsable, not a tie
        ("A", None, None),
    ],
)
def test_a_side_wins_only_when_both_orders_agree(
    tuned_first: str | None, base_first: str | None, winner: str | None
) -> None:
    assert combine_orders(tuned_first, base_first) == winner  # type: ignore[arg-type]


def test_the_tuned_answer_is_a_in_the_first_order_and_b_in_the_second() -> None:
    item = JudgeItem(prompt="Q", reference="R", base="BASE-ANSWER", tuned="TUNED-ANSWER")
    first, second, *pointwise = item_prompts(item, [CORRECTNESS])

    assert first.index("<answer_a>\nTUNED-ANSWER") < first.index("<answer_b>\nBASE-ANSWER")
    assert second.index("<answer_a>\nBASE-ANSWER") < second.index("<answer_b>\nTUNED-ANSWER")
    assert len(pointwise) == 2
    assert "BASE-ANSWER" in pointwise[0]
    assert "TUNED-ANSWER" in pointwise[1]


# --- The tally, with a plain function as the judge ----------------------------------------------

ITEMS = [
    JudgeItem(prompt=f"question {n}", reference=f"answer {n}", base=f"base {n}", tuned=f"tuned {n}")
    for n in range(4)
]


def _verdict(winner: str) -> str:
    return json.dumps({"winner": winner, "reason": "r"})


def _judge_preferring(pick: Callable[[str, str], str], score: Callable[[str], str]) -> Callable[[str], str]:
    """A judge that reads the prompt: ``pick(answer_a, answer_b)`` for pairs, ``score(answer)``."""

    def ask(prompt: str) -> str:
        def between(tag: str) -> str:
            return prompt.split(f"<{tag}>\n", 1)[1].split(f"\n</{tag}>", 1)[0]

        if "<answer_a>" in prompt:
            return pick(between("answer_a"), between("answer_b"))
        return score(between("answer"))

    return ask


def test_a_judge_that_always_prefers_the_tuned_answer_gives_it_every_win() -> None:
    ask = _judge_preferring(
        lambda a, b: _verdict("A" if a.startswith("tuned") else "B"),
        lambda answer: json.dumps({"score": 5 if answer.startswith("tuned") else 2}),
    )
    summary = judge_examples(ITEMS, CRITERIA[Task.EXTRACTIVE_QA], ask, model="judge-m")

    assert summary.win_rate is not None
    assert (summary.win_rate.tuned, summary.win_rate.tie, summary.win_rate.base) == (1.0, 0.0, 0.0)
    assert summary.pointwise == {
        "groundedness": {"base": 2.0, "tuned": 5.0},
        "correctness": {"base": 2.0, "tuned": 5.0},
    }
    assert (summary.examples_judged, summary.unparsable, summary.pointwise_unparsable) == (4, 0, 0)


def test_a_judge_with_position_bias_only_produces_ties() -> None:
    ask = _judge_preferring(lambda a, b: _verdict("A"), lambda answer: '{"score": 3}')
    summary = judge_examples(ITEMS, (), ask, model="judge-m")

    assert summary.win_rate is not None
    assert (summary.win_rate.tuned, summary.win_rate.tie, summary.win_rate.base) == (0.0, 1.0, 0.0)


def test_unparsable_verdicts_are_counted_and_left_out_of_the_rates() -> None:
    def pick(a: str, b: str) -> str:
        if "0" in a:  # example 0: prose instead of JSON in both orders
            return "I think A is better."
        if "1" in a and a.startswith("base"):  # example 1: unparsable in the second order only
            return '{"winner": "B"}'
        if "2" in a:  # example 2: the base answer both times
            return _verdict("A" if a.startswith("base") else "B")
        return _verdict("A" if a.startswith("tuned") else "B")  # example 3: tuned both times

    ask = _judge_preferring(pick, lambda answer: "five" if "3" in answer else '{"score": 4}')
    summary = judge_examples(ITEMS, [CORRECTNESS], ask, model="judge-m")

    assert summary.unparsable == 2
    assert summary.examples_judged == 2
    assert summary.win_rate is not None
    # Fractions of the two parsed examples, not of four: an unparsable verdict is not a tie.
    assert (summary.win_rate.tuned, summary.win_rate.tie, summary.win_rate.base) == (0.5, 0.0, 0.5)
    # Example 3's two scores did not parse: the means are over the three examples scored on both.
    assert summary.pointwise_unparsable == 2
    assert summary.pointwise == {"correctness": {"base": 4.0, "tuned": 4.0}}


def test_an_example_without_an_answer_is_not_judged_nor_unparsable() -> None:
    answered = {p: _verdict("tie") for p in item_prompts(ITEMS[0], [])}
    summary = judge_examples(ITEMS[:2], [], answered.get, model="judge-m", planned=3)

    assert (summary.examples_judged, summary.unparsable) == (1, 0)
    # One asked but unanswered, one never asked (the deadline came first).
    assert (summary.examples_planned, summary.examples_unanswered) == (3, 2)


def test_nothing_parsed_gives_no_rate_rather_than_zero() -> None:
    summary = judge_examples(ITEMS, [], lambda prompt: "no", model="judge-m")

    assert summary.win_rate is None
    assert summary.unparsable == 4


def test_every_task_has_rubric_criteria_suited_to_it() -> None:
    names = {task: [c.name for c in criteria] for task, criteria in CRITERIA.items()}

    assert set(names) == set(Task)
    assert names[Task.SUMMARIZATION] == ["faithfulness", "coverage"]
    assert names[Task.EXTRACTIVE_QA] == ["groundedness", "correctness"]
    assert "correctness" in names[Task.CLASSIFICATION]
    assert all(criterion.rubric for criteria in CRITERIA.values() for criterion in criteria)


# --- Which judge, and what it costs -------------------------------------------------------------


def test_the_judge_model_defaults_to_flash_on_vertex_and_to_the_served_model_locally() -> None:
    assert judge_model_for(Settings(), "gemini-2.5-pro") == DEFAULT_JUDGE_MODEL
    assert judge_model_for(Settings(tuning_api_url="http://127.0.0.1:1/"), "smol-base") == "smol-base"
    assert judge_model_for(Settings(judge_model="gemini-2.5-pro"), "x") == "gemini-2.5-pro"
    assert judge_model_for(Settings(judge_model=""), "x") is None


def test_the_judge_is_switched_off_by_an_empty_model_or_no_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFTPIPE_JUDGE_MODEL", "")
    assert not judge_wanted(Settings())
    assert run_judge(Settings(), ITEMS, Task.GENERATION, base_model="m", deadline=None) is None
    monkeypatch.delenv("SFTPIPE_JUDGE_MODEL")
    assert judge_wanted(Settings())
    assert not judge_wanted(Settings(judge_max_examples=0))


def test_the_cost_counts_every_call_s_prompt_and_output_ceiling() -> None:
    prompts = ["x" * 4_000_000, "y" * 4_000_000]  # a million estimated tokens each
    cost = estimate_cost(prompts, "publishers/google/models/gemini-2.5-flash", local=False)

    assert (cost.calls, cost.input_tokens) == (2, 2_000_000)
    assert cost.max_output_tokens == 2 * JUDGE_MAX_OUTPUT_TOKENS
    assert cost.dollars == round((2_000_000 * 0.30 + 2 * JUDGE_MAX_OUTPUT_TOKENS * 2.50) / 1e6, 2)
    assert cost.dollars > 0.5
    assert estimate_cost(prompts, "unknown-judge", local=False).dollars is None
    assert estimate_cost(prompts, "gemini-2.5-flash", local=True).dollars == 0.0


def test_finalizing_moves_to_a_new_invocation_when_the_judge_would_lack_time() -> None:
    settings = Settings(function_timeout_s=540, evaluation_time_budget_s=480)

    assert not finalize_in_new_invocation(settings, elapsed_s=100)
    # 540 - 30 - 300 = 210 s left: under JUDGE_MIN_TIME_S, though inside the time budget.
    assert JUDGE_MIN_TIME_S > 210
    assert finalize_in_new_invocation(settings, elapsed_s=300)
    assert not finalize_in_new_invocation(settings.model_copy(update={"judge_model": ""}), elapsed_s=300)
    assert finalize_in_new_invocation(settings.model_copy(update={"judge_model": ""}), elapsed_s=481)


# --- Through the real SDK ----------------------------------------------------------------------


class _FakeJudge(JsonHandler):
    """generateContent as Vertex answers it, from a judge that always picks answer A."""

    requests: ClassVar[list[dict[str, Any]]] = []

    def respond(self, body: dict[str, Any]) -> Any:
        self.requests.append(body)
        prompt = body["contents"][0]["parts"][0]["text"]
        text = _verdict("A") if "<answer_a>" in prompt else '```json\n{"score": 4}\n```'
        return {
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}]
        }


@pytest.fixture
def fake_judge() -> Iterator[str]:
    _FakeJudge.requests = []
    with serving(_FakeJudge) as url:
        yield url


def test_the_judge_asks_through_the_sdk_at_temperature_zero_and_both_orders(fake_judge: str) -> None:
    settings = Settings(tuning_api_url=fake_judge, project="p", judge_max_examples=3)

    summary = run_judge(settings, ITEMS, Task.EXTRACTIVE_QA, base_model="gemini-2.5-flash", deadline=None)

    assert summary is not None
    assert (summary.model, summary.local_stand_in) == ("gemini-2.5-flash", True)
    # 3 of the 4 examples (the setting), 2 pairwise + 2 criteria x 2 models each.
    assert len(_FakeJudge.requests) == 3 * 6
    configs = [r["generationConfig"] for r in _FakeJudge.requests]
    assert {(c["temperature"], c["maxOutputTokens"]) for c in configs} == {(0.0, JUDGE_MAX_OUTPUT_TOKENS)}
    # A judge that always says "A" is caught by the swap: no wins, only ties.
    assert summary.win_rate is not None
    assert summary.win_rate.tie == 1.0
    assert summary.pointwise["groundedness"] == {"base": 4.0, "tuned": 4.0}
    assert summary.examples_judged == summary.examples_planned == 3
    assert summary.cost is not None
    assert summary.cost.calls == 18
    assert summary.cost.dollars == 0.0


def test_no_judge_call_starts_past_the_deadline(fake_judge: str) -> None:
    # One call a minute: a refused call that still waited for the rate limiter would take minutes.
    settings = Settings(tuning_api_url=fake_judge, project="p", evaluation_rpm=1)
    started = time.monotonic()

    summary = run_judge(
        settings, ITEMS, Task.GENERATION, base_model="gemini-2.5-flash", deadline=time.monotonic() - 1
    )

    assert time.monotonic() - started < 10
    assert summary is not None
    assert _FakeJudge.requests == []
    assert (summary.examples_judged, summary.examples_planned, summary.examples_unanswered) == (0, 4, 4)
    assert summary.win_rate is None


# --- summary.json, report.html, notifications ---------------------------------------------------


def _with_judge(summary: EvaluationSummary, *, local: bool) -> EvaluationSummary:
    judge = JudgeSummary.model_validate(
        {
            "model": f"judge-{XSS}",
            "local_stand_in": local,
            "examples_judged": 40,
            "examples_planned": 50,
            "examples_unanswered": 7,
            "win_rate": {"tuned": 0.55, "base": 0.15, "tie": 0.3},
            "pointwise": {f"correctness {XSS}": {"base": 2.5, "tuned": 4.25}},
            "unparsable": 3,
            "pointwise_unparsable": 1,
        }
    )
    return summary.model_copy(update={"judge": judge})


def test_summary_json_carries_the_judge_and_reads_back(hostile_summary: EvaluationSummary) -> None:
    summary = _with_judge(hostile_summary, local=False)
    stored = json.loads(summary.to_json())

    assert stored["judge"]["win_rate"] == {"tuned": 0.55, "base": 0.15, "tie": 0.3}
    assert stored["judge"]["pointwise"] == {f"correctness {XSS}": {"base": 2.5, "tuned": 4.25}}
    assert stored["judge"]["unparsable"] == 3
    assert EvaluationSummary.model_validate_json(summary.to_json()).judge == summary.judge
    # A summary written before the judge reads back without one.
    assert json.loads(hostile_summary.to_json())["judge"] is None


def test_report_shows_the_win_rate_and_rubric_scores_escaped(hostile_summary: EvaluationSummary) -> None:
    page = render_report_html(_with_judge(hostile_summary, local=False))

    assert XSS not in page
    assert "Judge · judge-&lt;script&gt;" in page
    assert "tuned 55.0% · tie 30.0% · base 15.0% of 40 judged examples" in page
    assert "correctness &lt;script&gt;" in page
    assert "4.25" in page
    assert "3 pairwise, 1 rubric" in page
    assert "7 of 50 examples were not judged" in page
    assert "local stand-in" not in page
    assert "Judge ·" not in render_report_html(hostile_summary)


def test_a_local_stand_in_judge_is_called_noisy(hostile_summary: EvaluationSummary) -> None:
    summary = _with_judge(hostile_summary, local=True)

    stand_in = f"judge: local stand-in ({html.escape('judge-' + XSS)}), verdicts are noisy"
    assert stand_in in render_report_html(summary)
    facts = dict(evaluated_notification(EvaluatedOutcome(summary=summary, report_url="gs://b/r")).facts)
    assert facts["Judge win rate"].startswith("tuned 55% · tie 30% · base 15% of 40")
    assert "local stand-in" in facts["Judge win rate"]


def test_the_summary_notes_name_the_judge_its_stand_in_and_its_cost() -> None:
    references = ["a b c", "d e f", "g h i"]
    choice = TaskChoice(task=Task.GENERATION, decided_by="explicit", reason="given")
    judge = judge_examples(
        ITEMS, [], lambda prompt: _verdict("tie"), model="smol", local_stand_in=True, planned=5
    ).model_copy(update={"cost": estimate_cost(["p" * 40], "smol", local=True)})

    summary = build_summary(
        job_id="j",
        dataset_id="d",
        base_model="smol",
        task_choice=choice,
        base=compute_metrics(Task.GENERATION, references, ["a b", "d", "x"]),
        tuned=compute_metrics(Task.GENERATION, references, references),
        judge=judge,
    )

    assert summary.judge == judge
    assert (
        "judge: local stand-in (smol), verdicts are noisy: tuned wins 0%, ties 100%, base wins 0% "
        "of 4 examples (both orders asked); 1 of 5 not judged (a call failed or could not end in time)"
    ) in summary.notes
    assert "judge cost: 1 call, about 10 input tokens" in " ".join(summary.notes)
    assert "nothing on the local tuning service" in " ".join(summary.notes)


def test_with_a_short_function_timeout_finalizing_stays_when_a_new_invocation_would_not_give_more() -> None:
    # 60 - 30 = 30 s usable: no invocation ever has JUDGE_MIN_TIME_S, so the bar is half of it.
    settings = Settings(function_timeout_s=60, evaluation_time_budget_s=45)

    assert not finalize_in_new_invocation(settings, elapsed_s=10)  # 20 s left >= 15
    assert finalize_in_new_invocation(settings, elapsed_s=20)  # 10 s left < 15

"""A judge model: a pairwise win rate (tuned vs base) and pointwise rubric scores.

Three parts, so that the rules are tested without any service:

- prompts (:func:`pairwise_prompt`, :func:`pointwise_prompt`) and the criteria per task
  (:data:`CRITERIA`), pure;
- :func:`judge_examples`, the tally, pure over an injected ``ask(prompt) -> text | None``;
- :func:`run_judge`, the calls: google-genai ``client.aio`` with the evaluation's concurrency, rate
  limit and :class:`~shared.evaluation.runner.CallDeadline`, so that the judge never outlives the
  invocation; examples it had no time for are left unjudged (``examples_judged`` says how many).

Position bias: every pair is asked twice, tuned as A then base as A. A side wins only when both
orders name it; a disagreement or a tie in either order is a tie. Verdicts are parsed strictly
(:func:`parse_verdict`): an answer that is not exactly one JSON object with the expected keys and
values is unparsable, counted, and never guessed at; an example with an unparsable verdict in
either order is left out of the rates.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from shared.config import Settings
from shared.evaluation.runner import (
    CallDeadline,
    Prediction,
    RateLimiter,
    max_output_tokens_for,
    thinking_budget_for,
)
from shared.messages import Task
from shared.pricing import inference_usd
from shared.tuning.client import generation_config, make_client

if TYPE_CHECKING:
    from google import genai

#: The judge when SFTPIPE_JUDGE_MODEL is unset, on Vertex AI: cheap, fast, and good enough to
#: compare two answers against a reference.
DEFAULT_JUDGE_MODEL = "gemini-2.5-flash"
#: Output tokens per judge call: a verdict is a one-line JSON object with a one-sentence reason
#: (about 50 tokens); one cut off by the ceiling is unparsable, and counted.
JUDGE_MAX_OUTPUT_TOKENS = 128
#: Characters of each text (prompt, reference, answer) put in a judge prompt: a judge call must
#: stay far below any context limit and cost, whatever the dataset holds.
JUDGE_TEXT_LIMIT = 4_000
#: The pointwise scale (integers, both ends included).
SCORE_MIN, SCORE_MAX = 1, 5

Winner = Literal["tuned", "base", "tie"]


@dataclass(frozen=True)
class Criterion:
    name: str
    rubric: str


FAITHFULNESS = Criterion(
    "faithfulness",
    "5: every statement is supported by the source text; 3: mostly supported, one unsupported detail; "
    "1: mostly unsupported or contradicts the source.",
)
COVERAGE = Criterion(
    "coverage",
    "5: covers every key point of the reference summary; 3: about half of them; 1: none of them.",
)
GROUNDEDNESS = Criterion(
    "groundedness",
    "5: the answer is taken from the context in the prompt; 3: partly from the context, partly invented; "
    "1: not found in the context at all.",
)
CORRECTNESS = Criterion(
    "correctness",
    "5: means the same as the reference answer; 3: partly right; 1: wrong or missing.",
)
HELPFULNESS = Criterion(
    "helpfulness",
    "5: does what the prompt asks as well as the reference does; 3: does part of it; 1: does not do it.",
)

#: Pointwise criteria per task (the pairwise win rate is asked for every task).
CRITERIA: dict[Task, tuple[Criterion, ...]] = {
    Task.CLASSIFICATION: (CORRECTNESS,),
    Task.SUMMARIZATION: (FAITHFULNESS, COVERAGE),
    Task.EXTRACTIVE_QA: (GROUNDEDNESS, CORRECTNESS),
    Task.GENERATION: (HELPFULNESS, CORRECTNESS),
}


def _clip(text: str) -> str:
    return text if len(text) <= JUDGE_TEXT_LIMIT else text[:JUDGE_TEXT_LIMIT] + " […]"


def pairwise_prompt(prompt: str, reference: str, answer_a: str, answer_b: str) -> str:
    """Ask which of two answers is better; the judge must answer one JSON object."""
    return (
        "You are judging two answers to the same prompt against a reference answer.\n"
        "Decide which answer is better: closer in meaning to the reference, correct, and doing what "
        "the prompt asks. Length and style do not matter; the order in which the answers are shown "
        "does not matter.\n\n"
        f"<prompt>\n{_clip(prompt)}\n</prompt>\n<reference>\n{_clip(reference)}\n</reference>\n"
        f"<answer_a>\n{_clip(answer_a)}\n</answer_a>\n<answer_b>\n{_clip(answer_b)}\n</answer_b>\n\n"
        'Reply with exactly one JSON object and nothing else: {"winner": "A" | "B" | "tie", '
        '"reason": "<one sentence>"}'
    )


def pointwise_prompt(criterion: Criterion, prompt: str, reference: str, answer: str) -> str:
    """Ask for a 1-5 score of one answer on one criterion."""
    return (
        f"You are scoring an answer on {criterion.name}, from {SCORE_MIN} to {SCORE_MAX}.\n"
        f"Rubric: {criterion.rubric}\n\n"
        f"<prompt>\n{_clip(prompt)}\n</prompt>\n<reference>\n{_clip(reference)}\n</reference>\n"
        f"<answer>\n{_clip(answer)}\n</answer>\n\n"
        f'Reply with exactly one JSON object and nothing else: {{"score": <integer {SCORE_MIN}-{SCORE_MAX}>}}'
    )


# --- Parsing ------------------------------------------------------------------------------------

_FENCE = re.compile(r"\A```(?:json)?[ \t]*\n(?P<body>.*?)\n?```\Z", re.DOTALL)


def parse_json_object(text: str | None) -> dict[str, object] | None:
    """The one JSON object ``text`` is (optionally inside one ```json fence), else None.

    Nothing is searched for inside prose: text around the object, two objects, or anything but an
    object makes the answer unparsable.
    """
    if text is None:
        return None
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group("body").strip()
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse_pairwise(text: str | None) -> Literal["A", "B", "tie"] | None:
    """The winner a pairwise verdict names, or None when it is unparsable."""
    verdict = parse_json_object(text)
    if verdict is None or not isinstance(verdict.get("reason"), str):
        return None
    winner = verdict.get("winner")
    return winner if winner in ("A", "B", "tie") else None  # type: ignore[return-value]


def parse_pointwise(text: str | None) -> int | None:
    """The score of a pointwise verdict, or None when it is unparsable (a bool, a float, out of range)."""
    verdict = parse_json_object(text)
    score = verdict.get("score") if verdict is not None else None
    if type(score) is not int or not SCORE_MIN <= score <= SCORE_MAX:
        return None
    return score


def combine_orders(
    tuned_first: Literal["A", "B", "tie"] | None, base_first: Literal["A", "B", "tie"] | None
) -> Winner | None:
    """The winner over both orders (None: a verdict was unparsable).

    ``tuned_first`` was asked with the tuned answer as A, ``base_first`` with the base answer as A.
    A side wins only when both orders name it: a judge that prefers whatever comes first (or
    second) then gets a tie instead of a win for one model.
    """
    if tuned_first is None or base_first is None:
        return None
    first = {"A": "tuned", "B": "base", "tie": "tie"}[tuned_first]
    second = {"A": "base", "B": "tuned", "tie": "tie"}[base_first]
    return first if first == second else "tie"  # type: ignore[return-value]


# --- The tally ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeItem:
    """One test example as the judge sees it (a failed call's answer is judged as empty)."""

    prompt: str
    reference: str
    base: str
    tuned: str


def item_prompts(item: JudgeItem, criteria: Sequence[Criterion]) -> list[str]:
    """Every prompt one example needs: both pairwise orders, then base and tuned per criterion."""
    prompts = [
        pairwise_prompt(item.prompt, item.reference, item.tuned, item.base),
        pairwise_prompt(item.prompt, item.reference, item.base, item.tuned),
    ]
    for criterion in criteria:
        prompts.append(pointwise_prompt(criterion, item.prompt, item.reference, item.base))
        prompts.append(pointwise_prompt(criterion, item.prompt, item.reference, item.tuned))
    return prompts


class WinRate(BaseModel):
    model_config = ConfigDict(frozen=True)

    tuned: float
    base: float
    tie: float


class JudgeCost(BaseModel):
    """An estimate: prompt tokens are UTF-8 bytes / 4 (as for the datasets), output tokens the
    ceiling JUDGE_MAX_OUTPUT_TOKENS per call; None dollars when the model has no price here."""

    model_config = ConfigDict(frozen=True)

    calls: int
    input_tokens: int
    max_output_tokens: int
    dollars: float | None


class JudgeSummary(BaseModel):
    """``judge`` in summary.json."""

    model_config = ConfigDict(frozen=True)

    model: str
    #: The local tuning service's model stands in for a real judge: its verdicts are noisy.
    local_stand_in: bool = False
    #: Examples whose pairwise verdicts both parsed (the rates are fractions of these).
    examples_judged: int
    #: Examples the judge was meant to see: the test split, at most SFTPIPE_JUDGE_MAX_EXAMPLES.
    examples_planned: int
    #: Examples left without a verdict because a call failed or could not end before the deadline.
    examples_unanswered: int = 0
    win_rate: WinRate | None
    pointwise: dict[str, dict[Literal["base", "tuned"], float]] = Field(default_factory=dict)
    #: Examples with an unparsable pairwise verdict in either order (left out of the rates).
    unparsable: int
    #: Pointwise verdicts that did not parse (their example is left out of that criterion's means).
    pointwise_unparsable: int = 0
    cost: JudgeCost | None = None
    #: Wall-clock seconds the judge's calls took.
    seconds: float | None = None


def judge_examples(
    items: Sequence[JudgeItem],
    criteria: Sequence[Criterion],
    ask: Callable[[str], str | None],
    *,
    model: str,
    local_stand_in: bool = False,
    planned: int | None = None,
) -> JudgeSummary:
    """Tally the judge's verdicts on ``items``; ``ask`` returns the judge's text (None: no answer).

    An example whose pairwise calls did not both answer is unanswered (not unparsable); pointwise
    means are over the examples where both models' scores parsed, so they stay paired.
    """
    wins: dict[Winner, int] = {"tuned": 0, "base": 0, "tie": 0}
    unparsable = unanswered = pointwise_unparsable = 0
    sums: dict[str, dict[Literal["base", "tuned"], int]] = {c.name: {"base": 0, "tuned": 0} for c in criteria}
    scored: dict[str, int] = {c.name: 0 for c in criteria}
    for item in items:
        tuned_first_text, base_first_text, *point_texts = (ask(p) for p in item_prompts(item, criteria))
        if tuned_first_text is None or base_first_text is None:
            unanswered += 1
            continue
        winner = combine_orders(parse_pairwise(tuned_first_text), parse_pairwise(base_first_text))
        if winner is None:
            unparsable += 1
        else:
            wins[winner] += 1
        for number, criterion in enumerate(criteria):
            base_text, tuned_text = point_texts[2 * number], point_texts[2 * number + 1]
            base_score, tuned_score = parse_pointwise(base_text), parse_pointwise(tuned_text)
            pointwise_unparsable += sum(
                text is not None and score is None
                for text, score in ((base_text, base_score), (tuned_text, tuned_score))
            )
            if base_score is not None and tuned_score is not None:
                sums[criterion.name]["base"] += base_score
                sums[criterion.name]["tuned"] += tuned_score
                scored[criterion.name] += 1
    judged = sum(wins.values())
    return JudgeSummary(
        model=model,
        local_stand_in=local_stand_in,
        examples_judged=judged,
        examples_planned=len(items) if planned is None else planned,
        examples_unanswered=unanswered + (0 if planned is None else planned - len(items)),
        win_rate=WinRate(**{side: round(count / judged, 4) for side, count in wins.items()})
        if judged
        else None,
        pointwise={
            name: {side: round(total / scored[name], 3) for side, total in pair.items()}
            for name, pair in sums.items()
            if scored[name]
        },
        unparsable=unparsable,
        pointwise_unparsable=pointwise_unparsable,
    )


def estimate_cost(prompts: Sequence[str], model: str, *, local: bool) -> JudgeCost:
    """What the judge's calls cost at most (0 on the local tuning service, which bills nothing)."""
    input_tokens = sum(-(-len(p.encode()) // 4) for p in prompts)
    output_tokens = len(prompts) * JUDGE_MAX_OUTPUT_TOKENS
    dollars = 0.0 if local else inference_usd(model, input_tokens, output_tokens)
    return JudgeCost(
        calls=len(prompts), input_tokens=input_tokens, max_output_tokens=output_tokens, dollars=dollars
    )


def judge_model_for(settings: Settings, base_model: str) -> str | None:
    """The judge model: the setting; unset, the job's base model on the local tuning service (the
    only model it serves) or DEFAULT_JUDGE_MODEL on Vertex AI; "" switches the judge off (None)."""
    if settings.judge_model is not None:
        return settings.judge_model.strip() or None
    return base_model if settings.tuning_api_url else DEFAULT_JUDGE_MODEL


def judge_wanted(settings: Settings) -> bool:
    """Whether the judge runs at all (whatever the job's base model)."""
    return settings.judge_max_examples > 0 and (
        settings.judge_model is None or bool(settings.judge_model.strip())
    )


def judge_note(summary: JudgeSummary) -> str:
    """One line on the judge for the summary's notes."""
    who = (
        f"judge: local stand-in ({summary.model}), verdicts are noisy"
        if summary.local_stand_in
        else f"judge {summary.model}"
    )
    if summary.win_rate is None:
        text = f"{who}: no example judged"
    else:
        rate = summary.win_rate
        text = (
            f"{who}: tuned wins {rate.tuned:.0%}, ties {rate.tie:.0%}, base wins {rate.base:.0%} "
            f"of {summary.examples_judged:,} examples (both orders asked)"
        )
    if summary.unparsable:
        text += f"; {summary.unparsable:,} unparsable verdicts left out"
    if summary.examples_unanswered:
        text += (
            f"; {summary.examples_unanswered:,} of {summary.examples_planned:,} not judged "
            "(a call failed or could not end in time)"
        )
    return text


def judge_cost_note(summary: JudgeSummary) -> str:
    """The judge's estimated cost, for the summary's notes (next to the training cost)."""
    cost = summary.cost
    if cost is None:
        return ""
    if summary.local_stand_in:
        price = "nothing on the local tuning service"
    elif cost.dollars is None:
        price = f"no price known for {summary.model}"
    else:
        price = f"at most ${cost.dollars:,.2f}"
    return (
        f"judge cost: {cost.calls:,} call{'' if cost.calls == 1 else 's'}, about {cost.input_tokens:,} input tokens and at most "
        f"{cost.max_output_tokens:,} output tokens: {price}"
    )


# --- The calls ----------------------------------------------------------------------------------


async def ask_all(
    client: genai.Client,
    model: str,
    prompts_per_item: Sequence[Sequence[str]],
    *,
    concurrency: int,
    requests_per_minute: int,
    request_timeout_s: float,
    deadline: float | None,
) -> dict[str, str | None]:
    """The judge's text for every prompt of the longest run of items, from the first, whose calls
    all started before ``deadline``; a failed call answers None."""
    limiter = RateLimiter(requests_per_minute)
    slots = asyncio.Semaphore(concurrency)
    calls = CallDeadline(deadline, request_timeout_s)
    thinking = thinking_budget_for(model, 0)
    config = generation_config(
        system_instruction=None,
        temperature=0.0,  # the same verdict for the same answers, as far as the service allows
        max_output_tokens=max_output_tokens_for(model, JUDGE_MAX_OUTPUT_TOKENS, thinking),
        thinking_budget=thinking,
    )

    async def one(prompt: str) -> tuple[bool, str | None]:
        async with slots:
            # Checked before the rate limiter too: past the deadline, each of hundreds of calls
            # left would otherwise still wait its turn (a tenth of a second at 600 a minute).
            if deadline is not None and time.monotonic() + request_timeout_s > deadline:
                return False, None
            await limiter.acquire()
            # No first-call exception: the judge need not make progress, it must not outlive
            # the invocation (what it leaves is reported as not judged).
            if not calls.may_start(first_example=False):
                return False, None
            try:
                response = await asyncio.wait_for(
                    client.aio.models.generate_content(model=model, contents=prompt, config=config),
                    timeout=request_timeout_s,
                )
            except Exception:  # a failed verdict leaves its example unanswered; the rest goes on
                return True, None
            return True, response.text

    async def item(prompts: Sequence[str]) -> list[tuple[str, str | None]] | None:
        outcomes = await asyncio.gather(*(one(p) for p in prompts))
        if not all(started for started, _ in outcomes):
            return None
        return [(p, text) for p, (_, text) in zip(prompts, outcomes, strict=True)]

    answered = await asyncio.gather(*(item(prompts) for prompts in prompts_per_item))
    texts: dict[str, str | None] = {}
    for outcome in answered:
        if outcome is None:
            break
        texts.update(outcome)
    return texts


def run_judge(
    settings: Settings,
    items: Sequence[JudgeItem],
    task: Task,
    *,
    base_model: str,
    deadline: float | None,
    client_factory: Callable[[Settings], genai.Client] | None = None,
) -> JudgeSummary | None:
    """Judge at most SFTPIPE_JUDGE_MAX_EXAMPLES examples (the first ones); None when it is off."""
    model = judge_model_for(settings, base_model)
    if model is None or settings.judge_max_examples == 0 or not items:
        return None
    chosen = list(items[: settings.judge_max_examples])
    criteria = CRITERIA[task]
    prompts = [item_prompts(item, criteria) for item in chosen]
    local = bool(settings.tuning_api_url)

    async def run() -> dict[str, str | None]:
        client = (client_factory or make_client)(settings)
        try:
            return await ask_all(
                client,
                model,
                prompts,
                concurrency=settings.evaluation_concurrency,
                requests_per_minute=settings.evaluation_rpm,
                request_timeout_s=settings.evaluation_request_timeout_s,
                deadline=deadline,
            )
        finally:
            await client.aio.aclose()

    began = time.monotonic()
    texts = asyncio.run(run())
    seconds = round(time.monotonic() - began, 1)
    asked = [item for item, item_texts in zip(chosen, prompts, strict=True) if item_texts[0] in texts]
    summary = judge_examples(
        asked, criteria, texts.get, model=model, local_stand_in=local, planned=len(chosen)
    )
    return summary.model_copy(
        update={
            "cost": estimate_cost([p for each in prompts for p in each], model, local=local),
            "seconds": seconds,
        }
    )


def judge_items(predictions: Sequence[Prediction]) -> list[JudgeItem]:
    """What the judge sees of each prediction (a failed call's answer is judged as empty, as it is scored)."""
    return [
        JudgeItem(
            prompt=p.prompt, reference=p.reference, base=p.base_output or "", tuned=p.tuned_output or ""
        )
        for p in predictions
    ]

"""The generation loop of an evaluation: test examples in, base and tuned answers out.

A test example is a line of the prepared ``test.jsonl`` (Gemini tuning JSONL). It is asked
exactly as it was trained on, so that nothing differs between training and serving: the same
``systemInstruction``, every turn but the last as ``contents``, and the last (model) turn kept as
the reference. Both models get the same generation settings (:class:`GenerationOptions`).

Calls go through ``client.aio`` with at most ``concurrency`` in flight and at most
``requests_per_minute`` started per minute (base and tuned calls share one budget, since a tuned
endpoint is served under its base model's quota). 408/429/5xx are retried by the SDK itself
(``shared.tuning.client.make_client`` asks for it); what still fails is recorded on the example
(``base_error`` / ``tuned_error``) and the run goes on.

Function calling: an example that declares ``tools`` is asked with the same ``tools`` on both
models; the calls an answer makes are recorded as ``{name, args}`` (``base_calls`` /
``tuned_calls``, beside the reference's ``reference_calls``) and scored by
:func:`shared.evaluation.metrics.function_call_scores`. A call is also written into the answer's
text (:func:`call_text`), as the reference's is, so that the text metrics see it too.

Chunking (``plan_chunk``, ``chunk_object_name``, ``chunk_ranges_cover``) is pure, so the cursor
rules that keep an example from being counted twice are tested without any service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict

from shared.config import Settings
from shared.datasets.limits import MODEL_LIMITS, model_thinking
from shared.errors import PermanentError
from shared.tuning.client import generation_config, make_client

if TYPE_CHECKING:
    from google import genai
    from google.genai import types

#: Error text kept per failed call (an API error can quote a whole request back).
ERROR_TEXT_LIMIT = 500
#: Gemini 2.5 Pro cannot switch thinking off; its smallest budget is 128 tokens (the model
#: table, shared/datasets/limits.py, holds it per model).
PRO_MIN_THINKING_BUDGET = MODEL_LIMITS["gemini-2.5-pro"].thinking.min_budget
#: The finish reason of an answer cut off by maxOutputTokens.
MAX_TOKENS = "MAX_TOKENS"


class TestExample(BaseModel):
    """One held-out example, split into what the model is asked and what it should answer."""

    __test__ = False  # not a pytest test class, despite the name
    model_config = ConfigDict(frozen=True)

    index: int
    system_instruction: dict[str, Any] | None
    #: All turns but the final model turn, in the JSONL's own (camelCase) shape.
    contents: list[dict[str, Any]]
    reference: str
    #: The example's function declarations (Gemini JSONL ``tools``), sent with every request.
    tools: list[dict[str, Any]] | None = None
    #: The calls the reference answer makes, as ``{name, args}``.
    reference_calls: list[dict[str, Any]] = []
    #: The record's ``generationConfig.mediaResolution`` (how its images and frames are sampled),
    #: sent to both models as it was tuned with.
    media_resolution: str | None = None

    @property
    def prompt_text(self) -> str:
        """The prompt turns as plain text (for the report and for task inference)."""
        return "\n\n".join(text for text in (content_text(c) for c in self.contents) if text)


class Prediction(BaseModel):
    """One line of ``predictions.jsonl``: both answers to one test example. None: the call failed.

    ``*_truncated``: the answer ended MAX_TOKENS before any text (the output limit was spent,
    on thinking for a model that thinks); its output is "" and it is scored as an empty answer,
    but counted apart from failed calls so that the report says so.
    """

    model_config = ConfigDict(frozen=True)

    index: int
    prompt: str
    reference: str
    base_output: str | None
    tuned_output: str | None
    base_error: str | None = None
    tuned_error: str | None = None
    base_latency_s: float | None = None
    tuned_latency_s: float | None = None
    base_finish_reason: str | None = None
    tuned_finish_reason: str | None = None
    base_truncated: bool = False
    tuned_truncated: bool = False
    #: Function calls, each ``{name, args}``, of the reference and of each answer (empty: none).
    reference_calls: list[dict[str, Any]] = []
    base_calls: list[dict[str, Any]] = []
    tuned_calls: list[dict[str, Any]] = []

    def to_jsonl(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json")) + b"\n"


@dataclass(frozen=True)
class GenerationOptions:
    """How both models are asked; the same for base and tuned, so the comparison is fair."""

    temperature: float = 0.0
    #: What is sent as maxOutputTokens: the answer budget, plus the thinking budget for a model
    #: that thinks (:func:`max_output_tokens_for`).
    max_output_tokens: int = 1024
    #: None: no thinking config is sent (the model does not think, or cannot be told).
    thinking_budget: int | None = None
    concurrency: int = 8
    requests_per_minute: int = 600
    request_timeout_s: float = 120.0

    @classmethod
    def from_settings(
        cls, settings: Settings, base_model: str, examples: Sequence[TestExample] = ()
    ) -> GenerationOptions:
        thinking_budget = thinking_budget_for(base_model, settings.thinking_budget)
        answer_budget = output_budget(examples, settings.evaluation_max_output_tokens)
        return cls(
            temperature=settings.evaluation_temperature,
            max_output_tokens=max_output_tokens_for(base_model, answer_budget, thinking_budget),
            thinking_budget=thinking_budget,
            concurrency=settings.evaluation_concurrency,
            requests_per_minute=settings.evaluation_rpm,
            request_timeout_s=settings.evaluation_request_timeout_s,
        )


#: Output tokens allowed per answer: twice the longest reference, plus this margin.
OUTPUT_MARGIN_TOKENS = 16


def output_budget(examples: Sequence[TestExample], ceiling: int) -> int:
    """Answer tokens to allow: enough for the longest reference twice over, at most ``ceiling``.

    Answers are scored against the references, so a far longer answer cannot score better; the
    bound keeps a rambling base model from costing minutes (and money) per example. The token
    estimate is the datasets' one (UTF-8 bytes / 4).
    """
    if not examples:
        return ceiling
    longest = max(-(-len(example.reference.encode()) // 4) for example in examples)
    return max(1, min(ceiling, 2 * longest + OUTPUT_MARGIN_TOKENS))


def max_output_tokens_for(base_model: str, answer_budget: int, thinking_budget: int | None) -> int:
    """maxOutputTokens for an answer of ``answer_budget`` tokens from a model that may think.

    Thinking tokens count against maxOutputTokens on Gemini 2.5, so a model that thinks (2.5 Pro
    always does) gets its thinking budget on top of the answer budget; without that room every
    answer ends MAX_TOKENS with no text. The sum is capped at what the model accepts. A model
    told not to think (budget 0), or that cannot think, keeps the answer budget alone.
    """
    if not thinking_budget:
        return answer_budget
    ceiling = model_thinking(base_model).max_output_tokens
    return max(1, min(ceiling, answer_budget + thinking_budget))


# --- Test examples -----------------------------------------------------------------------------


def call_text(name: str, args: Mapping[str, Any] | None) -> str:
    """A function call as text, the same for a reference and an answer: ``name({...})`` with the
    arguments as compact JSON, keys sorted (so equal arguments read the same)."""
    return f"{name}({orjson.dumps(args or {}, option=orjson.OPT_SORT_KEYS).decode()})"


def content_text(content: dict[str, Any]) -> str:
    """The text parts of a Gemini content, joined; file parts are named, not inlined; function
    calls are written as :func:`call_text` and function results as ``[name returned {...}]``."""
    texts: list[str] = []
    for part in content.get("parts") or []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part.get("fileData"), dict):
            texts.append(f"[file {part['fileData'].get('fileUri', '')}]")
        elif isinstance(part.get("functionCall"), dict):
            texts.append(call_text(part["functionCall"].get("name", ""), part["functionCall"].get("args")))
        elif isinstance(part.get("functionResponse"), dict):
            response = part["functionResponse"]
            result = orjson.dumps(response.get("response"), option=orjson.OPT_SORT_KEYS).decode()
            texts.append(f"[{response.get('name', '')} returned {result}]")
    return "".join(texts)


def content_calls(content: dict[str, Any]) -> list[dict[str, Any]]:
    """The function calls of a Gemini content, as ``{name, args}``."""
    return [
        {"name": part["functionCall"].get("name", ""), "args": part["functionCall"].get("args") or {}}
        for part in content.get("parts") or []
        if isinstance(part, dict) and isinstance(part.get("functionCall"), dict)
    ]


def parse_test_example(line: bytes | str, index: int) -> TestExample:
    """A Gemini tuning JSONL line as a test example; PermanentError when it cannot be one.

    Ingest already validated the file, so this only rejects what would make the comparison
    meaningless: no prompt turn, or a last turn that is not the model's.
    """
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise PermanentError(
            f"test line {index + 1} is not JSON: {exc}", code="invalid_test_example"
        ) from exc
    contents = record.get("contents") if isinstance(record, dict) else None
    if not isinstance(contents, list) or len(contents) < 2:
        raise PermanentError(
            f"test line {index + 1} needs at least a user turn and a model turn",
            code="invalid_test_example",
            field="contents",
        )
    *prompt, answer = contents
    if not isinstance(answer, dict) or answer.get("role") != "model":
        raise PermanentError(
            f"test line {index + 1}: the last turn is not the model's, so there is no reference",
            code="invalid_test_example",
            field="contents",
        )
    system = record.get("systemInstruction")
    tools = record.get("tools")
    config = record.get("generationConfig")
    resolution = config.get("mediaResolution") if isinstance(config, dict) else None
    return TestExample(
        index=index,
        system_instruction=system if isinstance(system, dict) else None,
        contents=prompt,
        reference=content_text(answer),
        tools=tools if isinstance(tools, list) and tools else None,
        reference_calls=content_calls(answer),
        media_resolution=resolution if isinstance(resolution, str) else None,
    )


def parse_test_examples(lines: Iterable[bytes]) -> list[TestExample]:
    """Every non-blank line, in file order (the index of an example is its position)."""
    examples: list[TestExample] = []
    for line in lines:
        if line.strip():
            examples.append(parse_test_example(line, len(examples)))
    return examples


def is_thinking_model(model: str) -> bool:
    """Gemini 2.5 and later think by default; earlier models reject a thinking config."""
    return model_thinking(model).mode != "none"


def thinking_budget_for(base_model: str, budget: int) -> int | None:
    """The thinking budget to send for models tuned from ``base_model`` (None: send none).

    ``budget`` is the setting (0: do not think). A model that cannot turn thinking off (2.5 Pro)
    gets at least its smallest budget, set explicitly so that :func:`max_output_tokens_for` knows
    how much room to leave; every budget is held inside the model's accepted range.
    """
    thinking = model_thinking(base_model)
    if thinking.mode == "none":
        return None
    if thinking.mode == "optional" and budget == 0:
        return 0
    budget = max(budget, thinking.min_budget)
    return budget if thinking.max_budget is None else min(budget, thinking.max_budget)


def request_config(example: TestExample, options: GenerationOptions) -> types.GenerateContentConfig:
    from google.genai import types

    system = types.Content.model_validate(example.system_instruction) if example.system_instruction else None
    config = generation_config(
        system_instruction=system,
        temperature=options.temperature,
        max_output_tokens=options.max_output_tokens,
        thinking_budget=options.thinking_budget,
    )
    if example.tools:
        # The declarations the example was tuned with, for both models: without them the base
        # model could not call, and the comparison would not be fair.
        config.tools = [types.Tool.model_validate(tool) for tool in example.tools]
    if example.media_resolution:
        config.media_resolution = types.MediaResolution(example.media_resolution)
    return config


def request_contents(example: TestExample, shots: Sequence[dict[str, Any]] = ()) -> list[types.Content]:
    """The example's prompt turns, after ``shots`` (the turns of few-shot examples, if any)."""
    from google.genai import types

    return [types.Content.model_validate(content) for content in (*shots, *example.contents)]


# --- Chunks and the cursor ---------------------------------------------------------------------


def plan_chunk(cursor: int, total: int, chunk_size: int) -> tuple[int, int] | None:
    """The next chunk ``[start, end)`` after ``cursor``, or None when every example is done."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if cursor < 0 or cursor > total:
        raise ValueError(f"cursor {cursor} is outside 0..{total}")
    if cursor == total:
        return None
    return cursor, min(cursor + chunk_size, total)


def chunk_name(start: int, end: int) -> str:
    return f"{start:07d}-{end:07d}"


def chunk_object_name(reports_prefix: str, job_id: str, start: int, end: int) -> str:
    return f"{reports_prefix}{job_id}/chunks/{chunk_name(start, end)}.jsonl"


def parse_chunk_name(name: str) -> tuple[int, int]:
    start, _, end = name.partition("-")
    return int(start), int(end)


def chunk_ranges_cover(ranges: Sequence[tuple[int, int]], total: int) -> bool:
    """Whether the ranges, in order, tile ``[0, total)`` exactly: no gap, no overlap."""
    expected = 0
    for start, end in sorted(ranges):
        if start != expected or end <= start:
            return False
        expected = end
    return expected == total


def next_cursor(current: int, expected: int, start: int, end: int) -> int:
    """The cursor after committing chunk ``[start, end)``; ValueError if it is not the next one.

    A chunk moves the cursor only from exactly its start: a duplicate invocation that computed the
    same chunk finds the cursor already at its end and commits nothing, so no example is counted
    twice.
    """
    if current != expected or start != expected or end <= start:
        raise ValueError(f"chunk {start}-{end} does not follow cursor {current} (expected {expected})")
    return end


# --- Generation --------------------------------------------------------------------------------


class RateLimiter:
    """At most ``per_minute`` starts per minute, evenly spaced (a token bucket of capacity one).

    Spacing instead of bursts keeps a fresh invocation from firing a minute's worth of calls at
    once, which is what earns 429s from a per-minute quota.
    """

    def __init__(self, per_minute: int) -> None:
        self._interval = 60.0 / per_minute
        self._next_slot = 0.0

    async def acquire(self) -> None:
        # Reserving the slot before awaiting keeps concurrent callers in order without a lock.
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


def describe_error(exc: BaseException) -> str:
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        text = f"{exc.code} {exc.status or ''}: {exc.message or ''}".strip()
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:ERROR_TEXT_LIMIT]


@dataclass(frozen=True)
class ModelAnswer:
    """What one call answered: text (None: no answer), why not, the finish reason, and whether
    the output limit cut it off before any text (then ``text`` is "")."""

    text: str | None
    error: str | None = None
    finish_reason: str | None = None
    truncated: bool = False
    seconds: float = 0.0
    #: The function calls of the answer, as ``{name, args}``.
    calls: tuple[dict[str, Any], ...] = ()


def _finish_reason(response: types.GenerateContentResponse) -> str | None:
    reason = response.candidates[0].finish_reason if response.candidates else None
    if reason is None:
        return None
    return str(getattr(reason, "value", reason))


def response_text(response: types.GenerateContentResponse) -> ModelAnswer:
    """The answer in ``response``: its text, or why there is none.

    An answer that ended MAX_TOKENS without text is not a failed call: the model spent the output
    limit (on thinking, for a thinking model). It is an empty answer marked ``truncated``.
    """
    reason = _finish_reason(response)
    calls = tuple(
        {"name": call.name or "", "args": call.args or {}} for call in response.function_calls or ()
    )
    if calls:
        rendered = "".join(call_text(call["name"], call["args"]) for call in calls)
        return ModelAnswer(_text_parts(response) + rendered, finish_reason=reason, calls=calls)
    text = response.text
    if not text and reason == MAX_TOKENS:
        return ModelAnswer("", None, reason, truncated=True)
    if text is not None:
        return ModelAnswer(text, finish_reason=reason)
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        return ModelAnswer(None, f"prompt blocked: {feedback.block_reason}", reason)
    return ModelAnswer(None, f"no text in the response (finish reason {reason})", reason)


def _text_parts(response: types.GenerateContentResponse) -> str:
    """The answer's text parts beside its function calls (``response.text`` would warn about
    the call parts), thoughts left out as ``response.text`` leaves them out."""
    content = response.candidates[0].content if response.candidates else None
    parts = content.parts if content is not None and content.parts else []
    return "".join(part.text for part in parts if part.text and not part.thought)


def make_prediction(example: TestExample, base: ModelAnswer, tuned: ModelAnswer) -> Prediction:
    """One line of predictions.jsonl from both models' answers to ``example``."""
    return Prediction(
        index=example.index,
        prompt=example.prompt_text,
        reference=example.reference,
        base_output=base.text,
        tuned_output=tuned.text,
        base_error=base.error,
        tuned_error=tuned.error,
        base_latency_s=round(base.seconds, 3),
        tuned_latency_s=round(tuned.seconds, 3),
        base_finish_reason=base.finish_reason,
        tuned_finish_reason=tuned.finish_reason,
        base_truncated=base.truncated,
        tuned_truncated=tuned.truncated,
        reference_calls=example.reference_calls,
        base_calls=list(base.calls),
        tuned_calls=list(tuned.calls),
    )


def truncation_counts(predictions: Iterable[Prediction]) -> tuple[int, int]:
    """(base, tuned) answers cut off by the output limit before any text."""
    base = tuned = 0
    for prediction in predictions:
        base += prediction.base_truncated
        tuned += prediction.tuned_truncated
    return base, tuned


class CallDeadline:
    """No call starts unless it can end, timeout included, by ``deadline`` (``time.monotonic()``;
    None: no limit), so that an evaluation never outlives its invocation. The calls of a run's
    first example always start, so that every invocation makes progress."""

    def __init__(self, deadline: float | None, request_timeout_s: float) -> None:
        self.deadline = deadline
        self.request_timeout_s = request_timeout_s
        self.started = 0
        self.refused = 0

    def may_start(self, *, first_example: bool) -> bool:
        if self.deadline is None or first_example:
            self.started += 1
            return True
        if time.monotonic() + self.request_timeout_s <= self.deadline:
            self.started += 1
            return True
        self.refused += 1
        return False


class _NotStartedError(Exception):
    """A call that the deadline did not let start: its example is left for the next invocation."""


async def _ask(
    client: genai.Client,
    model: str,
    example: TestExample,
    *,
    options: GenerationOptions,
    limiter: RateLimiter,
    slots: asyncio.Semaphore,
    deadline: CallDeadline,
    first_example: bool = False,
    shots: Sequence[dict[str, Any]] = (),
) -> ModelAnswer:
    """The answer of one model to one example; never raises for a failed call, only
    :class:`_NotStartedError` for one that the deadline kept from starting."""
    async with slots:
        await limiter.acquire()
        if not deadline.may_start(first_example=first_example):
            raise _NotStartedError
        started = time.monotonic()
        try:
            response = await asyncio.wait_for(
                client.aio.models.generate_content(
                    model=model,
                    contents=request_contents(example, shots),
                    config=request_config(example, options),
                ),
                timeout=options.request_timeout_s,
            )
        except TimeoutError:
            return ModelAnswer(
                None, f"timed out after {options.request_timeout_s:g} s", seconds=time.monotonic() - started
            )
        except Exception as exc:  # one failed example must not fail the run
            return ModelAnswer(None, describe_error(exc), seconds=time.monotonic() - started)
        answer = response_text(response)
        return replace(answer, seconds=time.monotonic() - started)


#: The answer of a model that was not asked (the baseline asks the base model only).
NOT_ASKED = ModelAnswer(None)


def base_answer(prediction: Prediction) -> ModelAnswer:
    """The base model's answer recorded in ``prediction`` (a baseline's), to be reused."""
    return ModelAnswer(
        prediction.base_output,
        prediction.base_error,
        prediction.base_finish_reason,
        prediction.base_truncated,
        prediction.base_latency_s or 0.0,
        tuple(prediction.base_calls),
    )


async def generate_predictions(
    client: genai.Client,
    examples: Sequence[TestExample],
    *,
    base_model: str | None,
    tuned_model: str | None,
    options: GenerationOptions,
    limiter: RateLimiter | None = None,
    deadline: float | None = None,
    base_shots: Sequence[dict[str, Any]] = (),
    reused_base: Mapping[int, Prediction] | None = None,
) -> list[Prediction]:
    """Ask the base model and the tuned endpoint every example, in order: one Prediction per
    example of the longest run from the first whose calls all started before ``deadline``
    (all of them without one); the caller records those and continues from there.

    A model given as None is not asked (its side is empty). ``reused_base``: the base model's
    answers recorded by the baseline, by example index; those examples are not asked again.
    ``base_shots``: turns put before each prompt sent to the base model (a few-shot baseline).
    """
    limiter = limiter or RateLimiter(options.requests_per_minute)
    slots = asyncio.Semaphore(options.concurrency)
    calls = CallDeadline(deadline, options.request_timeout_s)
    reused = reused_base or {}

    async def one(position: int, example: TestExample) -> Prediction | None:
        ask: dict[str, Any] = {"options": options, "limiter": limiter, "slots": slots, "deadline": calls}

        async def base() -> ModelAnswer:
            if example.index in reused:
                return base_answer(reused[example.index])
            if base_model is None:
                return NOT_ASKED
            return await _ask(
                client, base_model, example, first_example=position == 0, shots=base_shots, **ask
            )

        async def tuned() -> ModelAnswer:
            if tuned_model is None:
                return NOT_ASKED
            return await _ask(client, tuned_model, example, first_example=position == 0, **ask)

        asked = await asyncio.gather(base(), tuned(), return_exceptions=True)
        for outcome in asked:
            if isinstance(outcome, BaseException) and not isinstance(outcome, _NotStartedError):
                raise outcome
        if any(isinstance(outcome, _NotStartedError) for outcome in asked):
            return None
        base, tuned = asked
        return make_prediction(example, base, tuned)  # type: ignore[arg-type]

    answered = await asyncio.gather(*(one(position, example) for position, example in enumerate(examples)))
    done: list[Prediction] = []
    for prediction in answered:
        if prediction is None:
            break
        done.append(prediction)
    return done


def run_predictions(
    settings: Settings,
    examples: Sequence[TestExample],
    *,
    base_model: str | None,
    tuned_model: str | None,
    options: GenerationOptions | None = None,
    deadline: float | None = None,
    base_shots: Sequence[dict[str, Any]] = (),
    reused_base: Mapping[int, Prediction] | None = None,
    options_model: str | None = None,
) -> list[Prediction]:
    """Synchronous entry for the function: a fresh client per event loop (its HTTP pool is per
    loop). With a ``deadline`` the result may be a prefix of ``examples``: see
    :func:`generate_predictions`."""
    options = options or GenerationOptions.from_settings(settings, options_model or base_model or "")

    async def run() -> list[Prediction]:
        client = make_client(settings)
        try:
            return await generate_predictions(
                client,
                examples,
                base_model=base_model,
                tuned_model=tuned_model,
                options=options,
                deadline=deadline,
                base_shots=base_shots,
                reused_base=reused_base,
            )
        finally:
            await client.aio.aclose()

    return asyncio.run(run())

"""The pure pieces of the evaluation runner: prompts from Gemini examples, chunks and the cursor."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from google.genai import types

from shared.config import Settings
from shared.errors import PermanentError
from shared.evaluation.losses import loss_curves_from_series
from shared.evaluation.runner import (
    OUTPUT_MARGIN_TOKENS,
    GenerationOptions,
    Prediction,
    RateLimiter,
    TestExample,
    chunk_name,
    chunk_object_name,
    chunk_ranges_cover,
    next_cursor,
    output_budget,
    parse_chunk_name,
    parse_test_example,
    parse_test_examples,
    plan_chunk,
    request_config,
    request_contents,
    thinking_budget_for,
)
from shared.events import PubSubMessage
from shared.messages import EvaluationContinuationV1, JobEventV1, parse_message

MULTI_TURN = {
    "systemInstruction": {"role": "system", "parts": [{"text": "Answer in French."}]},
    "contents": [
        {"role": "user", "parts": [{"text": "Hello"}]},
        {"role": "model", "parts": [{"text": "Bonjour"}]},
        {
            "role": "user",
            "parts": [
                {"text": "And this picture? "},
                {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/cat.png"}},
            ],
        },
        {"role": "model", "parts": [{"text": "Un "}, {"text": "chat"}]},
    ],
}


# --- Prompts from Gemini examples --------------------------------------------------------------


def test_the_prompt_is_every_turn_but_the_last_and_the_reference_is_the_last_model_turn() -> None:
    example = parse_test_example(orjson.dumps(MULTI_TURN), 7)

    assert example.index == 7
    assert example.contents == MULTI_TURN["contents"][:-1]
    assert example.reference == "Un chat"
    assert example.system_instruction == MULTI_TURN["systemInstruction"]
    assert example.prompt_text == "Hello\n\nBonjour\n\nAnd this picture? [file gs://b/cat.png]"


def test_the_request_carries_the_training_system_instruction_and_the_same_settings_for_both_models() -> None:
    example = parse_test_example(orjson.dumps(MULTI_TURN), 0)
    options = GenerationOptions(temperature=0.0, max_output_tokens=64, thinking_budget=0)

    config = request_config(example, options)
    contents = request_contents(example)

    assert config.system_instruction.parts[0].text == "Answer in French."
    assert (config.temperature, config.max_output_tokens) == (0.0, 64)
    assert config.thinking_config.thinking_budget == 0
    assert [c.role for c in contents] == ["user", "model", "user"]
    assert contents[2].parts[1].file_data.file_uri == "gs://b/cat.png"
    assert contents[2].parts[1].file_data.mime_type == "image/png"


def test_the_media_resolution_the_example_was_tuned_with_is_sent_with_its_files() -> None:
    line = orjson.dumps({**MULTI_TURN, "generationConfig": {"mediaResolution": "MEDIA_RESOLUTION_LOW"}})

    config = request_config(parse_test_example(line, 0), GenerationOptions())

    assert config.media_resolution == types.MediaResolution.MEDIA_RESOLUTION_LOW
    assert (
        request_config(parse_test_example(orjson.dumps(MULTI_TURN), 0), GenerationOptions()).media_resolution
        is None
    )


def test_an_example_without_system_instruction_sends_none() -> None:
    line = orjson.dumps({"contents": MULTI_TURN["contents"][:2]})

    example = parse_test_example(line, 0)

    assert example.system_instruction is None
    assert request_config(example, GenerationOptions()).system_instruction is None


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"contents": [{"role": "user", "parts": [{"text": "q"}]}]}, "contents"),
        (
            {
                "contents": [
                    {"role": "model", "parts": [{"text": "a"}]},
                    {"role": "user", "parts": [{"text": "q"}]},
                ]
            },
            "contents",
        ),
        ({"messages": []}, "contents"),
    ],
)
def test_examples_without_a_prompt_or_a_final_model_turn_are_refused(
    record: dict[str, object], field: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        parse_test_example(orjson.dumps(record), 2)

    assert caught.value.code == "invalid_test_example"
    assert caught.value.field == field
    assert "line 3" in caught.value.message


def test_blank_lines_are_skipped_and_indexes_follow_the_examples() -> None:
    line = orjson.dumps(MULTI_TURN)

    examples = parse_test_examples([line, b"", b"  ", line])

    assert [e.index for e in examples] == [0, 1]


@pytest.mark.parametrize(
    ("base_model", "setting", "expected"),
    [
        ("gemini-2.5-flash", 0, 0),
        ("publishers/google/models/gemini-2.5-flash-lite", 0, 0),
        ("gemini-2.5-pro", 0, 128),  # Pro cannot switch thinking off
        ("gemini-2.0-flash-001", 0, None),  # not a thinking model: no thinking config at all
    ],
)
def test_thinking_budget_zero_for_thinking_models_only(
    base_model: str, setting: int, expected: int | None
) -> None:
    assert thinking_budget_for(base_model, setting) == expected


def test_generation_options_come_from_settings() -> None:
    settings = Settings(
        evaluation_temperature=0.2,
        evaluation_max_output_tokens=32,
        evaluation_concurrency=3,
        evaluation_rpm=90,
        evaluation_request_timeout_s=7,
        thinking_budget=0,
    )

    options = GenerationOptions.from_settings(settings, "gemini-2.5-flash")

    assert options == GenerationOptions(
        temperature=0.2,
        max_output_tokens=32,
        thinking_budget=0,
        concurrency=3,
        requests_per_minute=90,
        request_timeout_s=7,
    )


def _example(index: int, reference: str) -> TestExample:
    return TestExample(index=index, system_instruction=None, contents=[], reference=reference)


def test_output_tokens_are_bounded_by_twice_the_longest_reference() -> None:
    labels = [_example(0, "positive"), _example(1, "negative")]  # 8 bytes: 2 estimated tokens
    essay = [_example(0, "x" * 4000)]  # 1,000 estimated tokens

    assert output_budget(labels, ceiling=1024) == 2 * 2 + OUTPUT_MARGIN_TOKENS
    assert output_budget(essay, ceiling=1024) == 1024
    assert output_budget([], ceiling=1024) == 1024
    settings = Settings(evaluation_max_output_tokens=512)
    assert GenerationOptions.from_settings(settings, "gemini-2.5-flash", labels).max_output_tokens == 20


# --- Chunks and the cursor ---------------------------------------------------------------------


def test_chunks_tile_the_test_split_from_the_cursor() -> None:
    chunks, cursor = [], 0
    while (chunk := plan_chunk(cursor, 10, 4)) is not None:
        chunks.append(chunk)
        cursor = next_cursor(cursor, cursor, *chunk)

    assert chunks == [(0, 4), (4, 8), (8, 10)]
    assert chunk_ranges_cover(chunks, 10)


def test_a_finished_evaluation_has_no_next_chunk_and_a_bad_cursor_is_an_error() -> None:
    assert plan_chunk(10, 10, 4) is None
    assert plan_chunk(0, 0, 4) is None
    with pytest.raises(ValueError, match="outside"):
        plan_chunk(11, 10, 4)
    with pytest.raises(ValueError, match="chunk_size"):
        plan_chunk(0, 10, 0)


def test_the_cursor_moves_only_from_the_chunks_own_start() -> None:
    assert next_cursor(4, 4, 4, 8) == 8
    # A duplicate invocation that evaluated chunk 4-8 too finds the cursor already at 8.
    with pytest.raises(ValueError, match="does not follow"):
        next_cursor(8, 4, 4, 8)
    # An invocation that read an older cursor cannot commit a chunk that starts elsewhere.
    with pytest.raises(ValueError, match="does not follow"):
        next_cursor(4, 4, 0, 4)


@pytest.mark.parametrize(
    ("ranges", "total", "covers"),
    [
        ([(0, 4), (4, 8), (8, 10)], 10, True),
        ([(8, 10), (0, 4), (4, 8)], 10, True),
        ([(0, 4), (8, 10)], 10, False),  # gap
        ([(0, 4), (2, 8), (8, 10)], 10, False),  # overlap: examples 2-3 twice
        ([(0, 4), (4, 8)], 10, False),  # short
        ([], 0, True),
    ],
)
def test_chunk_ranges_must_cover_every_example_exactly_once(
    ranges: list[tuple[int, int]], total: int, covers: bool
) -> None:
    assert chunk_ranges_cover(ranges, total) is covers


def test_chunk_names_sort_in_example_order_and_parse_back() -> None:
    names = [chunk_name(s, e) for s, e in [(0, 100), (100, 1000), (1000, 5000)]]

    assert names == sorted(names)
    assert [parse_chunk_name(n) for n in names] == [(0, 100), (100, 1000), (1000, 5000)]
    assert chunk_object_name("reports/", "job-1", 100, 200) == "reports/job-1/chunks/0000100-0000200.jsonl"


def test_a_prediction_is_one_json_line() -> None:
    prediction = Prediction(
        index=3, prompt="p", reference="r", base_output=None, tuned_output="t", base_error="500"
    )

    line = prediction.to_jsonl()

    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert Prediction.model_validate_json(line) == prediction


# --- Rate limit ---------------------------------------------------------------------------------


def test_the_rate_limiter_spaces_calls_evenly() -> None:
    async def starts() -> list[float]:
        limiter = RateLimiter(per_minute=1200)  # one every 50 ms
        begun = time.monotonic()

        async def one() -> float:
            await limiter.acquire()
            return time.monotonic() - begun

        return sorted(await asyncio.gather(*(one() for _ in range(6))))

    times = asyncio.run(starts())

    assert times[0] < 0.04
    # The n-th call never starts before n intervals of 50 ms (a late wake-up may bunch two
    # starts, but never lets more than per_minute start in a minute).
    assert all(start >= n * 0.05 - 0.002 for n, start in enumerate(times))


# --- Messages and loss curves ------------------------------------------------------------------


def test_the_completion_accepts_job_events_and_its_own_continuations() -> None:
    body = EvaluationContinuationV1(job_id="j1", dataset_id="d1", cursor=300)
    message = PubSubMessage(message_id="1", data=body.to_json(), attributes=body.attributes())

    parsed = parse_message(message, JobEventV1, EvaluationContinuationV1)

    assert parsed == body
    assert body.attributes() == {"schema": "evaluation-continuation/v1", "dataset_id": "d1", "job_id": "j1"}


def test_loss_curves_come_from_the_total_loss_series_in_step_order() -> None:
    series = {
        "/train_total_loss": [{"step": 2, "epoch": 1, "value": 1.5}, {"step": 1, "epoch": 1, "value": 2.5}],
        "/eval_total_loss": [{"step": 2, "epoch": 1, "value": 1.9}],
        "/train_fraction_of_correct_next_step_preds": [{"step": 1, "epoch": 1, "value": 0.3}],
    }

    curves = loss_curves_from_series(series)

    assert sorted(curves) == ["training", "validation"]
    assert [(p.step, p.value) for p in curves["training"]] == [(1, 2.5), (2, 1.5)]
    assert [(p.step, p.value) for p in curves["validation"]] == [(2, 1.9)]
    assert loss_curves_from_series({}) == {}

"""Function calling on the local service's text models: what a model is trained on and what a
``generateContent`` answer becomes (local/tuning/calls.py), with the tiny model's real tokenizer.

Before: a training file whose model turn was a ``functionCall`` failed the job with
``missing_text``, and ``generateContent`` could only answer text, so no tool-calling dataset could
be tuned or evaluated locally.
"""

from __future__ import annotations

from typing import Any

import pytest

from local.tuning import calls, data, models
from local.tuning.errors import ApiError
from local.tuning.generation import chat_messages

TOOLS = [
    {
        "functionDeclarations": [
            {
                "name": "get_weather",
                "description": "Current weather in a city",
                "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
            },
            {
                "name": "get_time",
                "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
            },
        ]
    }
]
CALL = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
RESULT = {"functionResponse": {"name": "get_weather", "response": {"sky": "sunny", "celsius": 21}}}


def _record(*turns: tuple[str, list[dict[str, Any]]], tools: Any = TOOLS) -> dict[str, Any]:
    record: dict[str, Any] = {"contents": [{"role": role, "parts": parts} for role, parts in turns]}
    if tools is not None:
        record["tools"] = tools
    return record


def test_a_call_target_is_trained_on_as_its_tagged_json_with_the_declarations_in_the_system_turn() -> None:
    example = data.parse_record(
        _record(("user", [{"text": "Weather in Paris?"}]), ("model", [CALL])), "train.jsonl line 1"
    )

    system, user, answer = example.messages
    assert system["role"] == "system"
    assert calls.TOOLS_OPEN in system["content"]
    assert '"name":"get_time"' in system["content"]
    assert user == {"role": "user", "content": "Weather in Paris?"}
    assert answer == {
        "role": "assistant",
        "content": '<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>',
    }


def test_the_answer_tokens_of_a_call_are_the_labels() -> None:
    example = data.parse_record(
        _record(("user", [{"text": "Weather in Paris?"}]), ("model", [CALL])), "train.jsonl line 1"
    )
    tokenizer = models.train_tiny_tokenizer([m["content"] for m in example.messages])

    tokenized = data.tokenize_example(tokenizer, example, models.LOCAL_MODELS["tiny"].max_sequence_tokens)

    labelled = tokenizer.decode([i for i in tokenized.labels if i != data.IGNORE_INDEX])
    assert labelled == example.messages[-1]["content"] + models.IM_END + "\n"


def test_a_result_turn_and_a_system_instruction_keep_their_text() -> None:
    record = _record(
        ("user", [{"text": "Weather in Paris?"}]),
        ("model", [{"text": "Let me look. "}, CALL]),
        ("user", [RESULT]),
        ("model", [{"text": "Sunny, 21 degrees."}]),
    )
    record["systemInstruction"] = {"parts": [{"text": "Be brief."}]}

    messages = data.parse_record(record, "train.jsonl line 3").messages

    assert messages[0]["content"].startswith("Be brief.\n\n" + calls.TOOLS_INSTRUCTION)
    assert messages[2]["content"].startswith("Let me look. <tool_call>")
    assert messages[3]["content"] == (
        '<tool_response>{"name":"get_weather","response":{"sky":"sunny","celsius":21}}</tool_response>'
    )


def test_a_record_without_tools_has_no_system_turn_added() -> None:
    example = data.parse_record(
        _record(("user", [{"text": "Hi"}]), ("model", [{"text": "Hello"}]), tools=None), "line 1"
    )
    assert [m["role"] for m in example.messages] == ["user", "assistant"]


@pytest.mark.parametrize(
    ("part", "code"),
    [
        ({"functionCall": {"args": {}}}, "invalid_function_call"),
        ({"functionResponse": {"response": {}}}, "invalid_function_response"),
        ({"fileData": {"fileUri": "gs://b/x.png", "mimeType": "image/png"}}, "multimodal_not_supported"),
        ({"executableCode": {}}, "missing_text"),
    ],
)
def test_parts_that_cannot_be_trained_on_fail_the_record_with_its_line_and_code(
    part: dict[str, Any], code: str
) -> None:
    with pytest.raises(data.DatasetError, match=rf"train.jsonl line 7 contents\[1\]: {code}"):
        data.parse_record(_record(("user", [{"text": "q"}]), ("model", [part])), "train.jsonl line 7")


def test_a_generated_call_becomes_a_function_call_part_between_its_texts() -> None:
    text = 'Checking. <tool_call>{"name": "get_weather", "arguments": {"city": "Lima"}}</tool_call>'
    text += '<tool_call>{"name":"get_time","arguments":"{\\"city\\": \\"Lima\\"}"}</tool_call>'

    parts = calls.answer_parts(text, calls.declared_names(TOOLS))

    assert parts == [
        {"text": "Checking. "},
        {"functionCall": {"name": "get_weather", "args": {"city": "Lima"}}},
        {"functionCall": {"name": "get_time", "args": {"city": "Lima"}}},
    ]


def test_a_list_of_calls_in_one_tag_is_read_as_parallel_calls() -> None:
    text = '<tool_call>[{"name": "get_time", "arguments": {"city": "Rome"}}, {"name": "get_weather", '
    text += '"arguments": {"city": "Rome"}}]</tool_call>'
    assert calls.answer_parts(text, calls.declared_names(TOOLS)) == [
        {"functionCall": {"name": "get_time", "args": {"city": "Rome"}}},
        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
    ]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>[{"name": "get_time", "arguments": {}}, {"name": "get_time"}, 3]</tool_call>',
        "<tool_call>[]</tool_call>",
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Li',  # cut off by the token budget
        '<tool_call>{"name": "get_weather", "arguments": [1]}</tool_call>',
        "<tool_call>not json</tool_call>",
        '<tool_call>{"name": "delete_everything", "arguments": {}}</tool_call>',  # not declared
        "",
    ],
)
def test_what_is_not_a_declared_well_formed_call_stays_text(text: str) -> None:
    assert calls.answer_parts(text, calls.declared_names(TOOLS)) == [{"text": text}]


def test_without_declared_tools_no_answer_is_read_as_a_call() -> None:
    text = calls.part_text(CALL)
    assert calls.answer_parts(text, calls.declared_names(None)) == [{"text": text}]


def test_a_rendered_call_reads_back_as_the_same_call() -> None:
    call = {"name": "get_time", "args": {"city": "Oslo", "utc": True, "nested": {"a": [1, 2]}}}
    text = calls.part_text({"functionCall": call})
    assert calls.answer_parts(text, {"get_time"}) == [{"functionCall": call}]


def test_a_request_renders_like_the_training_data_it_was_tuned_on() -> None:
    record = _record(("user", [{"text": "Weather in Paris?"}]), ("model", [CALL]))
    trained = data.parse_record(record, "line 1").messages
    body = {"contents": record["contents"][:1], "tools": TOOLS}

    assert chat_messages(body) == list(trained[:-1])


def test_declarations_render_the_same_however_the_client_serialised_them() -> None:
    # google-genai re-serialises the example's tools in its own field order, with nulls dropped:
    # the tuned model must see at serving time the text it was trained on.
    from google.genai import types

    resent = [
        types.Tool.model_validate(tool).model_dump(mode="json", by_alias=True, exclude_none=True)
        for tool in TOOLS
    ]
    assert list(resent[0]["functionDeclarations"][0]) != list(TOOLS[0]["functionDeclarations"][0])
    assert calls.tools_text(resent) == calls.tools_text(TOOLS)


def test_a_request_with_a_file_part_is_answered_with_a_400() -> None:
    body = {"contents": [{"role": "user", "parts": [{"fileData": {"fileUri": "gs://b/x.png"}}]}]}
    with pytest.raises(ApiError) as raised:
        chat_messages(body)
    assert raised.value.http_code == 400
    assert "text models only" in str(raised.value)
    assert "multimodal_not_supported" in str(raised.value)

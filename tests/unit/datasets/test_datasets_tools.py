"""Function calling: each shape's tool calls become Vertex's format, parameter schemas get Vertex's
types, and every malformed call, result or declaration is a located error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import jsonl, run

from shared.datasets.tools import MAX_FUNCTION_NAME_CHARS, convert_schema

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
VERTEX_WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]},
}
OPENAI_TOOLS = [{"type": "function", "function": WEATHER}]


def call(city: str) -> dict[str, Any]:
    return {"functionCall": {"name": "get_weather", "args": {"city": city}}}


def result(response: dict[str, Any]) -> dict[str, Any]:
    return {"functionResponse": {"name": "get_weather", "response": response}}


def convert_one(record: dict[str, Any]) -> dict[str, Any]:
    outcome, written = run(jsonl(record))
    assert outcome.ok, outcome.errors
    return written["train"][0]


def error_of(record: dict[str, Any]) -> tuple[str, str]:
    outcome, _ = run(jsonl(record))
    assert not outcome.ok
    first = outcome.errors[0]
    assert first.line == 1
    assert first.message
    return first.code, first.field


def openai_call(call_id: str, arguments: str, name: str = "get_weather") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# --- each shape -------------------------------------------------------------------------------------


def test_openai_parallel_tool_calls_pair_with_their_results_by_tool_call_id() -> None:
    record = {
        "tools": OPENAI_TOOLS,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Porto and Lisbon?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [openai_call("a", '{"city": "Porto"}'), openai_call("b", '{"city": "Lisbon"}')],
            },
            # Answered out of order: the id, not the position, decides which call a result answers.
            {"role": "tool", "tool_call_id": "b", "content": "sun"},
            {"role": "tool", "tool_call_id": "a", "content": '{"forecast": "rain"}'},
            {"role": "assistant", "content": "Rain in Porto, sun in Lisbon."},
        ],
    }

    out = convert_one(record)

    assert out["tools"] == [{"functionDeclarations": [VERTEX_WEATHER]}]
    assert out["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "Porto and Lisbon?"}]},
        {"role": "model", "parts": [call("Porto"), call("Lisbon")]},
        {"role": "user", "parts": [result({"content": "sun"}), result({"forecast": "rain"})]},
        {"role": "model", "parts": [{"text": "Rain in Porto, sun in Lisbon."}]},
    ]


def test_openai_target_may_be_a_call_and_text_before_it_is_kept() -> None:
    record = {
        "tools": OPENAI_TOOLS,
        "messages": [
            {"role": "user", "content": "Porto?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [openai_call("a", '{"city": "Porto"}')],
            },
        ],
    }
    assert convert_one(record)["contents"][-1] == {
        "role": "model",
        "parts": [{"text": "Checking."}, call("Porto")],
    }


def test_openai_legacy_functions_and_function_call() -> None:
    record = {
        "functions": [WEATHER],
        "messages": [
            {"role": "user", "content": "Porto?"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "get_weather", "arguments": '{"city": "Porto"}'},
            },
            {"role": "function", "name": "get_weather", "content": "rain"},
            {"role": "user", "content": "Thanks. Summarise?"},
            {"role": "assistant", "content": "Rain."},
        ],
    }
    out = convert_one(record)
    assert out["tools"] == [{"functionDeclarations": [VERTEX_WEATHER]}]
    # The result and the user's next message are one user turn: Gemini's roles alternate.
    assert out["contents"][2] == {
        "role": "user",
        "parts": [result({"content": "rain"}), {"text": "Thanks. Summarise?"}],
    }


def test_sharegpt_function_call_and_observation_turns_with_a_tools_string() -> None:
    record = {
        "conversations": [
            {"from": "human", "value": "Porto and Lisbon?"},
            {
                "from": "function_call",
                "value": json.dumps(
                    [
                        {"name": "get_weather", "arguments": {"city": "Porto"}},
                        {"name": "get_weather", "arguments": '{"city": "Lisbon"}'},
                    ]
                ),
            },
            {"from": "observation", "value": json.dumps([{"forecast": "rain"}, "sunny"])},
            {"from": "gpt", "value": "Rain, then sun."},
        ],
        "system": "Be brief.",
        "tools": json.dumps([WEATHER]),
    }

    out = convert_one(record)

    assert out["tools"] == [{"functionDeclarations": [VERTEX_WEATHER]}]
    assert out["contents"][1:3] == [
        {"role": "model", "parts": [call("Porto"), call("Lisbon")]},
        {"role": "user", "parts": [result({"forecast": "rain"}), result({"content": "sunny"})]},
    ]


def test_gemini_function_calls_are_validated_and_passed_through() -> None:
    record = {
        "tools": [{"functionDeclarations": [VERTEX_WEATHER]}],
        "contents": [
            {"role": "user", "parts": [{"text": "Porto?"}]},
            {"role": "model", "parts": [call("Porto")]},
            {"role": "user", "parts": [result({"forecast": "rain"})]},
            {"role": "model", "parts": [{"text": "Rain."}]},
        ],
    }
    assert convert_one(record) == record


def test_the_same_conversation_with_other_tools_is_another_example() -> None:
    turns = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]
    other = {**WEATHER, "name": "get_time"}
    outcome, _ = run(
        jsonl(
            {"conversations": turns, "tools": json.dumps([WEATHER])},
            {"conversations": turns, "tools": json.dumps([other])},
        )
    )
    assert (outcome.examples, outcome.duplicates) == (2, 0)


# --- the schema -------------------------------------------------------------------------------------


def test_json_schema_types_become_vertex_types() -> None:
    notes: list[tuple[str, str]] = []
    schema = {
        "type": "object",
        "description": "Query",
        "properties": {
            "city": {"type": "string", "enum": ["Porto", "Lisbon"], "description": "The city"},
            "days": {"type": "integer", "minimum": 1},
            "ratio": {"type": "number"},
            "metric": {"type": "boolean"},
            "note": {"type": ["string", "null"]},
            "stops": {
                "type": "array",
                "items": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
            },
        },
        "required": ["city"],
    }

    assert convert_schema(schema, "parameters", notes) == {
        "type": "OBJECT",
        "description": "Query",
        "properties": {
            "city": {"type": "STRING", "enum": ["Porto", "Lisbon"], "description": "The city"},
            "days": {"type": "INTEGER", "minimum": 1},
            "ratio": {"type": "NUMBER"},
            "metric": {"type": "BOOLEAN"},
            "note": {"type": "STRING", "nullable": True},
            "stops": {
                "type": "ARRAY",
                "items": {"type": "OBJECT", "properties": {"name": {"type": "STRING"}}, "required": ["name"]},
            },
        },
        "required": ["city"],
    }
    assert notes == []


def test_keywords_vertex_does_not_take_are_dropped_and_named() -> None:
    notes: list[tuple[str, str]] = []
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"n": {"type": "integer", "enum": [1, 2], "default": 1}},
        "additionalProperties": False,
    }
    out = convert_schema(schema, "p", notes)
    assert out == {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}}
    assert sorted(field for _, field in notes) == [
        "p.$schema",
        "p.additionalProperties",
        "p.properties.n.default",
        "p.properties.n.enum",  # Vertex's enums are strings
    ]


def test_converting_a_vertex_schema_again_changes_nothing() -> None:
    assert convert_schema(VERTEX_WEATHER["parameters"], "p", []) == VERTEX_WEATHER["parameters"]


def test_a_function_without_parameters_declares_none() -> None:
    empty = {"name": "now", "parameters": {"type": "object", "properties": {}}}
    record = {
        "tools": [{"type": "function", "function": empty}],
        "messages": [{"role": "user", "content": "Time?"}, {"role": "assistant", "content": "Noon."}],
    }
    assert convert_one(record)["tools"] == [{"functionDeclarations": [{"name": "now"}]}]


# --- located errors ---------------------------------------------------------------------------------


def _openai(*messages: dict[str, Any], tools: Any = OPENAI_TOOLS) -> dict[str, Any]:
    return {"tools": tools, "messages": [{"role": "user", "content": "Porto?"}, *messages]}


def _asks(arguments: str, name: str = "get_weather", call_id: str = "a") -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [openai_call(call_id, arguments, name)]}


@pytest.mark.parametrize(
    ("record", "code", "field"),
    [
        (
            _openai(_asks('{"city": "Porto"}', name="get_time")),
            "undeclared_function",
            "messages[1].tool_calls[0].function.name",
        ),
        (
            _openai(_asks('{"city": "Porto"}'), tools=None),
            "undeclared_function",
            "messages[1].tool_calls[0].function.name",
        ),
        (
            _openai(_asks('{"city": ')),
            "invalid_function_arguments",
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            _openai(_asks('["Porto"]')),
            "invalid_function_arguments",
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            _openai(
                _asks('{"city": "Porto"}'),
                {"role": "tool", "tool_call_id": "zz", "content": "rain"},
                {"role": "assistant", "content": "Rain."},
            ),
            "unpaired_tool_response",
            "messages[2].tool_call_id",
        ),
        (
            _openai(
                {"role": "tool", "tool_call_id": "a", "content": "rain"},
                {"role": "assistant", "content": "?"},
            ),
            "unpaired_tool_response",
            "messages[1].tool_call_id",
        ),
        (
            _openai(
                _asks('{"city": "Porto"}'),
                {"role": "user", "content": "Well?"},
                {"role": "assistant", "content": "Rain."},
            ),
            "unanswered_function_call",
            "messages[2].role",
        ),
        (
            _openai({"role": "assistant", "content": "Rain."}, tools=[*OPENAI_TOOLS, *OPENAI_TOOLS]),
            "duplicate_function_declaration",
            "tools[1].function.name",
        ),
        (
            _openai(
                {"role": "assistant", "content": "Rain."},
                tools=[{"type": "function", "function": {**WEATHER, "name": "get weather"}}],
            ),
            "invalid_function_name",
            "tools[0].function.name",
        ),
        (
            _openai(
                {"role": "assistant", "content": "Rain."},
                tools=[
                    {"type": "function", "function": {**WEATHER, "name": "f" * (MAX_FUNCTION_NAME_CHARS + 1)}}
                ],
            ),
            "invalid_function_name",
            "tools[0].function.name",
        ),
        (
            _openai(
                {"role": "assistant", "content": "Rain."},
                tools=[{"type": "function", "function": {**WEATHER, "parameters": {"type": "tuple"}}}],
            ),
            "invalid_function_parameters",
            "tools[0].function.parameters.type",
        ),
        (
            _openai(
                {"role": "assistant", "content": "Rain."},
                tools=[
                    {
                        "type": "function",
                        "function": {
                            **WEATHER,
                            "parameters": {"type": "object", "properties": {"c": {"type": "array"}}},
                        },
                    }
                ],
            ),
            "invalid_function_parameters",
            "tools[0].function.parameters.properties.c.items",
        ),
        (
            {
                "conversations": [
                    {"from": "human", "value": "Porto?"},
                    {"from": "function_call", "value": '{"name": "get_weather", "arguments": "{oops"}'},
                ],
                "tools": json.dumps([WEATHER]),
            },
            "invalid_function_arguments",
            "conversations[1].value.arguments",
        ),
        (
            {
                "conversations": [
                    {"from": "human", "value": "Porto?"},
                    {"from": "observation", "value": "rain"},
                    {"from": "gpt", "value": "Rain."},
                ],
                "tools": json.dumps([WEATHER]),
            },
            "unpaired_tool_response",
            "conversations[1].from",
        ),
        (
            {
                "conversations": [
                    {"from": "human", "value": "Porto?"},
                    {"from": "function_call", "value": "get_weather(Porto)"},
                ],
                "tools": json.dumps([WEATHER]),
            },
            "invalid_function_call",
            "conversations[1].value",
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "Porto?"}]},
                    {"role": "model", "parts": [call("Porto")]},
                ],
            },
            "undeclared_function",
            "contents[1].parts[0].functionCall.name",
        ),
        (
            {
                "tools": [{"functionDeclarations": [VERTEX_WEATHER]}],
                "contents": [
                    {"role": "user", "parts": [{"text": "Porto?"}]},
                    {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": "Porto"}}]},
                ],
            },
            "invalid_function_arguments",
            "contents[1].parts[0].functionCall.args",
        ),
        (
            {
                "tools": [{"functionDeclarations": [VERTEX_WEATHER]}],
                "contents": [
                    {"role": "user", "parts": [{"text": "Porto?"}, result({"forecast": "rain"})]},
                    {"role": "model", "parts": [{"text": "Rain."}]},
                ],
            },
            "unpaired_tool_response",
            "contents[0]",
        ),
    ],
)
def test_each_malformed_call_result_or_declaration_is_a_located_error(
    record: dict[str, Any], code: str, field: str
) -> None:
    assert error_of(record) == (code, field)


def test_tool_call_data_is_no_longer_rejected_as_unsupported() -> None:
    outcome, _ = run(
        jsonl(
            {
                "tools": OPENAI_TOOLS,
                "messages": [{"role": "user", "content": "Porto?"}, _asks('{"city": "Porto"}')],
            }
        )
    )
    assert outcome.ok
    assert outcome.error_counts == {}


def test_an_empty_tool_calls_list_calls_nothing() -> None:
    record = {
        "messages": [
            {"role": "user", "content": "Hi", "tool_calls": []},
            {"role": "assistant", "content": "Hello", "tool_calls": []},
        ]
    }
    out = convert_one(record)
    assert "tools" not in out
    assert out["contents"][-1] == {"role": "model", "parts": [{"text": "Hello"}]}


def test_a_tool_call_that_is_not_a_function_call_says_so() -> None:
    record = _openai(
        {"role": "assistant", "content": None, "tool_calls": [{"id": "a", "type": "web_search"}]}
    )
    assert error_of(record) == ("unsupported_tool_calls", "messages[1].tool_calls[0].type")
    record = _openai({"role": "assistant", "content": None, "tool_calls": [{"id": "a"}]})
    assert error_of(record) == ("invalid_function_call", "messages[1].tool_calls[0]")

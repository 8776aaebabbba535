"""Each shape converts to the Gemini record it means; what Gemini cannot express is rejected by name."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from conftest import gemini, jsonl, run

from shared.datasets import convert as cv


def convert_one(record: dict[str, Any]) -> dict[str, Any]:
    result, written = run(jsonl(record))
    assert result.ok, result.errors
    return written["train"][0]


def error_of(record: Any) -> tuple[str, str]:
    result, _ = run(jsonl(record))
    assert not result.ok
    first = result.errors[0]
    assert first.line == 1
    return first.code, first.field


USER_MODEL = [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "hello"}]}]


def test_gemini_record_is_kept_and_snake_case_file_data_is_normalised() -> None:
    record = {
        "system_instruction": {"parts": [{"text": "be brief"}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "what is it?"},
                    {"file_data": {"mime_type": "image/PNG", "file_uri": "gs://b/x.png"}},
                ],
            },
            {"role": "model", "parts": [{"text": "a cat"}]},
        ],
    }
    out = convert_one(record)
    assert out["systemInstruction"] == {"role": "system", "parts": [{"text": "be brief"}]}
    assert out["contents"][0]["parts"][1] == {
        "fileData": {"mimeType": "image/png", "fileUri": "gs://b/x.png"}
    }


def test_gemini_1_messages() -> None:
    out = convert_one(
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "u"},
                {"role": "model", "content": "m"},
            ]
        }
    )
    assert out == gemini("u", "m", system="s")


def test_openai_chat_multi_turn_with_image_url() -> None:
    record = {
        "messages": [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "https://x.org/a.jpg"}},
                ],
            },
            {"role": "assistant", "content": "a dog"},
            {"role": "user", "content": "sure?"},
            {"role": "assistant", "content": "yes", "weight": 1},
        ]
    }
    out = convert_one(record)
    assert [c["role"] for c in out["contents"]] == ["user", "model", "user", "model"]
    assert out["contents"][0]["parts"][1] == {
        "fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.org/a.jpg"}
    }


def test_sharegpt_with_system_turn() -> None:
    out = convert_one(
        {
            "conversations": [
                {"from": "system", "value": "s"},
                {"from": "human", "value": "u"},
                {"from": "gpt", "value": "m"},
            ]
        }
    )
    assert out == gemini("u", "m", system="s")


def test_alpaca_with_system_and_history() -> None:
    out = convert_one(
        {"instruction": "add", "input": "1+1", "output": "2", "system": "math", "history": [["hi", "hello"]]}
    )
    assert out["systemInstruction"]["parts"] == [{"text": "math"}]
    assert [(c["role"], c["parts"][0]["text"]) for c in out["contents"]] == [
        ("user", "hi"),
        ("model", "hello"),
        ("user", "add\n\n1+1"),
        ("model", "2"),
    ]


def test_dolly() -> None:
    out = convert_one(
        {"instruction": "summarise", "context": "long text", "response": "short", "category": "summarization"}
    )
    assert out == gemini("summarise\n\nlong text", "short")


def test_prompt_completion_is_faithful() -> None:
    assert convert_one({"prompt": "Q:", "completion": " A"}) == gemini("Q:", " A")


def test_flat_json_columns_and_numeric_labels() -> None:
    assert convert_one({"text": "great", "label": 2}) == gemini("great", "2")


@pytest.mark.parametrize(
    ("record", "code", "field"),
    [
        (  # tools Vertex AI does not tune: each named where it is
            {
                "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                "tools": [{"type": "code_interpreter"}],
            },
            "unsupported_tool_calls",
            "tools[0].type",
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "x"}]},
                    {"role": "model", "parts": [{"text": "y"}]},
                ],
                "tools": [{"googleSearch": {}}],
            },
            "unsupported_tool_calls",
            "tools[0].googleSearch",
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "x"}]},
                    {"role": "model", "parts": [{"text": "y"}]},
                ],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
            },
            "unsupported_tool_calls",
            "toolConfig",
        ),
        (
            {"conversations": [{"from": "human", "value": "x"}, {"from": "ipython", "value": "print(1)"}]},
            "unsupported_tool_calls",
            "conversations[1].from",
        ),
        ({"prompt": "x", "chosen": "a", "rejected": "b"}, "unsupported_preference_pairs", "rejected"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                        ],
                    },
                    {"role": "assistant", "content": "y"},
                ]
            },
            "unsupported_inline_data",
            "messages[0].content[0].image_url",
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"inlineData": {"data": "AAAA"}}]},
                    {"role": "model", "parts": [{"text": "y"}]},
                ]
            },
            "unsupported_inline_data",
            "contents[0].parts[0]",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": "y", "weight": 0},
                ]
            },
            "unsupported_weight",
            "messages[1].weight",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "system", "content": "late"},
                    {"role": "assistant", "content": "y"},
                ]
            },
            "misplaced_system_message",
            "messages[1]",
        ),
    ],
)
def test_what_gemini_cannot_express_is_rejected(record: dict[str, Any], code: str, field: str) -> None:
    assert error_of(record) == (code, field)


@pytest.mark.parametrize(
    ("record", "code", "field"),
    [
        ({"contents": []}, "missing_contents_list", "contents"),
        ({"contents": ["x"]}, "invalid_content_item", "contents[0]"),
        ({"contents": [{"parts": [{"text": "x"}]}]}, "content_item_missing_key", "contents[0].role"),
        (
            {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
            "unrecognized_role",
            "contents[0].role",
        ),
        ({"contents": [{"role": "user", "parts": []}]}, "missing_or_invalid_parts", "contents[0].parts"),
        ({"contents": [{"role": "user", "parts": [{"txt": "x"}]}]}, "invalid_part", "contents[0].parts[0]"),
        (
            {"contents": [{"role": "user", "parts": [{"text": "  \n"}]}, USER_MODEL[1]]},
            "missing_text",
            "contents[0].parts[0].text",
        ),
        (
            {"contents": [USER_MODEL[0], USER_MODEL[0], USER_MODEL[1]]},
            "consecutive_turns",
            "contents[1].role",
        ),
        ({"contents": [USER_MODEL[1], USER_MODEL[0]]}, "first_turn_not_user", "contents[0].role"),
        ({"contents": [*USER_MODEL, USER_MODEL[0]]}, "last_turn_not_model", "contents[2].role"),
        (
            {
                "contents": [
                    USER_MODEL[0],
                    {
                        "role": "model",
                        "parts": [{"fileData": {"mimeType": "image/png", "fileUri": "http://x/a.png"}}],
                    },
                ]
            },
            "invalid_file_uri",
            "contents[1].parts[0].fileData.fileUri",
        ),
        (
            {
                "contents": [
                    USER_MODEL[0],
                    {
                        "role": "model",
                        "parts": [{"fileData": {"mimeType": "application/zip", "fileUri": "gs://b/a.zip"}}],
                    },
                ]
            },
            "unsupported_mime_type",
            "contents[1].parts[0].fileData.mimeType",
        ),
        (
            {"contents": USER_MODEL, "systemInstruction": {"parts": "x"}},
            "invalid_system_instruction",
            "systemInstruction",
        ),
        ({"messages": "x"}, "missing_messages_list", "messages"),
        ({"messages": [{"content": "x"}]}, "message_missing_key", "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": "x", "extra": 1}]},
            "message_unrecognized_key",
            "messages[0].extra",
        ),
        ({"messages": [{"role": "narrator", "content": "x"}]}, "unrecognized_role", "messages[0].role"),
        ({"messages": [{"role": "user", "content": ""}]}, "missing_content", "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x"}]}, "example_missing_assistant_message", "messages"),
        (
            {"messages": [{"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}]},
            "example_missing_user_message",
            "messages",
        ),
        ({"conversations": [{"from": "human"}]}, "message_missing_key", "conversations[0].value"),
        ({"instruction": "x", "output": ""}, "missing_text", "output"),
        ({"prompt": "x", "completion": ["y"]}, "missing_field", "completion"),
        ({"foo": 1}, "unknown_shape", ""),
    ],
)
def test_invalid_records_name_code_and_field(record: Any, code: str, field: str) -> None:
    assert error_of(record) == (code, field)


def test_mixed_shapes_are_rejected_naming_the_lines() -> None:
    data = jsonl(
        gemini("a", "b"),
        {"prompt": "p", "completion": "c"},
        gemini("c", "d"),
        {"instruction": "i", "output": "o"},
    )
    result, _ = run(data)
    assert [(e.line, e.code) for e in result.errors] == [(2, "mixed_shapes"), (4, "mixed_shapes")]
    assert "prompt_completion" in result.errors[0].message
    assert "line 1" in result.errors[0].message


def test_unknown_top_level_keys_are_dropped_with_a_warning() -> None:
    result, written = run(jsonl({**gemini("a", "b"), "id": 7}))
    assert result.ok
    assert written["train"][0] == gemini("a", "b")
    assert [(w.code, w.lines) for w in result.warnings if w.code == "unknown_keys_dropped"] == [
        ("unknown_keys_dropped", [1])
    ]


def test_keys_are_the_texts_joined_without_ascii_whitespace_the_near_keys_normalised() -> None:
    """The keys as the module docstring defines them, whichever path builds them: the fast path
    (with a system instruction remembered from the record before, or a new one), the general path
    (a file part), NFKC and non-ASCII case folding, whitespace inside words, trailing punctuation,
    the separator inside a text."""
    separator = "\x1e"

    def near(pieces: list[str]) -> bytes:
        folded = unicodedata.normalize("NFKC", separator.join(pieces)).casefold()
        bare = "".join(ch for ch in folded if ch == separator or not ch.isspace())
        return separator.join(p.rstrip(cv.TRAILING_PUNCTUATION) for p in bare.split(separator)).encode()

    def expected(pieces: list[str], answer_at: int) -> tuple[bytes, bytes, bytes]:
        key = separator.join(pieces).encode().translate(None, cv.ASCII_WHITESPACE)
        return key, near(pieces[:answer_at]), near(pieces[answer_at:])

    system = {"parts": [{"text": "Be  BRIEF.\n"}, {"text": "Straße ΣΑΣ"}]}
    image = {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/x.png"}}
    cases = [
        (
            {"systemInstruction": system, "contents": USER_MODEL},
            ["system", "Be  BRIEF.\n", "Straße ΣΑΣ", "user", "hi", "model", "hello"],
            5,
        ),
        (
            {
                "systemInstruction": system,
                "contents": [USER_MODEL[0], {"role": "model", "parts": [{"text": "Y o"}]}],
            },
            ["system", "Be  BRIEF.\n", "Straße ΣΑΣ", "user", "hi", "model", "Y o"],
            5,
        ),
        (
            {"systemInstruction": "Other\tone", "contents": USER_MODEL},
            ["system", "Other\tone", "user", "hi", "model", "hello"],
            4,
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "İ\x1eK"}, {"text": "ﬀ\r\n x"}]},
                    {"role": "model", "parts": [{"text": "a"}]},
                    # a no-break space: kept in the exact key, a space (deleted) in the near keys
                    {"role": "user", "parts": [{"text": "B\u00a0c!"}]},
                    {"role": "model", "parts": [{"text": "D\te"}, {"text": "f"}]},
                ]
            },
            ["user", "İ\x1eK", "ﬀ\r\n x", "model", "a", "user", "B\u00a0c!", "model", "D\te", "f"],
            7,
        ),
        (
            {"contents": [{"role": "user", "parts": [{"text": "Look"}, image]}, USER_MODEL[1]]},
            ["user", "Look", "gs://b/x.png", "model", "hello"],
            3,
        ),
    ]
    converter = cv.FileConverter()
    for record, pieces, answer_at in cases:
        example = converter.convert(record, 1)
        assert (example.key, example.prompt_key, example.answer_key) == expected(pieces, answer_at), record
        assert example.answer == pieces[-1]
        uri_bytes = len(image["fileData"]["fileUri"]) if example.files else 0  # file URIs are no text
        assert example.text_bytes == len(separator.join(pieces).encode()) - uri_bytes

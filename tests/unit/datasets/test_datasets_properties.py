"""Property-based: random and mutated input never crashes the validator, and every error has a line
and a known code; whatever is accepted and written is itself valid Gemini tuning data."""

from __future__ import annotations

import io
import os
from typing import Any

import orjson
from conftest import jsonl, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.datasets import ERROR_CODES, WARNING_CODES, PrepareOptions, PrepareResult, prepare

SETTINGS = settings(
    max_examples=int(os.environ.get("DATASETS_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FILENAMES = st.sampled_from(["data.jsonl", "data.json", "data.csv", "data.tsv", "upload", "x.ndjson"])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "contents",
        "role",
        "parts",
        "text",
        "fileData",
        "mimeType",
        "fileUri",
        "systemInstruction",
        "messages",
        "content",
        "conversations",
        "from",
        "value",
        "prompt",
        "completion",
        "instruction",
        "input",
        "output",
        "response",
        "context",
        "history",
        "system",
        "tools",
        "chosen",
        "rejected",
        "chosen_messages",
        "rejected_messages",
        "preferred_output",
        "non_preferred_output",
        "completions",
        "completion",
        "score",
        "label",
        "weight",
        "type",
        "image_url",
        "tool_calls",
        "tool_call_id",
        "function",
        "function_call",
        "name",
        "arguments",
        "parameters",
        "properties",
        "functionCall",
        "functionResponse",
        "functionDeclarations",
        "args",
    ]
)
ROLES = st.sampled_from(
    [
        "user",
        "model",
        "assistant",
        "system",
        "human",
        "gpt",
        "tool",
        "function_call",
        "observation",
        "object",
        "",
    ]
)
shaped_values = st.recursive(
    json_scalars | ROLES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25,
)

_WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
#: Tool-call records of each shape; VALID_RECORDS ends with them, so mutations break calls too.
TOOL_RECORDS: list[dict[str, Any]] = [
    {
        "tools": [{"type": "function", "function": _WEATHER}],
        "messages": [
            {"role": "user", "content": "Weather in Porto and Lisbon?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Porto"}'},
                    },
                    {
                        "id": "b",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "rain"},
            {"role": "tool", "tool_call_id": "b", "content": '{"forecast": "sun"}'},
            {"role": "assistant", "content": "Rain in Porto, sun in Lisbon."},
        ],
    },
    {
        "conversations": [
            {"from": "human", "value": "Weather in Porto?"},
            {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Porto"}}'},
            {"from": "observation", "value": '{"forecast": "rain"}'},
            {"from": "gpt", "value": "Rain."},
        ],
        "tools": orjson.dumps([_WEATHER]).decode(),
    },
    {
        "tools": [
            {
                "functionDeclarations": [
                    {**_WEATHER, "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}
                ]
            }
        ],
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Porto?"}]},
            {
                "role": "model",
                "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Porto"}}}],
            },
        ],
    },
]

VALID_RECORDS: list[dict[str, Any]] = [
    {"contents": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "yo"}]}]},
    {
        "systemInstruction": {"parts": [{"text": "s"}]},
        "contents": [
            {
                "role": "user",
                "parts": [{"text": "a"}, {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/x.png"}}],
            },
            {"role": "model", "parts": [{"text": "b"}]},
        ],
    },
    {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a"},
        ]
    },
    {"messages": [{"role": "user", "content": "u"}, {"role": "model", "content": "m"}]},
    {"conversations": [{"from": "human", "value": "h"}, {"from": "gpt", "value": "g"}]},
    {"prompt": "p", "completion": "c"},
    {"instruction": "i", "input": "x", "output": "o", "history": [["q", "a"]]},
    {"instruction": "i", "context": "c", "response": "r"},
    {"question": "q", "context": "c", "answer": "a"},
    *TOOL_RECORDS,
]


#: Every rejected or undesirable answer of PREFERENCE_RECORDS holds this; it must never be written.
REJECTED = "REJECTEDANSWER"

PREFERENCE_RECORDS: list[dict[str, Any]] = [
    {
        "conversations": [{"from": "human", "value": "h"}],
        "chosen": {"from": "gpt", "value": "g"},
        "rejected": {"from": "gpt", "value": REJECTED},
    },
    {
        "input": {"messages": [{"role": "user", "content": "u"}]},
        "preferred_output": [{"role": "assistant", "content": "a"}],
        "non_preferred_output": [{"role": "assistant", "content": REJECTED}],
    },
    {
        "chosen_messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
        "rejected_messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": REJECTED}],
    },
    {
        "contents": [{"role": "user", "parts": [{"text": "u"}]}],
        "completions": [
            {"score": 0, "completion": {"role": "model", "parts": [{"text": REJECTED}]}},
            {"score": 1, "completion": {"role": "model", "parts": [{"text": "m"}]}},
        ],
    },
    {"prompt": "p", "chosen": "c", "rejected": REJECTED},
    {
        "prompt": [{"role": "user", "content": "u"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": REJECTED}],
    },
    {
        "prompt": "u",
        "chosen": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
        "rejected": [{"role": "user", "content": "u"}, {"role": "assistant", "content": REJECTED}],
    },
    {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}], "label": True},
    {
        "messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": REJECTED}],
        "label": False,
    },
    {"conversations": [{"from": "human", "value": "h"}, {"from": "gpt", "value": REJECTED}], "label": False},
]


def physical_lines(data: bytes) -> int:
    """Lines as the readers count them: LF, CRLF and a lone CR each end a line."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1


def check_invariants(result: PrepareResult, line_count: int | None = None) -> None:
    for error in result.errors:
        assert error.code in ERROR_CODES, error
        assert isinstance(error.line, int)
        assert error.line >= 0
        assert error.message
        if line_count is not None and result.format not in ("json", "json_array"):  # record indexes there
            assert error.line <= line_count
    assert set(result.error_counts) <= set(ERROR_CODES)
    assert sum(result.error_counts.values()) >= len(result.errors)
    assert {w.code for w in result.warnings} <= set(WARNING_CODES)
    assert result.ok == (result.examples > 0)
    if result.ok:
        assert result.examples == result.split.train + result.split.validation + result.split.test
    body = orjson.loads(orjson.dumps(result.model_dump(mode="json")))
    assert body["tokens"]["method"] in ("exact", "estimate")


def assert_output_is_valid_gemini(written: dict[str, list[dict[str, Any]]]) -> None:
    records = [r for split in written.values() for r in split]
    if not records:
        return
    again, _rewritten = run(jsonl(*records), skip_invalid=False)
    assert again.ok, again.errors
    assert again.shape == "gemini"
    assert again.valid_examples == len(records)


@SETTINGS
@given(data=st.binary(max_size=400), filename=FILENAMES, skip=st.booleans())
def test_random_bytes_never_crash(data: bytes, filename: str, skip: bool) -> None:
    result, written = run(data, filename=filename, skip_invalid=skip)
    check_invariants(
        result, line_count=physical_lines(data) if filename.endswith(("jsonl", "csv", "tsv")) else None
    )
    assert_output_is_valid_gemini(written)


@SETTINGS
@given(
    values=st.lists(shaped_values | json_values, min_size=1, max_size=6),
    skip=st.booleans(),
    as_array=st.booleans(),
)
def test_random_json_records_never_crash(values: list[Any], skip: bool, as_array: bool) -> None:
    data = orjson.dumps(values) if as_array else jsonl(*values)
    result, written = run(data, filename="x.json" if as_array else "x.jsonl", skip_invalid=skip)
    check_invariants(result, line_count=len(values))
    assert_output_is_valid_gemini(written)


@st.composite
def mutated_jsonl(draw: st.DrawFn) -> bytes:
    records = draw(st.lists(st.sampled_from(VALID_RECORDS), min_size=1, max_size=5))
    data = bytearray(jsonl(*records))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "swap_key"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "delete" and data:
            del data[position]
        elif kind == "insert":
            data[position:position] = draw(
                st.sampled_from([b"{", b"}", b'"', b",", b"\n", b"\r\n", b"\xff", b" ", b"[", b"]", b"null"])
            )
        elif kind == "replace" and data:
            data[position] = draw(st.integers(0, 255))
        else:
            text = bytes(data)
            old = draw(
                st.sampled_from(
                    [
                        b'"user"',
                        b'"model"',
                        b'"text"',
                        b'"parts"',
                        b'"content"',
                        b'"role"',
                        b'"gpt"',
                        b'"name"',
                        b'"arguments"',
                        b'"args"',
                        b'"tool_call_id"',
                        b'"function_call"',
                        b'"observation"',
                    ]
                )
            )
            new = draw(
                st.sampled_from([b'"assistant"', b'"tool"', b'""', b'"x"', b"1", b"[]", b"{}", b'"   "'])
            )
            data = bytearray(text.replace(old, new, 1))
    return bytes(data)


#: Keys and values of PREFERENCE_RECORDS that mark which answer is rejected; a mutation breaks one.
#: Label values and scores are left as they are: flipping them changes which answer the user
#: prefers, and then writing the other one is right.
_PREFERENCE_TOKENS = [
    b'"chosen"',
    b'"rejected"',
    b'"chosen_messages"',
    b'"rejected_messages"',
    b'"preferred_output"',
    b'"non_preferred_output"',
    b'"completions"',
    b'"completion"',
    b'"score"',
    b'"gpt"',
    b'"assistant"',
    b'"input"',
    b'"conversations"',
    b'"prompt"',
    b'"user"',
]


@st.composite
def mutated_preference_jsonl(draw: st.DrawFn) -> bytes:
    """Preference and KTO records, mixed with supervised ones, some of their keys and values broken:
    whatever is accepted, no rejected answer is in it."""
    records = draw(st.lists(st.sampled_from(PREFERENCE_RECORDS + VALID_RECORDS[:3]), min_size=1, max_size=6))
    data = jsonl(*records)
    for _ in range(draw(st.integers(0, 3))):
        old = draw(st.sampled_from(_PREFERENCE_TOKENS))
        new = draw(st.sampled_from([b'"x"', b"null", b"[]", b"{}", b'""', b'"  "', b"1"]))
        data = data.replace(old, new, 1)
    return data


@SETTINGS
@given(data=mutated_preference_jsonl(), mode=st.sampled_from(["reject", "chosen"]), skip=st.booleans())
def test_no_rejected_answer_is_ever_written(data: bytes, mode: str, skip: bool) -> None:
    result, written = run(data, filename="data.jsonl", skip_invalid=skip, preference_mode=mode)
    check_invariants(result, line_count=physical_lines(data))
    assert REJECTED not in orjson.dumps(written).decode()
    assert_output_is_valid_gemini(written)


@SETTINGS
@given(data=mutated_jsonl(), skip=st.booleans())
def test_mutated_valid_files_never_crash_and_name_the_line(data: bytes, skip: bool) -> None:
    result, written = run(data, filename="data.jsonl", skip_invalid=skip)
    check_invariants(result, line_count=physical_lines(data))
    for error in result.errors:
        if error.code not in ("empty_file", "no_examples", "unsupported_format", "invalid_encoding"):
            assert error.line >= 1, error
    assert_output_is_valid_gemini(written)


@SETTINGS
@given(
    rows=st.lists(st.lists(st.text(max_size=8), min_size=1, max_size=4), min_size=1, max_size=6),
    header=st.sampled_from(
        [["input", "output"], ["text", "label"], ["question", "context", "answer"], ["a", "b"]]
    ),
)
def test_random_csv_never_crashes(rows: list[list[str]], header: list[str]) -> None:
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode()
    result = prepare(io.BytesIO(data), filename="x.csv", options=PrepareOptions(token_counting="estimate"))
    check_invariants(result, line_count=physical_lines(data))


_TEXTS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(str.strip)


@st.composite
def qa_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Rows of a few prompts with a few answers each (repeats, case and spacing variants included)."""
    prompts = draw(st.lists(_TEXTS, min_size=1, max_size=30, unique=True))
    rows = draw(st.lists(st.tuples(st.sampled_from(prompts), _TEXTS), min_size=1, max_size=40))
    return [
        {"contents": [{"role": "user", "parts": [{"text": p}]}, {"role": "model", "parts": [{"text": a}]}]}
        for p, a in rows
    ]


@SETTINGS
@given(rows=qa_rows(), data=st.data())
def test_the_split_ignores_the_order_of_the_file_and_never_splits_a_prompt(
    rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    from shared.datasets.convert import near_normalise

    def near(text: str) -> bytes:  # the split and dedupe key's normalisation
        return near_normalise(text.encode().translate(None, b" \t\n\v\f\r"))

    def splits(records: list[dict[str, Any]]) -> dict[tuple[bytes, bytes], str]:
        """(prompt, answer) near keys -> split. Which of two near duplicates is written depends on
        which comes first, so examples are compared by their near keys, not their exact text."""
        result, written = run(jsonl(*records))
        assert result.ok, result.errors
        keyed: dict[tuple[bytes, bytes], str] = {}
        for split, kept in written.items():
            for record in kept:
                prompt, answer = (turn["parts"][0]["text"] for turn in record["contents"])
                key = (near(prompt), near(answer))
                assert key not in keyed, "near duplicates are removed"
                keyed[key] = split
        return keyed

    first = splits(rows)
    assert splits(data.draw(st.permutations(rows))) == first
    split_of_prompt: dict[bytes, str] = {}
    for (prompt, _), split in first.items():
        assert split_of_prompt.setdefault(prompt, split) == split

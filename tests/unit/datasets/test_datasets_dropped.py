"""Every warning that drops something names what it dropped, how often and where; a CSV without a
header row is told so, with the mapping to give."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from conftest import gemini, jsonl, run

from shared.datasets import PrepareResult, render_report
from shared.datasets.issues import DatasetWarning
from shared.datasets.prepare import MAX_NAMED_ITEMS


def _warning(result: PrepareResult, code: str) -> DatasetWarning:
    return next(w for w in result.warnings if w.code == code)


def _items(result: PrepareResult, code: str) -> dict[str, tuple[int, list[int]]]:
    return {item.name: (item.count, item.lines) for item in _warning(result, code).items}


def test_unknown_keys_are_named_with_their_counts_and_lines() -> None:
    records = [
        {"prompt": f"p{i}", "completion": f"c{i}", "label": "pos", **({"id": i} if i % 3 == 0 else {})}
        for i in range(1, 11)
    ]
    result, written = run(jsonl(*records))

    warning = _warning(result, "unknown_keys_dropped")
    assert _items(result, "unknown_keys_dropped") == {"label": (10, [1, 2, 3]), "id": (3, [3, 6, 9])}
    assert warning.count == 10  # records concerned, each once however many keys it lost
    assert warning.message == (
        "keys we do not convert were dropped: `label` (10 lines, e.g. 1, 2, 3), `id` (3 lines: 3, 6, 9)"
    )
    assert "`label` (10 lines, e.g. 1, 2, 3)" in render_report(result)
    assert all("label" not in orjson.dumps(r).decode() for split in written.values() for r in split)


def test_a_key_without_a_value_is_not_reported_as_dropped() -> None:
    result, _ = run(jsonl({"prompt": "p", "completion": "c", "id": None, "note": ""}))

    assert "unknown_keys_dropped" not in {w.code for w in result.warnings}


@pytest.mark.parametrize(
    ("record", "dropped"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "hi", "name": "ann"},
                    {"role": "assistant", "content": "hello", "name": "bot"},
                ],
                "metadata": {"source": "x"},
            },
            {"metadata", "messages[].name"},
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "a"}], "id": 1},
                    gemini("a", "b")["contents"][1],
                ]
            },
            {"contents[].id"},
        ),
        (
            {
                "id": "conv-1",
                "conversations": [
                    {"from": "human", "value": "a"},
                    {"from": "gpt", "value": "b", "weight": 0},
                ],
            },
            {"id", "conversations[].weight"},
        ),
        ({"instruction": "i", "input": "", "output": "o", "text": "### i o"}, {"text"}),
        ({"instruction": "i", "context": "c", "response": "r", "category": "open_qa"}, {"category"}),
        ({"question": "q", "answer": "a", "source": "wiki", "split": "train"}, {"source", "split"}),
    ],
    ids=["openai", "gemini", "sharegpt", "alpaca", "dolly", "flat-columns"],
)
def test_every_shape_names_what_it_dropped(record: dict[str, Any], dropped: set[str]) -> None:
    result, _ = run(jsonl(record))

    assert result.ok, result.errors
    assert {name: lines for name, (_, lines) in _items(result, "unknown_keys_dropped").items()} == {
        key: [1] for key in dropped
    }


def test_csv_columns_that_are_not_mapped_are_named() -> None:
    data = b"question,answer,id,notes\nq1,a1,1,\nq2,a2,2,checked\nq3,a3,3,\n"

    result, _ = run(data, filename="qa.csv")

    warning = _warning(result, "unknown_keys_dropped")
    assert _items(result, "unknown_keys_dropped") == {"id": (3, [2, 3, 4]), "notes": (1, [3])}
    assert (
        warning.message == "columns we do not convert were dropped: `id` (3 lines: 2, 3, 4), `notes` (line 3)"
    )


def test_a_json_array_counts_records_not_lines() -> None:
    data = orjson.dumps(
        [{"prompt": "p1", "completion": "c1", "id": 1}, {"prompt": "p2", "completion": "c2", "id": 2}]
    )

    result, _ = run(data, filename="data.json")

    assert "`id` (2 records: 1, 2)" in _warning(result, "unknown_keys_dropped").message


def test_a_new_key_on_every_line_keeps_the_warning_bounded() -> None:
    result, _ = run(jsonl(*({"prompt": f"p{i}", "completion": "c", f"k{i}": i} for i in range(1, 51))))

    items = _items(result, "unknown_keys_dropped")
    assert len(items) == MAX_NAMED_ITEMS + 1
    assert items["(other keys)"][0] == 50 - MAX_NAMED_ITEMS
    assert _warning(result, "unknown_keys_dropped").count == 50


def test_schema_keywords_vertex_does_not_take_are_named_where_they_were_dropped() -> None:
    strict = {"type": "object", "properties": {"x": {"type": "string"}}, "additionalProperties": False}
    turns = [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]
    data = jsonl(
        {"conversations": turns, "tools": "[]"},
        {
            "conversations": [*turns[:1], {"from": "gpt", "value": "c"}],
            "tools": orjson.dumps([{"name": "f", "parameters": strict}]).decode(),
        },
    )

    result, written = run(data)

    assert result.ok
    assert _items(result, "schema_keywords_dropped") == {"tools[0].parameters.additionalProperties": (1, [2])}
    assert _warning(result, "schema_keywords_dropped").message.endswith(
        ": `tools[0].parameters.additionalProperties` (line 2)"
    )
    declared = [r["tools"] for split in written.values() for r in split if "tools" in r]
    assert declared == [
        [
            {
                "functionDeclarations": [
                    {"name": "f", "parameters": {"type": "OBJECT", "properties": {"x": {"type": "STRING"}}}}
                ]
            }
        ]
    ]


def test_skipped_records_are_named_by_error_with_their_lines() -> None:
    data = jsonl(
        gemini("a", "b"),
        {"prompt": "", "completion": "x"},
        gemini("c", "d"),
        "not an object",
        gemini("", "e"),
        "still not",
        "and again",
        "once more",
    )

    result, _ = run(data, skip_invalid=True)

    warning = _warning(result, "records_skipped")
    assert _items(result, "records_skipped") == {
        "data_type": (4, [4, 6, 7]),
        "mixed_shapes": (1, [2]),
        "missing_text": (1, [5]),
    }
    assert warning.message.startswith(
        "6 invalid records were skipped (skip_invalid): `data_type` (4 lines, e.g. 4, 6, 7)"
    )


def test_removed_duplicates_are_counted_in_the_message() -> None:
    result, _ = run(jsonl(gemini("a", "b"), gemini("a ", "b"), gemini("a", " b"), gemini("c", "d")))

    warning = _warning(result, "duplicates_removed")
    assert (warning.count, warning.lines) == (2, [2, 3])
    assert warning.message.startswith("2 examples repeat an earlier one")


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"What is the capital of France?,Paris\nWhat is 2 + 2?,4\n", "qa.csv"),
        (b"The film was wonderful from start to finish\tpositive\nDull.\tnegative\n", "reviews.tsv"),
        (b"1,hello,world\n2,good,morning\n", "numbered.csv"),
    ],
)
def test_a_csv_without_a_header_row_is_told_so_with_the_mapping_to_give(data: bytes, filename: str) -> None:
    result, written = run(data, filename=filename)

    assert not result.ok
    assert result.error_counts == {"unmapped_columns": 1}
    error = result.errors[0]
    assert (error.line, error.code) == (1, "unmapped_columns")
    assert "looks like data, not a header" in error.message
    assert "--map" in error.message
    assert "column_mapping" in error.message
    assert not any(written.values())


def test_a_header_with_an_unnamed_index_column_is_still_a_header() -> None:
    result, _ = run(b",question,answer\n0,q1,a1\n1,q2,a2\n", filename="pandas.csv")

    assert result.ok, result.errors
    assert _items(result, "unknown_keys_dropped") == {"(unnamed)": (2, [2, 3])}

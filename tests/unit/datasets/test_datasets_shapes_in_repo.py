"""What test_datasets_realworld.py (and the real-world CLI tests) check, on fixtures of our own.

The public samples in ../shared/datasets/realworld are not in the repository, so a lone clone
skips the tests that read them. Every behaviour those tests check is checked here too, on small
fixtures written for this project (no third-party text): each reproduces the shape and the
oddities of one public sample (see SOURCES.md beside them), and each test first asserts that its
fixture still has them.

==========================  =============================================================
fixture                     mirrors (shape and oddity)
==========================  =============================================================
ALPACA_ARRAY                axolotl_fixture_alpaca.json: pretty-printed JSON array, two
                            instruction/input/output records
SHAREGPT_OBJECT             axolotl_fixture_conversation.json: ONE bare pretty-printed
                            object, six human/gpt exchanges
GEMINI_ONE_LINE             generative-ai_patient_1_glucose_examples.jsonl: one Gemini
                            record with a system instruction, no final newline; the model
                            summarises a CSV given in the prompt
QA_CSV                      happytransformer_qa_train-eval.csv: SQuAD-style columns
                            context,question,answer_text,answer_start; a context ends with
                            a space
CLASSIFICATION_CSV          happytransformer_tc_train-eval-multi.csv: text,label with six
                            rows, labels 0/1/2 twice each, no final newline
TRANSLATION_CSV             happytransformer_tt_train-eval-translate.csv: input,target,
                            CRLF, one quoted row with commas inside, no final newline
openai_system_prompts()     openai_cookbook_apps_fine-tune_uploaded_output.jsonl: eleven
                            chat records, ten near-identical (dates 2023-01..2023-13, the
                            last an impossible month) and one with another system prompt;
                            user text starts and ends with a newline
TOY_CHAT                    openai_cookbook_toy_chat_fine_tuning.jsonl: five chat records;
                            the 3rd has no system, the 4th no user message, the 5th a very
                            long answer
prompt_completion()         sambanova_example_generative_tuning_data.jsonl: a hundred
                            prompt/completion records with leading newlines and spaces
GLAIVE_ARRAY                llamafactory_glaive_toolcall_en_demo.json: JSON array of
                            ShareGPT records with function_call/observation turns and
                            "tools" as a JSON-encoded string ("[]" when none), some tools
                            unused, one exact duplicate
==========================  =============================================================
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import check_accepted_cli_output, run

from shared.cli import main
from shared.datasets import MODEL_LIMITS, PrepareResult

Written = dict[str, list[dict[str, Any]]]


def pretty(value: Any) -> bytes:
    """JSON as the public .json samples are laid out: two-space indent, a final newline."""
    return json.dumps(value, indent=2, ensure_ascii=False).encode() + b"\n"


def chat(*turns: tuple[str, str]) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def all_written(written: Written) -> list[dict[str, Any]]:
    return written["train"] + written["validation"] + written["test"]


# --- the fixtures -------------------------------------------------------------------------------

ALPACA_ARRAY = pretty(
    [
        {
            "instruction": "Write the given colours in reverse order, one colour per line.",
            "input": "Colours: ['red', 'green'].",
            "output": "['green', 'red']",
        },
        {
            "instruction": "Put the steps of the short story below in the order they happen.",
            "input": "Story: A woman buys a ticket, boards the train and finds her seat.",
            "output": "1. She buys a ticket.\n2. She boards the train.\n3. She finds her seat.",
        },
    ]
)

SHAREGPT_OBJECT = pretty(
    {
        "conversations": [
            turn
            for i in range(6)
            for turn in (
                {
                    "from": "human",
                    "value": "how would i write a sudoku solver that uses graph colouring?"
                    if i == 0
                    else f"and what about step {i}?",
                },
                {
                    "from": "gpt",
                    "value": f"Step {i}: treat each cell as a vertex and each digit as a colour.",
                },
            )
        ]
    }
)

GEMINI_ONE_LINE = orjson.dumps(
    {
        "systemInstruction": {
            "role": "system",
            "parts": [
                {"text": "You are an expert in home heating who summarises temperature logs for owners."}
            ],
        },
        "contents": [
            {
                "role": "user",
                "parts": [
                    {
                        "text": "Create a short summary of the room temperatures in the following CSV file "
                        "that a home owner can easily understand.\n\n```csv\ndate,time,room,celsius\n"
                        + "".join(
                            f"2024-01-{day:02},{hour}:00,living room,{18 + (day * hour) % 5}\n"
                            for day in range(10, 15)
                            for hour in (7, 12, 18, 22)
                        )
                        + "```"
                    }
                ],
            },
            {
                "role": "model",
                "parts": [
                    {
                        "text": "The living room stayed between 18 and 22 degrees all week, "
                        "warmest around noon and coolest late in the evening."
                    }
                ],
            },
        ],
    }
)

QA_CSV = (
    b"context,question,answer_text,answer_start\n"
    b"The shop opens at nine,when does the shop open?,nine,18\n"
    b"The shop closes at six ,when does the shop close?,six,19\n"
)

CLASSIFICATION_CSV = b"text,label\nWhat a lovely day,2\nSo sunny,2\nA bit cloudy,1\nRather grey,1\nPouring rain,0\nAwful storm,0"

TRANSLATION_CSV = (
    b"input,target\r\n"
    b'"translate English to French: Hello, I like to read books.","Bonjour, j\'aime lire des livres."'
)

OPENAI_SYSTEM = (
    "your job is to write queries given a user request.\n\n"
    "CREATE TABLE Shipments (\n  ShipmentID int,\n  ShippedOn datetime,\n  PRIMARY KEY (ShipmentID)\n);"
)
OPENAI_OTHER_SYSTEM = (
    "Given the following SQL table, your job is to write queries given a user request."
    + (OPENAI_SYSTEM.split("\n\n", 1)[1])
)


def openai_system_prompts() -> bytes:
    records = [
        chat(
            ("system", OPENAI_SYSTEM),
            ("user", f"\nhow many shipments left on 2023-{month:02}-01?\n"),
            ("assistant", f"SELECT COUNT(*) FROM Shipments WHERE ShippedOn = '2023-{month:02}-01';"),
        )
        for month in range(4, 14)  # 2023-13-01: an impossible month, as in the sample
    ]
    records.append(
        chat(
            ("system", OPENAI_OTHER_SYSTEM),
            ("user", "\nlist every shipment of 2023\n"),
            ("assistant", "SELECT * FROM Shipments WHERE YEAR(ShippedOn) = 2023;"),
        )
    )
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


CHEERFUL = "You are a cheerful assistant who finds the bright side of everything."
LONG_ANSWER = "Have an apple!" * 2000  # 28,000 characters: fine for every Gemini limit
TOY_CHAT = b"".join(
    orjson.dumps(r) + b"\n"
    for r in (
        chat(("system", CHEERFUL), ("user", "My train was late."), ("assistant", "More time to read!")),
        chat(
            ("system", CHEERFUL),
            ("user", "I burnt the toast."),
            ("assistant", "Crunchy toast is a classic."),
            ("user", "But it was the last slice!"),
            ("assistant", "Then lunch will taste even better."),
            ("user", "I am still hungry."),
            ("assistant", "Hunger is the best sauce."),
            ("user", "Fine, fine."),
            ("assistant", "That's the spirit!"),
        ),
        chat(("user", "I lost my umbrella."), ("assistant", "Rain is free hair conditioner!")),
        chat(("system", CHEERFUL), ("assistant", "You are doing great!")),  # line 4: no user message
        chat(("system", CHEERFUL), ("user", "I'm hungry."), ("assistant", LONG_ANSWER)),
    )
)


def prompt_completion() -> bytes:
    records = [
        {
            "prompt": f"\nWrite a title for this note: meeting number {i} moved to room {i % 7} . \n\nTitle: ",
            "completion": f"\n meeting {i} moves to room {i % 7}\n",
        }
        for i in range(100)
    ]
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


WEATHER_TOOLS = json.dumps(
    [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
)
_PLAIN = {
    "conversations": [
        {"from": "human", "value": "What is a haiku?"},
        {"from": "gpt", "value": "A short poem of three lines with five, seven and five syllables."},
    ],
    "tools": "[]",
}
GLAIVE_ARRAY = pretty(
    [
        {  # 1: a tool call at conversations[3]
            "conversations": [
                {"from": "human", "value": "Hi, can you help me plan a walk?"},
                {"from": "gpt", "value": "Of course. Where are you?"},
                {"from": "human", "value": "In Lisbon."},
                {
                    "from": "function_call",
                    "value": '{"name": "get_weather", "arguments": {"city": "Lisbon"}}',
                },
                {"from": "observation", "value": '{"forecast": "sunny"}'},
                {"from": "gpt", "value": "It will be sunny: a good day for a walk."},
            ],
            "tools": WEATHER_TOOLS,
        },
        _PLAIN,  # 2: plain, no tools declared
        {  # 3: plain conversation, but declares a tool it never calls
            "conversations": [
                {"from": "human", "value": "Tell me a joke."},
                {
                    "from": "gpt",
                    "value": "Why did the scarecrow win an award? He was outstanding in his field.",
                },
                {"from": "human", "value": "Another one?"},
                {
                    "from": "gpt",
                    "value": "I would tell you a chemistry joke, but I know I would get no reaction.",
                },
            ],
            "tools": WEATHER_TOOLS,
        },
        {  # 4: a tool call at conversations[1]
            "conversations": [
                {"from": "human", "value": "Weather in Porto?"},
                {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Porto"}}'},
                {"from": "observation", "value": '{"forecast": "rain"}'},
                {"from": "gpt", "value": "Rain in Porto today."},
            ],
            "tools": WEATHER_TOOLS,
        },
        _PLAIN,  # 5: an exact duplicate of 2
        {  # 6: plain
            "conversations": [
                {"from": "human", "value": "Name a prime number."},
                {"from": "gpt", "value": "Seven."},
            ],
            "tools": "[]",
        },
    ]
)
GLAIVE_TOOL_RECORDS = 2
GLAIVE_PLAIN_RECORDS = 4


# --- prepare() on each shape --------------------------------------------------------------------


def test_pretty_printed_alpaca_json_array_is_converted_with_a_too_few_examples_warning() -> None:
    assert ALPACA_ARRAY.startswith(b"[\n  {")
    result, written = run(ALPACA_ARRAY, filename="alpaca.json")
    assert (result.ok, result.format, result.shape, result.records_in, result.examples) == (
        True,
        "json_array",
        "alpaca",
        2,
        2,
    )
    # the hash of each prompt decides its split: find the first record wherever it went
    first = next(
        r for r in all_written(written) if r["contents"][1]["parts"][0]["text"] == "['green', 'red']"
    )
    assert first["contents"][0]["role"] == "user"
    assert first["contents"][0]["parts"][0]["text"] == (
        "Write the given colours in reverse order, one colour per line.\n\nColours: ['red', 'green']."
    )
    assert first["contents"][1] == {"role": "model", "parts": [{"text": "['green', 'red']"}]}
    assert "too_few_examples" in {w.code for w in result.warnings}


def test_one_bare_pretty_printed_sharegpt_object_is_one_multi_turn_example() -> None:
    assert SHAREGPT_OBJECT.startswith(b"{\n")
    assert SHAREGPT_OBJECT.count(b"\n") > 1
    result, written = run(SHAREGPT_OBJECT, filename="conversation.json")
    assert (result.ok, result.format, result.shape, result.examples) == (True, "json", "sharegpt", 1)
    contents = all_written(written)[0]["contents"]
    assert [c["role"] for c in contents] == ["user", "model"] * 6
    assert contents[0]["parts"][0]["text"].startswith("how would i write a sudoku solver")


def test_single_gemini_line_without_final_newline_keeps_its_system_and_is_inferred_summarization() -> None:
    assert b"\n" not in GEMINI_ONE_LINE
    result, written = run(GEMINI_ONE_LINE, filename="examples.jsonl")
    assert (result.ok, result.format, result.shape, result.examples) == (True, "jsonl", "gemini", 1)
    record = all_written(written)[0]
    assert record["systemInstruction"]["parts"][0]["text"].startswith("You are an expert in home heating")
    assert result.task is not None
    assert (result.task.value, result.task.source) == ("summarization", "inferred")


def test_csv_context_question_answer_columns_are_extractive_qa_keeping_a_trailing_space() -> None:
    assert b"six ," in QA_CSV
    result, written = run(QA_CSV, filename="train-eval.csv")
    assert (result.ok, result.format, result.shape, result.examples) == (True, "csv", "columns", 2)
    texts = sorted(r["contents"][0]["parts"][0]["text"] for r in all_written(written))
    assert texts[0] == "Context: The shop closes at six \n\nQuestion: when does the shop close?"
    assert texts[1] == "Context: The shop opens at nine\n\nQuestion: when does the shop open?"
    assert result.task is not None
    assert result.task.value == "extractive_qa"


def test_csv_text_label_without_final_newline_is_classification() -> None:
    assert not CLASSIFICATION_CSV.endswith(b"\n")
    result, written = run(CLASSIFICATION_CSV, filename="train-eval-multi.csv")
    assert (result.ok, result.examples) == (True, 6)
    # six examples: the hash of each prompt decides its split, so some may be held out
    labels = sorted(r["contents"][1]["parts"][0]["text"] for r in all_written(written))
    assert labels == ["0", "0", "1", "1", "2", "2"]
    assert written["train"]
    assert result.task is not None
    assert result.task.value == "classification"


def test_csv_with_crlf_quoted_commas_and_no_final_newline_keeps_each_field_whole() -> None:
    assert b"\r\n" in TRANSLATION_CSV
    assert not TRANSLATION_CSV.endswith(b"\n")
    result, written = run(TRANSLATION_CSV, filename="train-eval-translate.csv")
    assert (result.ok, result.examples) == (True, 1)
    record = all_written(written)[0]
    assert (
        record["contents"][0]["parts"][0]["text"]
        == "translate English to French: Hello, I like to read books."
    )
    assert record["contents"][1]["parts"][0]["text"] == "Bonjour, j'aime lire des livres."


def test_openai_chat_with_system_prompts_and_near_identical_records_has_no_duplicates() -> None:
    data = openai_system_prompts()
    assert data.count(b"\n") == 11
    assert b"2023-13-01" in data
    result, written = run(data, filename="uploaded_output.jsonl")
    assert (result.ok, result.shape, result.records_in, result.examples, result.duplicates) == (
        True,
        "openai_chat",
        11,
        11,
        0,
    )
    records = all_written(written)
    record = records[0]
    assert record["systemInstruction"]["parts"][0]["text"].startswith("your job is to write queries")
    assert [c["role"] for c in record["contents"]] == ["user", "model"]
    # the user text's leading and trailing newlines are kept: conversion is faithful
    assert record["contents"][0]["parts"][0]["text"].startswith("\n")
    assert record["contents"][0]["parts"][0]["text"].endswith("?\n")
    systems = {r["systemInstruction"]["parts"][0]["text"] for r in records}
    assert systems == {OPENAI_SYSTEM, OPENAI_OTHER_SYSTEM}


def test_openai_chat_record_without_a_user_message_is_rejected_at_its_line_and_stops_the_sink() -> None:
    result, written = run(TOY_CHAT, filename="toy_chat_fine_tuning.jsonl")
    assert not result.ok
    assert result.examples == 0
    assert result.valid_examples == 4
    assert [(e.line, e.code, e.field) for e in result.errors] == [
        (4, "example_missing_user_message", "messages")
    ]
    # strict: after the first error the sink gets nothing more (record 5 is never written)
    assert sum(len(v) for v in written.values()) == 3


def test_skip_invalid_keeps_the_other_chat_records_the_multi_turn_one_included() -> None:
    result, written = run(TOY_CHAT, filename="toy_chat_fine_tuning.jsonl", skip_invalid=True)
    assert result.ok
    assert result.examples == 4
    assert result.rejected == 1
    assert "records_skipped" in {w.code for w in result.warnings}
    turns = sorted(len(r["contents"]) for r in all_written(written))
    assert turns == [2, 2, 2, 8]
    no_system = [r for r in all_written(written) if "systemInstruction" not in r]
    assert len(no_system) == 1


def test_long_chat_record_is_counted_and_passes_the_models_token_limit() -> None:
    result, _ = run(TOY_CHAT, filename="toy_chat_fine_tuning.jsonl", skip_invalid=True)
    assert result.tokens.max >= len(LONG_ANSWER) // 4
    assert result.tokens.max < result.tokens.limit_per_example


def test_long_chat_record_over_a_small_token_limit_is_rejected_at_its_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = "gemini-2.5-flash"
    monkeypatch.setitem(
        MODEL_LIMITS, model, dataclasses.replace(MODEL_LIMITS[model], max_tokens_per_example=1_000)
    )
    result, _ = run(TOY_CHAT, filename="toy_chat_fine_tuning.jsonl", skip_invalid=True, base_model=model)
    assert result.ok
    assert result.error_counts == {"example_missing_user_message": 1, "too_many_tokens": 1}
    assert [(e.line, e.code) for e in result.errors] == [
        (4, "example_missing_user_message"),
        (5, "too_many_tokens"),
    ]
    assert "1,000" in result.errors[1].message
    assert result.examples == 3
    assert result.tokens.max < 1_000


def test_prompt_completion_hundred_records_are_split_three_ways() -> None:
    result, written = run(prompt_completion(), filename="generative_tuning_data.jsonl")
    assert (result.ok, result.shape, result.records_in, result.examples) == (
        True,
        "prompt_completion",
        100,
        100,
    )
    assert result.split.train + result.split.validation + result.split.test == 100
    assert result.split.validation > 0
    assert result.split.test > 0
    assert sum(len(v) for v in written.values()) == 100


def _glaive(**options: Any) -> tuple[PrepareResult, Written]:
    return run(GLAIVE_ARRAY, filename="glaive_toolcall_demo.json", **options)


def test_sharegpt_tool_call_turns_become_vertex_function_calls() -> None:
    result, written = _glaive()
    assert result.ok
    assert result.format == "json_array"
    assert result.shape == "sharegpt"
    assert result.errors == []
    assert result.valid_examples + result.duplicates == GLAIVE_TOOL_RECORDS + GLAIVE_PLAIN_RECORDS
    records = all_written(written)
    with_calls = [r for r in records if any("functionCall" in p for c in r["contents"] for p in c["parts"])]
    assert len(with_calls) == GLAIVE_TOOL_RECORDS
    porto = next(r for r in with_calls if r["contents"][0]["parts"][0]["text"] == "Weather in Porto?")
    assert porto["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Porto"}}}]},
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"forecast": "rain"}}}],
        },
        {"role": "model", "parts": [{"text": "Rain in Porto today."}]},
    ]
    assert porto["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"city": {"type": "STRING"}},
                        "required": ["city"],
                    },
                }
            ]
        }
    ]


def test_declared_tools_are_kept_even_when_no_turn_calls_them_and_empty_ones_are_not() -> None:
    # Declared but not called: the model learns when not to call, so the declarations stay.
    _, written = _glaive()
    records = all_written(written)
    joke = next(r for r in records if r["contents"][0]["parts"][0]["text"] == "Tell me a joke.")
    assert joke["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    haiku = next(r for r in records if r["contents"][0]["parts"][0]["text"] == "What is a haiku?")
    assert "tools" not in haiku  # "tools": "[]" declares nothing


# --- the CLI on the same fixtures ---------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["validate", *argv])
    return code, capsys.readouterr().out


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_cli_valid_file_exits_0_prints_the_json_contract_and_writes_the_splits_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    source = write(tmp_path, "generative_tuning_data.jsonl", prompt_completion())
    code, stdout = run_cli(capsys, source, "--json", "--out", str(out))
    check_accepted_cli_output(code, stdout, out, examples=100)


def test_cli_invalid_file_exits_1_lists_the_located_error_and_writes_only_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    source = write(tmp_path, "toy_chat_fine_tuning.jsonl", TOY_CHAT)
    code, stdout = run_cli(capsys, source, "--json", "--out", str(out))
    assert code == 1
    body = json.loads(stdout)
    assert body["ok"] is False
    assert body["errors"] == [
        {
            "line": 4,
            "field": "messages",
            "code": "example_missing_user_message",
            "message": "the example has no user turn",
        }
    ]
    assert not (out / "train.jsonl").exists()
    assert (out / "report.md").exists()


def test_cli_skip_invalid_flag_exits_0_and_counts_the_rejected_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path, "toy_chat_fine_tuning.jsonl", TOY_CHAT)
    code, stdout = run_cli(capsys, source, "--json", "--skip-invalid")
    assert code == 0
    assert json.loads(stdout)["rejected"] == 1

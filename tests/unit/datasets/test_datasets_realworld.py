"""Each shape against the real-world files in shared/datasets/realworld (see SOURCES.md there).

A lone clone has no such folder and skips these; test_datasets_shapes_in_repo.py checks every
behaviour here on fixtures written for the project, so it is covered wherever the tests run.
"""

from __future__ import annotations

from pathlib import Path

from conftest import run


def prepare_file(path: Path, **options: object):
    return run(path.read_bytes(), filename=path.name, **options)


def test_alpaca_json_array(realworld: Path) -> None:
    result, written = prepare_file(realworld / "axolotl_fixture_alpaca.json")
    assert (result.ok, result.format, result.shape, result.records_in, result.examples) == (
        True,
        "json_array",
        "alpaca",
        2,
        2,
    )
    first = written["train"][0]
    assert first["contents"][0]["role"] == "user"
    assert first["contents"][0]["parts"][0]["text"] == (
        "You will be given a series of words. Output these words in reverse order, with each word on its own line."
        "\n\nWords: ['Hello', 'world']."
    )
    assert first["contents"][1] == {"role": "model", "parts": [{"text": "['world', 'Hello']"}]}
    assert "too_few_examples" in {w.code for w in result.warnings}


def test_sharegpt_single_pretty_printed_object(realworld: Path) -> None:
    result, written = prepare_file(realworld / "axolotl_fixture_conversation.json")
    assert (result.ok, result.format, result.shape, result.examples) == (True, "json", "sharegpt", 1)
    contents = written["train"][0]["contents"]
    assert [c["role"] for c in contents] == ["user", "model"] * 6
    assert contents[0]["parts"][0]["text"].startswith("how could i implement a minesweeper algorithm")


def test_gemini_single_line_without_final_newline(realworld: Path) -> None:
    result, written = prepare_file(realworld / "generative-ai_patient_1_glucose_examples.jsonl")
    assert (result.ok, result.format, result.shape, result.examples) == (True, "jsonl", "gemini", 1)
    record = written["train"][0]
    assert record["systemInstruction"]["parts"][0]["text"].startswith("You are an expert in diabetes care")
    assert result.task is not None
    assert (result.task.value, result.task.source) == (
        "summarization",
        "inferred",
    )


def test_csv_question_context_answer_is_extractive_qa(realworld: Path) -> None:
    result, written = prepare_file(realworld / "happytransformer_qa_train-eval.csv")
    assert (result.ok, result.format, result.shape, result.examples) == (True, "csv", "columns", 2)
    texts = sorted(r["contents"][0]["parts"][0]["text"] for r in written["train"])
    assert texts[0] == "Context: October 31st is the date\n\nQuestion: what is the date?"
    # the trailing space of the second context is kept: conversion is faithful
    assert texts[1] == "Context: The date is November 23rd \n\nQuestion: what is the date?"
    assert result.task is not None
    assert result.task.value == "extractive_qa"


def test_csv_text_label_is_classification(realworld: Path) -> None:
    result, written = prepare_file(realworld / "happytransformer_tc_train-eval-multi.csv")
    assert (result.ok, result.examples) == (True, 6)
    # six examples: the hash of each prompt decides its split, so some may be held out
    labels = sorted(r["contents"][1]["parts"][0]["text"] for split in written.values() for r in split)
    assert labels == ["0", "0", "1", "1", "2", "2"]
    assert written["train"]
    assert result.task is not None
    assert result.task.value == "classification"


def test_csv_crlf_quoted_commas_no_final_newline(realworld: Path) -> None:
    result, written = prepare_file(realworld / "happytransformer_tt_train-eval-translate.csv")
    assert (result.ok, result.examples) == (True, 1)
    record = written["train"][0]
    assert (
        record["contents"][0]["parts"][0]["text"]
        == "translate English to Spanish: Hello, I like to eat apples."
    )
    assert record["contents"][1]["parts"][0]["text"] == "Hola, me gusta comer manzanas."


def test_openai_chat_with_system_prompts(realworld: Path) -> None:
    result, written = prepare_file(realworld / "openai_cookbook_apps_fine-tune_uploaded_output.jsonl")
    assert (result.ok, result.shape, result.records_in, result.examples, result.duplicates) == (
        True,
        "openai_chat",
        11,
        11,
        0,
    )
    record = (written["train"] + written["validation"] + written["test"])[0]
    assert record["systemInstruction"]["parts"][0]["text"].startswith("your job is to write queries")
    assert [c["role"] for c in record["contents"]] == ["user", "model"]


def test_openai_toy_chat_rejects_the_record_without_a_user_message(realworld: Path) -> None:
    result, written = prepare_file(realworld / "openai_cookbook_toy_chat_fine_tuning.jsonl")
    assert not result.ok
    assert result.examples == 0
    assert result.valid_examples == 4
    assert [(e.line, e.code, e.field) for e in result.errors] == [
        (4, "example_missing_user_message", "messages")
    ]
    # strict: after the first error the sink gets nothing more (record 5 is never written)
    assert sum(len(v) for v in written.values()) == 3
    # skip_invalid keeps the four good records, the multi-turn one included
    skipped, kept = prepare_file(realworld / "openai_cookbook_toy_chat_fine_tuning.jsonl", skip_invalid=True)
    assert skipped.ok
    assert skipped.examples == 4
    assert skipped.rejected == 1
    turns = sorted(len(r["contents"]) for split in kept.values() for r in split)
    assert turns == [2, 2, 2, 8]


def test_openai_toy_chat_long_record_exceeds_a_small_token_limit(realworld: Path) -> None:
    # "Eat a banana!" x 2000 is 26,000 characters: fine for every Gemini limit, so it passes here
    result, _ = prepare_file(realworld / "openai_cookbook_toy_chat_fine_tuning.jsonl", skip_invalid=True)
    assert result.tokens.max >= 26_000 // 4
    assert result.tokens.max < result.tokens.limit_per_example


def test_prompt_completion(realworld: Path) -> None:
    result, written = prepare_file(realworld / "sambanova_example_generative_tuning_data.jsonl")
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


def test_glaive_tool_calls_become_vertex_function_calls(realworld: Path) -> None:
    result, written = prepare_file(realworld / "llamafactory_glaive_toolcall_en_demo.json")
    assert result.ok
    assert result.format == "json_array"
    assert result.shape == "sharegpt"
    assert result.errors == []
    records = [r for split in written.values() for r in split]
    assert len(records) == result.examples
    calls = [
        p["functionCall"] for r in records for c in r["contents"] for p in c["parts"] if "functionCall" in p
    ]
    assert len(calls) >= 150  # 153 records call a tool; a few may be duplicates
    declared = {r["contents"][0]["parts"][0]["text"]: r.get("tools") for r in records}
    assert all(tools is None or tools[0]["functionDeclarations"] for tools in declared.values())

"""Near duplicates: one normalised key (NFKC, case folded, whitespace and trailing punctuation
ignored) drops them (unless ``dedupe: exact``) and keeps them in one split either way."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import gemini, jsonl, run

from shared.cli import main
from shared.config import Settings
from shared.datasets import (
    PrepareOptions,
    SeenExamples,
    UploadSettingsError,
    load_manifest,
    parse_object_metadata,
    prepare,
    render_report,
)


def _texts(written: dict[str, list[dict]]) -> dict[str, list[tuple[str, str]]]:
    return {
        split: [(r["contents"][0]["parts"][0]["text"], r["contents"][1]["parts"][0]["text"]) for r in records]
        for split, records in written.items()
    }


VARIANTS = jsonl(
    gemini("What is the capital of France?", "Paris."),  # 1: kept
    gemini("What is the capital  of France?", "Paris."),  # 2: exact (whitespace)
    gemini("what is the capital of france", "paris"),  # 3: near (case, punctuation)
    gemini("WHAT IS THE CAPITAL OF FRANCE？", "Ｐａｒｉｓ！"),  # 4: near (full-width forms, NFKC)
    gemini("What is the capital of France?", "Paris, of course."),  # 5: another answer: kept
    gemini("How much is half of 100?", "50%"),  # 6: kept
    gemini("How much is half of 100?", "50"),  # 7: a symbol is meaning, not punctuation: kept
)


def test_near_duplicates_are_removed_and_counted_apart_from_exact_ones() -> None:
    result, written = run(VARIANTS)

    assert (result.duplicates, result.near_duplicates, result.examples) == (1, 2, 4)
    warnings = {w.code: w for w in result.warnings}
    assert warnings["duplicates_removed"].lines == [2]
    assert (warnings["near_duplicates_removed"].count, warnings["near_duplicates_removed"].lines) == (
        2,
        [3, 4],
    )
    assert "dedupe: exact" in warnings["near_duplicates_removed"].message
    kept = sorted(pair for pairs in _texts(written).values() for pair in pairs)
    assert kept == sorted(
        [
            ("What is the capital of France?", "Paris."),
            ("What is the capital of France?", "Paris, of course."),
            ("How much is half of 100?", "50%"),
            ("How much is half of 100?", "50"),
        ]
    )
    assert "| duplicates removed | 1 exact, 2 near |" in render_report(result)


def test_dedupe_exact_keeps_near_duplicates() -> None:
    result, written = run(VARIANTS, dedupe="exact")

    assert (result.duplicates, result.near_duplicates, result.examples, result.dedupe) == (
        1,
        None,
        6,
        "exact",
    )
    assert "near_duplicates_removed" not in {w.code for w in result.warnings}
    assert sum(len(records) for records in written.values()) == 6
    assert "near duplicates kept: dedupe exact" in render_report(result)


@pytest.mark.parametrize("dedupe", ["near", "exact"])
def test_near_duplicate_prompts_never_straddle_splits(dedupe: str) -> None:
    records = []
    for i in range(200):
        records.append(gemini(f"Is {i} a prime number?", f"answer {i}"))
        records.append(gemini(f"is {i} a prime number", f"ANSWER {i}."))  # a near duplicate
        records.append(gemini(f"IS {i} A PRIME NUMBER!", f"another answer {i}"))  # a near prompt
    result, written = run(jsonl(*records), dedupe=dedupe)

    split_of: dict[int, set[str]] = {}
    for split, pairs in _texts(written).items():
        for prompt, _ in pairs:
            split_of.setdefault(int(prompt.split()[1]), set()).add(split)
    assert len(split_of) == 200
    assert all(len(splits) == 1 for splits in split_of.values())
    assert result.split.test > 0
    assert result.split.validation > 0
    assert result.examples == (400 if dedupe == "near" else 600)


def test_a_near_duplicate_prompt_in_another_file_of_a_manifest_is_a_leak() -> None:
    seen = SeenExamples()
    train = jsonl(*(gemini(f"Question number {i}?", f"a{i}") for i in range(40)))
    test = jsonl(gemini("question number 3", "something else"))
    prepare(
        io.BytesIO(train),
        filename="train.jsonl",
        options=PrepareOptions(token_counting="estimate", split="train"),
        seen=seen,
    )

    result = prepare(
        io.BytesIO(test),
        filename="test.jsonl",
        options=PrepareOptions(token_counting="estimate", split="test"),
        seen=seen,
    )

    assert result.errors[0].code == "example_in_multiple_splits"
    assert result.errors[0].line == 1


def test_dedupe_is_an_upload_setting() -> None:
    assert PrepareOptions.from_settings(Settings()).dedupe == "near"
    upload = parse_object_metadata({"x-goog-meta-dedupe": "Exact"})
    assert PrepareOptions.from_settings(Settings(), upload).dedupe == "exact"
    manifest = load_manifest(b"train: datasets/a.jsonl\ndedupe: exact\n", "run.tuning.yaml")
    assert manifest.dedupe == "exact"
    with pytest.raises(UploadSettingsError) as caught:
        parse_object_metadata({"dedupe": "fuzzy"})
    assert caught.value.field == "dedupe"


def test_sftpipe_validate_takes_dedupe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(VARIANTS)

    code = main(["validate", str(path), "--tokens", "estimate", "--dedupe", "exact", "--json"])

    result = json.loads(capsys.readouterr().out)
    assert (code, result["dedupe"], result["near_duplicates"], result["examples"]) == (0, "exact", None, 6)

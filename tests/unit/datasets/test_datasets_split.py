"""Splits that hold (issue 13, item 3): the split keys on the prompt and on nothing else.

- one prompt never straddles splits, whatever its answers (multi-answer QA, labels that disagree),
  and the report counts those prompt-level duplicates;
- the split depends only on the prompt's hash: shuffling, prepending or appending rows moves no
  existing example;
- a dataset large enough gets at least the minimum test size, a smaller one a loud warning and
  the resolution its test split has.

Every helper here goes through prepare_and_write (two passes, as ingest runs it).
"""

from __future__ import annotations

import io
import random
from collections import Counter
from typing import Any

import orjson
import pytest
from conftest import gemini, jsonl

from shared.datasets import (
    PrepareOptions,
    PrepareResult,
    SeenExamples,
    prepare,
    prepare_and_write,
    render_report,
)
from shared.datasets.split import BUCKETS, SplitPlan

Written = dict[str, list[dict[str, Any]]]


def split_file(data: bytes, **options: Any) -> tuple[PrepareResult, Written]:
    options.setdefault("token_counting", "estimate")
    written: Written = {"train": [], "validation": [], "test": []}
    result = prepare_and_write(
        lambda: io.BytesIO(data),
        filename="data.jsonl",
        options=PrepareOptions(**options),
        sink=lambda split, line: written[split].append(orjson.loads(line)),
    )
    return result, written


def prompt_of(record: dict[str, Any]) -> str:
    return record["contents"][0]["parts"][0]["text"]


def answer_of(record: dict[str, Any]) -> str:
    return record["contents"][-1]["parts"][0]["text"]


def by_content(written: Written) -> dict[str, set[bytes]]:
    return {
        split: {orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records}
        for split, records in written.items()
    }


def split_of_each(written: Written) -> dict[bytes, str]:
    return {key: split for split, keys in by_content(written).items() for key in keys}


def questions(n: int, prefix: str = "question number") -> list[dict[str, Any]]:
    return [gemini(f"{prefix} {i}?", f"answer {i}") for i in range(n)]


def warning(result: PrepareResult, code: str) -> Any:
    found = [w for w in result.warnings if w.code == code]
    assert found, f"no {code} warning in {[w.code for w in result.warnings]}"
    return found[0]


# --- one prompt, one split ------------------------------------------------------------------------


def test_multi_answer_qa_keeps_every_prompt_in_one_split_and_counts_prompt_duplicates() -> None:
    # 300 questions, 3 answer variants each. Before: 72 of the 72 test prompts were also in train
    # (the key held the answer), 0 duplicates reported.
    records = [gemini(f"question {q}?", f"answer {q} variant {v}") for q in range(300) for v in range(3)]
    result, written = split_file(jsonl(*records))
    assert result.ok
    prompts = {split: {prompt_of(r) for r in records} for split, records in written.items()}
    assert not prompts["test"] & prompts["train"]
    assert not prompts["test"] & prompts["validation"]
    assert not prompts["validation"] & prompts["train"]
    assert len(prompts["test"]) >= 20
    assert result.duplicates == 0
    assert result.split.prompt_duplicates == 600
    assert result.split.prompts_with_several_answers == 300
    assert result.split.test == 3 * result.split.test_prompts
    assert sum(len(v) for v in written.values()) == result.examples == 900
    notice = warning(result, "prompt_duplicates")
    assert notice.count == 600
    assert "300 prompts have several different answers" in notice.message
    assert notice.lines == [2, 3, 5, 6, 8, 9, 11, 12, 14, 15]
    assert "prompt-level duplicates kept" in render_report(result)


def test_inconsistent_labels_of_one_prompt_stay_together_and_exact_duplicates_still_go() -> None:
    records = []
    for i in range(200):
        records.append(gemini(f"Review {i}: it broke after a week.", "negative"))
        records.append(gemini(f"review {i}:  it broke after a  week.", "positive"))  # case, spacing
        records.append(gemini(f"Review {i}: it broke after a week.\n", "negative"))  # exact duplicate
    result, written = split_file(jsonl(*records))
    assert result.ok
    assert result.duplicates == 200
    assert result.split.prompt_duplicates == 200
    assert result.split.prompts_with_several_answers == 200
    split_of_prompt: dict[str, str] = {}
    for split, kept in written.items():
        for record in kept:
            key = " ".join(prompt_of(record).lower().split())
            assert split_of_prompt.setdefault(key, split) == split, key
    assert len(split_of_prompt) == 200


def test_the_prompt_is_the_system_instruction_and_every_turn_but_the_last() -> None:
    def conversation(i: int, answer: str) -> dict[str, Any]:
        return {
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [
                {"role": "user", "parts": [{"text": f"hi {i}"}]},
                {"role": "model", "parts": [{"text": "hello"}]},
                {"role": "user", "parts": [{"text": f"what is {i} squared?"}]},
                {"role": "model", "parts": [{"text": answer}]},
            ],
        }

    # three answers that are not near duplicates of each other ("N" and "N." would be)
    records = [
        conversation(i, a) for i in range(150) for a in (str(i * i), f"{i * i} exactly", f"it is {i * i}")
    ]
    result, written = split_file(jsonl(*records))
    assert result.split.prompt_duplicates == 300
    firsts = {split: {r["contents"][2]["parts"][0]["text"] for r in kept} for split, kept in written.items()}
    assert not firsts["train"] & firsts["test"]
    assert not firsts["train"] & firsts["validation"]
    # the system instruction is part of the prompt: the same turns under another one are another prompt
    other_system, _ = split_file(
        jsonl(gemini("same question", "a", system="s1"), gemini("same question", "b", system="s2"))
    )
    assert other_system.split.prompt_duplicates == 0


def test_a_prompt_of_the_train_file_in_the_test_file_is_a_leak_whatever_its_answer() -> None:
    seen = SeenExamples()
    train = jsonl(*questions(40))
    test = jsonl(gemini("Question number 3?", "a different answer"), gemini("a fresh one?", "yes"))
    options = PrepareOptions(token_counting="estimate", split="train")
    for _ in range(2):  # validate-only, then writing pass: not a conflict with itself
        assert prepare(io.BytesIO(train), filename="train.jsonl", options=options, seen=seen).ok
    result = prepare(
        io.BytesIO(test),
        filename="test.jsonl",
        options=options.model_copy(update={"split": "test"}),
        seen=seen,
    )
    assert [(e.line, e.code) for e in result.errors] == [(1, "example_in_multiple_splits")]
    assert "also in the train file" in result.errors[0].message
    assert result.split.test == 1


# --- order does not matter ---------------------------------------------------------------------


def test_shuffling_a_file_moves_no_example_between_splits() -> None:
    # Before: 24, 26 and 31 of 1,000 examples changed split when the file was shuffled.
    records = questions(1000)
    _, written = split_file(jsonl(*records))
    reference = by_content(written)
    for seed in (1, 2, 3):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        _, again = split_file(jsonl(*shuffled))
        assert by_content(again) == reference, seed


def test_prepending_or_appending_rows_moves_no_existing_example() -> None:
    # Before: prepending 200 rows moved 8 of the 1,000 original examples to another split.
    records = questions(1000)
    result, written = split_file(jsonl(*records))
    assert result.split.test_hash_below == result.split.validation_hash_from
    assert (result.split.test_hash_below, result.split.validation_hash_below) == pytest.approx(
        (0.1, 0.2), abs=1e-4
    )
    before = split_of_each(written)
    extra = questions(200, prefix="another question")
    for data in (
        jsonl(*extra, *records),
        jsonl(*records, *extra),
        jsonl(*extra[:100], *records, *extra[100:]),
    ):
        grown, written_grown = split_file(data)
        assert grown.examples == 1200
        after = split_of_each(written_grown)
        moved = [key for key, split in before.items() if after[key] != split]
        assert moved == []


def test_a_file_sorted_by_label_gets_the_same_test_mix_as_shuffled() -> None:
    # Before: 36 of the 900 examples were in another split when the file was sorted by label.
    labels = ("neg", "neu", "pos")
    records = [gemini(f"review {i}: how was it?", labels[i % 3]) for i in range(900)]
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    by_label = sorted(records, key=answer_of)
    result, written = split_file(jsonl(*by_label))
    _, written_shuffled = split_file(jsonl(*shuffled))
    assert by_content(written) == by_content(written_shuffled)
    mix = Counter(answer_of(r) for r in written["test"])
    assert set(mix) == set(labels)
    # the hash is blind to the label: each share is binomial around 1/3 (no stratification)
    assert all(0.2 < mix[label] / result.split.test < 0.47 for label in labels), mix


def test_the_validation_limit_cuts_by_hash_not_by_position() -> None:
    # Before: the first 256 held-out examples in file order were kept: reversing the file moved 1,024.
    records = questions(4000)
    options = {"base_model": "gemini-1.5-flash-002", "validation_fraction": 0.3, "test_fraction": 0.3}
    result, written = split_file(jsonl(*records), **options)
    assert (result.split.validation, result.split.test) == (256, 256)
    assert "validation_capped" in {w.code for w in result.warnings}
    reversed_result, written_reversed = split_file(jsonl(*reversed(records)), **options)
    assert reversed_result.split == result.split
    assert by_content(written_reversed) == by_content(written)


# --- test sizes --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [80, 100, 160, 199])
def test_a_small_dataset_holds_out_at_least_the_minimum_test_size(n: int) -> None:
    # Before: 160 examples gave 15 test examples and no word about it.
    records = questions(n)
    result, written = split_file(jsonl(*records))
    assert result.ok
    assert result.split.min_test_examples == 20
    assert result.split.test >= 20
    assert len(written["test"]) == result.split.test
    assert result.split.train + result.split.validation + result.split.test == n
    assert result.split.test_hash_below is not None
    codes = {w.code for w in result.warnings}
    assert "small_test_split" not in codes
    if result.split.test_hash_below > 0.1001:  # the configured 10 % gave fewer than 20: raised to 20
        assert "test_split_raised" in codes
        assert result.split.test <= 21  # one bucket may hold two prompts
        # validation keeps its width above the raised test band
        assert result.split.validation_hash_from == result.split.test_hash_below
        assert result.split.validation_hash_below == pytest.approx(
            result.split.test_hash_below + 0.1, abs=1e-4
        )
    else:
        assert n == 199
    shuffled = records[::-1]
    _, written_shuffled = split_file(jsonl(*shuffled))
    assert by_content(written_shuffled) == by_content(written)


def test_a_large_enough_test_split_is_left_as_configured() -> None:
    result, _ = split_file(jsonl(*questions(400)))
    assert result.split.test >= 20
    assert result.split.test_hash_below == pytest.approx(0.1, abs=1e-4)
    codes = {w.code for w in result.warnings}
    assert not codes & {"test_split_raised", "small_test_split"}


@pytest.mark.parametrize("n", [10, 20, 50])
def test_a_dataset_too_small_for_a_test_split_gets_a_loud_warning_with_its_resolution(n: int) -> None:
    # Before: 10 examples gave 1 test example (20 gave 1) and no warning.
    result, written = split_file(jsonl(*questions(n)))
    assert result.ok
    assert result.split.test < 20
    small = warning(result, "small_test_split")
    assert small.message.startswith("WARNING")
    assert f"only {result.split.test} distinct prompts" in small.message
    assert "too few to hold out 20" in small.message
    report = render_report(result)
    assert "`small_test_split`: WARNING" in report
    assert "## Test split" in report
    if result.split.test:
        points = f"{100 / result.split.test:.1f} points"
        assert points in small.message
        assert points in report
        assert result.split.test_points_per_example == round(100 / result.split.test, 2)
    assert written["train"]


def test_the_report_states_the_resolution_of_the_test_split() -> None:
    from shared.datasets.report import accuracy_half_width

    assert accuracy_half_width(20, 0.8) == pytest.approx(0.175, abs=1e-3)
    assert accuracy_half_width(20) == pytest.approx(0.219, abs=1e-3)
    assert accuracy_half_width(100) == pytest.approx(0.098, abs=1e-3)
    result, _ = split_file(jsonl(*questions(160)))
    assert result.split.test_prompts == result.split.test
    assert result.split.test_ci95_half_width == pytest.approx(
        accuracy_half_width(result.split.test), abs=1e-3
    )
    report = render_report(result)
    assert f"With {result.split.test} test prompts one example moves an accuracy by" in report
    assert "a 95 % interval on an accuracy of 0.5 is about ±0.22" in report


def test_a_lone_example_that_hashes_into_test_stays_in_train() -> None:
    for i in range(200):
        single = jsonl(gemini(f"only one {i}", "x"))
        result, written = split_file(single)
        assert result.ok
        assert (result.split.train, len(written["train"])) == (1, 1)
        if result.split.test_hash_below == 0.0:  # the bands would have held it out
            assert "every example is in train" in warning(result, "small_test_split").message
            return
    pytest.fail("no single example hashed into a held-out band")


def test_the_validate_pass_reports_the_split_the_writing_pass_writes() -> None:
    data = jsonl(*questions(160), *[gemini(f"question number {i}?", "other") for i in range(30)])
    checked = prepare(
        io.BytesIO(data), filename="data.jsonl", options=PrepareOptions(token_counting="estimate")
    )
    final, written = split_file(data)
    assert checked == final
    assert {s: len(v) for s, v in written.items()} == {
        "train": final.split.train,
        "validation": final.split.validation,
        "test": final.split.test,
    }
    with pytest.raises(ValueError, match="split plan"):
        prepare(
            io.BytesIO(data),
            filename="x.jsonl",
            options=PrepareOptions(token_counting="estimate"),
            sink=lambda split, line: None,
        )


def test_the_split_table_gives_each_bucket_its_split() -> None:
    plans = [
        SplitPlan(0, 0, 0),
        SplitPlan(1000, 1000, 3000),
        SplitPlan(10, 50, 16384),
        SplitPlan.whole("test"),
    ]
    for plan in plans:
        assert plan.splits() == [plan.split_of(bucket) for bucket in range(BUCKETS)]

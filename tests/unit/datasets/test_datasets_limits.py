"""The training-file limit: 10^9 bytes (Vertex AI's decimal GB), held to the upload and to the
prepared training file, which is counted before anything is written."""

from __future__ import annotations

import dataclasses
import io

import orjson
import pytest
from conftest import gemini, jsonl

from shared.datasets import (
    ERROR_CODES,
    MAX_FILE_BYTES,
    MAX_TRAINING_FILE_BYTES,
    MODEL_LIMITS,
    PrepareOptions,
    check_size,
    prepare_and_write,
)

MODEL = "gemini-2.5-flash"


def test_one_gb_means_ten_to_the_ninth_bytes() -> None:
    assert MAX_TRAINING_FILE_BYTES == MAX_FILE_BYTES == 10**9
    assert all(row.max_training_file_bytes == 10**9 for row in MODEL_LIMITS.values())
    assert check_size(10**9, MODEL) is None
    issue = check_size(10**9 + 1, MODEL)
    assert issue is not None
    assert issue.code == "file_too_large"
    assert "1,000,000,000" in issue.message
    assert check_size(2**30, MODEL) is not None  # 1 GiB is over the limit


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """The training-file limit of the test model, lowered to 1,000 bytes."""
    limit = 1_000
    monkeypatch.setitem(
        MODEL_LIMITS, MODEL, dataclasses.replace(MODEL_LIMITS[MODEL], max_training_file_bytes=limit)
    )
    return limit


def _prepare(data: bytes, filename: str, **options: object) -> tuple[object, dict[str, list[bytes]]]:
    written: dict[str, list[bytes]] = {}
    result = prepare_and_write(
        lambda: io.BytesIO(data),
        filename=filename,
        size=len(data),
        options=PrepareOptions(base_model=MODEL, token_counting="estimate", **options),
        sink=lambda split, line: written.setdefault(split, []).append(line),
    )
    return result, written


def test_a_csv_that_grows_past_the_limit_when_converted_is_rejected_before_writing(small_limit: int) -> None:
    rows = "".join(f"q{i},a{i}\n" for i in range(60))
    data = f"input,output\n{rows}".encode()
    assert len(data) < small_limit  # the upload itself is well under the limit

    result, written = _prepare(data, "grows.csv")

    assert result.ok is False
    assert written == {}
    [error] = [e for e in result.errors if e.code == "training_file_too_large"]
    assert error.code in ERROR_CODES
    assert error.line == 0
    assert f"at most {small_limit:,} bytes" in error.message
    assert "prepared training file" in error.message
    assert result.error_counts == {"training_file_too_large": 1}


def test_the_limit_counts_exactly_the_bytes_written_for_the_train_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = jsonl(*(gemini(f"question {i}", f"answer {i}") for i in range(50)))
    result, written = _prepare(data, "exact.jsonl")
    assert result.ok is True
    train_bytes = sum(len(line) for line in written["train"])
    # The held-out splits are written too, and do not count.
    assert written["validation"]
    assert written["test"]
    row = MODEL_LIMITS[MODEL]

    monkeypatch.setitem(MODEL_LIMITS, MODEL, dataclasses.replace(row, max_training_file_bytes=train_bytes))
    at_limit, written_at_limit = _prepare(data, "exact.jsonl")
    assert at_limit.ok is True
    assert written_at_limit == written

    monkeypatch.setitem(
        MODEL_LIMITS, MODEL, dataclasses.replace(row, max_training_file_bytes=train_bytes - 1)
    )
    over, written_over = _prepare(data, "exact.jsonl")
    assert over.ok is False
    assert over.error_counts == {"training_file_too_large": 1}
    assert f"{train_bytes:,} bytes" in over.errors[0].message
    assert written_over == {}


def test_skip_invalid_does_not_let_an_oversized_training_file_through(small_limit: int) -> None:
    data = jsonl(*(gemini(f"question {i}", f"answer {i}") for i in range(40))) + b"not json\n"
    result, written = _prepare(data, "skip.jsonl", skip_invalid=True)
    assert result.ok is False
    assert result.error_counts["training_file_too_large"] == 1
    assert written == {}


def test_a_file_with_only_held_out_examples_is_not_held_to_the_training_limit(small_limit: int) -> None:
    data = jsonl(*(gemini(f"question {i}", f"answer {i}") for i in range(40)))
    assert len(data) > small_limit
    result, written = _prepare(data, "test.jsonl", split="test")
    assert result.ok is True, result.errors
    assert sum(len(line) for line in written["test"]) > small_limit
    assert orjson.loads(written["test"][0])["contents"][0]["parts"][0]["text"].startswith("question")

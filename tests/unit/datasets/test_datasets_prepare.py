"""The pass as a whole: duplicates, the split, strict vs skip_invalid, limits, tokens, report."""

from __future__ import annotations

import io
from typing import Any, ClassVar

import orjson
import pytest
from conftest import CONTRACT_KEYS, gemini, jsonl, run

from shared.datasets import (
    MODEL_LIMITS,
    PrepareOptions,
    SeenExamples,
    model_limits,
    prepare,
    prepare_and_write,
    render_report,
)
from shared.datasets.limits import recommend_hyperparameters
from shared.datasets.tokens import ESTIMATE_DESCRIPTION, choose_token_counter
from shared.errors import ConfigurationError


def many(n: int, prefix: str = "question") -> bytes:
    return jsonl(*[gemini(f"{prefix} number {i}?", f"answer {i}") for i in range(n)])


def test_duplicates_after_whitespace_normalisation_are_removed_and_never_split_twice() -> None:
    data = jsonl(
        gemini("hello  world", "x"),
        gemini("hello world\n", "x"),
        gemini(" hello\tworld", "x"),
        gemini("other", "y"),
    )
    result, written = run(data)
    assert result.ok
    assert (result.examples, result.duplicates) == (2, 2)
    dup = next(w for w in result.warnings if w.code == "duplicates_removed")
    assert (dup.count, dup.lines) == (2, [2, 3])
    assert sum(len(v) for v in written.values()) == 2


def test_role_and_system_are_part_of_the_duplicate_key() -> None:
    result, _ = run(jsonl(gemini("a", "b"), gemini("a", "b", system="s")))
    assert result.duplicates == 0


def test_split_is_deterministic_seeded_and_disjoint() -> None:
    data = many(3000)
    first, written = run(data)
    again, written_again = run(data)
    assert written == written_again
    assert first.split == again.split
    counts = first.split
    assert counts.train + counts.validation + counts.test == 3000
    assert 200 < counts.validation < 400
    assert 200 < counts.test < 400
    keys = [{orjson.dumps(r) for r in written[s]} for s in ("train", "validation", "test")]
    assert not (keys[0] & keys[1])
    assert not (keys[0] & keys[2])
    assert not (keys[1] & keys[2])
    _other_seed, written_other = run(data, split_seed=7)
    assert written_other["test"] != written["test"]


def test_tiny_files_keep_a_training_split_and_say_the_test_split_is_too_small() -> None:
    # The split is the prompt hash's alone (no "seen so far" guard), so a tiny file may hold an
    # example out; it never holds out all of them, and the report says its test split is useless.
    for n in range(1, 6):
        result, written = run(many(n))
        assert result.ok, (n, result.errors)
        assert result.split.train >= 1
        assert result.split.train + result.split.validation + result.split.test == n
        assert sum(len(v) for v in written.values()) == n
        assert "small_test_split" in {w.code for w in result.warnings}


def test_held_out_splits_are_capped_by_the_model_validation_limit() -> None:
    result, _ = run(many(4000), base_model="gemini-1.5-flash-002", validation_fraction=0.3, test_fraction=0.3)
    assert result.ok
    assert result.split.validation == 256
    assert result.split.test == 256
    assert result.split.train == 4000 - 512
    assert "validation_capped" in {w.code for w in result.warnings}


def test_a_file_given_as_validation_over_the_limit_is_rejected() -> None:
    result, _ = run(many(300), base_model="gemini-1.5-pro", split="validation")
    assert result.error_counts == {"too_many_validation_examples": 1}


def test_strict_prepare_and_write_writes_nothing_for_a_bad_file() -> None:
    data = many(50) + b"not json\n" + many(10, prefix="late")
    calls: list[str] = []
    result = prepare_and_write(
        lambda: io.BytesIO(data),
        filename="x.jsonl",
        options=PrepareOptions(token_counting="estimate"),
        sink=lambda split, line: calls.append(split),
    )
    assert not result.ok
    assert calls == []
    assert [(e.line, e.code) for e in result.errors] == [(51, "invalid_json")]
    assert result.examples == 0
    assert result.valid_examples == 60


def test_prepare_and_write_writes_everything_for_a_good_file() -> None:
    data = many(120)
    lines: list[bytes] = []
    opened: list[int] = []

    def open_stream() -> io.BytesIO:
        opened.append(1)
        return io.BytesIO(data)

    result = prepare_and_write(
        open_stream,
        filename="x.jsonl",
        options=PrepareOptions(token_counting="estimate"),
        sink=lambda split, line: lines.append(line),
    )
    assert result.ok
    assert len(opened) == 2
    assert len(lines) == result.examples == 120


def test_skip_invalid_reports_and_skips() -> None:
    data = many(3) + b'{"contents": "x"}\n' + many(2, prefix="more")
    result, written = run(data, skip_invalid=True)
    assert result.ok
    assert result.rejected == 1
    assert result.examples == 5
    assert sum(len(v) for v in written.values()) == 5
    assert [(e.line, e.code) for e in result.errors] == [(4, "missing_contents_list")]


def test_error_list_is_capped_but_counts_are_not() -> None:
    data = b"".join(b"{bad\n" for _ in range(30)) + many(1)
    result, _ = run(data, max_errors_listed=5)
    assert len(result.errors) == 5
    assert result.errors_truncated
    assert result.error_counts == {"invalid_json": 30}
    assert "errors_truncated" in {w.code for w in result.warnings}


def test_too_many_tokens_per_model() -> None:
    long_text = "word " * 40_000  # 200,000 bytes: about 50,000 estimated tokens
    data = jsonl(gemini(long_text, "ok"), gemini("short", "ok"))
    small, _ = run(data, base_model="gemini-1.5-pro-002")
    assert [(e.line, e.code) for e in small.errors] == [(1, "too_many_tokens")]
    assert "32,000" in small.errors[0].message
    large, _ = run(data, base_model="gemini-2.5-flash")
    assert large.ok


def test_too_many_file_parts() -> None:
    image = {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/i.png"}}
    record = {
        "contents": [
            {"role": "user", "parts": [{"text": "x"}] + [image] * 31},
            {"role": "model", "parts": [{"text": "y"}]},
        ]
    }
    result, _ = run(jsonl(record, gemini("a", "b")))
    assert result.error_counts == {"too_many_files": 1}


def test_examples_shared_between_split_files_are_errors() -> None:
    seen = SeenExamples()
    options = PrepareOptions(token_counting="estimate", split="train")
    first = prepare(io.BytesIO(many(20)), filename="train.jsonl", options=options, seen=seen)
    # a second pass over the same file (validate, then write) is not a conflict
    again = prepare(io.BytesIO(many(20)), filename="train.jsonl", options=options, seen=seen)
    val_data = jsonl(gemini("question number 3?", "answer 3"), gemini("fresh", "one"))
    val = prepare(
        io.BytesIO(val_data),
        filename="val.jsonl",
        options=options.model_copy(update={"split": "validation"}),
        seen=seen,
    )
    assert first.ok
    assert again.ok
    assert [(e.line, e.code) for e in val.errors] == [(1, "example_in_multiple_splits")]
    assert val.split.validation == 1


def test_token_statistics_and_method() -> None:
    result, _ = run(jsonl(gemini("a" * 400, "b" * 400), gemini("c" * 40, "d" * 40)))
    t = result.tokens
    assert t.method == "estimate"
    assert t.description == ESTIMATE_DESCRIPTION
    # (UTF-8 bytes of texts and role names + 3) // 4 + 3 per turn
    small = (len("user\x1e" + "c" * 40 + "\x1emodel\x1e" + "d" * 40) + 3) // 4 + 6
    assert t.min == small
    assert t.total == t.min + t.max
    assert t.p50 == small
    assert t.p95 == t.max


class _FakeTokenizer:
    def __init__(self, model: str) -> None:
        self.model = model

    def count_tokens(self, contents: Any, config: Any = None) -> Any:
        texts = [contents] if isinstance(contents, str) else [p["text"] for c in contents for p in c["parts"]]
        if config:
            texts += [p["text"] for p in config["system_instruction"]["parts"]]
        return type("Result", (), {"total_tokens": sum(len(t.split()) for t in texts)})()


class _RecordingTokenizer(_FakeTokenizer):
    calls: ClassVar[list[tuple[Any, Any]]] = []

    def count_tokens(self, contents: Any, config: Any = None) -> Any:
        self.calls.append((contents, config))
        return type("Result", (), {"total_tokens": 7})()


def test_exact_counting_counts_function_calls_results_and_declarations() -> None:
    tools = [{"functionDeclarations": [{"name": "f"}]}]
    record = {
        "tools": tools,
        "contents": [
            {"role": "user", "parts": [{"text": "call f"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
        ],
    }
    _RecordingTokenizer.calls = []
    options = PrepareOptions(token_counting="auto")
    prepare(
        io.BytesIO(jsonl(record)), filename="x.jsonl", options=options, tokenizer_factory=_RecordingTokenizer
    )
    contents, config = _RecordingTokenizer.calls[-1]
    assert contents[1]["parts"] == [{"functionCall": {"name": "f", "args": {}}}]
    assert config == {"tools": tools}


def _broken_tokenizer(model: str) -> Any:
    raise OSError("cannot download the tokenizer model: network unreachable")


def test_exact_counting_when_the_tokenizer_works() -> None:
    options = PrepareOptions(token_counting="auto")
    data = jsonl(gemini("one two three", "four five", system="six"))
    result = prepare(io.BytesIO(data), filename="x.jsonl", options=options, tokenizer_factory=_FakeTokenizer)
    assert result.tokens.method == "exact"
    assert result.tokens.fallback_reason is None
    assert result.tokens.total == 6
    assert "tokens_estimated" not in {w.code for w in result.warnings}


def test_fallback_to_the_estimate_says_why() -> None:
    options = PrepareOptions(token_counting="auto")
    result = prepare(
        io.BytesIO(many(2)), filename="x.jsonl", options=options, tokenizer_factory=_broken_tokenizer
    )
    assert result.tokens.method == "estimate"
    assert result.tokens.fallback_reason is not None
    assert "network unreachable" in result.tokens.fallback_reason
    with pytest.raises(ConfigurationError):
        choose_token_counter(model_limits("gemini-2.5-flash"), "exact", _broken_tokenizer)
    no_tokenizer = choose_token_counter(model_limits("gemini-1.5-pro"), "auto", _FakeTokenizer)
    assert no_tokenizer.counter.method == "estimate"
    assert "no local tokenizer" in (no_tokenizer.fallback_reason or "")


def test_unknown_base_model_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        model_limits("gemini-0.1-tiny")
    assert caught.value.code == "unknown_base_model"
    assert caught.value.field == "base_model"
    assert "gemini-2.5-flash" in caught.value.message
    assert model_limits("publishers/google/models/gemini-2.0-flash") is MODEL_LIMITS["gemini-2.0-flash-001"]


def test_recommendations_follow_the_best_practices_table() -> None:
    pro = recommend_hyperparameters(model_limits("gemini-1.5-pro-002"), 500, 200)
    assert (pro.epochs, pro.learning_rate_multiplier, pro.adapter_size) == (20, 10.0, 4)
    pro_big = recommend_hyperparameters(model_limits("gemini-1.5-pro-002"), 5000, 200)
    assert (pro_big.epochs, pro_big.learning_rate_multiplier, pro_big.adapter_size) == (10, 5.0, 4)
    flash = recommend_hyperparameters(model_limits("gemini-1.5-flash-002"), 500, 200)
    assert (flash.epochs, flash.learning_rate_multiplier, flash.adapter_size) == (None, 10.0, 4)
    flash_big = recommend_hyperparameters(model_limits("gemini-1.5-flash-002"), 500, 800)
    assert (flash_big.epochs, flash_big.learning_rate_multiplier, flash_big.adapter_size) == (None, None, 8)
    assert (
        "applied to gemini-2.5-flash"
        in recommend_hyperparameters(model_limits("gemini-2.5-flash"), 1, 1).basis
    )


def test_cost_uses_training_tokens_times_epochs_and_the_price_table() -> None:
    result, _ = run(
        many(200), base_model="gemini-2.5-flash", hyperparameters={"epochs": 3}, price_per_m_tokens=5.0
    )
    train_tokens = result.estimated_cost.billable_tokens // 3
    assert result.estimated_cost.epochs == 3
    assert result.estimated_cost.epochs_source == "given"
    assert 0 < train_tokens < result.tokens.total
    assert result.estimated_cost.usd == round(result.estimated_cost.billable_tokens / 1e6 * 5.0, 2)
    assert result.hyperparameters.epochs == 3
    assert result.recommended.epochs is None


def test_the_cost_estimate_prices_the_baseline_on_the_test_split() -> None:
    from shared.datasets.prepare import BASELINE_OUTPUT_MARGIN_TOKENS
    from shared.datasets.report import render_report
    from shared.evaluation.runner import OUTPUT_MARGIN_TOKENS
    from shared.pricing import inference_usd

    assert BASELINE_OUTPUT_MARGIN_TOKENS == OUTPUT_MARGIN_TOKENS  # the evaluation's output budget
    result, _ = run(many(200), base_model="gemini-2.5-flash")
    cost = result.estimated_cost
    test_examples = result.split.test
    assert test_examples > 0
    assert cost.baseline_calls == test_examples
    assert 0 < cost.baseline_input_tokens < result.tokens.total
    output = 2 * cost.baseline_input_tokens + 16 * test_examples
    assert cost.baseline_usd == inference_usd("gemini-2.5-flash", cost.baseline_input_tokens, output)
    assert f"{test_examples} calls of the base model" in render_report(result)
    unpriced, _ = run(many(200), base_model="gemini-2.5-pro")
    assert unpriced.estimated_cost.baseline_calls > 0


def test_task_given_or_inferred() -> None:
    labels = jsonl(*[gemini(f"review {i}", ["pos", "neg"][i % 2]) for i in range(20)])
    inferred, _ = run(labels)
    assert inferred.task is not None
    assert (inferred.task.value, inferred.task.source) == (
        "classification",
        "inferred",
    )
    given, _ = run(labels, task="generation")
    assert given.task is not None
    assert (given.task.value, given.task.source) == ("generation", "given")
    free, _ = run(many(10))
    assert free.task is not None
    assert free.task.value == "generation"


def test_json_contract_and_readable_report() -> None:
    result, _ = run(many(3) + b"oops\n")
    body = result.model_dump(mode="json")
    assert set(body) >= CONTRACT_KEYS
    assert set(body["tokens"]) >= {"total", "min", "max", "mean", "p50", "p95", "method"}
    assert set(body["split"]) >= {"train", "validation", "test"}
    assert body["errors"] == [
        {"line": 4, "field": "", "code": "invalid_json", "message": body["errors"][0]["message"]}
    ]
    text = render_report(result)
    assert "REJECTED" in text
    assert "| 4 |" in text
    assert "invalid_json" in text
    assert "estimate" in text

"""Preference and label data: each kind is its own shape, rejected by default with a code that
says what the file is; ``preference_mode: chosen`` tunes on the preferred answers only, and no
rejected or undesirable answer ever reaches a written split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import jsonl, run

from shared.cli import main
from shared.cli import submit as submit_cli
from shared.config import Settings
from shared.datasets import (
    PrepareOptions,
    PrepareResult,
    UploadSettingsError,
    load_manifest,
    parse_object_metadata,
    render_report,
)
from shared.datasets.convert import detect_shape
from shared.datasets.issues import DatasetWarning

#: Every rejected answer below holds this marker; none may appear in any written split.
REJECTED = "REJECTED-ANSWER"


def _chat(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def sharegpt_pair(i: int) -> dict[str, Any]:
    return {
        "conversations": [{"from": "human", "value": f"question {i}"}],
        "chosen": {"from": "gpt", "value": f"good answer {i}"},
        "rejected": {"from": "gpt", "value": f"{REJECTED} {i}"},
    }


def openai_pair(i: int) -> dict[str, Any]:
    return {
        "input": {
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q {i}"}]
        },
        "preferred_output": [{"role": "assistant", "content": f"good answer {i}"}],
        "non_preferred_output": [{"role": "assistant", "content": f"{REJECTED} {i}"}],
    }


def messages_pair(i: int) -> dict[str, Any]:
    return {
        "chosen_messages": _chat(f"q {i}", f"good answer {i}"),
        "rejected_messages": _chat(f"q {i}", f"{REJECTED} {i}"),
    }


def vertex_pair(i: int) -> dict[str, Any]:
    def completion(score: int, text: str) -> dict[str, Any]:
        return {"score": score, "completion": {"role": "model", "parts": [{"text": text}]}}

    return {
        "contents": [{"role": "user", "parts": [{"text": f"q {i}"}]}],
        "completions": [completion(0, f"{REJECTED} {i}"), completion(1, f"good answer {i}")],
    }


def trl_pair(i: int) -> dict[str, Any]:
    return {"prompt": f"q {i}", "chosen": f"good answer {i}", "rejected": f"{REJECTED} {i}"}


def kto(i: int) -> dict[str, Any]:
    good = i % 2 == 0
    return {"messages": _chat(f"q {i}", f"good answer {i}" if good else f"{REJECTED} {i}"), "label": good}


def sharegpt_kto(i: int) -> dict[str, Any]:
    good = i % 2 == 0
    turns = [{"from": "human", "value": f"q {i}"}, {"from": "gpt", "value": "good" if good else REJECTED}]
    return {"conversations": turns, "label": good}


PAIRS = {
    "sharegpt_preference": (sharegpt_pair, "rejected", "DPO preference pairs in ShareGPT style"),
    "openai_preference": (openai_pair, "non_preferred_output", "OpenAI preference fine-tuning data"),
    "chosen_rejected_messages": (messages_pair, "rejected_messages", "chosen_messages + rejected_messages"),
    "vertex_preference": (vertex_pair, "completions", "Vertex AI preference tuning data"),
    "trl_preference": (trl_pair, "rejected", "DPO preference pairs in TRL style"),
}


def _warning(result: PrepareResult, code: str) -> DatasetWarning:
    return next(w for w in result.warnings if w.code == code)


def _written_text(written: dict[str, list[dict[str, Any]]]) -> str:
    return orjson.dumps(written).decode()


@pytest.mark.parametrize(
    ("record", "shape"),
    [
        (sharegpt_pair(1), "sharegpt_preference"),
        (openai_pair(1), "openai_preference"),
        (messages_pair(1), "chosen_rejected_messages"),
        (vertex_pair(1), "vertex_preference"),
        (trl_pair(1), "trl_preference"),
        (kto(1), "openai_chat_kto"),
        (sharegpt_kto(1), "sharegpt_kto"),
        # without a boolean label, chat is chat (a classification label is not KTO)
        ({"messages": _chat("q", "a"), "label": "positive"}, "openai_chat"),
        # a flag named rejected is not a pair
        ({"conversations": sharegpt_kto(0)["conversations"], "rejected": False}, "sharegpt"),
    ],
)
def test_each_kind_of_preference_data_has_its_own_shape(record: dict[str, Any], shape: str) -> None:
    assert detect_shape(record) == shape


@pytest.mark.parametrize("shape", sorted(PAIRS))
def test_pairs_are_rejected_by_default_naming_the_kind_and_the_way_out(shape: str) -> None:
    make, field, kind = PAIRS[shape]
    result, written = run(jsonl(*(make(i) for i in range(3))))

    assert not result.ok
    assert result.shape == shape
    assert result.error_counts["unsupported_preference_pairs"] == 3
    first = result.errors[0]
    assert (first.line, first.field, first.code) == (1, field, "unsupported_preference_pairs")
    assert kind in first.message
    assert "preference_mode: chosen" in first.message
    assert REJECTED not in _written_text(written)
    assert "upload it with preference_mode: chosen" in render_report(result)


@pytest.mark.parametrize("shape", sorted(PAIRS))
def test_preference_mode_chosen_tunes_on_the_preferred_answers_only(shape: str) -> None:
    make, _, _ = PAIRS[shape]
    records = [make(i) for i in range(60)]
    result, written = run(jsonl(*records), preference_mode="chosen")

    assert result.ok, result.errors
    assert result.examples == 60
    assert all(written.values()), "every split gets examples"
    assert REJECTED not in _written_text(written)
    answers = {r["contents"][-1]["parts"][0]["text"] for split in written.values() for r in split}
    assert answers == {f"good answer {i}" for i in range(60)}
    warning = _warning(result, "rejected_answers_dropped")
    assert warning.count == 60
    assert "60 rejected answers were dropped" in warning.message
    assert "rejected answers were dropped" in render_report(result)
    assert "unknown_keys_dropped" not in {w.code for w in result.warnings}


def test_the_openai_preference_system_message_and_prompt_are_kept() -> None:
    result, written = run(jsonl(openai_pair(7)), preference_mode="chosen", split="train")

    assert result.ok, result.errors
    assert written["train"] == [
        {
            "systemInstruction": {"role": "system", "parts": [{"text": "be brief"}]},
            "contents": [
                {"role": "user", "parts": [{"text": "q 7"}]},
                {"role": "model", "parts": [{"text": "good answer 7"}]},
            ],
        }
    ]


def test_keys_a_pair_does_not_convert_are_named_where_the_source_has_them() -> None:
    record = messages_pair(1)
    record["chosen_messages"][0]["name"] = "ann"
    record["id"] = 7
    openai = openai_pair(2)
    openai["input"]["parallel_tool_calls"] = True
    for rows, expected in (
        ([record], {"chosen_messages[].name", "id"}),
        ([openai], {"input.parallel_tool_calls"}),
    ):
        result, _ = run(jsonl(*rows), preference_mode="chosen")
        assert {item.name for item in _warning(result, "unknown_keys_dropped").items} == expected


def test_the_vertex_completion_with_the_highest_score_is_the_answer() -> None:
    record = vertex_pair(1)
    record["completions"].append({"score": 0.5, "completion": {"role": "model", "parts": [{"text": "meh"}]}})
    result, written = run(jsonl(record), preference_mode="chosen", split="train")

    assert [r["contents"][-1]["parts"][0]["text"] for r in written["train"]] == ["good answer 1"]
    assert "2 rejected answers were dropped" in _warning(result, "rejected_answers_dropped").message


def test_kto_label_false_is_rejected_by_default_at_its_line() -> None:
    result, written = run(jsonl(*(kto(i) for i in range(6))))

    assert not result.ok
    assert result.shape == "openai_chat_kto"
    assert result.error_counts == {"kto_labels_present": 3}
    assert [(e.line, e.field) for e in result.errors] == [(2, "label"), (4, "label"), (6, "label")]
    assert "KTO" in result.errors[0].message
    assert "preference_mode: chosen" in result.errors[0].message
    assert REJECTED not in _written_text(written)


@pytest.mark.parametrize("setting", [{"preference_mode": "chosen"}, {"skip_invalid": True}])
@pytest.mark.parametrize("make", [kto, sharegpt_kto])
def test_kto_label_false_examples_are_dropped_and_counted(setting: dict[str, Any], make: Any) -> None:
    result, written = run(jsonl(*(make(i) for i in range(10))), **setting)

    assert result.ok, result.errors
    assert result.examples == 5
    assert result.errors == []
    warning = _warning(result, "undesirable_examples_dropped")
    assert (warning.count, warning.lines) == (5, [2, 4, 6, 8, 10])
    assert warning.message.startswith("5 KTO examples labelled false")
    assert "lines 2, 4, 6, 8, 10" in warning.message
    assert REJECTED not in _written_text(written)
    # the label is read, not dropped: no generic warning about it
    assert "unknown_keys_dropped" not in {w.code for w in result.warnings}
    assert "label" not in _written_text(written)


def test_kto_records_in_a_chat_file_are_still_read_for_their_label() -> None:
    records = [{"messages": _chat("first", "plain chat")}, kto(1), kto(2)]
    result, written = run(jsonl(*records), preference_mode="chosen", split="train")

    assert result.ok, result.errors
    assert result.examples == 2
    assert _warning(result, "undesirable_examples_dropped").lines == [2]
    assert REJECTED not in _written_text(written)


@pytest.mark.parametrize(
    ("record", "field", "code"),
    [
        ({**sharegpt_pair(1), "chosen": None}, "chosen", "invalid_preference_pair"),
        (
            {k: v for k, v in sharegpt_pair(1).items() if k != "rejected"},
            "rejected",
            "invalid_preference_pair",
        ),
        ({**sharegpt_pair(1), "chosen": "just text"}, "chosen", "invalid_preference_pair"),
        (
            {**sharegpt_pair(1), "chosen": {"from": "human", "value": "x"}},
            "chosen.from",
            "invalid_preference_pair",
        ),
        (
            {**sharegpt_pair(1), "rejected": {"from": "gpt", "value": "  "}},
            "rejected.value",
            "invalid_preference_pair",
        ),
        (
            {**openai_pair(1), "preferred_output": {"role": "assistant"}},
            "preferred_output",
            "invalid_preference_pair",
        ),
        ({**openai_pair(1), "input": "q"}, "input", "invalid_preference_pair"),
        (
            {**openai_pair(1), "preferred_output": [{"role": "assistant", "content": ""}]},
            "preferred_output[0].content",
            "missing_content",
        ),
        (
            {**openai_pair(1), "input": {"messages": [{"role": "user"}]}},
            "input.messages[0].content",
            "message_missing_key",
        ),
        ({**messages_pair(1), "rejected_messages": []}, "rejected_messages", "invalid_preference_pair"),
        (
            {**messages_pair(1), "chosen_messages": [{"role": "user", "content": "q"}]},
            "chosen_messages",
            "example_missing_assistant_message",
        ),
        (
            {**vertex_pair(1), "completions": [{"score": "high", "completion": {}}, {"score": 0}]},
            "completions[0].score",
            "invalid_preference_pair",
        ),
        (
            {**vertex_pair(1), "completions": [vertex_pair(1)["completions"][1]] * 2},
            "completions",
            "invalid_preference_pair",
        ),
        ({**kto(2), "label": "yes"}, "label", "invalid_preference_pair"),
        ({**trl_pair(1), "rejected": None}, "rejected", "invalid_preference_pair"),
        ({**trl_pair(1), "chosen": "  "}, "chosen", "invalid_preference_pair"),
        (
            {"chosen": "Human: hi Assistant: hello", "rejected": "Human: hi Assistant: go"},
            "prompt",
            "invalid_preference_pair",
        ),
        (
            {
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": [{"role": "assistant"}],
                "rejected": "x",
            },
            "chosen[0].content",
            "message_missing_key",
        ),
        (
            {**trl_pair(1), "prompt": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}]},
            "prompt[1].role",
            "consecutive_turns",
        ),
    ],
)
def test_a_malformed_pair_is_located(record: dict[str, Any], field: str, code: str) -> None:
    # The first record decides the shape; the malformed one is the second line.
    first = {**record, "label": True} if "label" in record else None
    good = {
        "conversations": sharegpt_pair,
        "input": openai_pair,
        "chosen_messages": messages_pair,
        "contents": vertex_pair,
        "chosen": trl_pair,
    }
    maker = next((make for key, make in good.items() if key in record), kto)
    result, written = run(jsonl(first or maker(0), record), preference_mode="chosen")

    assert not result.ok
    assert [(e.line, e.field, e.code) for e in result.errors] == [(2, field, code)]
    assert REJECTED not in _written_text(written)


@pytest.mark.parametrize(
    "record",
    [
        # conversational: the prompt and each answer as messages
        {
            "prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q 1"}],
            "chosen": [{"role": "assistant", "content": "good answer 1"}],
            "rejected": [{"role": "assistant", "content": f"{REJECTED} 1"}],
        },
        # each answer the whole conversation (UltraFeedback-binarized); prompt is its copy
        {
            "prompt": "q 1",
            "chosen": [{"role": "system", "content": "be brief"}, *_chat("q 1", "good answer 1")],
            "rejected": _chat("q 1", f"{REJECTED} 1"),
        },
    ],
)
def test_trl_pairs_as_messages_keep_the_prompt_and_the_chosen_answer(record: dict[str, Any]) -> None:
    result, written = run(jsonl(record, trl_pair(2)), preference_mode="chosen")

    assert result.ok, result.errors
    assert result.shape == "trl_preference"
    first = next(r for split in written.values() for r in split if "q 1" in orjson.dumps(r).decode())
    assert first["systemInstruction"]["parts"] == [{"text": "be brief"}]
    assert [c["parts"][0]["text"] for c in first["contents"]] == ["q 1", "good answer 1"]
    assert REJECTED not in _written_text(written)


def test_other_chosen_rejected_forms_are_rejected_even_with_preference_mode_chosen() -> None:
    records = [{"messages": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": REJECTED}]
    result, written = run(jsonl(*records), preference_mode="chosen")

    assert result.errors[0].code == "unsupported_preference_pairs"
    assert result.errors[0].field == "chosen"
    assert REJECTED not in _written_text(written)


def test_preference_mode_is_an_upload_setting() -> None:
    assert PrepareOptions.from_settings(Settings()).preference_mode == "reject"
    upload = parse_object_metadata({"x-goog-meta-preference-mode": "Chosen"})
    assert PrepareOptions.from_settings(Settings(), upload).preference_mode == "chosen"
    manifest = load_manifest(b"train: datasets/a.jsonl\npreference_mode: chosen\n", "run.tuning.yaml")
    assert PrepareOptions.from_settings(Settings(), manifest).preference_mode == "chosen"
    with pytest.raises(UploadSettingsError) as caught:
        parse_object_metadata({"preference-mode": "both"})
    assert caught.value.field == "preference-mode"


def test_sftpipe_validate_takes_preference_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(jsonl(*(sharegpt_pair(i) for i in range(30))))
    out = tmp_path / "out"

    assert main(["validate", str(path), "--tokens", "estimate", "--json"]) == 1
    capsys.readouterr()
    code = main(
        [
            "validate",
            str(path),
            "--tokens",
            "estimate",
            "--preference-mode",
            "chosen",
            "--json",
            "--out",
            str(out),
        ]
    )

    result = json.loads(capsys.readouterr().out)
    assert (code, result["examples"]) == (0, 30)
    assert all(
        REJECTED not in (out / f"{split}.jsonl").read_text() for split in ("train", "validation", "test")
    )


def test_sftpipe_submit_sends_preference_mode_as_metadata() -> None:
    parser = argparse.ArgumentParser()
    submit_cli.add_arguments(parser)
    args = parser.parse_args(["data.jsonl", "--preference-mode", "chosen"])

    metadata = submit_cli.upload_metadata(args)

    assert metadata["preference-mode"] == "chosen"
    assert parse_object_metadata(metadata).preference_mode == "chosen"

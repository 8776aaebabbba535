"""How the local trainer fits examples into its context and what it measures (no service, no
training run: the data functions with the tiny model's real tokenizer, built offline).

Before: a conversation longer than the context was cut from the right, so a long prompt lost every
answer token (labels all -100, loss NaN, and one such batch made the epoch's validation loss NaN,
written into metrics.jsonl as a non-standard ``NaN`` literal); validation truncation was not
counted; next-step accuracy was two-thirds end-of-turn and newline tokens on one-word answers.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from local.tuning import data, models
from local.tuning.jobs import JobStore
from local.tuning.trainer import TokenStats, Trainer, evaluate, next_token_stats

CONTEXT = models.LOCAL_MODELS["tiny"].max_sequence_tokens  # 256
SYSTEM = "Classify the sentiment of the review. Answer with one word."
LONG_REVIEW = " ".join(f"The soup number {i} was delicious and the service was lovely." for i in range(200))


def _example(prompt: str, answer: str, system: str | None = SYSTEM) -> data.Example:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return data.Example(messages=tuple(messages))


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    texts = [SYSTEM, LONG_REVIEW, "positive", "negative", "Great food.", "Awful food."]
    return models.train_tiny_tokenizer(texts)


def _labelled(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode([i for i in ids if i != data.IGNORE_INDEX])


def test_a_prompt_longer_than_the_context_loses_its_start_and_keeps_its_answer(tokenizer: Any) -> None:
    example = _example(LONG_REVIEW, "positive")
    whole = len(data._render_ids(tokenizer, example.messages, prompt=False))

    tokenized = data.tokenize_example(tokenizer, example, CONTEXT)

    assert whole > 4 * CONTEXT
    assert tokenized.truncated
    assert len(tokenized.input_ids) == len(tokenized.labels) == CONTEXT
    # Before: the window was the first 256 tokens, and every label was -100.
    assert _labelled(tokenizer, tokenized.labels) == "positive<|im_end|>\n"
    assert tokenizer.decode(tokenized.input_ids).endswith("<|im_start|>assistant\npositive<|im_end|>\n")
    # The answer's first token is predicted from the token before it, which the window keeps.
    assert tokenized.labels[0] == data.IGNORE_INDEX


def test_a_long_prompt_example_has_a_finite_loss_on_its_answer(tokenizer: Any) -> None:
    torch.manual_seed(0)
    model = models.new_tiny_model(len(tokenizer))
    prepared = data.prepare_dataset(tokenizer, [_example(LONG_REVIEW, "positive")], CONTEXT)
    batch = data.collate(prepared.examples, tokenizer.pad_token_id)

    with torch.no_grad():
        loss = model(**data.model_inputs(batch)).loss

    assert math.isfinite(float(loss))
    assert int((batch["labels"] != data.IGNORE_INDEX).sum()) > 0


def test_an_answer_longer_than_the_context_is_dropped_and_counted(tokenizer: Any) -> None:
    examples = [
        _example("Great food.", "positive"),
        _example("Summarise this.", LONG_REVIEW),  # the answer alone is over 256 tokens
        _example(LONG_REVIEW, "positive"),
        _example("Awful food.", "negative"),
    ]

    prepared = data.prepare_dataset(tokenizer, examples, CONTEXT)
    stats = prepared.stats()

    assert len(prepared.examples) == 3
    assert prepared.truncated_indices == [2]
    assert [d.index for d in prepared.dropped] == [1]
    assert stats["exampleCount"] == 4
    assert stats["totalTruncatedExampleCount"] == 1
    assert stats["truncatedExampleIndices"] == [2]
    assert stats["droppedExampleCount"] == 1
    [reason] = stats["droppedExampleReasons"]
    assert reason.startswith("example 1: answer_too_long: the model turn needs ")
    assert "context holds 256" in reason
    with pytest.raises(data.AnswerTooLongError):
        data.tokenize_example(tokenizer, examples[1], CONTEXT)


def test_an_answer_that_just_fits_with_the_token_before_it_is_kept(tokenizer: Any) -> None:
    example = _example(LONG_REVIEW, "positive")
    whole = data._render_ids(tokenizer, example.messages, prompt=False)
    answer_start = len(data._render_ids(tokenizer, example.messages[:-1], prompt=True))
    needed = len(whole) - answer_start + 1

    kept = data.tokenize_example(tokenizer, example, needed)
    with pytest.raises(data.AnswerTooLongError):
        data.tokenize_example(tokenizer, example, needed - 1)

    assert _labelled(tokenizer, kept.labels) == "positive<|im_end|>\n"


def test_content_labels_leave_out_end_of_turn_and_newline_tokens(tokenizer: Any) -> None:
    tokenized = data.tokenize_example(tokenizer, _example("Great food.", "positive"), CONTEXT)

    labelled = [i for i in tokenized.labels if i != data.IGNORE_INDEX]
    content = [i for i in tokenized.content_labels if i != data.IGNORE_INDEX]

    assert tokenizer.decode(content) == "positive"
    template = [tokenizer.decode([i]) for i in labelled if i not in content]
    assert template == ["<|im_end|>", "\n"]
    # Before: accuracy counted all labelled tokens, of which these two template tokens are most.
    assert len(template) / len(labelled) >= 2 / 3


def test_next_step_accuracy_is_over_content_tokens_and_all_tokens_is_reported_apart(tokenizer: Any) -> None:
    tokenized = data.tokenize_example(tokenizer, _example("Great food.", "positive"), CONTEXT)
    batch = data.collate([tokenized], tokenizer.pad_token_id)
    labels = batch["labels"][0]
    content = batch["content_labels"][0]
    # A model that has learnt only the template: right on end-of-turn and newline, wrong on the word.
    logits = torch.zeros((1, len(labels), len(tokenizer)))
    for position in range(1, len(labels)):
        target = int(labels[position])
        if target == data.IGNORE_INDEX:
            continue
        wrong = tokenizer.convert_tokens_to_ids("<|pad|>")
        logits[0, position - 1, wrong if int(content[position]) != data.IGNORE_INDEX else target] = 1.0

    stats = TokenStats()
    stats.add(logits, batch, loss=1.0)
    values = stats.values()

    assert values["accuracy"] == 0.0  # every content token wrong
    assert values["accuracyAllTokens"] == pytest.approx(2 / values["predictionsAllTokens"])
    assert values["predictions"] == values["predictionsAllTokens"] - 2
    assert next_token_stats(logits, batch["content_labels"]) == (0, values["predictions"])


def test_a_batch_without_labelled_tokens_adds_no_nan(tokenizer: Any) -> None:
    torch.manual_seed(0)
    model = models.new_tiny_model(len(tokenizer))
    good = data.tokenize_example(tokenizer, _example("Great food.", "positive"), CONTEXT)
    # What the old right-truncation produced for a long prompt: no label left.
    empty = data.TokenizedExample(good.input_ids, [data.IGNORE_INDEX] * len(good.input_ids), True)
    pad = tokenizer.pad_token_id

    mixed = evaluate(model, [empty, good], batch_size=1, pad_id=pad, device=torch.device("cpu"))
    nothing = evaluate(model, [empty], batch_size=1, pad_id=pad, device=torch.device("cpu"))

    assert math.isfinite(mixed["loss"])
    assert mixed["skippedBatches"] == 1
    assert "loss" not in nothing
    assert "accuracy" not in nothing
    assert nothing["predictions"] == 0
    json.dumps(mixed, allow_nan=False)
    json.dumps(nothing, allow_nan=False)


def test_the_trainer_refuses_to_write_nan() -> None:
    events = io.StringIO()
    trainer = Trainer(Path("."), events)

    with pytest.raises(ValueError, match="not JSON compliant"):
        trainer.emit("eval", step=1, epoch=1, loss=float("nan"))
    trainer.emit("eval", step=1, epoch=1, predictions=0)

    assert json.loads(events.getvalue()) == {"event": "eval", "step": 1, "epoch": 1, "predictions": 0}


class _Process:
    def __init__(self, lines: list[str]) -> None:
        self.stdout = io.StringIO("".join(line + "\n" for line in lines))


def test_the_service_records_no_nan_and_the_counts_of_both_splits(tmp_path: Path) -> None:
    store = JobStore(tmp_path, "tiny", 1)
    job_id = "1"
    store.job_dir(job_id).mkdir(parents=True)
    store._jobs[job_id] = {
        "name": f"projects/p/locations/l/tuningJobs/{job_id}",
        "state": "JOB_STATE_RUNNING",
        "localTuning": {"training": {"epochs": 1}},
    }
    training = {
        "exampleCount": 4,
        "totalTruncatedExampleCount": 1,
        "truncatedExampleIndices": [2],
        "droppedExampleCount": 1,
        "droppedExampleReasons": ["example 1: answer_too_long: ..."],
    }
    validation = {**training, "exampleCount": 2, "truncatedExampleIndices": [0], "droppedExampleCount": 0}
    started = {
        "event": "started",
        "device": "cpu",
        "setupSeconds": 0.1,
        "trainingExamples": 4,
        "validationExamples": 2,
        "truncatedExamples": 1,
        "trainingDataStats": training,
        "validationDataStats": validation,
        "datasetTokens": 100,
        "stepsPerEpoch": 1,
        "totalSteps": 1,
    }
    step = {"event": "step", "step": 1, "epoch": 1, "loss": 2.5, "accuracy": 0.5, "predictions": 4}
    step |= {"accuracyAllTokens": 0.75, "predictionsAllTokens": 12, "tokens": 40, "seconds": 0.01}
    # An older trainer's NaN literal, and an epoch whose loss was left out (no labelled token).
    nan_eval = '{"event": "eval", "step": 1, "epoch": 1, "loss": NaN, "predictions": 0}'
    empty_eval = {"event": "eval", "step": 1, "epoch": 1, "predictions": 0, "predictionsAllTokens": 0}

    store._follow(job_id, _Process([json.dumps(started), json.dumps(step), nan_eval, json.dumps(empty_eval)]))

    text = (store.job_dir(job_id) / "metrics.jsonl").read_text()
    assert "NaN" not in text
    points = [json.loads(line) for line in text.splitlines()]
    assert {p["metric"] for p in points if p["metric"].startswith("/eval_")} == {
        "/eval_num_predictions",
        "/eval_num_predictions_all_tokens",
    }
    series = store.metrics(job_id)["series"]
    assert series["/train_fraction_of_correct_next_step_preds"][0]["value"] == 0.5
    assert series["/train_fraction_of_correct_next_step_preds_all_tokens"][0]["value"] == 0.75
    assert "/eval_total_loss" not in series
    job = store.get(job_id)
    stats = job["tuningDataStats"]["supervisedTuningDataStats"]
    assert stats["totalTruncatedExampleCount"] == 1
    assert stats["truncatedExampleIndices"] == [2]
    assert stats["droppedExampleReasons"] == ["example 1: answer_too_long: ..."]
    assert job["localTuning"]["validationDataStats"]["truncatedExampleIndices"] == [0]
    assert job["localTuning"]["trainingDataStats"]["droppedExampleCount"] == 1


def test_a_multimodal_training_file_is_refused_with_a_clear_reason() -> None:
    image = {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/a.png"}}
    record = {
        "contents": [
            {"role": "user", "parts": [{"text": "what?"}, image]},
            {"role": "model", "parts": [{"text": "a cat"}]},
        ]
    }
    with pytest.raises(data.DatasetError) as refused:
        data.parse_jsonl(json.dumps(record) + "\n", "gs://b/train.jsonl")
    assert "multimodal_not_supported" in str(refused.value)
    assert "trains text models only" in str(refused.value)

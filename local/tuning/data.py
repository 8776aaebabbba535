"""Gemini tuning JSONL: reading it (GCS or local), validating it, and turning it into token ids
with labels that train only on the model's turns.

Error codes are those of Google's own sample validator (vertex-and-genai.md), so users recognise
them: ``missing_contents_list``, ``invalid_content_item``, ``unrecognized_role``, ...
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from transformers import PreTrainedTokenizerBase

from local.tuning import calls

#: Label value that the loss ignores (transformers' convention).
IGNORE_INDEX = -100
GEMINI_TO_CHAT_ROLE = {"user": "user", "model": "assistant"}


class DatasetError(ValueError):
    """A dataset that cannot be read or is not valid Gemini tuning JSONL (answered with 400)."""


@dataclass(frozen=True)
class Example:
    """One record as chat messages (roles: system, user, assistant)."""

    messages: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class TokenizedExample:
    """One example as the model sees it. ``labels`` copy the ids of the model turns (what the
    loss trains on) and are IGNORE_INDEX elsewhere; ``content_labels`` are the same without the
    chat template's tokens (end-of-turn, newlines, other special or whitespace-only tokens), the
    tokens next-step accuracy is measured on. ``truncated``: the start of the prompt was cut so
    that the answer fits the context."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool
    content_labels: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class DroppedExample:
    """An example that cannot be trained on: its answer alone does not fit the context."""

    index: int
    reason: str


#: At most this many indices / reasons are listed in the stats (their counts are always whole).
MAX_LISTED_EXAMPLES = 1000


@dataclass(frozen=True)
class PreparedDataset:
    """A dataset tokenised for training or validation, with what fitting it into the context did.

    ``stats()`` uses the field names of Vertex's ``SupervisedTuningDataStats`` where it has them
    (``totalTruncatedExampleCount``, ``truncatedExampleIndices``, ``droppedExampleReasons``);
    indices are 0-based positions of the examples in the dataset file.
    """

    examples: list[TokenizedExample]
    example_count: int
    truncated_indices: list[int]
    dropped: list[DroppedExample]
    #: Messages (turns, the system instruction included) of each kept example.
    message_counts: list[int] = field(default_factory=list)

    def stats(self) -> dict[str, Any]:
        """The counts, and the distributions Vertex reports (``userInputTokenDistribution``:
        the tokens the model reads, ``userOutputTokenDistribution``: the tokens it is trained to
        write, ``userMessagePerExampleDistribution``), over the kept examples as trained."""
        outputs = [sum(label != IGNORE_INDEX for label in e.labels) for e in self.examples]
        inputs = [len(e.input_ids) - out for e, out in zip(self.examples, outputs, strict=True)]
        return {
            "exampleCount": self.example_count,
            "totalTruncatedExampleCount": len(self.truncated_indices),
            "truncatedExampleIndices": self.truncated_indices[:MAX_LISTED_EXAMPLES],
            "droppedExampleCount": len(self.dropped),
            "droppedExampleReasons": [
                f"example {d.index}: {d.reason}" for d in self.dropped[:MAX_LISTED_EXAMPLES]
            ],
            "userInputTokenDistribution": distribution(inputs),
            "userOutputTokenDistribution": distribution(outputs),
            "userMessagePerExampleDistribution": distribution(self.message_counts),
        }


#: Buckets of a distribution (Vertex's ``DatasetBucket``: count, left, right).
DISTRIBUTION_BUCKETS = 10


def distribution(values: Sequence[int]) -> dict[str, Any]:
    """Vertex's ``SupervisedTuningDatasetDistribution`` of ``values``: sum (and billableSum, the
    same here: every kept token is billed), min, max, mean, median, p5, p95 and equal-width
    buckets. Empty values give zeros and no bucket."""
    if not values:
        return {"sum": "0", "billableSum": "0", "min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0,
                "p5": 0.0, "p95": 0.0, "buckets": []}  # fmt: skip
    ordered = sorted(values)
    low, high = float(ordered[0]), float(ordered[-1])
    width = (high - low) / DISTRIBUTION_BUCKETS or 1.0
    counts = [0] * DISTRIBUTION_BUCKETS
    for value in ordered:
        counts[min(int((value - low) / width), DISTRIBUTION_BUCKETS - 1)] += 1
    total = sum(ordered)
    return {
        # int64 fields travel as JSON strings, as Vertex writes them.
        "sum": str(total),
        "billableSum": str(total),
        "min": low,
        "max": high,
        "mean": total / len(ordered),
        "median": _percentile(ordered, 50),
        "p5": _percentile(ordered, 5),
        "p95": _percentile(ordered, 95),
        "buckets": [
            {"count": float(count), "left": low + i * width, "right": low + (i + 1) * width}
            for i, count in enumerate(counts)
            if count
        ],
    }


def _percentile(ordered: Sequence[int], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    rank = (len(ordered) - 1) * q / 100
    below = int(rank)
    above = min(below + 1, len(ordered) - 1)
    return float(ordered[below] + (ordered[above] - ordered[below]) * (rank - below))


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def read_text(uri: str) -> str:
    """Text of a ``gs://`` object (honouring STORAGE_EMULATOR_HOST), a ``file://`` URI or a path."""
    parsed = urlparse(uri)
    try:
        if parsed.scheme == "gs":
            from google.cloud import storage

            if not parsed.netloc or not parsed.path.strip("/"):
                raise DatasetError(f"{uri!r} is not a gs://BUCKET/OBJECT URI")
            client = storage.Client()
            return client.bucket(parsed.netloc).blob(parsed.path.lstrip("/")).download_as_text()
        if parsed.scheme == "file":
            return Path(parsed.path).read_text(encoding="utf-8")
        if parsed.scheme == "":
            return Path(uri).read_text(encoding="utf-8")
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"cannot read dataset {uri}: {type(exc).__name__}: {exc}") from exc
    raise DatasetError(f"unsupported dataset URI {uri!r}: use gs://, file:// or a local path")


def write_text(uri: str, text: str) -> None:
    parsed = urlparse(uri)
    if parsed.scheme == "gs":
        from google.cloud import storage

        blob = storage.Client().bucket(parsed.netloc).blob(parsed.path.lstrip("/"))
        blob.upload_from_string(text, content_type="application/json")
        return
    path = Path(parsed.path if parsed.scheme == "file" else uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _text_of_parts(parts: Any, where: str) -> str:
    """The parts of one turn as the model reads them (function calls and results as their tagged
    JSON, :mod:`local.tuning.calls`); a located DatasetError for what cannot be trained on."""
    if not isinstance(parts, list) or not parts:
        raise DatasetError(f"{where}: missing_or_invalid_parts: 'parts' must be a non-empty list")
    texts = []
    for part in parts:
        if not isinstance(part, dict):
            raise DatasetError(f"{where}: invalid_part: each part must be an object")
        if "text" in part and (not isinstance(part["text"], str) or not part["text"].strip()):
            raise DatasetError(f"{where}: missing_text: 'text' must be a non-empty string")
        try:
            texts.append(calls.part_text(part))
        except calls.PartError as exc:
            if exc.code == "multimodal_not_supported":
                raise DatasetError(
                    f"{where}: multimodal_not_supported: this is a multimodal job (the training file has a "
                    "fileData/inlineData part) and the local tuning service trains text models only; "
                    "tune multimodal datasets on Vertex AI"
                ) from None
            raise DatasetError(f"{where}: {exc.code}: {exc}") from None
    return "".join(texts)


def parse_record(record: Any, where: str) -> Example:
    if not isinstance(record, dict) or not isinstance(record.get("contents"), list) or not record["contents"]:
        raise DatasetError(f"{where}: missing_contents_list: the record needs a non-empty 'contents' list")
    messages: list[dict[str, str]] = []
    system = record.get("systemInstruction")
    system_text = None
    if system is not None:
        if not isinstance(system, dict):
            raise DatasetError(f"{where}: invalid_content_item: 'systemInstruction' must be an object")
        system_text = _text_of_parts(system.get("parts"), where)
    # The declarations go where generateContent puts a request's tools, so that a tuned model
    # sees at serving time what it was trained with.
    system_text = calls.with_tools(system_text, record.get("tools"))
    if system_text is not None:
        messages.append({"role": "system", "content": system_text})
    previous_role = None
    for index, content in enumerate(record["contents"]):
        at = f"{where} contents[{index}]"
        if not isinstance(content, dict):
            raise DatasetError(f"{at}: invalid_content_item: each content must be an object")
        if "role" not in content or "parts" not in content:
            raise DatasetError(f"{at}: content_item_missing_key: a content needs 'role' and 'parts'")
        role = content["role"]
        if role not in GEMINI_TO_CHAT_ROLE:
            raise DatasetError(f"{at}: unrecognized_role: {role!r} (expected 'user' or 'model')")
        if role == previous_role:
            raise DatasetError(f"{at}: consecutive_turns: two '{role}' turns in a row")
        if previous_role is None and role != "user":
            raise DatasetError(f"{at}: unrecognized_role: the first turn must be the user's")
        previous_role = role
        messages.append({"role": GEMINI_TO_CHAT_ROLE[role], "content": _text_of_parts(content["parts"], at)})
    if previous_role != "model":
        raise DatasetError(f"{where}: consecutive_turns: the last turn must be the model's (the target)")
    return Example(messages=tuple(messages))


def parse_jsonl(text: str, source: str) -> list[Example]:
    examples = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source} line {line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from exc
        examples.append(parse_record(record, where))
    if not examples:
        raise DatasetError(f"{source}: the dataset has no examples")
    return examples


def load_examples(uri: str) -> list[Example]:
    return parse_jsonl(read_text(uri), uri)


def examples_to_jsonl(examples: Sequence[Example]) -> str:
    return "".join(json.dumps({"messages": list(example.messages)}) + "\n" for example in examples)


def examples_from_jsonl(text: str) -> list[Example]:
    """Reads the normalised copy that the service keeps in a job's directory."""
    return [Example(messages=tuple(json.loads(line)["messages"])) for line in text.splitlines() if line]


# ---------------------------------------------------------------------------------------------
# Tokenisation
# ---------------------------------------------------------------------------------------------


def _render_ids(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], prompt: bool
) -> list[int]:
    rendered = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=prompt)
    return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])


class TemplateTokens:
    """Which token ids belong to the chat template rather than to an answer's content: special
    tokens (``<|im_end|>``, ``<|im_start|>``, padding) and tokens that decode to whitespace only
    (the newline after each turn). Decoded once per id, on demand."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._special = set(tokenizer.all_special_ids)
        self._known: dict[int, bool] = {}

    def __contains__(self, token_id: object) -> bool:
        if not isinstance(token_id, int):
            return False
        known = self._known.get(token_id)
        if known is None:
            known = token_id in self._special or not self._tokenizer.decode([token_id]).strip()
            self._known[token_id] = known
        return known


class AnswerTooLongError(ValueError):
    """The final model turn alone does not fit the context: the example cannot be trained on."""


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase,
    example: Example,
    max_tokens: int,
    template: TemplateTokens | None = None,
) -> TokenizedExample:
    """Token ids of the whole conversation, fitted into ``max_tokens``; labels copy the ids of
    model turns (their text and end-of-turn marker) and are IGNORE_INDEX elsewhere.

    Each model turn's span is found by rendering the conversation up to the generation prompt
    before it and up to its end: chat templates render prefixes as prefixes, which is checked.

    A conversation longer than ``max_tokens`` loses the start of its prompt (system instruction
    and early turns first), never its answer: the final model turn is what the example teaches.
    The window keeps at least one token before the answer, from which its first token is
    predicted. When even that does not fit, :class:`AnswerTooLongError` (the caller drops the
    example and counts it).
    """
    messages = example.messages
    input_ids = _render_ids(tokenizer, messages, prompt=False)
    labels = [IGNORE_INDEX] * len(input_ids)
    answer_start = len(input_ids)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render_ids(tokenizer, messages[:index], prompt=True))
        end = len(_render_ids(tokenizer, messages[: index + 1], prompt=False))
        if start >= end or input_ids[:end] != _render_ids(tokenizer, messages[: index + 1], prompt=False):
            raise DatasetError("the chat template does not render conversation prefixes as prefixes")
        labels[start:end] = input_ids[start:end]
        answer_start = start
    truncated = len(input_ids) > max_tokens
    if truncated:
        needed = len(input_ids) - answer_start + 1  # the answer, and the token that predicts its first
        if needed > max_tokens:
            raise AnswerTooLongError(
                f"answer_too_long: the model turn needs {needed:,} tokens with the one before it; "
                f"the local model's context holds {max_tokens:,}"
            )
        input_ids, labels = input_ids[-max_tokens:], labels[-max_tokens:]
    template = template or TemplateTokens(tokenizer)
    content_labels = [
        IGNORE_INDEX if label == IGNORE_INDEX or label in template else label for label in labels
    ]
    return TokenizedExample(input_ids, labels, truncated, content_labels)


def prepare_dataset(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], max_tokens: int
) -> PreparedDataset:
    """Every example tokenised and fitted into ``max_tokens``: long prompts are cut from the left
    (counted as truncated), examples whose answer alone does not fit are dropped (counted, with
    the reason)."""
    template = TemplateTokens(tokenizer)
    kept: list[TokenizedExample] = []
    truncated: list[int] = []
    dropped: list[DroppedExample] = []
    message_counts: list[int] = []
    for index, example in enumerate(examples):
        try:
            tokenized = tokenize_example(tokenizer, example, max_tokens, template)
        except AnswerTooLongError as exc:
            dropped.append(DroppedExample(index, str(exc)))
            continue
        kept.append(tokenized)
        message_counts.append(len(example.messages))
        if tokenized.truncated:
            truncated.append(index)
    return PreparedDataset(kept, len(examples), truncated, dropped, message_counts)


#: The keys of a collated batch that the model takes (``content_labels`` is for accuracy only).
MODEL_INPUTS = ("input_ids", "labels", "attention_mask")


def collate(batch: Sequence[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors for one batch (padding is masked and ignored by the loss):
    :data:`MODEL_INPUTS` and ``content_labels``."""
    width = max(len(example.input_ids) for example in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    content_labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        labels[row, :length] = torch.tensor(example.labels)
        content_labels[row, :length] = torch.tensor(example.content_labels or example.labels)
        attention_mask[row, :length] = 1
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "content_labels": content_labels,
    }


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: batch[key] for key in MODEL_INPUTS}


def epoch_batches(
    examples: Sequence[TokenizedExample], batch_size: int, seed: int, epoch: int, pad_token_id: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of one epoch, shuffled by (seed, epoch) so that any two runs see the same batches."""
    order = list(range(len(examples)))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    for start in range(0, len(order), batch_size):
        yield collate([examples[i] for i in order[start : start + batch_size]], pad_token_id)


def steps_per_epoch(example_count: int, batch_size: int) -> int:
    return -(-example_count // batch_size)

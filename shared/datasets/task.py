"""Ingest's side of the task decision: feed every accepted example to the one rule.

The rule itself (a seeded reservoir sample over the whole file, label repetition, spans, length
ratio and overlap) is :mod:`shared.evaluation.task_rule`, which completion uses too.
"""

from __future__ import annotations

from typing import Any

from shared.datasets.convert import Example, PlainRecord, plain_prompt_text
from shared.evaluation.task_rule import TaskChoice, TaskSample


def prompt_text(record: dict[str, Any]) -> str:
    """The prompt of a Gemini tuning record as plain text: system instruction and every turn but
    the last, joined like completion's prompt (``TestExample``) so both read the same text."""
    pieces: list[str] = []
    system = record.get("systemInstruction")
    if isinstance(system, dict):
        pieces.append("".join(p["text"] for p in system.get("parts") or () if "text" in p))
    for content in record["contents"][:-1]:
        pieces.append("".join(p["text"] for p in content["parts"] if "text" in p))
    return "\n\n".join(piece for piece in pieces if piece)


class TaskInferrer:
    def __init__(self) -> None:
        self.sample = TaskSample()

    @property
    def seen(self) -> int:
        return self.sample.seen

    def observe(self, example: Example) -> None:
        self.sample.observe(example.answer, lambda: prompt_text(example.record))

    def observe_plain(self, answer: str, record: PlainRecord) -> None:
        """``observe`` of the Example that ``record`` converts to, whose answer is ``answer``."""
        self.sample.observe(answer, lambda: plain_prompt_text(record))

    def infer(self, hint: str | None = None) -> TaskChoice:
        """The inferred decision; ``hint`` is the task the column names suggest, if any."""
        return self.sample.decide(hint=hint)

    def labels(self) -> tuple[str, ...]:
        """The dataset's labels (every short answer, normalised); () when there are too many."""
        return self.sample.file_labels()

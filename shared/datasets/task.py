"""Infer the evaluation task from the data when the upload does not name one.

Looks at the first ``SAMPLE`` examples only, so memory stays bounded: a small closed set of short
targets that repeat means classification; targets found verbatim in the prompt mean extractive QA;
prompts that ask for a summary, or long prompts with much shorter targets, mean summarization;
anything else is generation.
"""

from __future__ import annotations

from shared.datasets.convert import Example
from shared.messages import Task

SAMPLE = 1000
MAX_LABELS = 20
MAX_LABEL_CHARS = 50


class TaskInferrer:
    def __init__(self) -> None:
        self.seen = 0
        self._labels: set[str] = set()
        self._labels_overflow = False
        self._long_target = False
        self._in_prompt = 0
        self._mentions_summary = 0
        self._prompt_chars = 0
        self._target_chars = 0

    def observe(self, example: Example) -> None:
        if self.seen >= SAMPLE:
            return
        self.seen += 1
        target = example.last_text("model").strip()
        prompt = example.last_text("user")
        self._prompt_chars += len(prompt)
        self._target_chars += len(target)
        if len(target) > MAX_LABEL_CHARS:
            self._long_target = True
        elif not self._labels_overflow:
            self._labels.add(target.lower())
            self._labels_overflow = len(self._labels) > MAX_LABELS
        if target and target in prompt:
            self._in_prompt += 1
        if "summar" in prompt.lower():
            self._mentions_summary += 1

    def infer(self, hint: str | None = None) -> tuple[Task, str]:
        """The task and a sentence saying why."""
        if hint is not None:
            return Task(hint), f"inferred from the column names ({hint})"
        n = self.seen
        if n == 0:
            return Task.GENERATION, "no examples to infer from"
        labels = len(self._labels)
        if not self._long_target and not self._labels_overflow and labels >= 2 and n >= 2 * labels:
            return Task.CLASSIFICATION, f"targets form a closed set of {labels} short labels"
        mean_target = self._target_chars / n
        mean_prompt = self._prompt_chars / n
        if self._in_prompt >= 0.8 * n and mean_target <= 200:
            return Task.EXTRACTIVE_QA, "most targets are spans copied from the prompt"
        if self._mentions_summary >= 0.5 * n or (mean_prompt >= 1000 and mean_target <= 0.3 * mean_prompt):
            return (
                Task.SUMMARIZATION,
                "prompts ask for summaries or targets are much shorter than long prompts",
            )
        return Task.GENERATION, "targets are free text"

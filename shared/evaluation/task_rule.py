"""The one rule that decides a dataset's evaluation task, used by ingest and by completion.

Ingest feeds every accepted example of an upload to a :class:`TaskSample`; completion, when the
request carries no decision, feeds it the test split. Either way the decision (:class:`TaskChoice`)
says the task, who decided it and the evidence, with the numbers:

- **explicit**: the user set it (upload metadata ``task``, a manifest's ``task``, or a
  ``tuning-request/v1`` published with ``task``). Nothing is inferred.
- **inferred**: from a seeded reservoir sample of :data:`SAMPLE_SIZE` examples spread over the
  whole file (a file sorted by label is sampled as evenly as a shuffled one), in this order:

  1. *classification*: answers repeat. At least :data:`CLASSIFICATION_MIN_COVERAGE` of the sampled
     answers are one of the labels seen :data:`CLASSIFICATION_MIN_REPEATS`+ times, there are at
     most half as many distinct answers as answers, and at least two labels. No cap on the number
     of labels below :data:`MAX_TRACKED_LABELS` (hundreds of intents are classification) and no
     cap on a label's length below :data:`MAX_LABEL_CHARS` (a long label counts when it repeats).
  2. *extractive QA*: at least :data:`QA_MIN_SPAN_SHARE` of the answers are a span of their prompt
     (whole words, after SQuAD normalisation), with a median answer of at most
     :data:`QA_MAX_MEDIAN_ANSWER_TOKENS` tokens.
  3. *summarization*: answers of :data:`SUMMARY_MIN_MEDIAN_TOKENS`+ tokens, at most
     :data:`SUMMARY_MAX_LENGTH_RATIO` of their prompt's length (median), whose words are mostly
     found in the prompt (median overlap :data:`SUMMARY_MIN_OVERLAP`+), or whose prompts ask for a
     summary.
  4. otherwise *generation*; column names that suggest a task (``label``, ``summary``) decide
     only then.

Labels are compared after :func:`normalize_label` (case, spaces, wrapping punctuation), at ingest
and when scoring, so "Positive", "positive." and "positive" are one label. The dataset's label set
is counted over every example (not only the sample), up to :data:`MAX_TRACKED_LABELS` labels.

Only the standard library and pydantic are imported: ingest imports this at cold start.
"""

from __future__ import annotations

import math
import random
import re
import statistics
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from shared.errors import PermanentError
from shared.messages import MAX_TASK_LABEL_CHARS, MAX_TASK_LABELS, Task

#: Examples kept in the reservoir sample the decision reads.
SAMPLE_SIZE = 2_000
#: The reservoir's seed: the same file always gives the same sample (and decision).
SAMPLE_SEED = 13
#: Distinct labels counted over the whole file; past this the answers are not a label set.
MAX_TRACKED_LABELS = MAX_TASK_LABELS
#: Answers longer than this (characters) are never labels.
MAX_LABEL_CHARS = MAX_TASK_LABEL_CHARS
#: Distinct answers remembered as counted, so that a label set costs one lookup per example
#: instead of a normalisation (at most this many strings of MAX_LABEL_CHARS: about 2 MB).
LABEL_CACHE_SIZE = 4 * MAX_TRACKED_LABELS
#: Bytes of sampled texts held until the decision, so that features are computed only for the
#: examples still in the sample at the end (a file of n examples samples about
#: SAMPLE_SIZE * (1 + ln(n / SAMPLE_SIZE)) of them, and features are most of the cost of
#: inference). Past this, a sampled example's features are computed at once and its texts are not
#: kept, so that long examples cost time rather than memory.
MAX_HELD_TEXT_BYTES = 32 * 1024 * 1024
CLASSIFICATION_MIN_REPEATS = 2
CLASSIFICATION_MIN_COVERAGE = 0.8
CLASSIFICATION_MAX_DISTINCT_SHARE = 0.5
QA_MIN_SPAN_SHARE = 0.8
QA_MAX_MEDIAN_ANSWER_TOKENS = 30
SUMMARY_MIN_MEDIAN_TOKENS = 8
SUMMARY_MAX_LENGTH_RATIO = 0.5
SUMMARY_MIN_OVERLAP = 0.4
SUMMARY_MIN_ASKING_SHARE = 0.5

_PUNCTUATION = frozenset(string.punctuation)
# Only wrapping a model adds around a label ("Positive.", "**positive**", «positive»); a label's
# own punctuation ("c++", "n/a") is kept.
_LABEL_WRAPPING = " \t\r\n.,;:!?\"'`*\u201c\u201d\u2018\u2019\u00ab\u00bb\u3002"
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_ARTICLE_WORDS = frozenset({"a", "an", "the"})
# Scripts written without spaces: every character is a token.
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(f"[{CJK}]|[^\\W_{CJK}]+")
# On ASCII text the token regex finds the runs of a-z and 0-9 (after lower()); mapping every other
# byte to a space and splitting finds the same runs several times faster.
_ASCII_WORD_BREAKS = bytes(b if 0x61 <= b <= 0x7A or 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_SUMMARY_WORDS = ("summar", "tl;dr", "tldr", "sum up", "in one sentence", "in a sentence")

Source = Literal["explicit", "inferred"]


class TaskChoice(BaseModel):
    """The task decision: the task, who decided it, and the evidence in one sentence."""

    model_config = ConfigDict(frozen=True)

    task: Task
    decided_by: Source
    #: The evidence, with its numbers ("412 of 500 sampled answers are one of 37 labels ...").
    reason: str
    #: The dataset's class labels (normalised), when known; empty when not classification-like.
    labels: tuple[str, ...] = ()

    @property
    def evidence(self) -> str:
        return self.reason


# --- Normalisation -----------------------------------------------------------------------------


def _is_punctuation(char: str) -> bool:
    return char in _PUNCTUATION or unicodedata.category(char).startswith("P")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces.

    Punctuation is every ASCII punctuation character (as in the SQuAD script) plus every Unicode
    punctuation character, so that answers in other languages are treated the same way.
    """
    text = "".join(ch for ch in text.lower() if not _is_punctuation(ch))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalize_label(text: str) -> str:
    """A class label as compared: case-folded, single spaces, no surrounding quotes or full stops.

    Models often answer "Positive." for the label "positive"; that is the same class, and so are
    "Positive" and "positive." in a dataset.
    """
    collapsed = " ".join(text.split()).casefold()
    return collapsed.strip(_LABEL_WRAPPING)


def answer_tokens(text: str) -> list[str]:
    """Lower-case word tokens without punctuation or articles; CJK characters are one token each.

    The rule's tokens (one regex pass, or a byte translation when the text is ASCII: fast enough
    for every sampled prompt); close to SQuAD's normalisation, except that a word with punctuation
    inside ("Eiffel-Tower") is two tokens.
    """
    return [token for token in _all_tokens(text.lower()) if token not in _ARTICLE_WORDS]


def _all_tokens(lowered: str) -> list[str]:
    """The tokens of lower-cased text, articles included."""
    if lowered.isascii():
        return lowered.encode().translate(_ASCII_WORD_BREAKS).decode().split()
    return _TOKEN.findall(lowered)


def _spaced(tokens: list[str]) -> str:
    """Every token between its own two spaces: a run of tokens is a substring exactly when it is
    a run of the tokens, and ``replace(" the ", "")`` drops whole tokens."""
    return f" {'  '.join(tokens)} "


def is_span(answer: str, context: str) -> bool:
    """Whether the answer occurs in the context as whole words, after SQuAD normalisation."""
    tokens = answer_tokens(answer)
    return bool(tokens) and f" {' '.join(tokens)} " in f" {' '.join(answer_tokens(context))} "


# --- The sample --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Features:
    """What the rule needs of one sampled example (the texts themselves are not kept)."""

    label: str | None
    answer_tokens: int
    prompt_tokens: int
    span: bool
    overlap: float
    asks_summary: bool


def _features(answer: str, prompt: str) -> _Features:
    answer = answer.strip()
    answer_words = answer_tokens(answer)
    # The prompt is the long text: its tokens are counted and looked up with the articles still
    # in (the answer's words never are articles), and only a span check drops them, from a string.
    lowered = prompt.lower()
    prompt_all = _all_tokens(lowered)
    vocabulary = set(prompt_all)
    found = sum(w in vocabulary for w in answer_words)
    span = False
    if answer_words and found == len(answer_words):  # else some word is missing: not a span
        without_articles = _spaced(prompt_all)
        for article in (" the ", " an ", " a "):
            without_articles = without_articles.replace(article, "")
        span = _spaced(answer_words) in without_articles
    return _Features(
        label=normalize_label(answer) if len(answer) <= MAX_LABEL_CHARS else None,
        answer_tokens=len(answer_words),
        prompt_tokens=len(prompt_all) - sum(prompt_all.count(article) for article in _ARTICLE_WORDS),
        span=span,
        overlap=found / len(answer_words) if answer_words else 0.0,
        asks_summary=any(word in lowered for word in _SUMMARY_WORDS),
    )


class TaskSample:
    """A bounded, seeded reservoir sample of (answer, prompt) pairs and the file's label counts.

    ``observe`` is called once per example, in file order. Memory is bounded: the sample keeps a
    few numbers per example, or its texts while they fit in :data:`MAX_HELD_TEXT_BYTES`; the label
    set at most :data:`MAX_TRACKED_LABELS` short strings, and the answers known to be counted at
    most :data:`LABEL_CACHE_SIZE`.
    """

    def __init__(self, size: int = SAMPLE_SIZE, seed: int = SAMPLE_SEED) -> None:
        self.size = size
        self.seen = 0
        self._rng = random.Random(seed)
        # A sampled example: its features, or (answer, prompt) until the decision needs them.
        self._items: list[_Features | tuple[str, str]] = []
        self._held_bytes = 0
        self._weight = 1.0
        self._next = size  # the example (1-based) that replaces a sampled one next
        self._labels: set[str] = set()
        self._labels_overflow = False
        # Answers (of at most MAX_LABEL_CHARS) whose label is already in _labels: a label set
        # costs one lookup per example instead of a normalisation.
        self._counted: set[str] = set()

    def observe(self, answer: str | Callable[[], str], prompt: str | Callable[[], str]) -> None:
        """One example. Either text may be a callable, called only when needed: the answer for the
        label count (while it is below its cap) or the sample, the prompt only for the sample."""
        self.seen += 1
        sampled = self.seen == self._next or len(self._items) < self.size
        if self._labels_overflow:
            if not sampled:
                return
            text = answer() if callable(answer) else answer
        else:
            text = answer() if callable(answer) else answer
            if len(text) <= MAX_LABEL_CHARS:
                if text not in self._counted:
                    self._count_label(text)
            elif text[0].isspace() or text[-1].isspace():  # else stripping leaves it too long
                self._count_label(text)
        if not sampled:
            return
        prompt_text = prompt() if callable(prompt) else prompt
        item: _Features | tuple[str, str]
        size = sys.getsizeof(text) + sys.getsizeof(prompt_text)
        if self._held_bytes + size <= MAX_HELD_TEXT_BYTES:
            item = (text, prompt_text)
            self._held_bytes += size
        else:
            item = _features(text, prompt_text)
        if len(self._items) < self.size:
            self._items.append(item)
            if len(self._items) == self.size:
                self._skip()
        else:
            slot = self._rng.randrange(self.size)
            replaced = self._items[slot]
            if type(replaced) is tuple:
                self._held_bytes -= sys.getsizeof(replaced[0]) + sys.getsizeof(replaced[1])
            self._items[slot] = item
            self._skip()

    def _count_label(self, answer: str) -> None:
        stripped = answer.strip()
        if len(stripped) > MAX_LABEL_CHARS:
            return
        label = normalize_label(stripped)
        self._labels.add(label)
        if len(self._labels) > MAX_TRACKED_LABELS:
            self._labels_overflow = True
            self._labels.clear()
            self._counted.clear()
        elif len(answer) <= MAX_LABEL_CHARS and len(self._counted) < LABEL_CACHE_SIZE:
            self._counted.add(answer)

    def _skip(self) -> None:
        """Li's Algorithm L: draw which example replaces a sampled one next (each example ends up
        in the sample with probability size / seen), so the examples in between cost no draw."""
        self._weight *= math.exp(math.log(self._uniform()) / self.size)
        self._next += math.floor(math.log(self._uniform()) / math.log1p(-self._weight)) + 1

    def _uniform(self) -> float:
        return self._rng.random() or 1e-300  # (0, 1): log() is defined

    @property
    def sampled(self) -> int:
        return len(self._items)

    def file_labels(self) -> tuple[str, ...]:
        """Every (normalised) answer short enough to be a label, over the whole file; () past the cap."""
        return () if self._labels_overflow else tuple(sorted(self._labels))

    def _all_features(self) -> list[_Features]:
        """Every sampled example's features; computes those still held as texts (once)."""
        items = [item if type(item) is _Features else _features(*item) for item in self._items]
        self._items[:] = items
        self._held_bytes = 0
        return items

    def decide(self, *, hint: str | None = None) -> TaskChoice:
        """The inferred task (see the module docstring); ``hint``: a task the column names suggest."""
        items = self._all_features()
        n = len(items)
        if n == 0:
            return TaskChoice(task=Task.GENERATION, decided_by="inferred", reason="no examples to infer from")
        of = f"{n:,} sampled answers" if self.seen > n else f"{n:,} answers"
        spread = f" (a sample spread over all {self.seen:,} examples)" if self.seen > n else ""

        counts = Counter(item.label for item in items if item.label is not None)
        repeated = {label: c for label, c in counts.items() if c >= CLASSIFICATION_MIN_REPEATS}
        covered = sum(repeated.values())
        distinct = len(counts) + sum(item.label is None for item in items)
        if (
            len(repeated) >= 2
            and covered >= CLASSIFICATION_MIN_COVERAGE * n
            and distinct <= CLASSIFICATION_MAX_DISTINCT_SHARE * n
        ):
            labels = self.file_labels() or tuple(sorted(repeated))
            return TaskChoice(
                task=Task.CLASSIFICATION,
                decided_by="inferred",
                reason=(
                    f"{covered:,} of {of} are one of {len(repeated):,} labels "
                    f"(each seen >= {CLASSIFICATION_MIN_REPEATS} times){spread}; "
                    f"{len(labels):,} labels in the dataset"
                ),
                labels=labels,
            )

        answer_lengths = [item.answer_tokens for item in items]
        median_answer = statistics.median(answer_lengths)
        spans = sum(item.span for item in items)
        if spans >= QA_MIN_SPAN_SHARE * n and median_answer <= QA_MAX_MEDIAN_ANSWER_TOKENS:
            return TaskChoice(
                task=Task.EXTRACTIVE_QA,
                decided_by="inferred",
                reason=(
                    f"{spans:,} of {of} ({spans / n:.0%}) are spans of their prompt, "
                    f"median answer {median_answer:g} tokens{spread}"
                ),
            )

        ratio = statistics.median(item.answer_tokens / max(1, item.prompt_tokens) for item in items)
        overlap = statistics.median(item.overlap for item in items)
        asking = sum(item.asks_summary for item in items)
        if (
            median_answer >= SUMMARY_MIN_MEDIAN_TOKENS
            and ratio <= SUMMARY_MAX_LENGTH_RATIO
            and (overlap >= SUMMARY_MIN_OVERLAP or asking >= SUMMARY_MIN_ASKING_SHARE * n)
        ):
            asked = f"; {asking:,} prompts ask for a summary" if asking else ""
            return TaskChoice(
                task=Task.SUMMARIZATION,
                decided_by="inferred",
                reason=(
                    f"over {of}, answers are {ratio:.0%} of their prompt's length and "
                    f"{overlap:.0%} of their words are found in the prompt (medians){asked}{spread}"
                ),
            )

        data = (
            f"free-form answers: {distinct:,} distinct among {of}, {spans:,} spans of the prompt, "
            f"answers {ratio:.0%} of the prompt's length (median){spread}"
        )
        if hint is not None:
            task = Task(hint)
            return TaskChoice(
                task=task,
                decided_by="inferred",
                reason=f"the column names suggest {task.value}; {data}",
                labels=self.file_labels() if task is Task.CLASSIFICATION else (),
            )
        return TaskChoice(task=Task.GENERATION, decided_by="inferred", reason=data)


# --- Entry points ------------------------------------------------------------------------------


def parse_task(value: Task | str, *, field: str = "task") -> Task:
    try:
        return Task(value)
    except ValueError as exc:
        raise PermanentError(
            f"unknown evaluation task {value!r}; expected one of {[t.value for t in Task]}",
            code="unknown_task",
            field=field,
        ) from exc


def choose_task(
    references: Sequence[str],
    *,
    explicit: Task | str | None = None,
    inputs: Sequence[str] | None = None,
    reason: str = "given in the request",
) -> TaskChoice:
    """The task of a set of references (and their prompts): the one given, else the rule's.

    The rule is the same as at ingest (:class:`TaskSample`); without ``inputs`` the QA and
    summarization tests see empty prompts and cannot fire.
    """
    sample = TaskSample()
    prompts = inputs if inputs is not None and len(inputs) == len(references) else [""] * len(references)
    for reference, prompt in zip(references, prompts, strict=True):
        sample.observe(reference, prompt)
    if explicit is not None:
        task = parse_task(explicit)
        labels = sample.file_labels() if task is Task.CLASSIFICATION else ()
        return TaskChoice(task=task, decided_by="explicit", reason=reason, labels=labels)
    return sample.decide()


def choice_from_request(
    request: Mapping[str, Any], references: Sequence[str], inputs: Sequence[str]
) -> TaskChoice:
    """Completion's decision for a job: the request's explicit task, else its inferred one, else
    the rule on the test split. Labels: the request's (the whole dataset's), else the test
    references'."""
    labels = tuple(request.get("task_labels") or ())
    evidence = request.get("task_evidence")
    if request.get("task"):
        choice = choose_task(
            references, explicit=request["task"], inputs=inputs, reason=evidence or "given in the request"
        )
    elif request.get("inferred_task"):
        task = parse_task(request["inferred_task"], field="inferred_task")
        choice = TaskChoice(
            task=task,
            decided_by="inferred",
            reason=evidence or "inferred at ingest",
            labels=choose_task(references, explicit=task).labels,
        )
    else:
        choice = choose_task(references, inputs=inputs)
        choice = choice.model_copy(update={"reason": f"{choice.reason} (decided on the test split)"})
    if labels and choice.task is Task.CLASSIFICATION:
        choice = choice.model_copy(update={"labels": labels})
    return choice

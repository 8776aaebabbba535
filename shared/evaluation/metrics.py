"""Task metrics for comparing a base model with its tuned version.

Every score is on a 0-1 scale (BLEU included: sacreBLEU's 0-100 score divided by 100), so one
tolerance decides the verdict whatever the task. Each task has a *primary* metric, the one the
verdict is based on (see :data:`PRIMARY_METRIC`).

A prediction that is ``None`` is an example whose model call failed. It is scored as an empty
answer, so that base and tuned model are always scored on the same examples, and it is counted in
:attr:`MetricResult.failed`.

rouge-score and sacrebleu are imported inside the functions that use them: importing this module
costs nothing at a function's cold start.
"""

from __future__ import annotations

import re
import statistics
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from shared.errors import PermanentError
from shared.messages import Task

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer

PRIMARY_METRIC: dict[Task, str] = {
    Task.CLASSIFICATION: "macro_f1",
    Task.SUMMARIZATION: "rougeL",
    Task.EXTRACTIVE_QA: "f1",
    Task.GENERATION: "bleu",
}

# Task inference thresholds. References are "a small closed label set" when there are at most
# CLASSIFICATION_MAX_LABELS distinct (normalised) values, each label is used on average at least
# CLASSIFICATION_MIN_EXAMPLES_PER_LABEL times, and no label is longer than
# CLASSIFICATION_MAX_LABEL_WORDS words. Free text almost never repeats exactly, so the repetition
# condition is what separates labels from short answers.
CLASSIFICATION_MAX_LABELS = 20
CLASSIFICATION_MIN_EXAMPLES_PER_LABEL = 2
CLASSIFICATION_MAX_LABEL_WORDS = 5
# Extractive QA: most answers are short spans found verbatim (after SQuAD normalisation) in the prompt.
QA_MIN_SPAN_SHARE = 0.8
QA_MAX_MEDIAN_ANSWER_WORDS = 30
# Summarization: references clearly shorter than their prompt, but longer than a short answer.
SUMMARY_MAX_LENGTH_RATIO = 0.5
SUMMARY_MIN_MEDIAN_WORDS = 8

_PUNCTUATION = frozenset(string.punctuation)
# Only wrapping a model adds around a label ("Positive.", "**positive**", «positive»); a label's
# own punctuation ("c++", "n/a") is kept.
_LABEL_WRAPPING = " \t\r\n.,;:!?\"'`*\u201c\u201d\u2018\u2019\u00ab\u00bb\u3002"
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
# Scripts written without spaces: every character is a token, as sacreBLEU's "zh" / "char" do.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_UNICODE_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")


class ClassScores(BaseModel):
    model_config = ConfigDict(frozen=True)

    precision: float
    recall: float
    f1: float
    support: int


class MetricResult(BaseModel):
    """Scores of one model on one test split."""

    model_config = ConfigDict(frozen=True)

    task: Task
    scores: dict[str, float]
    count: int
    failed: int
    per_class: dict[str, ClassScores] = {}
    notes: list[str] = []

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC[self.task]


class TaskChoice(BaseModel):
    model_config = ConfigDict(frozen=True)

    task: Task
    decided_by: Literal["explicit", "inferred"]
    reason: str


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

    Models often answer "Positive." for the label "positive"; that is the same class.
    """
    collapsed = " ".join(text.split()).casefold()
    return collapsed.strip(_LABEL_WRAPPING)


# --- Classification ----------------------------------------------------------------------------


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def classification_metrics(
    references: Sequence[str], predictions: Sequence[str]
) -> tuple[dict[str, float], dict[str, ClassScores]]:
    """Accuracy, micro / macro F1 and per-class scores, over the labels of the references.

    The label set is the references' labels. A prediction outside it (free text, a typo) is a
    miss for its true class and nobody's false positive; sklearn would instead add it as a class
    of its own with F1 0, which punishes one stray answer as hard as a whole class missed. That is
    also why micro F1 can differ from accuracy: only predictions outside the label set make them
    differ. ``out_of_label_rate`` says how often it happened.
    """
    gold = [normalize_label(r) for r in references]
    guessed = [normalize_label(p) for p in predictions]
    labels = sorted(set(gold))
    label_set = set(labels)
    true_positive: Counter[str] = Counter()
    false_positive: Counter[str] = Counter()
    false_negative: Counter[str] = Counter()
    for truth, guess in zip(gold, guessed, strict=True):
        if truth == guess:
            true_positive[truth] += 1
            continue
        false_negative[truth] += 1
        if guess in label_set:
            false_positive[guess] += 1

    per_class: dict[str, ClassScores] = {}
    for label in labels:
        tp, fp, fn = true_positive[label], false_positive[label], false_negative[label]
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        per_class[label] = ClassScores(
            precision=precision, recall=recall, f1=_f1(precision, recall), support=tp + fn
        )

    tp_all = sum(true_positive.values())
    fp_all = sum(false_positive.values())
    fn_all = sum(false_negative.values())
    micro_precision = tp_all / (tp_all + fp_all) if tp_all + fp_all else 0.0
    micro_recall = tp_all / (tp_all + fn_all) if tp_all + fn_all else 0.0
    total = len(gold)
    scores = {
        "accuracy": tp_all / total if total else 0.0,
        "micro_f1": _f1(micro_precision, micro_recall),
        "macro_f1": statistics.fmean(c.f1 for c in per_class.values()) if per_class else 0.0,
        "out_of_label_rate": sum(g not in label_set for g in guessed) / total if total else 0.0,
    }
    return scores, per_class


# --- Extractive QA -----------------------------------------------------------------------------


def exact_match(reference: str, prediction: str) -> float:
    return float(normalize_answer(reference) == normalize_answer(prediction))


def token_f1(reference: str, prediction: str) -> float:
    """SQuAD token F1. Two empty answers agree (SQuAD v2 rule); one empty answer scores 0."""
    gold_tokens = normalize_answer(reference).split()
    predicted_tokens = normalize_answer(prediction).split()
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)
    common = Counter(gold_tokens) & Counter(predicted_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    return _f1(overlap / len(predicted_tokens), overlap / len(gold_tokens))


def qa_metrics(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    pairs = list(zip(references, predictions, strict=True))
    if not pairs:
        return {"exact_match": 0.0, "f1": 0.0}
    return {
        "exact_match": statistics.fmean(exact_match(r, p) for r, p in pairs),
        "f1": statistics.fmean(token_f1(r, p) for r, p in pairs),
    }


# --- ROUGE and BLEU ----------------------------------------------------------------------------


def _rouge_scorer(rouge_types: Sequence[str]) -> RougeScorer:
    """rouge-score with stemming, and a tokenizer that keeps letters of every script.

    rouge-score's own tokenizer drops every character outside a-z0-9, so Russian or Chinese text
    would score 0 against itself. For ASCII text this tokenizer yields exactly rouge-score's tokens
    (it delegates to it); otherwise it keeps Unicode words, splits CJK into characters and stems
    the ASCII words the way rouge-score does.
    """
    from rouge_score import rouge_scorer, tokenizers

    ascii_tokenizer = tokenizers.DefaultTokenizer(use_stemmer=True)

    class UnicodeTokenizer(tokenizers.Tokenizer):
        def tokenize(self, text: str) -> list[str]:
            if text.isascii():
                return ascii_tokenizer.tokenize(text)
            tokens: list[str] = []
            for token in _UNICODE_TOKEN.findall(text.lower()):
                tokens.extend(ascii_tokenizer.tokenize(token) if token.isascii() else [token])
            return tokens

    return rouge_scorer.RougeScorer(list(rouge_types), tokenizer=UnicodeTokenizer())


def rouge_metrics(
    references: Sequence[str],
    predictions: Sequence[str],
    rouge_types: Sequence[str] = ("rouge1", "rouge2", "rougeL"),
) -> dict[str, float]:
    """Mean ROUGE F-measure per type over the examples (rouge-score, Porter stemming)."""
    scorer = _rouge_scorer(rouge_types)
    sums = dict.fromkeys(rouge_types, 0.0)
    count = 0
    for reference, prediction in zip(references, predictions, strict=True):
        scores = scorer.score(reference, prediction)
        for rouge_type in rouge_types:
            sums[rouge_type] += scores[rouge_type].fmeasure
        count += 1
    return {rouge_type: total / count if count else 0.0 for rouge_type, total in sums.items()}


def bleu_tokenizer_for(texts: Sequence[str]) -> str:
    """sacreBLEU tokenizer: "13a" (its default), or "char" when the text uses CJK characters."""
    return "char" if any(_CJK_CHAR.search(text) for text in texts) else "13a"


def corpus_bleu(predictions: Sequence[str], reference_sets: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU on a 0-1 scale; ``reference_sets[k][i]`` is the k-th reference of example i."""
    import sacrebleu

    if not predictions:
        return 0.0
    tokenizer = bleu_tokenizer_for([text for refs in reference_sets for text in refs])
    return (
        sacrebleu.corpus_bleu(
            list(predictions), [list(refs) for refs in reference_sets], tokenize=tokenizer
        ).score
        / 100
    )


# --- Task choice and the entry point -----------------------------------------------------------


def _is_span(answer: str, context: str) -> bool:
    """Whether the answer occurs in the context as whole words, after SQuAD normalisation."""
    normalized = normalize_answer(answer)
    return bool(normalized) and f" {normalized} " in f" {normalize_answer(context)} "


def choose_task(
    references: Sequence[str], *, explicit: Task | str | None = None, inputs: Sequence[str] | None = None
) -> TaskChoice:
    """The evaluation task: the one given, else inferred from the references (and prompts).

    Inference, in order: a small closed label set (see the CLASSIFICATION_* thresholds) is
    classification; short answers found verbatim in their prompts are extractive QA; references
    much shorter than their prompts are summarization; anything else is generation. The QA and
    summarization rules need ``inputs`` (the prompts, aligned with the references).
    """
    if explicit is not None:
        try:
            task = Task(explicit)
        except ValueError as exc:
            raise PermanentError(
                f"unknown evaluation task {explicit!r}; expected one of {[t.value for t in Task]}",
                code="unknown_task",
                field="task",
            ) from exc
        return TaskChoice(task=task, decided_by="explicit", reason="given in the request")
    if not references:
        return TaskChoice(task=Task.GENERATION, decided_by="inferred", reason="no references to infer from")

    labels = Counter(normalize_label(r) for r in references)
    longest_label = max(len(label.split()) for label in labels)
    if (
        len(labels) <= CLASSIFICATION_MAX_LABELS
        and len(references) >= CLASSIFICATION_MIN_EXAMPLES_PER_LABEL * len(labels)
        and longest_label <= CLASSIFICATION_MAX_LABEL_WORDS
    ):
        return TaskChoice(
            task=Task.CLASSIFICATION,
            decided_by="inferred",
            reason=(
                f"{len(labels)} distinct labels over {len(references)} references "
                f"(at most {CLASSIFICATION_MAX_LABELS} labels of at most {CLASSIFICATION_MAX_LABEL_WORDS} words, "
                f"each used {CLASSIFICATION_MIN_EXAMPLES_PER_LABEL}+ times on average)"
            ),
        )

    if inputs is not None and len(inputs) == len(references):
        reference_words = [len(r.split()) for r in references]
        spans = sum(_is_span(r, i) for r, i in zip(references, inputs, strict=True))
        span_share = spans / len(references)
        if (
            span_share >= QA_MIN_SPAN_SHARE
            and statistics.median(reference_words) <= QA_MAX_MEDIAN_ANSWER_WORDS
        ):
            return TaskChoice(
                task=Task.EXTRACTIVE_QA,
                decided_by="inferred",
                reason=f"{span_share:.0%} of the answers are spans of their prompt (threshold {QA_MIN_SPAN_SHARE:.0%})",
            )
        ratios = [len(r.split()) / max(1, len(i.split())) for r, i in zip(references, inputs, strict=True)]
        median_ratio = statistics.median(ratios)
        if (
            median_ratio <= SUMMARY_MAX_LENGTH_RATIO
            and statistics.median(reference_words) >= SUMMARY_MIN_MEDIAN_WORDS
        ):
            return TaskChoice(
                task=Task.SUMMARIZATION,
                decided_by="inferred",
                reason=(
                    f"references are {median_ratio:.0%} of their prompt's length in the median "
                    f"(threshold {SUMMARY_MAX_LENGTH_RATIO:.0%})"
                ),
            )
    return TaskChoice(
        task=Task.GENERATION,
        decided_by="inferred",
        reason="free-form references that are neither a label set, spans of the prompt, nor summaries",
    )


def compute_metrics(
    task: Task | str, references: Sequence[str], predictions: Sequence[str | None]
) -> MetricResult:
    """Score one model's predictions against the references with the task's metrics.

    Scores (all 0-1): classification ``accuracy``, ``micro_f1``, ``macro_f1``,
    ``out_of_label_rate`` and per-class scores; summarization ``rouge1``, ``rouge2``, ``rougeL``;
    extractive QA ``exact_match``, ``f1``; generation ``bleu``, ``rougeL``.
    """
    task = Task(task)
    if len(references) != len(predictions):
        raise PermanentError(
            f"{len(references)} references but {len(predictions)} predictions", code="length_mismatch"
        )
    failed = sum(p is None for p in predictions)
    answers = [p if p is not None else "" for p in predictions]
    notes: list[str] = []
    if failed:
        notes.append(f"{failed} failed model call{'s' if failed != 1 else ''} scored as empty answers")
    per_class: dict[str, ClassScores] = {}
    if task is Task.CLASSIFICATION:
        scores, per_class = classification_metrics(references, answers)
    elif task is Task.SUMMARIZATION:
        scores = rouge_metrics(references, answers)
    elif task is Task.EXTRACTIVE_QA:
        scores = qa_metrics(references, answers)
    else:
        scores = {
            "bleu": corpus_bleu(answers, [list(references)]),
            **rouge_metrics(references, answers, ("rougeL",)),
        }
        if bleu_tokenizer_for(references) == "char":
            notes.append("BLEU tokenised by character (CJK text)")
    return MetricResult(
        task=task, scores=scores, count=len(references), failed=failed, per_class=per_class, notes=notes
    )

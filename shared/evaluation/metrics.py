"""Task metrics for comparing a base model with its tuned version.

Every score is on a 0-1 scale (BLEU and chrF included: sacreBLEU's 0-100 scores divided by 100),
so one tolerance decides the verdict whatever the task. Each task has a *primary* metric, the one
the verdict is based on (:func:`primary_metric_for`): classification ``macro_f1`` (strict label
match), summarization ``rougeL``, extractive QA ``f1``, generation ``bleu`` when the references
are long enough for it (median :data:`BLEU_MIN_MEDIAN_TOKENS`+ tokens), else sentence-level
``chrf``. A metric whose value is degenerate for the data is not reported: corpus BLEU is 0
whenever no 4-gram matches, so on 1-3-token answers it would call a perfect model worse than a
verbose one.

Each score is also kept per example (:class:`ExampleScores`): a mean score's value of every
example, the label indices of every classification answer, sacreBLEU's n-gram counts of every
BLEU sentence. :mod:`shared.evaluation.confidence` recomputes every score, corpus-level ones
included, from them on resamples of the examples, without scoring a text again.

A prediction that is ``None`` is an example whose model call failed. It is scored as an empty
answer, so that base and tuned model are always scored on the same examples, and it is counted in
:attr:`MetricResult.failed`.

Function calling: when some reference answers are function calls, every task also reports
``function_name_accuracy`` and ``function_args_exact_match`` (:func:`function_call_scores`), means
over every test example like the others, so their intervals come the same way.

rouge-score and sacrebleu are imported inside the functions that use them: importing this module
costs nothing at a function's cold start. The task decision lives in
:mod:`shared.evaluation.task_rule` (re-exported here).
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import PermanentError
from shared.evaluation.task_rule import (
    CJK,
    TaskChoice,
    choice_from_request,
    choose_task,
    is_span,
    normalize_answer,
    normalize_label,
)
from shared.messages import Task

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer

__all__ = [
    "CONFUSION_MAX_LABELS",
    "GATE_METRICS",
    "METRICS_BY_TASK",
    "PRIMARY_METRIC",
    "ClassScores",
    "ConfusionMatrix",
    "ExampleScores",
    "MetricResult",
    "TaskChoice",
    "bleu_from_statistics",
    "bleu_statistics",
    "choice_from_request",
    "choose_task",
    "classification_metrics",
    "compute_metrics",
    "confusion_labels",
    "confusion_matrix",
    "corpus_bleu",
    "exact_match",
    "extract_label",
    "function_call_scores",
    "is_span",
    "normalize_answer",
    "normalize_label",
    "primary_metric_for",
    "qa_metrics",
    "references_by_prompt",
    "rouge_metrics",
    "token_f1",
]

#: The primary metric of each task; generation falls back to ``chrf`` on short references.
PRIMARY_METRIC: dict[Task, str] = {
    Task.CLASSIFICATION: "macro_f1",
    Task.SUMMARIZATION: "rougeL",
    Task.EXTRACTIVE_QA: "f1",
    Task.GENERATION: "bleu",
}
#: What each task reports (``compute_metrics``'s scores), higher-is-better ones only: the metrics
#: a ``baseline_gate`` may name. BLEU is left out of generation runs whose answers are too short
#: for it (``primary_metric_for``); a gate on it then does not apply and says so.
METRICS_BY_TASK: dict[str, frozenset[str]] = {
    Task.CLASSIFICATION.value: frozenset({"accuracy", "micro_f1", "macro_f1"}),
    Task.SUMMARIZATION.value: frozenset({"rouge1", "rouge2", "rougeL", "rougeLsum"}),
    Task.EXTRACTIVE_QA.value: frozenset({"exact_match", "f1"}),
    Task.GENERATION.value: frozenset({"bleu", "chrf", "rougeL", "exact_match"}),
}
GATE_METRICS: frozenset[str] = frozenset().union(*METRICS_BY_TASK.values())
#: Corpus BLEU is reported (and primary for generation) only when the median reference has at
#: least this many tokens: BLEU's geometric mean needs 4-gram matches, and with shorter answers
#: most examples can have none, so the score says nothing about the answers. 4 is BLEU's own
#: n-gram order; below it, sentence-level chrF (character n-grams) is the primary metric.
BLEU_MIN_MEDIAN_TOKENS = 4
SUMMARY_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
#: Classes a confusion matrix shows (summary.json and report.html): 30 rows of 31 columns still
#: read as a table; with more classes the most frequent are shown and the rest counted apart.
CONFUSION_MAX_LABELS = 30

_UNICODE_TOKEN = re.compile(f"[{CJK}]|[^\\W_{CJK}]+")
# BLEU: characters written without spaces (CJK, CJK punctuation, full-width forms) are tokens of
# their own, as in sacreBLEU's "zh" tokenizer (which misses kana); everything else is "13a".
_BLEU_SEPARATE = re.compile(f"([{CJK}\u3000-\u303f\uff00-\uffef])")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[\u3002\uff01\uff1f])|\n+")


class ClassScores(BaseModel):
    model_config = ConfigDict(frozen=True)

    precision: float
    recall: float
    f1: float
    support: int


class ExampleScores(BaseModel):
    """What each test example contributes to one model's scores: enough to recompute every score
    on any resample of the examples (:mod:`shared.evaluation.confidence`)."""

    model_config = ConfigDict(frozen=True)

    count: int
    #: Scores that are the mean of a per-example value (ROUGE, chrF, SQuAD EM / F1, exact match):
    #: the score's name, then one value per example.
    means: dict[str, list[float]] = {}
    #: Classification: every allowed label, sorted, and per example the index in it of the
    #: reference's label and of the answer, strict and lenient (-1: outside the label set).
    labels: list[str] = []
    gold: list[int] = []
    strict: list[int] = []
    lenient: list[int] = []
    #: BLEU: sacreBLEU's statistics of each example (hypothesis length, reference length, then
    #: matching and total n-grams for n = 1..4). Corpus BLEU is a function of their sums.
    bleu: list[list[int]] = []


class MetricResult(BaseModel):
    """Scores of one model on one test split."""

    model_config = ConfigDict(frozen=True)

    task: Task
    scores: dict[str, float]
    count: int
    failed: int
    per_class: dict[str, ClassScores] = {}
    notes: list[str] = []
    #: The metric the verdict uses; empty: the task's default (:data:`PRIMARY_METRIC`).
    primary: str = ""
    #: Why that metric, when it is not the task's default.
    primary_reason: str = ""
    #: The scores per example, for the confidence intervals; not part of any stored document.
    examples: ExampleScores | None = Field(default=None, exclude=True, repr=False)

    @property
    def primary_metric(self) -> str:
        return self.primary or PRIMARY_METRIC[self.task]


# --- Classification ----------------------------------------------------------------------------


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _label_pattern(labels: Sequence[str]) -> re.Pattern[str] | None:
    """One alternation of every label as a whole word or phrase, longest first.

    "Whole" means not glued to another letter or digit of a spaced script; a CJK label may sit
    inside CJK text. Longest first, so "very positive" is found as itself, not as "positive".
    """
    alternatives = sorted({label for label in labels if label}, key=lambda label: (-len(label), label))
    if not alternatives:
        return None
    boundary = f"[^\\W{CJK}]"
    body = "|".join(re.escape(label) for label in alternatives)
    return re.compile(f"(?<!{boundary})(?:{body})(?!{boundary})")


def extract_label(prediction: str, labels: Sequence[str]) -> str | None:
    """The one allowed label a (verbose) answer names, or None.

    "The sentiment is positive." and "Label: positive" give "positive" (case-insensitive,
    punctuation around it ignored); an answer naming two different labels ("positive, not
    negative") or none gives None. ``labels`` are normalised labels (:func:`normalize_label`).
    """
    label_set = set(labels)
    return _extract(prediction, label_set, _label_pattern(sorted(label_set)))


def _extract(prediction: str, label_set: set[str], pattern: re.Pattern[str] | None) -> str | None:
    normalised = normalize_label(prediction)
    if normalised in label_set:
        return normalised
    if pattern is None:
        return None
    found = {match.group(0) for match in pattern.finditer(" ".join(prediction.split()).casefold())}
    return found.pop() if len(found) == 1 else None


def classification_metrics(
    references: Sequence[str], predictions: Sequence[str], labels: Sequence[str] | None = None
) -> tuple[dict[str, float], dict[str, ClassScores]]:
    """Accuracy, micro / macro F1 and per-class scores, strict and lenient.

    The label set is ``labels`` (the dataset's, over every split, normalised) plus the references'
    labels. A prediction outside it (free text, a typo) is a miss for its true class and nobody's
    false positive; sklearn would instead add it as a class of its own with F1 0, which punishes
    one stray answer as hard as a whole class missed. That is also why micro F1 can differ from
    accuracy: only predictions outside the label set make them differ. ``out_of_label_rate`` says
    how often it happened. Classes in the per-class table and the macro average are those of the
    references and those predicted (as sklearn does), never a class of the dataset that neither
    the test split nor the model used.

    Strict scores compare the normalised answer with the label. ``lenient_accuracy`` and
    ``lenient_macro_f1`` first take the one allowed label a verbose answer names
    (:func:`extract_label`): "The sentiment is positive." counts as "positive".
    """
    scores, per_class, _ = _classification(references, predictions, labels)
    return scores, per_class


def _classification(
    references: Sequence[str], predictions: Sequence[str], labels: Sequence[str] | None
) -> tuple[dict[str, float], dict[str, ClassScores], ExampleScores]:
    gold = [normalize_label(r) for r in references]
    label_set = set(gold) | {normalize_label(label) for label in labels or ()}
    strict = [normalize_label(p) for p in predictions]
    scores, per_class = _label_scores(gold, strict, label_set)
    pattern = _label_pattern(sorted(label_set))
    lenient = [
        _extract(raw, label_set, pattern) or guess for raw, guess in zip(predictions, strict, strict=True)
    ]
    lenient_scores, _ = _label_scores(gold, lenient, label_set)
    scores["lenient_accuracy"] = lenient_scores["accuracy"]
    scores["lenient_macro_f1"] = lenient_scores["macro_f1"]
    names = sorted(label_set)
    index = {name: number for number, name in enumerate(names)}
    examples = ExampleScores(
        count=len(gold),
        labels=names,
        gold=[index[g] for g in gold],
        strict=[index.get(guess, -1) for guess in strict],
        lenient=[index.get(guess, -1) for guess in lenient],
    )
    return scores, per_class, examples


def _label_scores(
    gold: Sequence[str], guessed: Sequence[str], label_set: set[str]
) -> tuple[dict[str, float], dict[str, ClassScores]]:
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
    for label in sorted(set(gold) | set(false_positive)):
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


class ConfusionMatrix(BaseModel):
    """How one model's strict answers fall, per reference label."""

    model_config = ConfigDict(frozen=True)

    #: The classes, rows (reference) and columns (answer) in this order.
    labels: list[str]
    #: ``matrix[i][j]``: examples whose reference is ``labels[i]`` and whose answer is
    #: ``labels[j]``; the last column counts answers that are none of ``labels``: outside the
    #: label set, or a class left out of a matrix cut to :data:`CONFUSION_MAX_LABELS`.
    matrix: list[list[int]]
    #: Classes this model's references or answers use that the matrix leaves out, and the test
    #: examples whose reference is one of them (not in any row).
    omitted_labels: int = 0
    omitted_examples: int = 0


def confusion_labels(*models: ExampleScores, limit: int = CONFUSION_MAX_LABELS) -> list[str]:
    """The classes of the models' confusion matrices, the same for all: every label a reference
    or a strict answer uses, or the ``limit`` most frequent of them (references first, then
    answers), in sorted order."""
    references: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    for model in models:
        references.update(model.labels[gold] for gold in model.gold)
        answers.update(model.labels[guess] for guess in model.strict if guess >= 0)
    # The references are the same for every model: counting them once per model changes no order.
    used = sorted(
        references.keys() | answers.keys(), key=lambda name: (-references[name], -answers[name], name)
    )
    return sorted(used[:limit])


def confusion_matrix(examples: ExampleScores, labels: Sequence[str]) -> ConfusionMatrix:
    """The strict answers' confusion matrix over ``labels`` (:func:`confusion_labels`)."""
    position = {name: number for number, name in enumerate(labels)}
    other = len(labels)
    matrix = [[0] * (other + 1) for _ in labels]
    omitted = 0
    left_out: set[str] = set()
    for gold, guess in zip(examples.gold, examples.strict, strict=True):
        answer = examples.labels[guess] if guess >= 0 else None
        if answer is not None and answer not in position:
            left_out.add(answer)
        row = position.get(examples.labels[gold])
        if row is None:
            left_out.add(examples.labels[gold])
            omitted += 1
            continue
        matrix[row][other if answer is None else position.get(answer, other)] += 1
    return ConfusionMatrix(
        labels=list(labels), matrix=matrix, omitted_labels=len(left_out), omitted_examples=omitted
    )


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


def _as_sets(references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    return [[r] if isinstance(r, str) else list(r) for r in references]


def references_by_prompt(prompts: Sequence[Hashable], references: Sequence[str]) -> list[list[str]]:
    """Every reference answer of each example's prompt: examples with an identical prompt share
    their answers (multi-answer QA), in first-seen order without repeats."""
    by_prompt: dict[Hashable, list[str]] = {}
    for prompt, reference in zip(prompts, references, strict=True):
        answers = by_prompt.setdefault(prompt, [])
        if reference not in answers:
            answers.append(reference)
    return [by_prompt[prompt] for prompt in prompts]


def qa_metrics(references: Sequence[str | Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
    """SQuAD exact match and F1, each the best over an example's reference answers.

    ``references[i]`` is one answer or the list of every acceptable answer of example i.
    """
    return _means(_qa_per_example(references, predictions))


def _qa_per_example(
    references: Sequence[str | Sequence[str]], predictions: Sequence[str]
) -> dict[str, list[float]]:
    pairs = list(zip(_as_sets(references), predictions, strict=True))
    return {
        "exact_match": [max(exact_match(r, p) for r in refs) for refs, p in pairs],
        "f1": [max(token_f1(r, p) for r in refs) for refs, p in pairs],
    }


def _means(per_example: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.fmean(values) if values else 0.0 for name, values in per_example.items()}


# --- ROUGE, chrF and BLEU ----------------------------------------------------------------------


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


def sentences_per_line(text: str) -> str:
    """The text with one sentence per line, as ``rougeLsum`` reads it (a simple splitter: after
    ``.!?`` and whitespace, after CJK full stops, and at line breaks)."""
    return "\n".join(part.strip() for part in _SENTENCE_BREAK.split(text) if part and part.strip())


def rouge_metrics(
    references: Sequence[str],
    predictions: Sequence[str],
    rouge_types: Sequence[str] = ("rouge1", "rouge2", "rougeL"),
) -> dict[str, float]:
    """Mean ROUGE F-measure per type over the examples (rouge-score, Porter stemming).

    ``rougeLsum`` is the summary-level LCS over sentences, so a summary whose sentences come in
    another order is not penalised as ``rougeL`` penalises it; texts are split into sentences
    first (:func:`sentences_per_line`), which the other types do not notice.
    """
    return _means(_rouge_per_example(references, predictions, rouge_types))


def _rouge_per_example(
    references: Sequence[str], predictions: Sequence[str], rouge_types: Sequence[str]
) -> dict[str, list[float]]:
    scorer = _rouge_scorer(rouge_types)
    values: dict[str, list[float]] = {rouge_type: [] for rouge_type in rouge_types}
    prepare = sentences_per_line if "rougeLsum" in rouge_types else str
    for reference, prediction in zip(references, predictions, strict=True):
        scores = scorer.score(prepare(reference), prepare(prediction))
        for rouge_type in rouge_types:
            values[rouge_type].append(scores[rouge_type].fmeasure)
    return values


def chrf(references: Sequence[str], predictions: Sequence[str]) -> float:
    """Mean sentence-level chrF (sacreBLEU's CHRF, character 6-grams, beta 2) on a 0-1 scale.

    Two empty texts agree (1.0), as for token F1.
    """
    values = _chrf_per_example(references, predictions)
    return statistics.fmean(values) if values else 0.0


def _chrf_per_example(references: Sequence[str], predictions: Sequence[str]) -> list[float]:
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    return [
        1.0
        if not reference.strip() and not prediction.strip()
        else metric.sentence_score(prediction, [reference]).score / 100
        for reference, prediction in zip(references, predictions, strict=True)
    ]


def bleu_text(text: str) -> str:
    """The text as BLEU tokenises it: CJK characters stand alone, the rest is sacreBLEU's "13a".

    The choice is per text, from its own characters: an English reference is tokenised the same
    whether or not another example of the corpus is Chinese or Japanese.
    """
    return _BLEU_SEPARATE.sub(r" \1 ", text)


def bleu_tokens(text: str) -> list[str]:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()(bleu_text(text)).split()


def corpus_bleu(predictions: Sequence[str], reference_sets: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU on a 0-1 scale; ``reference_sets[k][i]`` is the k-th reference of example i."""
    if not predictions:
        return 0.0
    return bleu_from_statistics(bleu_statistics(predictions, reference_sets))


def _bleu_metric() -> Any:
    from sacrebleu.metrics import BLEU

    # sacrebleu.corpus_bleu's defaults (exponential smoothing), on text bleu_text prepared.
    return BLEU(tokenize="13a")


def bleu_statistics(predictions: Sequence[str], reference_sets: Sequence[Sequence[str]]) -> list[list[int]]:
    """sacreBLEU's statistics of each example: [hypothesis length, reference length, matching
    n-grams for n = 1..4, total n-grams for n = 1..4]. Corpus BLEU is computed from their sums,
    which is what makes it cheap to recompute on resamples of the examples."""
    if not predictions:
        return []
    # The statistics method is sacreBLEU's own route to its significance tests; it is what
    # corpus_score sums.
    statistics_ = _bleu_metric()._extract_corpus_statistics(
        [bleu_text(p) for p in predictions], [[bleu_text(r) for r in refs] for refs in reference_sets]
    )
    return [[int(value) for value in row] for row in statistics_]


def bleu_from_statistics(rows: Sequence[Sequence[int]]) -> float:
    """Corpus BLEU (0-1) of the examples whose :func:`bleu_statistics` these are."""
    if not rows:
        return 0.0
    sums = [sum(column) for column in zip(*rows, strict=True)]
    return _bleu_metric()._compute_score_from_stats(sums).score / 100


def primary_metric_for(task: Task | str, references: Sequence[str]) -> tuple[str, str]:
    """(primary metric, why) for these references: the task's default, except generation on short
    references, where BLEU is degenerate and chrF decides."""
    task = Task(task)
    if task is not Task.GENERATION:
        return PRIMARY_METRIC[task], ""
    median = statistics.median(len(bleu_tokens(r)) for r in references) if references else 0
    tokens = f"{median:g} token{'' if median == 1 else 's'}"
    if median >= BLEU_MIN_MEDIAN_TOKENS:
        return "bleu", f"the median reference has {tokens}; BLEU needs {BLEU_MIN_MEDIAN_TOKENS}+"
    return "chrf", (
        f"not BLEU: the median reference has {tokens}, fewer than the {BLEU_MIN_MEDIAN_TOKENS} "
        "BLEU needs (it is 0 whenever no 4-gram matches)"
    )


# --- Function calls ------------------------------------------------------------------------------

FUNCTION_NAME_ACCURACY = "function_name_accuracy"
FUNCTION_ARGS_EXACT_MATCH = "function_args_exact_match"

#: One answer's function calls, each ``{"name": ..., "args": {...}}``.
Calls = Sequence[Mapping[str, Any]]


def _call_key(call: Mapping[str, Any]) -> tuple[str, str]:
    # Arguments compared as parsed JSON: key order and spacing do not matter, values and types do.
    return str(call.get("name", "")), orjson.dumps(
        call.get("args") or {}, option=orjson.OPT_SORT_KEYS
    ).decode()


def function_call_scores(
    reference_calls: Sequence[Calls], answer_calls: Sequence[Calls]
) -> dict[str, list[float]]:
    """Per example: ``function_name_accuracy`` 1 when the answer calls exactly the reference's
    functions (the same names as many times, in any order: parallel calls have no order), and
    ``function_args_exact_match`` 1 when each of those calls also has the reference's arguments.
    An example whose reference calls nothing scores 1 only when the answer calls nothing either:
    knowing when not to call is part of calling well."""
    names: list[float] = []
    args: list[float] = []
    for reference, answer in zip(reference_calls, answer_calls, strict=True):
        expected = sorted(_call_key(call) for call in reference)
        given = sorted(_call_key(call) for call in answer)
        names.append(float([name for name, _ in expected] == [name for name, _ in given]))
        args.append(float(expected == given))
    return {FUNCTION_NAME_ACCURACY: names, FUNCTION_ARGS_EXACT_MATCH: args}


# --- The entry point ---------------------------------------------------------------------------


def compute_metrics(
    task: Task | str,
    references: Sequence[str],
    predictions: Sequence[str | None],
    *,
    labels: Sequence[str] | None = None,
    prompts: Sequence[Hashable] | None = None,
    reference_calls: Sequence[Calls] | None = None,
    answer_calls: Sequence[Calls] | None = None,
) -> MetricResult:
    """Score one model's predictions against the references with the task's metrics.

    Scores (all 0-1): classification ``accuracy``, ``micro_f1``, ``macro_f1``,
    ``out_of_label_rate``, ``lenient_accuracy``, ``lenient_macro_f1`` and per-class scores
    (``labels``: the dataset's label set; the references' labels are always in it);
    summarization ``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum``; extractive QA
    ``exact_match``, ``f1``, each the best over every reference answer of the example's prompt
    (``prompts``: one hashable per example, equal for identical prompts); generation ``bleu``
    (only on references long enough, see :data:`BLEU_MIN_MEDIAN_TOKENS`), ``chrf``, ``rougeL``,
    ``exact_match``. ``reference_calls`` / ``answer_calls``: the function calls of each reference
    and answer; when a reference calls, :func:`function_call_scores` are added to every task's.
    """
    task = Task(task)
    if len(references) != len(predictions):
        raise PermanentError(
            f"{len(references)} references but {len(predictions)} predictions", code="length_mismatch"
        )
    if prompts is not None and len(prompts) != len(references):
        raise PermanentError(
            f"{len(references)} references but {len(prompts)} prompts", code="length_mismatch"
        )
    failed = sum(p is None for p in predictions)
    answers = [p if p is not None else "" for p in predictions]
    notes: list[str] = []
    if failed:
        notes.append(f"{failed} failed model call{'s' if failed != 1 else ''} scored as empty answers")
    per_class: dict[str, ClassScores] = {}
    primary, primary_reason = primary_metric_for(task, references)
    if task is Task.CLASSIFICATION:
        scores, per_class, examples = _classification(references, answers, labels)
    elif task is Task.SUMMARIZATION:
        means = _rouge_per_example(references, answers, SUMMARY_ROUGE_TYPES)
        scores, examples = _means(means), ExampleScores(count=len(answers), means=means)
    elif task is Task.EXTRACTIVE_QA:
        reference_sets = (
            references_by_prompt(prompts, references) if prompts is not None else _as_sets(references)
        )
        shared = sum(len(refs) > 1 for refs in reference_sets)
        if shared:
            notes.append(
                f"{shared} example{'s' if shared != 1 else ''} share{'' if shared != 1 else 's'} a prompt "
                "with other answers: scored against the best of them"
            )
        means = _qa_per_example(reference_sets, answers)
        scores, examples = _means(means), ExampleScores(count=len(answers), means=means)
    else:
        scores = {}
        bleu: list[list[int]] = []
        if primary == "bleu":  # else BLEU is degenerate here (primary_reason says why) and left out
            bleu = bleu_statistics(answers, [list(references)])
            scores["bleu"] = bleu_from_statistics(bleu)
        means = {
            "chrf": _chrf_per_example(references, answers),
            **_rouge_per_example(references, answers, ("rougeL",)),
            "exact_match": [exact_match(r, a) for r, a in zip(references, answers, strict=True)],
        }
        scores.update(_means(means))
        examples = ExampleScores(count=len(answers), means=means, bleu=bleu)
    if reference_calls is not None and any(reference_calls):
        calls = function_call_scores(reference_calls, answer_calls or [()] * len(reference_calls))
        scores.update(_means(calls))
        examples = examples.model_copy(update={"means": {**examples.means, **calls}})
    return MetricResult(
        task=task,
        scores=scores,
        count=len(references),
        failed=failed,
        per_class=per_class,
        notes=notes,
        primary=primary,
        primary_reason=primary_reason,
        examples=examples,
    )

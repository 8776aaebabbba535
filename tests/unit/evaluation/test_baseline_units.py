"""The baseline before spend, piece by piece: the gate, the upload settings that ask for it, the
states a job moves through, the reuse of the baseline's answers through the real SDK, and what the
user reads (notice, ingest report section, summary)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from local_http import JsonHandler, serving

from shared.config import Settings
from shared.datasets.options import MAX_FEW_SHOT, UploadSettingsError, load_manifest, parse_object_metadata
from shared.evaluation.baseline import (
    BASELINE_HEADING,
    baseline_line,
    baseline_markdown,
    gate_met_reason,
    gate_outcome,
)
from shared.evaluation.gate import BaselineGate, gate_problem
from shared.evaluation.metrics import GATE_METRICS, METRICS_BY_TASK, compute_metrics
from shared.evaluation.report import BaselineFacts, EvaluationSummary
from shared.evaluation.runner import GenerationOptions, Prediction, TestExample, run_predictions
from shared.messages import Task, TuningRequestV1
from shared.notify.content import BaselineOutcome, build_notification
from shared.state.jobs import ACTIVE, BASELINE, BASELINE_MET, QUEUED, SUBMITTING, TERMINAL, is_forward

# --- The gate ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metric", "operator", "value"),
    [
        ("macro_f1>=0.8", "macro_f1", ">=", 0.8),
        (" rougeL > .35 ", "rougeL", ">", 0.35),
        ("accuracy>=1", "accuracy", ">=", 1.0),
    ],
)
def test_a_gate_parses_to_its_metric_operator_and_value(
    text: str, metric: str, operator: str, value: float
) -> None:
    gate = BaselineGate.parse(text)
    assert (gate.metric, gate.operator, gate.value) == (metric, operator, value)
    assert BaselineGate.parse(str(gate)) == gate


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("macro_f1=0.8", "is not METRIC>=VALUE"),
        ("macro_f1<=0.8", "is not METRIC>=VALUE"),
        ("f2>=0.5", "'f2' is not a metric the evaluation reports"),
        ("accuracy>=80", "outside 0..1"),
        ("out_of_label_rate>=0.1", "is not a metric"),  # lower is better: it cannot gate
    ],
)
def test_a_gate_that_cannot_work_says_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        BaselineGate.parse(text)


def test_the_gate_is_met_at_its_bound_only_with_greater_or_equal() -> None:
    assert BaselineGate.parse("f1>=0.5").met_by(0.5)
    assert not BaselineGate.parse("f1>0.5").met_by(0.5)
    assert BaselineGate.parse("f1>0.5").met_by(0.5001)
    assert not BaselineGate.parse("f1>=0.5").met_by(0.4999)


def test_a_gate_on_a_metric_the_task_does_not_report_is_refused_for_that_task() -> None:
    assert gate_problem("rougeL>=0.3", "summarization") is None
    assert gate_problem("rougeL>=0.3", None) is None  # the task is not known yet
    problem = gate_problem("rougeL>=0.3", "classification")
    assert problem is not None
    assert "not reported for the classification task" in problem
    assert "macro_f1" in problem


@pytest.mark.parametrize(
    ("task", "references", "answers"),
    [
        (Task.CLASSIFICATION, ["pos", "neg", "pos"], ["pos", "pos", "neg"]),
        (Task.SUMMARIZATION, ["a short summary of it"] * 2, ["a summary", "short it"]),
        (Task.EXTRACTIVE_QA, ["Paris", "1999"], ["Paris", "in 1999"]),
        (Task.GENERATION, ["one two three four five six seven eight"] * 2, ["one two three", "five six"]),
    ],
)
def test_every_gateable_metric_is_one_the_task_reports(
    task: Task, references: list[str], answers: list[str]
) -> None:
    scores = compute_metrics(task, references, answers).scores
    assert METRICS_BY_TASK[task.value] <= set(scores)
    assert METRICS_BY_TASK[task.value] <= GATE_METRICS


def test_the_gate_outcome_names_the_score_and_whether_it_applies() -> None:
    scores = {"accuracy": 0.9, "macro_f1": 0.85, "micro_f1": 0.9}
    met = gate_outcome("macro_f1>=0.8", "classification", scores)
    assert met == {
        "gate": "macro_f1>=0.8",
        "gate_met": True,
        "gate_note": "the base model meets baseline_gate macro_f1>=0.8 (macro_f1 0.850)",
    }
    assert gate_outcome("macro_f1>=0.9", "classification", scores)["gate_met"] is False
    not_applied = gate_outcome("rougeL>=0.1", "classification", scores)
    assert not_applied["gate_met"] is None
    assert "was not applied" in not_applied["gate_note"]
    assert gate_outcome(None, "classification", scores) == {"gate": None, "gate_met": None, "gate_note": ""}


# --- Upload settings ----------------------------------------------------------------------------


def test_few_shot_and_the_gate_come_from_custom_metadata_and_manifests() -> None:
    upload = parse_object_metadata(
        {"x-goog-meta-few-shot": "3", "x-goog-meta-baseline-gate": "macro_f1 >= 0.7"}
    )
    assert upload.few_shot == 3
    assert upload.baseline_gate == "macro_f1>=0.7"
    manifest = load_manifest(
        b'{"train": "datasets/t.jsonl", "few_shot": 2, "baseline_gate": "f1>0.5"}', "m.tuning.json"
    )
    assert (manifest.few_shot, manifest.baseline_gate) == (2, "f1>0.5")


@pytest.mark.parametrize(
    ("metadata", "field", "says"),
    [
        (
            {"x-goog-meta-few-shot": str(MAX_FEW_SHOT + 1)},
            "x-goog-meta-few-shot",
            f"less than or equal to {MAX_FEW_SHOT}",
        ),
        ({"x-goog-meta-few-shot": "many"}, "x-goog-meta-few-shot", "valid integer"),
        ({"x-goog-meta-baseline-gate": "f1 is high"}, "x-goog-meta-baseline-gate", "METRIC>=VALUE"),
    ],
)
def test_a_bad_baseline_setting_names_its_key(metadata: dict[str, str], field: str, says: str) -> None:
    with pytest.raises(UploadSettingsError) as caught:
        parse_object_metadata(metadata)
    assert caught.value.field == field
    assert says in caught.value.message


def test_the_request_carries_the_baseline_settings() -> None:
    request = TuningRequestV1(
        dataset_id="d",
        base_model="gemini-2.5-flash",
        training_uri="gs://bucket/prepared/d/train.jsonl",
        test_uri="gs://bucket/prepared/d/test.jsonl",
        few_shot=4,
        baseline_gate="accuracy>=0.9",
    )
    again = TuningRequestV1.model_validate_json(request.to_json())
    assert (again.few_shot, again.baseline_gate) == (4, "accuracy>=0.9")


# --- States ------------------------------------------------------------------------------------


def test_a_baseline_comes_before_the_queue_and_holds_no_quota_slot() -> None:
    assert is_forward(BASELINE, QUEUED)
    assert is_forward(BASELINE, BASELINE_MET)
    assert not is_forward(QUEUED, BASELINE)
    assert not is_forward(BASELINE_MET, QUEUED)
    assert BASELINE_MET in TERMINAL
    assert BASELINE not in ACTIVE
    assert QUEUED not in ACTIVE
    assert SUBMITTING in ACTIVE


# --- Reusing the baseline's answers through the real SDK ---------------------------------------


class _CountingVertex(JsonHandler):
    """Answers every generateContent; records which model each call was for and its turns."""

    calls: ClassVar[list[tuple[str, int]]] = []

    def respond(self, body: dict[str, Any]) -> Any:
        self.calls.append((self.path, len(body.get("contents", []))))
        return {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": "positive"}]}, "finishReason": "STOP"}
            ]
        }


@pytest.fixture
def counting_vertex() -> Iterator[str]:
    _CountingVertex.calls = []
    with serving(_CountingVertex) as url:
        yield url


EXAMPLES = [
    TestExample(
        index=i,
        system_instruction=None,
        contents=[{"role": "user", "parts": [{"text": f"Review {i}"}]}],
        reference="positive",
    )
    for i in range(4)
]


def test_reused_base_answers_are_not_asked_again_and_shots_go_to_the_base_model_only(
    counting_vertex: str,
) -> None:
    settings = Settings(tuning_api_url=counting_vertex, project="p", location="us-central1")
    endpoint = "projects/p/locations/us-central1/endpoints/7"
    options = GenerationOptions.from_settings(settings, "gemini-2.5-flash", EXAMPLES)
    shots = (
        {"role": "user", "parts": [{"text": "Great!"}]},
        {"role": "model", "parts": [{"text": "positive"}]},
    )
    baseline = run_predictions(
        settings, EXAMPLES, base_model="gemini-2.5-flash", tuned_model=None, options=options, base_shots=shots
    )
    assert [path for path, _ in _CountingVertex.calls if "/endpoints/" in path] == []
    assert {turns for _, turns in _CountingVertex.calls} == {3}  # two shot turns + the prompt
    assert all(p.tuned_output is None and p.tuned_error is None for p in baseline)

    _CountingVertex.calls = []
    reused = {p.index: p.model_copy(update={"base_output": f"kept {p.index}"}) for p in baseline}
    final = run_predictions(
        settings,
        EXAMPLES,
        base_model="gemini-2.5-flash",
        tuned_model=endpoint,
        options=options,
        reused_base=reused,
    )
    assert all("/endpoints/" in path for path, _ in _CountingVertex.calls)
    assert len(_CountingVertex.calls) == len(EXAMPLES)
    assert {turns for _, turns in _CountingVertex.calls} == {1}  # the tuned model gets no shots
    assert [p.base_output for p in final] == [f"kept {i}" for i in range(4)]
    assert [p.tuned_output for p in final] == ["positive"] * 4


# --- What the user reads ----------------------------------------------------------------------


RECORDED = {
    "metrics": {"accuracy": 0.5, "macro_f1": 0.42, "micro_f1": 0.5},
    "primary_metric": "macro_f1",
    "examples": 120,
    "few_shot": 0,
    "evaluated_at": datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
    "seconds": 41.5,
    "cost": {"calls": 120, "input_tokens": 9000, "max_output_tokens": 4000, "dollars": 0.01},
    "gate": "macro_f1>=0.8",
    "gate_met": False,
    "gate_note": "the base model does not meet baseline_gate macro_f1>=0.8 (macro_f1 0.420)",
}


def test_the_baseline_reads_as_the_issue_asks() -> None:
    assert baseline_line(RECORDED) == "macro_f1 0.420 on 120 test examples (zero-shot)"
    assert baseline_line({**RECORDED, "few_shot": 3}).endswith("(3-shot)")
    section = baseline_markdown(RECORDED)
    assert section.startswith(BASELINE_HEADING)
    assert "| macro_f1 | 0.4200 |" in section
    assert "120 calls" in section
    assert "$0.01" in section
    assert "does not meet baseline_gate" in section
    met = {
        **RECORDED,
        "gate_met": True,
        "gate_note": "the base model meets baseline_gate macro_f1>=0.4 (macro_f1 0.420)",
    }
    assert gate_met_reason(met).endswith("so no tuning job was created")


def test_the_baseline_notice_says_the_score_and_that_the_job_is_queued() -> None:
    notice = build_notification(
        BaselineOutcome(
            job_id="job-1",
            dataset_id="ds",
            base_model="gemini-2.5-flash",
            summary_line=baseline_line(RECORDED),
            metrics=RECORDED["metrics"],
            gate_note=RECORDED["gate_note"],
        )
    )
    assert notice.summary.startswith(
        "Baseline: macro_f1 0.420 on 120 test examples (zero-shot); tuning job queued."
    )
    assert ("macro_f1", "0.420") in notice.facts
    failed = build_notification(
        BaselineOutcome(
            job_id="job-1", dataset_id="ds", base_model="m", error="the baseline could not be taken: gone"
        )
    )
    assert failed.summary == "the baseline could not be taken: gone; tuning job queued all the same."


def test_the_summary_keeps_the_baseline_and_tuning_fields() -> None:
    facts = BaselineFacts.model_validate({**RECORDED, "reused": True, "predictions_uri": "gs://b/p"})
    assert facts.reused
    assert facts.metrics["macro_f1"] == 0.42
    fields = EvaluationSummary.model_fields
    assert {"baseline", "tuning"} <= set(fields)


def test_prediction_rows_of_a_baseline_have_no_tuned_side() -> None:
    row = Prediction(index=0, prompt="p", reference="r", base_output="b", tuned_output=None)
    assert Prediction.model_validate_json(row.to_jsonl()).tuned_output is None

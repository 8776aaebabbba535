"""`sftpipe report` and the demo print summary.json's metric table with the delta's interval."""

from __future__ import annotations

import json

from rich.console import Console

from shared.cli.output import metric_table
from shared.evaluation.metrics import TaskChoice, compute_metrics
from shared.evaluation.report import build_summary, format_interval
from shared.messages import Task


def _printed(summary: dict) -> str:
    console = Console(record=True, width=200)
    console.print(metric_table(summary))
    return console.export_text()


def test_the_table_shows_the_verdict_the_intervals_and_the_reason() -> None:
    references = ["Eiffel Tower"] * 100
    summary = build_summary(
        job_id="j",
        dataset_id="d",
        base_model="gemini-2.5-flash",
        task_choice=TaskChoice(task=Task.EXTRACTIVE_QA, decided_by="explicit", reason="given"),
        base=compute_metrics(Task.EXTRACTIVE_QA, references, ["Big Ben"] * 50 + references[:50]),
        tuned=compute_metrics(Task.EXTRACTIVE_QA, references, ["Big Ben"] * 48 + references[:52]),
    )
    document = json.loads(summary.to_json())
    printed = _printed(document)
    assert "extractive_qa: base gemini-2.5-flash vs tuned (not distinguishable)" in printed
    assert "delta 95% CI" in printed
    assert summary.primary.delta_ci is not None
    assert format_interval(summary.primary.delta_ci, signed=True) in printed
    assert "✱" not in printed
    assert "not distinguishable from the base model: f1 0.500 -> 0.520" in printed
    assert "served locally" not in printed
    local = _printed({**document, "served_locally_by": "SmolLM2-135M-Instruct"})
    assert "served locally by SmolLM2-135M-Instruct, not Gemini" in local


def test_a_summary_without_intervals_still_prints() -> None:
    printed = _printed(
        {
            "task": "classification",
            "base_model": "m",
            "verdict": "improved",
            "metrics": [{"name": "macro_f1", "base": 0.5, "tuned": 0.7, "delta": 0.2, "primary": True}],
        }
    )
    assert "macro_f1 *" in printed
    assert "+0.200" in printed

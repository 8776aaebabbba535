from __future__ import annotations

import math

import pytest

from shared.config import DEFAULT_TRAINING_PRICES
from shared.evaluation.metrics import TaskChoice, compute_metrics
from shared.evaluation.report import (
    EvaluationSummary,
    ExampleComparison,
    LossPoint,
    build_summary,
    estimate_training_cost,
)
from shared.messages import Task

XSS = "<script>alert(1)</script>"


@pytest.fixture
def hostile_summary() -> EvaluationSummary:
    """A classification summary with a script tag in every piece of text a dataset can control."""
    # Ten times eight examples: enough for the tuned model's gain to be a clear one.
    references = ["positive", "negative", XSS, "positive", "negative", XSS, "positive", "negative"] * 10
    base = ["Positive", "positive", XSS, "negative", "negative", "not sure", "positive", "negative"] * 10
    tuned = ["positive", "negative", XSS, "positive", "negative", XSS, "positive", None] * 10
    choice = TaskChoice(task=Task.CLASSIFICATION, decided_by="inferred", reason=f"labels such as {XSS}")
    return build_summary(
        job_id=f"job-{XSS}",
        dataset_id=f"dataset-{XSS}",
        base_model="gemini-2.5-flash",
        task_choice=choice,
        base=compute_metrics(Task.CLASSIFICATION, references, base),
        tuned=compute_metrics(Task.CLASSIFICATION, references, tuned),
        tuned_model=f"models/{XSS}",
        tuned_endpoint="projects/p/locations/us-central1/endpoints/123",
        tuning_duration_s=3725,
        evaluation_duration_s=212,
        cost=estimate_training_cost(
            training_tokens=1_234_567,
            epochs=3,
            base_model="gemini-2.5-flash",
            prices_per_m_tokens=DEFAULT_TRAINING_PRICES,
            tokens_counted="estimated",
        ),
        dataset_statistics={"train examples": 1200, "test examples": 150, f"field {XSS}": XSS},
        loss_curves={
            "training": [LossPoint(step=s, value=3 * math.exp(-s / 25) + 0.4) for s in range(0, 201, 10)],
            f"validation {XSS}": [
                LossPoint(step=s, value=3 * math.exp(-s / 25) + 0.5) for s in range(0, 201, 25)
            ],
        },
    )


@pytest.fixture
def hostile_examples() -> list[ExampleComparison]:
    return [
        ExampleComparison(
            prompt=f"Review: {XSS} Great phone, the battery lasts two days.\nLabel the sentiment.",
            reference="positive",
            base_output="Positive",
            tuned_output="positive",
        ),
        ExampleComparison(
            prompt="Review: <img src=x onerror=alert(2)> meh.",
            reference=XSS,
            base_output=XSS,
            tuned_output=None,
        ),
    ]

"""Vertex AI's own count of the training set (``tuning_data_stats``) beside ingest's estimate:
recorded by the poller, shown in the report and the notification (issue 16, part 2).

Before: the stats were never read, so the cost and token figures stayed estimates after Vertex
had counted exactly."""

from __future__ import annotations

import numpy as np
import pytest
from google.genai import types

from local.tuning.data import distribution
from shared.evaluation.report import EvaluationSummary, render_report_html, vertex_counts
from shared.notify.content import EvaluatedOutcome, evaluated_notification
from shared.tuning.observe import MAX_RECORDED_INDICES, data_stats, observed_fields


def _stats(**extra: object) -> types.SupervisedTuningDataStats:
    return types.SupervisedTuningDataStats(
        total_billable_token_count=1_000_000,
        tuning_dataset_example_count=1200,
        total_truncated_example_count=3,
        truncated_example_indices=list(range(150)),
        dropped_example_reasons=["example 7: the answer alone has 300 tokens"]
        + [f"example {i}: long" for i in range(200)],
        user_input_token_distribution=types.SupervisedTuningDatasetDistribution(median=120, p95=410),
        user_output_token_distribution=types.SupervisedTuningDatasetDistribution(median=4, p95=9),
        user_dataset_examples=[types.Content(role="user", parts=[types.Part(text="a private example")])],
        **extra,
    )


def test_the_poller_records_vertexs_count_without_the_sample_examples() -> None:
    job = types.TuningJob(tuning_data_stats=types.TuningDataStats(supervised_tuning_data_stats=_stats()))

    recorded = observed_fields(job)["tuning_data_stats"]

    assert recorded["total_billable_token_count"] == 1_000_000
    assert recorded["dropped_example_reasons"][0] == "example 7: the answer alone has 300 tokens"
    assert len(recorded["dropped_example_reasons"]) == MAX_RECORDED_INDICES
    assert recorded["truncated_example_indices"] == list(range(MAX_RECORDED_INDICES))
    assert "user_dataset_examples" not in recorded
    assert recorded["user_input_token_distribution"]["p95"] == 410
    # Before Vertex has counted, nothing is recorded.
    assert "tuning_data_stats" not in observed_fields(types.TuningJob())


def test_the_estimate_error_and_the_cost_come_from_vertexs_count(
    hostile_summary: EvaluationSummary,
) -> None:
    estimate = hostile_summary.cost
    assert estimate is not None
    counts = vertex_counts(data_stats(_stats()), estimate)

    assert counts is not None
    assert counts.billable_tokens == 1_000_000
    assert counts.estimated_tokens == estimate.billable_tokens == 3_703_701
    assert counts.estimate_error_percent == pytest.approx(270.4)
    assert counts.dollars == round(1.0 * estimate.price_per_m_tokens, 2)
    assert (counts.truncated_examples, counts.examples) == (3, 1200)
    assert vertex_counts(None, estimate) is None
    assert vertex_counts(data_stats(_stats()), None).estimate_error_percent is None  # type: ignore[union-attr]


def test_the_report_and_the_notification_show_the_count_beside_the_estimate(
    hostile_summary: EvaluationSummary,
) -> None:
    summary = hostile_summary.model_copy(
        update={"vertex_counts": vertex_counts(data_stats(_stats()), hostile_summary.cost)}
    )

    html = render_report_html(summary, [])
    notice = evaluated_notification(EvaluatedOutcome(summary=summary))

    line = "1,000,000 billable tokens counted by Vertex AI (pre-flight estimate 3,703,701, +270.4%)"
    assert line in html
    assert "example 7: the answer alone has 300 tokens" in html
    assert "median 120, p95 410" in html
    assert any(label == "Counted by Vertex AI" and line in value for label, value in notice.facts)
    assert "not on the job (yet)" in render_report_html(hostile_summary, [])


def test_the_local_service_distributions_are_vertexs_fields_with_numpys_percentiles() -> None:
    values = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9]

    shown = distribution(values)

    assert (shown["sum"], shown["billableSum"]) == (str(sum(values)), str(sum(values)))
    assert (shown["min"], shown["max"], shown["mean"]) == (1.0, 9.0, sum(values) / len(values))
    for key, q in (("p5", 5), ("median", 50), ("p95", 95)):
        assert shown[key] == pytest.approx(float(np.percentile(values, q)))
    assert sum(b["count"] for b in shown["buckets"]) == len(values)
    assert shown["buckets"][0]["left"] == 1.0
    assert shown["buckets"][-1]["right"] == pytest.approx(9.0)
    # Parsed as google-genai parses Vertex's answer.
    parsed = types.SupervisedTuningDatasetDistribution.model_validate(
        {k: v for k, v in shown.items() if k != "billableSum"} | {"billable_sum": shown["billableSum"]}
    )
    assert parsed.p95 == shown["p95"]
    assert distribution([])["buckets"] == []

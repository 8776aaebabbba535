from __future__ import annotations

import pytest

from shared.evaluation.metrics import MetricResult, TaskChoice
from shared.evaluation.report import build_summary
from shared.messages import Task
from shared.notify.content import DatasetRejectedOutcome, EvaluatedOutcome, JobEndedOutcome


@pytest.fixture
def evaluated() -> EvaluatedOutcome:
    summary = build_summary(
        job_id="job-42",
        dataset_id="reviews-<!channel>",
        base_model="gemini-2.5-flash",
        task_choice=TaskChoice(task=Task.EXTRACTIVE_QA, decided_by="inferred", reason="spans"),
        base=MetricResult(
            task=Task.EXTRACTIVE_QA, scores={"exact_match": 0.41, "f1": 0.552}, count=200, failed=2
        ),
        tuned=MetricResult(
            task=Task.EXTRACTIVE_QA, scores={"exact_match": 0.63, "f1": 0.78}, count=200, failed=0
        ),
        tuned_endpoint="projects/p/locations/us-central1/endpoints/123",
        tuning_duration_s=3725,
    )
    return EvaluatedOutcome(summary=summary, report_url="gs://sftpipe-local/reports/job-42/report.html")


@pytest.fixture
def job_failed() -> JobEndedOutcome:
    return JobEndedOutcome(
        job_id="job-43",
        dataset_id="ds-1",
        base_model="gemini-2.5-flash",
        state="JOB_STATE_FAILED",
        reason="Training data has 3 examples; at least 16 are required.",
        duration_s=95,
        tuning_job_name="projects/p/locations/us-central1/tuningJobs/987",
    )


@pytest.fixture
def rejected() -> DatasetRejectedOutcome:
    return DatasetRejectedOutcome(
        dataset_id="ds-bad",
        source_uri="gs://sftpipe-local/incoming/bad.jsonl",
        error_count=57,
        top_errors=[
            f"line {n}: contents[0].parts: missing_text <script>alert({n})</script>" for n in range(1, 15)
        ],
        report_url="https://storage.cloud.google.com/sftpipe-local/prepared/ds-bad/report.html",
    )

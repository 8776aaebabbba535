from __future__ import annotations

import pytest

from shared.evaluation.metrics import TaskChoice, compute_metrics
from shared.evaluation.report import build_summary
from shared.messages import Task
from shared.notify.content import DatasetRejectedOutcome, EvaluatedOutcome, JobEndedOutcome


def qa_answers(exact: int, partial: int, failed: int, count: int) -> list[str | None]:
    """Answers to :data:`QA_REFERENCES`: ``exact`` right (F1 1), ``partial`` half right (F1 0.5),
    ``failed`` calls that failed, the rest wrong (F1 0)."""
    wrong = count - exact - partial - failed
    return ["Eiffel Tower"] * exact + ["Tower Bridge"] * partial + [None] * failed + ["Big Ben"] * wrong


QA_REFERENCES = ["Eiffel Tower"] * 200


def qa_outcome(
    job_id: str, dataset_id: str, base: list[str | None], tuned: list[str | None], **extra: object
) -> EvaluatedOutcome:
    """An extractive-QA evaluation of the two models' answers to QA_REFERENCES, as completion builds it."""
    summary = build_summary(
        job_id=job_id,
        dataset_id=dataset_id,
        base_model="gemini-2.5-flash",
        task_choice=TaskChoice(task=Task.EXTRACTIVE_QA, decided_by="inferred", reason="spans"),
        base=compute_metrics(Task.EXTRACTIVE_QA, QA_REFERENCES, base),
        tuned=compute_metrics(Task.EXTRACTIVE_QA, QA_REFERENCES, tuned),
        **extra,
    )
    return EvaluatedOutcome(summary=summary, report_url=f"gs://sftpipe-local/reports/{job_id}/report.html")


@pytest.fixture
def evaluated() -> EvaluatedOutcome:
    # base: exact match 82 / 200 = 0.41, F1 (82 + 56 / 2) / 200 = 0.55; tuned: 0.63 and 0.76.
    return qa_outcome(
        "job-42",
        "reviews-<!channel>",
        qa_answers(82, 56, 2, 200),
        qa_answers(126, 52, 0, 200),
        tuned_endpoint="projects/p/locations/us-central1/endpoints/123",
        tuning_duration_s=3725,
    )


@pytest.fixture
def undecided() -> EvaluatedOutcome:
    """+0.025 on F1, but the models disagree on 195 of the 200 examples: noise, not a verdict."""
    return qa_outcome("job-44", "reviews", qa_answers(100, 0, 0, 200), qa_answers(105, 0, 0, 200)[::-1])


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

"""Choosing the checkpoint by validation: which one wins, when no choice is made, and how the
choice reads in the report and the notification."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.config import Settings
from shared.datasets.options import parse_object_metadata
from shared.evaluation.checkpoints import candidates, choose_best, skip_reason
from shared.evaluation.metrics import TaskChoice, compute_metrics
from shared.evaluation.report import CheckpointScore, build_summary, render_report_html
from shared.messages import Task, TuningRequestV1
from shared.notify.content import EvaluatedOutcome, evaluated_notification
from shared.state.jobs import Checkpoint, JobRecord
from shared.tuning.submit import _config


def _scores(*values: tuple[str, int, float]) -> dict[str, dict[str, Any]]:
    return {cid: {"step": step, "metrics": {"macro_f1": value}} for cid, step, value in values}


def test_the_best_checkpoint_has_the_highest_primary_score() -> None:
    assert choose_best(_scores(("1", 10, 0.4), ("2", 20, 0.7), ("3", 30, 0.6)), "macro_f1") == "2"


def test_on_a_tie_the_later_checkpoint_wins() -> None:
    assert choose_best(_scores(("1", 10, 0.7), ("2", 20, 0.7), ("3", 30, 0.5)), "macro_f1") == "2"
    assert choose_best(_scores(("3", 30, 0.7), ("1", 10, 0.7)), "macro_f1") == "3"


def test_no_scored_checkpoint_is_an_error() -> None:
    with pytest.raises(ValueError, match="no checkpoint"):
        choose_best({}, "macro_f1")


def _job(checkpoints: list[Checkpoint], *, validation: bool = True) -> JobRecord:
    request = TuningRequestV1(
        dataset_id="d",
        base_model="gemini-2.5-flash",
        training_uri="gs://bucket/prepared/d/train.jsonl",
        validation_uri="gs://bucket/prepared/d/validation.jsonl" if validation else None,
        test_uri="gs://bucket/prepared/d/test.jsonl",
    )
    return JobRecord(
        job_id="j",
        dataset_id="d",
        request=request.model_dump(mode="json", by_alias=True, exclude_none=True),
        base_model="gemini-2.5-flash",
        status="JOB_STATE_SUCCEEDED",
        checkpoints=checkpoints,
    )


THREE = [
    Checkpoint(checkpoint_id=str(i), epoch=i, step=10 * i, endpoint=f"projects/p/locations/l/endpoints/{i}")
    for i in (3, 1, 2)
]


def test_checkpoints_are_compared_only_when_there_is_a_choice_and_a_validation_split() -> None:
    assert [c.checkpoint_id for c in candidates(_job(THREE))] == ["1", "2", "3"]  # training order
    assert skip_reason(_job(THREE), 100) == ""
    assert "SFTPIPE_CHECKPOINT_MAX_EXAMPLES is 0" in skip_reason(_job(THREE), 0)
    assert "one checkpoint" in skip_reason(_job(THREE[:1]), 100)
    assert "no validation split" in skip_reason(_job(THREE, validation=False), 100)
    no_endpoint = [Checkpoint(checkpoint_id="1", epoch=1, step=10), THREE[0]]
    assert "one checkpoint" in skip_reason(_job(no_endpoint), 100)


def test_the_report_and_the_notice_name_the_best_checkpoint() -> None:
    references = ["pos", "neg", "pos", "neg"]
    base = compute_metrics(Task.CLASSIFICATION, references, ["pos", "pos", "pos", "pos"])
    tuned = compute_metrics(Task.CLASSIFICATION, references, references)
    summary = build_summary(
        job_id="j",
        dataset_id="d",
        base_model="gemini-2.5-flash",
        task_choice=TaskChoice(task=Task.CLASSIFICATION, decided_by="explicit", reason="given"),
        base=base,
        tuned=tuned,
        tuned_endpoint="projects/p/locations/l/endpoints/2",
    ).model_copy(
        update={
            "checkpoints": [
                CheckpointScore(
                    checkpoint_id=str(i),
                    epoch=i,
                    step=10 * i,
                    endpoint=f"projects/p/locations/l/endpoints/{i}",
                    metrics={"macro_f1": v},
                )
                for i, v in ((1, 0.4), (2, 0.9), (3, 0.8))
            ],
            "best_checkpoint": "2",
            "generated_at": datetime(2026, 12, 2, tzinfo=UTC),
        }
    )
    html = render_report_html(summary)
    assert "Checkpoints, validation split" in html
    assert "2 ★" in html
    assert "Validation macro_f1 by checkpoint" in html
    facts = dict(evaluated_notification(EvaluatedOutcome(summary=summary)).facts)
    assert facts["Best checkpoint"].startswith("2 (epoch 2, chosen on the validation split of 3 checkpoints)")
    assert facts["Best checkpoint"].endswith("projects/p/locations/l/endpoints/2")


def test_export_last_checkpoint_only_goes_from_the_upload_to_the_tuning_job() -> None:
    upload = parse_object_metadata({"x-goog-meta-export-last-checkpoint-only": "true"})
    assert upload.export_last_checkpoint_only is True
    job = _job(THREE)
    request = TuningRequestV1.model_validate({**job.request, "export_last_checkpoint_only": True})
    assert _config(job, request, Settings()).export_last_checkpoint_only is True
    assert (
        _config(job, TuningRequestV1.model_validate(job.request), Settings()).export_last_checkpoint_only
        is None
    )

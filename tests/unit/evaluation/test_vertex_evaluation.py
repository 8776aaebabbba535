"""Vertex AI's own evaluation of a job (``evaluation_config``): asked for per upload, passed to
the tuning job, its runs read back from the TuningJob Vertex returns, and shown in the report."""

from __future__ import annotations

import pytest
from google.genai import types

from shared.config import Settings
from shared.datasets.options import UploadSettingsError, parse_object_metadata
from shared.evaluation.report import VertexEvaluation
from shared.messages import TuningRequestV1
from shared.state.jobs import JobRecord
from shared.tuning.observe import observed_fields
from shared.tuning.submit import _config, vertex_evaluation_prefix

REQUEST = TuningRequestV1(
    dataset_id="d",
    base_model="gemini-2.5-flash",
    training_uri="gs://bucket/prepared/d/train.jsonl",
    validation_uri="gs://bucket/prepared/d/validation.jsonl",
    vertex_evaluation_metrics=["rougeL", "exact_match"],
)
JOB = JobRecord(
    job_id="job-1",
    dataset_id="d",
    request=REQUEST.model_dump(mode="json", by_alias=True, exclude_none=True),
    base_model="gemini-2.5-flash",
    status="QUEUED",
)


def test_the_metrics_come_from_custom_metadata_and_unknown_ones_are_refused() -> None:
    upload = parse_object_metadata({"x-goog-meta-vertex-evaluation-metrics": "rougeL, bleu"})
    assert upload.vertex_evaluation_metrics == ["rougeL", "bleu"]
    with pytest.raises(UploadSettingsError) as caught:
        parse_object_metadata({"x-goog-meta-vertex-evaluation-metrics": "rougeL,fluency"})
    assert caught.value.field.startswith("x-goog-meta-vertex-evaluation-metrics")


def test_the_tuning_job_gets_an_evaluation_config_writing_under_reports() -> None:
    settings = Settings(bucket="bucket")
    config = _config(JOB, REQUEST, settings)
    assert config.evaluation_config is not None
    from google.genai import _transformers

    # What google-genai sends: ROUGE with Vertex's own spelling of its type.
    payload = _transformers.t_metrics(config.evaluation_config.metrics or [])
    assert payload[0]["rouge_spec"]["rouge_type"] == "rougeL"
    assert "exact_match_spec" in payload[1]
    destination = config.evaluation_config.output_config.gcs_destination  # type: ignore[union-attr]
    assert destination.output_uri_prefix == "gs://bucket/reports/vertex-evaluation/job-1/"  # type: ignore[union-attr]
    assert vertex_evaluation_prefix(settings, "job-1") == destination.output_uri_prefix  # type: ignore[union-attr]
    plain = TuningRequestV1.model_validate({**JOB.request, "vertex_evaluation_metrics": None})
    assert _config(JOB, plain, settings).evaluation_config is None


def test_the_runs_vertex_reports_are_recorded_with_their_scores() -> None:
    # The shape Vertex answers (camelCase JSON), parsed by the SDK's own types.
    tuning_job = types.TuningJob._from_response(
        response={
            "name": "projects/p/locations/l/tuningJobs/1",
            "state": "JOB_STATE_SUCCEEDED",
            "evaluateDatasetRuns": [
                {
                    "checkpointId": "2",
                    "evaluationRun": "projects/p/locations/l/evaluationRuns/9",
                    "evaluateDatasetResponse": {
                        "aggregationOutput": {
                            "aggregationResults": [
                                {"aggregationMetric": "AVERAGE", "rougeMetricValue": {"score": 0.41}},
                                {
                                    "aggregationMetric": "STANDARD_DEVIATION",
                                    "rougeMetricValue": {"score": 0.1},
                                },
                                {"aggregationMetric": "AVERAGE", "exactMatchMetricValue": {"score": 0.25}},
                            ]
                        },
                        "outputInfo": {
                            "gcsOutputDirectory": "gs://bucket/reports/vertex-evaluation/job-1/run-9"
                        },
                    },
                },
                {"checkpointId": "1", "error": {"code": 13, "message": "internal"}},
            ],
        },
        kwargs={},
    )
    runs = observed_fields(tuning_job)["vertex_evaluation_runs"]
    assert runs[0] == {
        "checkpoint_id": "2",
        "evaluation_run": "projects/p/locations/l/evaluationRuns/9",
        "error": None,
        "output_directory": "gs://bucket/reports/vertex-evaluation/job-1/run-9",
        "scores": {"rouge/AVERAGE": 0.41, "rouge/STANDARD_DEVIATION": 0.1, "exact_match/AVERAGE": 0.25},
    }
    assert runs[1]["error"] == "13: internal"
    assert runs[1]["scores"] == {}
    evaluation = VertexEvaluation(metrics=["rougeL"], output_uri_prefix="gs://bucket/x/", runs=runs)
    assert evaluation.runs[0]["scores"]["rouge/AVERAGE"] == 0.41

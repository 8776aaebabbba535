"""What a ``types.TuningJob`` read from Vertex says, as the fields of ``jobs/{job_id}``.

One reading for the poller's refresh and for the tuner's recovery of a job it finds already
submitted (possibly already finished): both record the tuned model, endpoint, checkpoints,
error and experiment the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.state.jobs import Checkpoint

if TYPE_CHECKING:
    from google.genai import types


def observed_fields(tuning_job: types.TuningJob) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    tuned = tuning_job.tuned_model
    if tuned is not None:
        fields["tuned_model"] = tuned.model
        fields["tuned_endpoint"] = tuned.endpoint
        fields["checkpoints"] = [
            Checkpoint(
                checkpoint_id=c.checkpoint_id, epoch=c.epoch, step=c.step, endpoint=c.endpoint
            ).model_dump()
            for c in tuned.checkpoints or []
        ]
    if tuning_job.error is not None and tuning_job.error.message:
        fields["error"] = f"{tuning_job.error.code}: {tuning_job.error.message}"
    if tuning_job.experiment:
        fields["experiment"] = tuning_job.experiment
    if tuning_job.tuning_job_state:
        fields["tuning_job_state"] = tuning_job.tuning_job_state.value
    stats = (
        tuning_job.tuning_data_stats.supervised_tuning_data_stats if tuning_job.tuning_data_stats else None
    )
    if stats is not None and stats.total_billable_token_count is not None:
        fields["tuning_data_stats"] = data_stats(stats)
    if tuning_job.evaluate_dataset_runs:
        fields["vertex_evaluation_runs"] = [
            vertex_evaluation_run(run) for run in tuning_job.evaluate_dataset_runs
        ]
    return {k: v for k, v in fields.items() if v is not None}


#: Truncated example indices and dropped-example reasons kept on the job document.
MAX_RECORDED_INDICES = 100


def data_stats(stats: types.SupervisedTuningDataStats) -> dict[str, Any]:
    """Vertex AI's own count of the training set (``tuning_data_stats.supervised_tuning_data_stats``):
    billable tokens, examples, truncated and dropped examples with reasons, the token and message
    distributions; JSON-ready, without the sample examples Vertex echoes back."""
    recorded = stats.model_dump(mode="json", exclude_none=True, exclude={"user_dataset_examples"})
    # Vertex's lists can be long; the document must stay well under Firestore's 1 MiB.
    for key in ("truncated_example_indices", "dropped_example_reasons"):
        if key in recorded:
            recorded[key] = recorded[key][:MAX_RECORDED_INDICES]
    return recorded


#: The per-metric values an AggregationResult may carry (one of them is set).
_METRIC_VALUES = (
    ("bleu_metric_value", "bleu"),
    ("exact_match_metric_value", "exact_match"),
    ("rouge_metric_value", "rouge"),
    ("pointwise_metric_result", "pointwise"),
)


def vertex_evaluation_run(run: types.EvaluateDatasetRun) -> dict[str, Any]:
    """One of Vertex AI's own evaluation runs (``evaluation_config``), as the job records it:
    the checkpoint, the run's name, its error, where its output went, and each aggregate score
    (``{kind}/{AGGREGATION}``: ``rouge/AVERAGE``)."""
    response = run.evaluate_dataset_response
    scores: dict[str, float] = {}
    output = None
    if response is not None:
        output = response.output_info.gcs_output_directory if response.output_info else None
        results = response.aggregation_output.aggregation_results if response.aggregation_output else None
        for result in results or []:
            aggregation = result.aggregation_metric.value if result.aggregation_metric else "VALUE"
            for attribute, kind in _METRIC_VALUES:
                value = getattr(result, attribute, None)
                if value is not None and getattr(value, "score", None) is not None:
                    scores[f"{kind}/{aggregation}"] = float(value.score)
    error = f"{run.error.code}: {run.error.message}" if run.error and run.error.message else None
    return {
        "checkpoint_id": run.checkpoint_id,
        "evaluation_run": run.evaluation_run or run.operation_name,
        "error": error,
        "output_directory": output,
        "scores": scores,
    }


def progress_marker(tuning_job: types.TuningJob) -> str:
    """What last changed at Vertex (update time, checkpoint count): a new value is progress."""
    checkpoints = len(tuning_job.tuned_model.checkpoints or []) if tuning_job.tuned_model else 0
    updated = tuning_job.update_time.isoformat() if tuning_job.update_time else ""
    return f"{updated}|{checkpoints}"

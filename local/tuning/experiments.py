"""A tuning job's metrics as Vertex AI exposes them: the job's ``experiment`` (a metadata context
backed by a TensorBoard), one TensorBoard experiment per job, one run, and one scalar time series
per metric, read with the TensorBoard service's ``:read`` / ``:batchRead`` calls.

The resources are views of what the service records in ``jobs/ID/metrics.jsonl``; nothing else is
stored. Names (``P``/``L``: project and location)::

    projects/P/locations/L/metadataStores/default/contexts/tuning-experiment-JOB   the job's experiment
    projects/P/locations/L/tensorboards/local                                      its backing TensorBoard
    .../tensorboards/local/experiments/tuning-experiment-JOB/runs/JOB              its one run
    .../runs/JOB/timeSeries/train_total_loss                                       one per metric

A series id is the metric's name without its leading ``/`` (``/train_total_loss`` ->
``train_total_loss``); its ``displayName`` is the metric's name, as Vertex names them.
"""

from __future__ import annotations

from typing import Any

from local.tuning.errors import ApiError

TENSORBOARD_ID = "local"
METADATA_STORE = "default"
EXPERIMENT_PREFIX = "tuning-experiment-"
#: The metadata key under which Vertex AI (and the aiplatform SDK) names an experiment's TensorBoard.
BACKING_TENSORBOARD_KEY = "backing_tensorboard_resource"


def experiment_id(job_id: str) -> str:
    return f"{EXPERIMENT_PREFIX}{job_id}"


def job_id_of(experiment: str) -> str:
    """The job behind an experiment (context) id; 404 for any other id."""
    if not experiment.startswith(EXPERIMENT_PREFIX) or not experiment[len(EXPERIMENT_PREFIX) :]:
        raise ApiError.not_found(f"experiment {experiment} not found")
    return experiment[len(EXPERIMENT_PREFIX) :]


def check_tensorboard(tensorboard_id: str) -> None:
    if tensorboard_id != TENSORBOARD_ID:
        raise ApiError.not_found(
            f"tensorboard {tensorboard_id} not found (this service has {TENSORBOARD_ID!r})"
        )


def check_store(store: str) -> None:
    if store != METADATA_STORE:
        raise ApiError.not_found(f"metadata store {store} not found (this service has {METADATA_STORE!r})")


def tensorboard_name(parent: str) -> str:
    return f"{parent}/tensorboards/{TENSORBOARD_ID}"


def experiment_name(parent: str, job_id: str) -> str:
    return f"{tensorboard_name(parent)}/experiments/{experiment_id(job_id)}"


def run_name(parent: str, job_id: str) -> str:
    return f"{experiment_name(parent, job_id)}/runs/{job_id}"


def series_id(metric: str) -> str:
    return metric.lstrip("/")


def metric_of(series: str) -> str:
    return "/" + series


def context(parent: str, job: dict[str, Any]) -> dict[str, Any]:
    job_id = job["name"].rsplit("/", 1)[-1]
    return {
        "name": f"{parent}/metadataStores/{METADATA_STORE}/contexts/{experiment_id(job_id)}",
        "displayName": experiment_id(job_id),
        "schemaTitle": "system.Experiment",
        "schemaVersion": "0.0.1",
        "createTime": job["createTime"],
        "updateTime": job["updateTime"],
        "metadata": {BACKING_TENSORBOARD_KEY: tensorboard_name(parent), "experiment_deleted": False},
    }


def tensorboard(parent: str, created: str) -> dict[str, Any]:
    return {
        "name": tensorboard_name(parent),
        "displayName": "local tuning service",
        "createTime": created,
        "updateTime": created,
    }


def tensorboard_experiment(parent: str, job: dict[str, Any]) -> dict[str, Any]:
    job_id = job["name"].rsplit("/", 1)[-1]
    return {
        "name": experiment_name(parent, job_id),
        "displayName": experiment_id(job_id),
        "createTime": job["createTime"],
        "updateTime": job["updateTime"],
    }


def run(parent: str, job: dict[str, Any]) -> dict[str, Any]:
    job_id = job["name"].rsplit("/", 1)[-1]
    return {
        "name": run_name(parent, job_id),
        "displayName": job_id,
        "createTime": job["createTime"],
        "updateTime": job["updateTime"],
    }


def time_series(
    parent: str, job: dict[str, Any], series: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    job_id = job["name"].rsplit("/", 1)[-1]
    return [
        {
            "name": f"{run_name(parent, job_id)}/timeSeries/{series_id(metric)}",
            "displayName": metric,
            "valueType": "SCALAR",
            "pluginName": "scalars",
            "createTime": job["createTime"],
            "updateTime": job["updateTime"],
        }
        for metric in sorted(series)
    ]


def time_series_data(metric: str, points: list[dict[str, Any]], default_time: str) -> dict[str, Any]:
    """``TimeSeriesData`` of one metric: a ``TimeSeriesDataPoint`` per recorded point (int64
    steps as JSON strings, as Vertex writes them)."""
    return {
        "tensorboardTimeSeriesId": series_id(metric),
        "valueType": "SCALAR",
        "values": [
            {
                "step": str(point["step"]),
                "wallTime": point.get("time") or default_time,
                "scalar": {"value": point["value"]},
            }
            for point in points
        ],
    }

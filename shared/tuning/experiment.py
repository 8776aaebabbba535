"""A tuning job's metric series, read where Vertex AI keeps them: the TensorBoard run behind the
job's Vertex AI Experiment (``TuningJob.experiment``), through google-cloud-aiplatform's GAPIC
REST clients. The same calls reach the local tuning service, which serves that surface
(local/tuning/experiments.py), so one path runs everywhere.

The calls, in order (each with ``FETCH_TIMEOUT_S`` and no retry: a missing chart must not cost
the evaluation, so any failure is a note for the report):

1. ``MetadataService.GetContext(experiment)``: its metadata names the backing TensorBoard
   (``backing_tensorboard_resource``); the TensorBoard experiment has the context's id;
2. ``TensorboardService.ListTensorboardRuns`` under that experiment;
3. ``TensorboardService.ListTensorboardTimeSeries`` under each run, keeping the wanted metrics
   (by display name: ``/train_total_loss`` ...);
4. ``TensorboardService.BatchReadTensorboardTimeSeriesData`` for them, at most
   ``BATCH_READ_LIMIT`` series a call (Vertex's limit).

aiplatform is imported inside :func:`read_series` only: no function's cold start pays for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.config import Settings

FETCH_TIMEOUT_S = 10.0
#: BatchReadTensorboardTimeSeriesData reads at most this many series per call.
BATCH_READ_LIMIT = 100
BACKING_TENSORBOARD_KEY = "backing_tensorboard_resource"
_EXPERIMENT = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/metadataStores/[^/]+/contexts/(?P<id>[^/]+)$"
)


class ExperimentReadError(Exception):
    """The series could not be read; the message says which call failed and why."""


@dataclass(frozen=True)
class SeriesPoint:
    step: int
    value: float


def api_endpoint(settings: Settings, location: str) -> str:
    """Where the GAPIC clients go: the local tuning service when one is configured, else the
    regional Vertex AI endpoint of the experiment's location."""
    if settings.tuning_api_url:
        return settings.tuning_api_url.rstrip("/")
    return f"https://{location}-aiplatform.googleapis.com"


def _clients(settings: Settings, location: str) -> tuple[Any, Any]:
    from google.api_core.client_options import ClientOptions
    from google.cloud.aiplatform_v1.services.metadata_service import MetadataServiceClient
    from google.cloud.aiplatform_v1.services.tensorboard_service import TensorboardServiceClient

    credentials = None
    if settings.tuning_api_url:
        import google.oauth2.credentials

        credentials = google.oauth2.credentials.Credentials(token=settings.tuning_api_token)
    options = ClientOptions(api_endpoint=api_endpoint(settings, location))
    kwargs: dict[str, Any] = {"client_options": options, "transport": "rest", "credentials": credentials}
    return MetadataServiceClient(**kwargs), TensorboardServiceClient(**kwargs)


def read_series(settings: Settings, experiment: str, metrics: Iterable[str]) -> dict[str, list[SeriesPoint]]:
    """The wanted ``metrics`` (display names) of the experiment's runs, each step-ordered; a
    metric the runs do not have is absent. Raises ExperimentReadError."""
    found = _EXPERIMENT.match(experiment)
    if found is None:
        raise ExperimentReadError(f"{experiment!r} is not a metadata context name (projects/.../contexts/ID)")
    wanted = set(metrics)
    call = {"timeout": FETCH_TIMEOUT_S, "retry": None}
    step = "creating the clients"
    try:
        metadata, tensorboards = _clients(settings, found["location"])
        step = "GetContext"
        context = metadata.get_context(name=experiment, **call)
        backing = dict(context.metadata or {}).get(BACKING_TENSORBOARD_KEY)
        if not backing:
            raise ExperimentReadError(f"experiment {experiment} has no backing TensorBoard")
        step = "ListTensorboardRuns"
        runs = list(tensorboards.list_tensorboard_runs(parent=f"{backing}/experiments/{found['id']}", **call))
        names: dict[str, str] = {}  # time series resource name -> metric
        step = "ListTensorboardTimeSeries"
        for run in runs:
            for series in tensorboards.list_tensorboard_time_series(parent=run.name, **call):
                if series.display_name in wanted:
                    names[series.name] = series.display_name
        points: dict[str, list[SeriesPoint]] = {}
        step = "BatchReadTensorboardTimeSeriesData"
        batch = list(names)
        for start in range(0, len(batch), BATCH_READ_LIMIT):
            chosen = batch[start : start + BATCH_READ_LIMIT]
            answer = tensorboards.batch_read_tensorboard_time_series_data(
                request={"tensorboard": backing, "time_series": chosen}, **call
            )
            by_id = {name.rsplit("/", 1)[-1]: names[name] for name in chosen}
            for data in answer.time_series_data:
                metric = by_id.get(data.tensorboard_time_series_id)
                if metric is None:
                    continue
                points.setdefault(metric, []).extend(
                    SeriesPoint(step=int(value.step), value=float(value.scalar.value))
                    for value in data.values
                )
    except ExperimentReadError:
        raise
    except Exception as exc:
        # Whatever failed (an API error, credentials, the transport, an answer that does not
        # parse), the chart is optional: the caller turns this into a note, never a failure.
        raise ExperimentReadError(f"{step} failed: {type(exc).__name__}: {exc}") from exc
    return {metric: sorted(series, key=lambda p: p.step) for metric, series in points.items()}

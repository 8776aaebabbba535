"""Training and validation loss curves of a tuning job, read from the TensorBoard run behind the
job's Vertex AI Experiment (``shared.tuning.experiment``): on Vertex AI and on the local tuning
service, which serves the same API, alike. The report's diagnosis (over- and under-fitting, an
initial loss above 10) is drawn from them (``shared.evaluation.report``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.config import Settings
from shared.evaluation.report import LossPoint
from shared.logging import get_logger
from shared.state.jobs import JobRecord
from shared.tuning.experiment import FETCH_TIMEOUT_S, ExperimentReadError, SeriesPoint, read_series

log = get_logger("sftpipe.completion")

#: Series names of the tuning metrics (the same on Vertex AI and the local service) -> report names.
LOSS_SERIES = {"/train_total_loss": "training", "/eval_total_loss": "validation"}


def loss_curves_from_series(
    series: Mapping[str, Sequence[SeriesPoint | Mapping[str, Any]]],
) -> dict[str, list[LossPoint]]:
    """The loss series among ``series``, as step-ordered points named "training" / "validation"."""
    curves: dict[str, list[LossPoint]] = {}
    for metric, name in LOSS_SERIES.items():
        points = []
        for point in series.get(metric, []):
            step, value = (
                (point.step, point.value)
                if isinstance(point, SeriesPoint)
                else (point.get("step"), point.get("value"))
            )
            if step is not None and value is not None:
                points.append(LossPoint(step=int(step), value=float(value)))
        if points:
            curves[name] = sorted(points, key=lambda p: p.step)
    return curves


def fetch_loss_curves(
    settings: Settings, experiment: str | None
) -> tuple[dict[str, list[LossPoint]], str | None]:
    """(curves, note): the curves the job's experiment holds, and a note for the report when
    there are none (a missing chart never costs the evaluation)."""
    if not experiment:
        return {}, "Loss curves are not available: the tuning job names no Vertex AI Experiment."
    try:
        series = read_series(settings, experiment, LOSS_SERIES)
    except ExperimentReadError as exc:
        return {}, f"Loss curves could not be read from the job's experiment ({experiment}): {exc}"
    curves = loss_curves_from_series(series)
    if not curves:
        return {}, f"The job's experiment ({experiment}) holds no loss values."
    return curves, None


def job_experiment(settings: Settings, job: JobRecord) -> str | None:
    """The job's experiment as the poller recorded it, else as Vertex answers for the tuning
    job now (a job recorded before the poller kept it); None when neither says."""
    if job.experiment or not job.tuning_job_name:
        return job.experiment
    from shared.tuning.client import make_client

    # The client is held in a name: a temporary one is closed (collected) before its call ends.
    client = make_client(settings, timeout_s=FETCH_TIMEOUT_S)
    try:
        tuning_job = client.tunings.get(name=job.tuning_job_name)
    except Exception as exc:  # the chart is optional: the note says why
        log.warning("the tuning job could not be read for its experiment", extra={"error": str(exc)})
        return None
    return tuning_job.experiment

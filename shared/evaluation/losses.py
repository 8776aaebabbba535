"""Training and validation loss curves of a tuning job, where the tuning backend exposes them.

- The local tuning service serves them at ``GET /v1/{tuning job name}/metrics`` (a local
  extension; see local/tuning/server.py): ``{"series": {"/train_total_loss": [{"step", "epoch",
  "value"}, ...], "/eval_total_loss": [...]}}``.
- Vertex AI writes them to the job's Vertex AI Experiment, which google-genai cannot read; the
  report then says they are not available (reading them would need the aiplatform SDK).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from shared.config import Settings
from shared.evaluation.report import LossPoint

#: Series names of the tuning metrics (the same on Vertex AI and the local service) -> report names.
LOSS_SERIES = {"/train_total_loss": "training", "/eval_total_loss": "validation"}
FETCH_TIMEOUT_S = 10.0
VERTEX_NOTE = (
    "Loss curves are not available: Vertex AI keeps them in the tuning job's Vertex AI Experiment, "
    "which this pipeline does not read (open the job in the Cloud Console to see them)."
)


def loss_curves_from_series(series: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, list[LossPoint]]:
    """The loss series among ``series``, as step-ordered points named "training" / "validation"."""
    curves: dict[str, list[LossPoint]] = {}
    for metric, name in LOSS_SERIES.items():
        points = [
            LossPoint(step=int(point["step"]), value=float(point["value"]))
            for point in series.get(metric, [])
            if point.get("step") is not None and point.get("value") is not None
        ]
        if points:
            curves[name] = sorted(points, key=lambda p: p.step)
    return curves


def fetch_loss_curves(
    settings: Settings, tuning_job_name: str | None
) -> tuple[dict[str, list[LossPoint]], str | None]:
    """(curves, note): the curves the backend provides, and a note for the report when there are none."""
    if not settings.tuning_api_url:
        return {}, VERTEX_NOTE
    if not tuning_job_name:
        return {}, "Loss curves are not available: the job record has no tuning job name."
    url = f"{settings.tuning_api_url.rstrip('/')}/v1/{tuning_job_name}/metrics"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {settings.tuning_api_token}"})
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:
            body = json.load(response)
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        # A missing chart must not cost the evaluation: say why in the report instead.
        return {}, f"Loss curves could not be read from the tuning service: {type(exc).__name__}: {exc}"
    curves = loss_curves_from_series(body.get("series") or {})
    if not curves:
        return {}, "The tuning service recorded no loss values for this job."
    return curves, None

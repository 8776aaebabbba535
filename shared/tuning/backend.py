"""What really answers for a Gemini model name: Vertex AI itself, or the local tuning service's
small open model standing in for it. Reports, summary.json and notifications say so, so that no
figure from a local run can be mistaken for a Gemini result."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.config import Settings

HEALTH_TIMEOUT_S = 5.0


def local_stand_in(settings: Settings) -> str | None:
    """The name of the local model serving every Gemini name (from the local tuning service's
    ``/healthz``), or None on Vertex AI. A service that does not answer is named as unknown:
    what served the run is still not Gemini."""
    if not settings.tuning_api_url:
        return None
    url = f"{settings.tuning_api_url.rstrip('/')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as response:
            health = json.loads(response.read())
    except (urllib.error.URLError, TimeoutError, ValueError, OSError):
        return "the local tuning service's model (it did not say which)"
    return str(health.get("modelDisplayName") or health.get("model") or "an unnamed local model")


def served_as(model: str, stand_in: str | None) -> str:
    """``gemini-2.5-flash`` on Vertex; ``gemini-2.5-flash, served locally by SmolLM2-135M-Instruct``
    when the local service stands in."""
    return model if stand_in is None else f"{model}, served locally by {stand_in}"

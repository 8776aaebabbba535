"""Say what really answered: when the local tuning service stands in for Vertex AI, the report,
summary.json and notifications name the local model (shared.tuning.backend)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from local.services import free_port
from local.tuning import models
from shared.config import Settings
from shared.evaluation.report import EvaluationSummary, render_report_html
from shared.notify.content import EvaluatedOutcome, evaluated_notification
from shared.tuning.backend import local_stand_in, served_as


@pytest.fixture
def health_endpoint() -> Iterator[str]:
    """A /healthz that answers as the local tuning service does (its own handler's shape)."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            spec = models.LOCAL_MODELS["smollm2"]
            body = json.dumps({"status": "ok", "model": "smollm2", "modelDisplayName": spec.display_name})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_vertex_answers_for_itself_and_the_local_service_names_its_model(health_endpoint: str) -> None:
    assert local_stand_in(Settings(tuning_api_url="")) is None
    assert local_stand_in(Settings(tuning_api_url=health_endpoint)) == "SmolLM2-135M-Instruct"
    # A service that does not answer is still not Gemini.
    unknown = local_stand_in(Settings(tuning_api_url=f"http://127.0.0.1:{free_port()}/"))
    assert unknown is not None
    assert "did not say which" in unknown
    assert served_as("gemini-2.5-flash", None) == "gemini-2.5-flash"
    assert served_as("gemini-2.5-flash", "SmolLM2-135M-Instruct") == (
        "gemini-2.5-flash, served locally by SmolLM2-135M-Instruct"
    )


def test_the_report_and_the_notification_say_what_answered(hostile_summary: EvaluationSummary) -> None:
    local = hostile_summary.model_copy(update={"served_locally_by": "SmolLM2-135M-Instruct"})

    html = render_report_html(local, [])
    notice = evaluated_notification(EvaluatedOutcome(summary=local))

    assert "gemini-2.5-flash, served locally by SmolLM2-135M-Instruct" in html
    assert "no figure is a Gemini result" in html
    assert ("Base model", "gemini-2.5-flash, served locally by SmolLM2-135M-Instruct") in notice.facts
    assert "served locally" not in render_report_html(hostile_summary, [])

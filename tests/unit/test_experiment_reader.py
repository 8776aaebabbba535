"""shared.tuning.experiment: how a failed read of the loss series is told (the reads themselves
run against the local tuning service in tests/tuning and tests/integration)."""

from __future__ import annotations

import pytest

from local.services import free_port
from shared.config import Settings
from shared.evaluation.losses import fetch_loss_curves
from shared.tuning.experiment import ExperimentReadError, api_endpoint, read_series

EXPERIMENT = "projects/p/locations/europe-west4/metadataStores/default/contexts/tuning-experiment-1"


def test_the_clients_go_to_the_local_service_or_to_the_experiments_region() -> None:
    assert (
        api_endpoint(Settings(tuning_api_url="http://127.0.0.1:9/"), "europe-west4") == "http://127.0.0.1:9"
    )
    assert (
        api_endpoint(Settings(tuning_api_url=""), "europe-west4")
        == "https://europe-west4-aiplatform.googleapis.com"
    )


def test_a_name_that_is_not_a_context_is_refused_before_any_call() -> None:
    with pytest.raises(ExperimentReadError, match="not a metadata context name"):
        read_series(
            Settings(tuning_api_url="http://127.0.0.1:9/"), "projects/p/tuningJobs/1", ["/train_total_loss"]
        )


def test_an_unreachable_service_names_the_call_that_failed() -> None:
    settings = Settings(tuning_api_url=f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(ExperimentReadError, match=r"^GetContext failed: "):
        read_series(settings, EXPERIMENT, ["/train_total_loss"])


def test_missing_credentials_on_vertex_are_a_note_not_a_failed_evaluation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata server here: fail at once
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", "/nonexistent")
    curves, note = fetch_loss_curves(Settings(tuning_api_url=""), EXPERIMENT)
    assert curves == {}
    assert note is not None
    assert "failed" in note


def test_the_report_gets_a_note_instead_of_curves_when_the_read_fails() -> None:
    settings = Settings(tuning_api_url=f"http://127.0.0.1:{free_port()}/")
    curves, note = fetch_loss_curves(settings, EXPERIMENT)
    assert curves == {}
    assert note is not None
    assert EXPERIMENT in note
    assert "GetContext failed" in note
    assert fetch_loss_curves(settings, None) == (
        {},
        "Loss curves are not available: the tuning job names no Vertex AI Experiment.",
    )

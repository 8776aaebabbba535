"""The local tuning service driven by Google's own GAPIC REST clients (google-cloud-aiplatform's
``aiplatform_v1``), beside google-genai: they send ``$alt=json;enum-encoding=int`` and parse every
answer into the API's protobuf types, so a divergence from Vertex AI's wire format fails here.

Before: a GAPIC create with ADAPTER_SIZE_FOUR arrived as ``adapterSize: 2`` and was read as size 2
(a 400 for most models, a wrong rank for the others); answers carried enum names the clients
expected as numbers; a snake_case body was ignored field by field.

Services covered: GenAiTuningService (create, get, list, cancel), PredictionService
(generateContent on a tuned endpoint and on a base model), LlmUtilityService (countTokens),
MetadataService (the job's experiment) and TensorboardService (runs, time series, reads).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform_v1 as v1
from tuning_helpers import TuningService, wait_until

from local.tuning import sample

PROJECT, LOCATION = "gapic-tests", "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
TRAINING_EXAMPLES = 16
JOB_TIMEOUT_S = 120


def _options(service: TuningService) -> dict[str, Any]:
    return {
        "client_options": ClientOptions(api_endpoint=service.url.rstrip("/")),
        "credentials": AnonymousCredentials(),
        "transport": "rest",
    }


@pytest.fixture(scope="module")
def clients(tiny_service: TuningService) -> dict[str, Any]:
    options = _options(tiny_service)
    return {
        "tuning": v1.GenAiTuningServiceClient(**options),
        "prediction": v1.PredictionServiceClient(**options),
        "llm": v1.LlmUtilityServiceClient(**options),
        "metadata": v1.MetadataServiceClient(**options),
        "tensorboard": v1.TensorboardServiceClient(**options),
    }


@pytest.fixture(scope="module")
def training_uri(upload: Callable[..., str]) -> str:
    return upload(sample.sentiment_records(TRAINING_EXAMPLES, seed=3))


def _job_json(service: TuningService, name: str, *, int_enums: bool = False) -> dict[str, Any]:
    query = "?$alt=json;enum-encoding=int" if int_enums else ""
    with urllib.request.urlopen(f"{service.url}v1/{name}{query}", timeout=10) as response:
        return json.loads(response.read())


def _create(
    clients: dict[str, Any], training_uri: str, validation_uri: str | None = None, **hyper: Any
) -> v1.TuningJob:
    job = v1.TuningJob(
        base_model="gemini-2.5-flash",
        tuned_model_display_name="gapic",
        supervised_tuning_spec=v1.SupervisedTuningSpec(
            training_dataset_uri=training_uri,
            validation_dataset_uri=validation_uri or "",
            hyper_parameters=v1.SupervisedHyperParameters(**hyper),
        ),
        labels={"suite": "gapic", "snake_case_key": "kept"},
    )
    return clients["tuning"].create_tuning_job(parent=PARENT, tuning_job=job)


@pytest.fixture(scope="module")
def finished(clients: dict[str, Any], training_uri: str, upload: Callable[..., str]) -> v1.TuningJob:
    validation = upload(sample.sentiment_records(6, seed=4))
    created = _create(
        clients,
        training_uri,
        validation,
        epoch_count=2,
        adapter_size=v1.SupervisedHyperParameters.AdapterSize.ADAPTER_SIZE_FOUR,
    )

    def ended() -> v1.TuningJob | None:
        job = clients["tuning"].get_tuning_job(name=created.name)
        return job if job.state in (v1.JobState.JOB_STATE_SUCCEEDED, v1.JobState.JOB_STATE_FAILED) else None

    return wait_until(ended, JOB_TIMEOUT_S, "the GAPIC-created job to end")


def test_a_gapic_create_with_an_integer_adapter_size_gets_that_size(
    finished: v1.TuningJob, tiny_service: TuningService
) -> None:
    assert finished.state == v1.JobState.JOB_STATE_SUCCEEDED, finished.error
    hyper = finished.supervised_tuning_spec.hyper_parameters
    assert hyper.adapter_size == v1.SupervisedHyperParameters.AdapterSize.ADAPTER_SIZE_FOUR
    assert hyper.epoch_count == 2
    assert finished.labels == {"suite": "gapic", "snake_case_key": "kept"}
    # On the wire: the rank the service trained with, and integer enums when asked for them.
    stored = _job_json(tiny_service, finished.name)
    assert stored["localTuning"]["training"]["loraRank"] == 4
    assert stored["state"] == "JOB_STATE_SUCCEEDED"
    encoded = _job_json(tiny_service, finished.name, int_enums=True)
    assert encoded["state"] == v1.JobState.JOB_STATE_SUCCEEDED.value == 4
    assert encoded["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] == 2
    assert encoded["labels"] == stored["labels"]


def test_the_tuned_model_checkpoints_and_stats_parse_into_the_api_types(finished: v1.TuningJob) -> None:
    assert finished.tuned_model.endpoint.startswith(f"{PARENT}/endpoints/")
    assert [c.epoch for c in finished.tuned_model.checkpoints] == [1, 2]
    stats = finished.tuning_data_stats.supervised_tuning_data_stats
    assert stats.tuning_dataset_example_count == TRAINING_EXAMPLES
    assert stats.total_billable_token_count > 0
    assert finished.experiment.startswith(f"{PARENT}/metadataStores/default/contexts/")


def test_list_finds_the_job_and_a_snake_case_create_is_read_as_camel_case(
    clients: dict[str, Any], finished: v1.TuningJob, tiny_service: TuningService, training_uri: str
) -> None:
    names = [job.name for job in clients["tuning"].list_tuning_jobs(parent=PARENT)]
    assert finished.name in names
    body = {
        "base_model": "gemini-2.5-flash",
        "supervised_tuning_spec": {
            "training_dataset_uri": training_uri,
            "hyper_parameters": {"epoch_count": 1, "adapter_size": "ADAPTER_SIZE_EIGHT"},
        },
        "labels": {"written_as": "snake_case"},
    }
    request = urllib.request.Request(
        f"{tiny_service.url}v1/{PARENT}/tuningJobs",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        created = json.loads(response.read())
    assert created["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] == "ADAPTER_SIZE_EIGHT"
    assert created["supervisedTuningSpec"]["hyperParameters"]["epochCount"] == 1
    assert created["labels"] == {"written_as": "snake_case"}
    clients["tuning"].cancel_tuning_job(name=created["name"])

    def cancelled() -> bool:
        state = clients["tuning"].get_tuning_job(name=created["name"]).state
        return state in (v1.JobState.JOB_STATE_CANCELLED, v1.JobState.JOB_STATE_SUCCEEDED)

    wait_until(cancelled, JOB_TIMEOUT_S, "the snake_case job to be cancelled")


def test_an_integer_adapter_size_that_is_no_size_is_a_400(
    clients: dict[str, Any], tiny_service: TuningService, training_uri: str
) -> None:
    body = {
        "baseModel": "gemini-2.5-flash",
        "supervisedTuningSpec": {"trainingDatasetUri": training_uri, "hyperParameters": {"adapterSize": 42}},
    }
    request = urllib.request.Request(
        f"{tiny_service.url}v1/{PARENT}/tuningJobs?$alt=json;enum-encoding=int",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert "adapterSize 42 is not an AdapterSize value" in refused.value.read().decode()


def test_generate_content_and_count_tokens_answer_the_gapic_clients(
    clients: dict[str, Any], finished: v1.TuningJob
) -> None:
    contents = [v1.Content(role="user", parts=[v1.Part(text="The soup was delicious. We will come back.")])]
    config = v1.GenerationConfig(max_output_tokens=8, temperature=0.0)
    for model in (finished.tuned_model.endpoint, f"{PARENT}/publishers/google/models/gemini-2.5-flash"):
        answer = clients["prediction"].generate_content(
            request=v1.GenerateContentRequest(model=model, contents=contents, generation_config=config)
        )
        [candidate] = answer.candidates
        assert candidate.finish_reason in (
            v1.Candidate.FinishReason.STOP,
            v1.Candidate.FinishReason.MAX_TOKENS,
        )
        assert candidate.content.role == "model"
        assert isinstance(candidate.content.parts[0].text, str)
        assert 0 < answer.usage_metadata.candidates_token_count <= 8
        counted = clients["llm"].count_tokens(
            request=v1.CountTokensRequest(endpoint=model, model=model, contents=contents)
        )
        assert counted.total_tokens == answer.usage_metadata.prompt_token_count


def test_the_jobs_metrics_are_read_through_metadata_and_tensorboard(
    clients: dict[str, Any], finished: v1.TuningJob
) -> None:
    context = clients["metadata"].get_context(name=finished.experiment)
    assert context.schema_title == "system.Experiment"
    tensorboard = context.metadata["backing_tensorboard_resource"]
    assert clients["tensorboard"].get_tensorboard(name=tensorboard).name == tensorboard
    experiment = f"{tensorboard}/experiments/{finished.experiment.rsplit('/', 1)[-1]}"
    [run] = list(clients["tensorboard"].list_tensorboard_runs(parent=experiment))
    series = {s.display_name: s for s in clients["tensorboard"].list_tensorboard_time_series(parent=run.name)}
    assert {"/train_total_loss", "/eval_total_loss"} <= set(series)
    assert series["/train_total_loss"].value_type == v1.TensorboardTimeSeries.ValueType.SCALAR
    one = clients["tensorboard"].read_tensorboard_time_series_data(
        tensorboard_time_series=series["/train_total_loss"].name
    )
    steps = [int(point.step) for point in one.time_series_data.values]
    assert steps == sorted(steps)
    assert len(steps) >= 2
    assert all(point.scalar.value > 0 for point in one.time_series_data.values)
    both = clients["tensorboard"].batch_read_tensorboard_time_series_data(
        request={
            "tensorboard": tensorboard,
            "time_series": [series["/eval_total_loss"].name, series["/train_total_loss"].name],
        }
    )
    assert [data.tensorboard_time_series_id for data in both.time_series_data] == [
        "eval_total_loss",
        "train_total_loss",
    ]
    assert [int(p.step) for p in both.time_series_data[1].values] == steps
    assert len(both.time_series_data[0].values) == 2  # one validation point per epoch

"""The local tuning service driven only through the real google-genai client (tiny model)."""

from __future__ import annotations

import json
import math
import random
import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from google.genai import errors, types
from tuning_helpers import JOB_TIMEOUT_S, TuningService, wait_for_end, wait_until

from local.tuning import sample
from shared.config import Settings
from shared.tuning.experiment import read_series

TRAINING_EXAMPLES = 48
BATCH = 8


def tune(
    service: TuningService,
    training_uri: str,
    validation_uri: str | None = None,
    base_model: str = "gemini-2.5-flash",
    **config: Any,
) -> types.TuningJob:
    return service.client().tunings.tune(
        base_model=base_model,
        training_dataset=types.TuningDataset(gcs_uri=training_uri),
        config=types.CreateTuningJobConfig(
            validation_dataset=types.TuningValidationDataset(gcs_uri=validation_uri)
            if validation_uri
            else None,
            **config,
        ),
    )


def local_record(service: TuningService, job: types.TuningJob) -> dict[str, Any]:
    """The job as the service stored it (state dir), including its ``localTuning`` extension."""
    assert job.name is not None
    path = service.state_dir / "jobs" / job.name.rsplit("/", 1)[-1] / "job.json"
    return json.loads(path.read_text())


#: Every series the service records (tuning metrics as Vertex names them, and the local extensions).
METRICS = [
    f"/{split}_{metric}"
    for split in ("train", "eval")
    for metric in (
        "total_loss",
        "fraction_of_correct_next_step_preds",
        "num_predictions",
        "fraction_of_correct_next_step_preds_all_tokens",
        "num_predictions_all_tokens",
    )
]


def metric_series(service: TuningService, job: types.TuningJob) -> dict[str, list[dict[str, Any]]]:
    """The job's series as the pipeline reads them on Vertex: from the TensorBoard run behind
    ``job.experiment``, with google-cloud-aiplatform's GAPIC clients."""
    assert job.experiment is not None
    settings = Settings(tuning_api_url=service.url)
    series = read_series(settings, job.experiment, METRICS)
    return {metric: [{"step": p.step, "value": p.value} for p in points] for metric, points in series.items()}


@pytest.fixture(scope="module")
def datasets(upload: Callable[..., str]) -> dict[str, str]:
    records = sample.sentiment_records(TRAINING_EXAMPLES + 8, seed=7)
    long_records = sample.sentiment_records(400, seed=8)
    return {
        "training": upload(records[:TRAINING_EXAMPLES]),
        "validation": upload(records[TRAINING_EXAMPLES:]),
        "long": upload(long_records),
    }


@pytest.fixture(scope="module")
def finished_job(tiny_service: TuningService, datasets: dict[str, str]) -> types.TuningJob:
    job = tune(
        tiny_service,
        datasets["training"],
        datasets["validation"],
        epoch_count=3,
        adapter_size=types.AdapterSize.ADAPTER_SIZE_FOUR,
        learning_rate_multiplier=1.0,
        tuned_model_display_name="sentiment-tiny",
        labels={"suite": "lifecycle", "owner": "tests"},
    )
    assert job.state in {types.JobState.JOB_STATE_PENDING, types.JobState.JOB_STATE_RUNNING}
    assert job.name is not None
    assert job.name.startswith("projects/tuning-tests/locations/us-central1/tuningJobs/")
    return wait_for_end(tiny_service.client(), job.name, timeout=JOB_TIMEOUT_S)


@pytest.mark.slow(20)
def test_tiny_job_succeeds_with_a_checkpoint_per_epoch(finished_job: types.TuningJob) -> None:
    job = finished_job
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED, job.error
    assert job.error is None
    assert job.create_time is not None
    assert job.start_time is not None
    assert job.end_time is not None
    assert job.create_time <= job.start_time < job.end_time
    assert job.tuned_model_display_name == "sentiment-tiny"
    assert job.labels == {"suite": "lifecycle", "owner": "tests"}
    assert job.base_model == "gemini-2.5-flash"
    assert job.tuned_model is not None
    assert job.tuned_model.endpoint is not None
    assert job.tuned_model.model is not None
    assert job.tuned_model.model.endswith("@1")
    checkpoints = job.tuned_model.checkpoints or []
    assert [(c.epoch, c.step) for c in checkpoints] == [(1, 6), (2, 12), (3, 18)]
    assert len({c.endpoint for c in checkpoints} | {job.tuned_model.endpoint}) == 4
    stats = job.tuning_data_stats.supervised_tuning_data_stats  # type: ignore[union-attr]
    assert stats is not None
    assert stats.tuning_dataset_example_count == TRAINING_EXAMPLES
    assert stats.tuning_step_count == 18
    hyper = job.supervised_tuning_spec.hyper_parameters  # type: ignore[union-attr]
    assert hyper is not None
    assert (hyper.epoch_count, hyper.adapter_size) == (3, types.AdapterSize.ADAPTER_SIZE_FOUR)


def test_job_records_the_local_model_and_training_settings(
    tiny_service: TuningService, finished_job: types.TuningJob
) -> None:
    local = local_record(tiny_service, finished_job)["localTuning"]
    assert local["localModel"] == "tiny"
    assert local["training"] == {
        "loraRank": 4,
        "loraAlpha": 8,
        "learningRate": pytest.approx(1e-2),
        "batchSize": BATCH,
        "epochs": 3,
        "seed": 42,
    }
    assert local["timings"]["steps"] == 18
    assert local["timings"]["secondsPerStep"] > 0


def test_training_loss_falls_and_metric_series_are_stored(
    tiny_service: TuningService, finished_job: types.TuningJob
) -> None:
    series = metric_series(tiny_service, finished_job)
    train_loss = [point["value"] for point in series["/train_total_loss"]]
    assert len(train_loss) == 18
    assert sum(train_loss[-3:]) / 3 < 0.9 * train_loss[0]
    assert len(series["/train_fraction_of_correct_next_step_preds"]) == 18
    # One validation point per epoch, at its last step (6 steps an epoch).
    assert [point["step"] for point in series["/eval_total_loss"]] == [6, 12, 18]
    assert series["/eval_total_loss"][-1]["value"] < series["/eval_total_loss"][0]["value"] + 0.5
    assert all(0 <= p["value"] <= 1 for p in series["/eval_fraction_of_correct_next_step_preds"])
    stored = Path(local_record(tiny_service, finished_job)["localTuning"]["metricsPath"])
    # Five series per step and per epoch: loss, accuracy and count over content tokens, and
    # accuracy and count over every labelled token (end-of-turn and newline included).
    assert len(stored.read_text().splitlines()) == 18 * 5 + 3 * 5
    content = series["/train_num_predictions"]
    every = series["/train_num_predictions_all_tokens"]
    assert all(c["value"] < e["value"] for c, e in zip(content, every, strict=True))


def test_tuned_endpoint_and_checkpoints_generate_and_count_tokens(
    tiny_service: TuningService, finished_job: types.TuningJob
) -> None:
    client = tiny_service.client()
    assert finished_job.tuned_model is not None
    config = types.GenerateContentConfig(
        system_instruction=sample.SYSTEM_INSTRUCTION, temperature=0, max_output_tokens=5
    )
    endpoints = [finished_job.tuned_model.endpoint] + [
        c.endpoint for c in finished_job.tuned_model.checkpoints or []
    ]
    for endpoint in endpoints:
        assert endpoint is not None
        response = client.models.generate_content(
            model=endpoint, contents="The soup was lovely.", config=config
        )
        usage = response.usage_metadata
        assert usage is not None
        assert usage.prompt_token_count is not None
        assert 1 <= (usage.candidates_token_count or 0) <= 5
        assert response.candidates is not None
        assert response.candidates[0].finish_reason in {
            types.FinishReason.STOP,
            types.FinishReason.MAX_TOKENS,
        }
        assert isinstance(response.text, str)
        counted = client.models.count_tokens(model=endpoint, contents="The soup was lovely.")
        assert counted.total_tokens is not None
        assert counted.total_tokens > 0


def test_base_model_generate_respects_max_tokens_and_counts_tokens(tiny_service: TuningService) -> None:
    client = tiny_service.client()
    response = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="Say something.",
        config=types.GenerateContentConfig(
            system_instruction="Be brief.", temperature=0, max_output_tokens=7
        ),
    )
    assert response.usage_metadata is not None
    assert response.usage_metadata.candidates_token_count == 7  # a random model never stops early
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    short = client.models.count_tokens(model="gemini-2.5-flash", contents="Say something.")
    longer = client.models.count_tokens(model="gemini-2.5-flash", contents="Say something. " * 10)
    assert short.total_tokens is not None
    assert longer.total_tokens is not None
    assert longer.total_tokens > short.total_tokens
    same_prompt = client.models.count_tokens(
        model="gemini-2.5-flash",
        contents="Say something.",
        config=types.CountTokensConfig(system_instruction="Be brief."),
    )
    assert same_prompt.total_tokens == response.usage_metadata.prompt_token_count


def test_asking_for_more_tokens_than_the_context_holds_stops_at_the_context(
    tiny_service: TuningService,
) -> None:
    client = tiny_service.client()
    config = types.GenerateContentConfig(temperature=0, max_output_tokens=1024)

    response = client.models.generate_content(
        model="gemini-2.5-flash", contents="Say something.", config=config
    )

    usage = response.usage_metadata
    assert usage is not None
    assert usage.total_token_count == 256  # the tiny model's context, prompt included
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


@pytest.mark.slow(15)
def test_list_pages_and_filters_on_labels(tiny_service: TuningService, datasets: dict[str, str]) -> None:
    names = {
        tune(tiny_service, datasets["training"], epoch_count=1, labels={"suite": "listing", "n": str(n)}).name
        for n in range(3)
    }
    client = tiny_service.client()
    for name in names:
        assert name is not None
        wait_for_end(client, name, timeout=JOB_TIMEOUT_S)
    pager = client.tunings.list(
        config=types.ListTuningJobsConfig(page_size=2, filter='labels.suite="listing"')
    )
    assert len(pager.page) == 2
    assert {job.name for job in pager} == names
    one = list(
        client.tunings.list(config=types.ListTuningJobsConfig(filter='labels.suite=listing AND labels.n="1"'))
    )
    assert [job.labels for job in one] == [{"suite": "listing", "n": "1"}]
    everything = {job.name for job in client.tunings.list(config=types.ListTuningJobsConfig(page_size=1))}
    assert names < everything
    with pytest.raises(errors.ClientError) as bad_filter:
        client.tunings.list(config=types.ListTuningJobsConfig(filter="displayName=x"))
    assert bad_filter.value.code == 400


@pytest.mark.slow(9)
def test_cancel_stops_training_within_a_couple_of_steps(
    tiny_service: TuningService, datasets: dict[str, str]
) -> None:
    client = tiny_service.client()
    job = tune(tiny_service, datasets["long"], epoch_count=100, labels={"suite": "cancel"})
    assert job.name is not None

    def steps_done() -> int:
        metadata = client.tunings.get(name=job.name).tuning_job_metadata  # type: ignore[arg-type]
        return (metadata.completed_step_count or 0) if metadata else 0

    wait_until(lambda: steps_done() >= 5, JOB_TIMEOUT_S, "five training steps")
    client.tunings.cancel(name=job.name)
    # How soon is asserted in training steps below, not in seconds, which a loaded machine stretches.
    ended = wait_for_end(client, job.name, timeout=JOB_TIMEOUT_S)
    assert ended.state == types.JobState.JOB_STATE_CANCELLED
    assert ended.error is not None
    assert ended.error.code == 1
    assert ended.tuned_model is None
    local = local_record(tiny_service, ended)["localTuning"]
    # The trainer notes the step at which the cancel signal arrived and the step it stopped at.
    assert local["stoppedAtStep"] - local["cancelSignalledAtStep"] <= 2
    assert local["cancelSignalledAtStep"] >= local["cancelRequestedAtStep"]
    assert local["stoppedAtStep"] < 50 * 100
    with pytest.raises(errors.ClientError) as again:
        client.tunings.cancel(name=job.name)
    assert (again.value.code, again.value.status) == (400, "FAILED_PRECONDITION")


def client_error(call: Callable[[], object]) -> errors.ClientError:
    with pytest.raises(errors.ClientError) as caught:
        call()
    return caught.value


def test_invalid_requests_are_rejected_with_400(
    tiny_service: TuningService, datasets: dict[str, str], upload: Callable[..., str]
) -> None:
    unknown = client_error(lambda: tune(tiny_service, datasets["training"], base_model="gemini-9-ultra"))
    assert (unknown.code, unknown.status) == (400, "INVALID_ARGUMENT")
    assert "gemini-9-ultra" in str(unknown.message)

    adapter = client_error(
        lambda: tune(
            tiny_service, datasets["training"], adapter_size=types.AdapterSize.ADAPTER_SIZE_THIRTY_TWO
        )
    )
    assert (adapter.code, adapter.status) == (400, "INVALID_ARGUMENT")
    assert "ADAPTER_SIZE_THIRTY_TWO" in str(adapter.message)
    assert "1, 2, 4, 8, 16" in str(adapter.message)

    missing = client_error(lambda: tune(tiny_service, "gs://tuning-test-data/datasets/nowhere.jsonl"))
    assert missing.code == 400
    assert "cannot read dataset" in str(missing.message)

    bad_role = upload([{"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]}])
    invalid = client_error(lambda: tune(tiny_service, bad_role))
    assert invalid.code == 400
    assert "line 1" in str(invalid.message)
    assert "unrecognized_role" in str(invalid.message)

    # A multimodal job (any fileData in the training file): the local service trains text models.
    image = {"fileData": {"mimeType": "image/png", "fileUri": "gs://tuning-test-data/a.png"}}
    multimodal = upload(
        [{"contents": [{"role": "user", "parts": [image]}, {"role": "model", "parts": [{"text": "a"}]}]}]
    )
    refused = client_error(lambda: tune(tiny_service, multimodal))
    assert (refused.code, refused.status) == (400, "INVALID_ARGUMENT")
    assert "multimodal_not_supported" in str(refused.message)
    assert "text models" in str(refused.message)

    not_json = upload("this is not json\n")
    assert "not valid JSON" in str(client_error(lambda: tune(tiny_service, not_json)).message)

    user_last = upload([{"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}])
    assert "last turn" in str(
        client_error(lambda: tune(tiny_service, datasets["training"], user_last)).message
    )

    # Vertex's own evaluation service does not run here: said plainly, not silently ignored.
    evaluation = client_error(
        lambda: tune(
            tiny_service,
            datasets["training"],
            datasets["validation"],
            evaluation_config=types.EvaluationConfig(
                metrics=[types.Metric(name="bleu")],
                output_config=types.OutputConfig(
                    gcs_destination=types.GcsDestination(output_uri_prefix="gs://tuning-test-data/eval/")
                ),
            ),
        )
    )
    assert (evaluation.code, evaluation.status) == (400, "INVALID_ARGUMENT")
    assert "evaluationConfig is not supported" in str(evaluation.message)

    not_found = client_error(
        lambda: tiny_service.client().tunings.get(
            name=f"projects/tuning-tests/locations/{'us-central1'}/tuningJobs/1"
        )
    )
    assert (not_found.code, not_found.status) == (404, "NOT_FOUND")


@pytest.mark.slow(18)
def test_over_the_concurrent_job_quota_answers_429(
    new_service: Callable[..., TuningService], datasets: dict[str, str]
) -> None:
    service = new_service(max_concurrent_jobs=1)
    client = service.client()
    running = tune(service, datasets["long"], epoch_count=100)
    assert running.name is not None
    refused = client_error(lambda: tune(service, datasets["training"]))
    assert (refused.code, refused.status) == (429, "RESOURCE_EXHAUSTED")
    assert "concurrent" in str(refused.message)
    client.tunings.cancel(name=running.name)
    assert wait_for_end(client, running.name, timeout=30).state == types.JobState.JOB_STATE_CANCELLED
    accepted = tune(service, datasets["training"], epoch_count=1)
    assert accepted.name is not None
    assert (
        wait_for_end(client, accepted.name, timeout=JOB_TIMEOUT_S).state == types.JobState.JOB_STATE_SUCCEEDED
    )


@pytest.mark.slow(12)
def test_export_last_checkpoint_only_exports_and_serves_the_final_checkpoint_alone(
    tiny_service: TuningService, datasets: dict[str, str]
) -> None:
    client = tiny_service.client()
    job = tune(tiny_service, datasets["training"], epoch_count=2, export_last_checkpoint_only=True)
    assert job.name is not None
    ended = wait_for_end(client, job.name, timeout=JOB_TIMEOUT_S)
    assert ended.state == types.JobState.JOB_STATE_SUCCEEDED, ended.error
    assert ended.tuned_model is not None
    checkpoints = ended.tuned_model.checkpoints or []
    assert [(c.checkpoint_id, c.epoch, c.step) for c in checkpoints] == [("2", 2, 12)]
    response = client.models.generate_content(
        model=checkpoints[0].endpoint or "",
        contents="Review: fine.",
        config=types.GenerateContentConfig(max_output_tokens=4),
    )
    assert response.text is not None


@pytest.mark.slow(38)
def test_jobs_and_adapters_survive_a_restart(
    new_service: Callable[..., TuningService], datasets: dict[str, str]
) -> None:
    service = new_service(max_concurrent_jobs=2)
    client = service.client()
    done = tune(
        service,
        datasets["training"],
        epoch_count=2,
        labels={"suite": "restart"},
        tuned_model_display_name="kept",
    )
    assert done.name is not None
    done = wait_for_end(client, done.name, timeout=JOB_TIMEOUT_S)
    assert done.tuned_model is not None
    assert done.tuned_model.endpoint is not None
    prompt = types.GenerateContentConfig(temperature=0, max_output_tokens=4)
    before = client.models.generate_content(
        model=done.tuned_model.endpoint, contents="The pasta was awful.", config=prompt
    )

    interrupted = tune(service, datasets["long"], epoch_count=100, labels={"suite": "restart"})
    assert interrupted.name is not None
    wait_until(
        lambda: client.tunings.get(name=interrupted.name).state == types.JobState.JOB_STATE_RUNNING,  # type: ignore[arg-type]
        30,
        "the second job to run",
    )
    trainer_pid = local_record(service, interrupted)["localTuning"]["trainerPid"]
    service.stop(signal.SIGKILL)  # a crash: nothing gets to record anything
    service.start()

    client = service.client()
    kept = client.tunings.get(name=done.name)
    assert kept.state == types.JobState.JOB_STATE_SUCCEEDED
    assert kept.tuned_model_display_name == "kept"
    assert kept.labels == {"suite": "restart"}
    assert kept.tuned_model == done.tuned_model
    after = client.models.generate_content(
        model=done.tuned_model.endpoint, contents="The pasta was awful.", config=prompt
    )
    assert after.text == before.text

    failed = client.tunings.get(name=interrupted.name)
    assert failed.state == types.JobState.JOB_STATE_FAILED
    assert failed.error is not None
    assert "Interrupted" in str(failed.error.message)
    assert failed.end_time is not None
    assert failed.end_time > failed.start_time
    assert not Path(f"/proc/{trainer_pid}").exists() or "local.tuning.trainer" not in Path(
        f"/proc/{trainer_pid}/cmdline"
    ).read_text(errors="replace")
    listed = {
        job.name
        for job in client.tunings.list(config=types.ListTuningJobsConfig(filter="labels.suite=restart"))
    }
    assert listed == {done.name, interrupted.name}


@pytest.mark.slow(20)
def test_a_stopped_service_fails_its_running_job_with_the_reason(
    new_service: Callable[..., TuningService], datasets: dict[str, str]
) -> None:
    service = new_service()
    job = tune(service, datasets["long"], epoch_count=100)
    assert job.name is not None
    wait_until(
        lambda: service.client().tunings.get(name=job.name).state == types.JobState.JOB_STATE_RUNNING,  # type: ignore[arg-type]
        30,
        "the job to run",
    )
    service.stop(signal.SIGTERM)
    service.start()
    stopped = service.client().tunings.get(name=job.name)
    assert stopped.state == types.JobState.JOB_STATE_FAILED
    assert stopped.error is not None
    assert "was stopped" in str(stopped.error.message)
    assert isinstance(stopped.end_time, datetime)


@pytest.mark.slow(11)
def test_long_prompts_train_on_their_answers_and_answers_too_long_are_dropped(
    tiny_service: TuningService, upload: Callable[..., str]
) -> None:
    """Before: the tiny model's 256-token window was the start of the conversation, so a long
    review kept none of its answer (labels all -100) and its batch's loss was NaN, which made the
    epoch's validation loss NaN in metrics.jsonl; validation truncation was not counted."""
    rng_records = sample.sentiment_records(16, seed=11)
    long_review = " ".join(sample.review(random.Random(n), "positive") for n in range(80))
    essay = sample.record("Write about the soup.", long_review)  # an answer over 256 tokens
    training = [*rng_records[:6], sample.record(long_review, "positive"), *rng_records[6:12], essay]
    validation = [sample.record(long_review, "positive"), *rng_records[12:]]

    job = tune(tiny_service, upload(training), upload(validation), epoch_count=2)
    assert job.name is not None
    done = wait_for_end(tiny_service.client(), job.name, timeout=120)

    assert done.state == types.JobState.JOB_STATE_SUCCEEDED, done.error
    stats = done.tuning_data_stats.supervised_tuning_data_stats  # type: ignore[union-attr]
    assert stats is not None
    assert stats.tuning_dataset_example_count == 14
    assert (stats.total_truncated_example_count, stats.truncated_example_indices) == (1, [6])
    assert len(stats.dropped_example_reasons or []) == 1
    assert (stats.dropped_example_reasons or [""])[0].startswith("example 13: answer_too_long")
    assert stats.tuning_step_count == 2 * 2  # 13 examples kept, batches of 8
    local = local_record(tiny_service, done)["localTuning"]
    assert local["validationDataStats"]["totalTruncatedExampleCount"] == 1
    assert local["validationDataStats"]["truncatedExampleIndices"] == [0]
    stored = Path(local["metricsPath"]).read_text()
    assert "NaN" not in stored
    series = metric_series(tiny_service, done)
    values = [p["value"] for points in series.values() for p in points]
    assert all(math.isfinite(v) for v in values)
    # One validation point at the end of each epoch (2 steps an epoch).
    assert [p["step"] for p in series["/eval_total_loss"]] == [2, 4]
    assert len(series["/train_total_loss"]) == 4


@pytest.mark.slow(10)
def test_a_job_continues_from_a_model_the_service_tuned_at_the_checkpoint_named(
    tiny_service: TuningService, finished_job: types.TuningJob, datasets: dict[str, str]
) -> None:
    assert finished_job.tuned_model is not None
    tuned = finished_job.tuned_model.model
    assert tuned is not None
    job = tune(
        tiny_service,
        datasets["training"],
        base_model=tuned,  # google-genai sends a projects/... base model as preTunedModel
        epoch_count=1,
        pre_tuned_model_checkpoint_id="2",
        description="continued from epoch 2",
    )
    ended = wait_for_end(tiny_service.client(), job.name or "", JOB_TIMEOUT_S)

    assert ended.state == types.JobState.JOB_STATE_SUCCEEDED, ended.error
    assert ended.base_model == "gemini-2.5-flash"  # the continued model's own base
    assert ended.description == "continued from epoch 2"
    stored = local_record(tiny_service, ended)
    assert stored["preTunedModel"] == {"tunedModelName": tuned, "checkpointId": "2"}
    # It starts where epoch 2 ended, not from a new adapter: its first loss is far below the
    # first loss of the job it continues.
    first = metric_series(tiny_service, finished_job)["/train_total_loss"]
    again = metric_series(tiny_service, ended)["/train_total_loss"]
    assert again[0]["value"] < 0.9 * first[0]["value"]
    assert again[0]["value"] <= first[11]["value"] * 1.2  # near the loss at the end of epoch 2


@pytest.mark.parametrize(
    ("config", "option"),
    [
        (
            {
                "encryption_spec": types.EncryptionSpec(
                    kms_key_name="projects/p/locations/l/keyRings/r/cryptoKeys/k"
                )
            },
            "encryptionSpec",
        ),
        (
            {"http_options": types.HttpOptions(extra_body={"serviceAccount": "t@p.iam.gserviceaccount.com"})},
            "serviceAccount",
        ),
        ({"pre_tuned_model_checkpoint_id": "9"}, "checkpointId 9 is not a checkpoint"),
        (
            {"pre_tuned_model_checkpoint_id": "1", "adapter_size": types.AdapterSize.ADAPTER_SIZE_EIGHT},
            "continuing keeps its adapter size",
        ),
    ],
)
def test_options_the_local_service_cannot_honour_are_a_clear_400(
    tiny_service: TuningService,
    finished_job: types.TuningJob,
    datasets: dict[str, str],
    config: dict[str, Any],
    option: str,
) -> None:
    base_model = (
        finished_job.tuned_model.model or ""  # type: ignore[union-attr]
        if "pre_tuned_model_checkpoint_id" in config
        else "gemini-2.5-flash"
    )
    with pytest.raises(errors.ClientError) as refused:
        tune(tiny_service, datasets["training"], base_model=base_model, **config)
    assert refused.value.code == 400
    assert option in str(refused.value.message)

"""Every option of a Vertex AI tuning job, per upload (metadata, manifest, tuning-request/v1) and
deployment-wide (settings): checked at ingest with a located error, passed to the create
(issue 16, part 3)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.genai import types

from shared.config import Settings
from shared.datasets import UploadSettingsError, load_manifest
from shared.datasets.options import PrepareOptions, parse_object_metadata
from shared.messages import JobOptions, TuningRequestV1
from shared.state.jobs import JobRecord
from shared.tuning.submit import _config

KEY = "projects/p/locations/us-central1/keyRings/ml/cryptoKeys/tuning"
MODEL = "projects/p/locations/us-central1/models/123@1"
ACCOUNT = "tuner@p.iam.gserviceaccount.com"
METADATA = {
    "x-goog-meta-description": "reviews v2",
    "x-goog-meta-output-uri": "gs://bucket/artifacts/reviews",
    "x-goog-meta-kms-key-name": KEY,
    "x-goog-meta-service-account": ACCOUNT,
    "x-goog-meta-pre-tuned-model": MODEL,
    "x-goog-meta-pre-tuned-model-checkpoint-id": "2",
}


def _job(options: JobOptions) -> tuple[JobRecord, TuningRequestV1]:
    request = TuningRequestV1(
        dataset_id="d1",
        base_model="gemini-2.5-flash",
        training_uri="gs://bucket/prepared/d1/train.jsonl",
        job_options=options,
    )
    job = JobRecord(
        job_id="job-1",
        dataset_id="d1",
        request=request.model_dump(mode="json", by_alias=True),
        base_model="gemini-2.5-flash",
        status="QUEUED",
        created=datetime.now(UTC),
    )
    return job, request


def test_every_option_goes_from_the_upload_metadata_to_the_create() -> None:
    upload = parse_object_metadata(METADATA)
    job, request = _job(upload.job_options)

    config = _config(job, TuningRequestV1.model_validate(job.request), Settings())

    assert request.job_options.pre_tuned_model == MODEL
    assert config.description == "reviews v2"
    assert config.output_uri == "gs://bucket/artifacts/reviews"
    assert config.encryption_spec == types.EncryptionSpec(kms_key_name=KEY)
    assert config.pre_tuned_model_checkpoint_id == "2"
    assert config.http_options is not None
    assert config.http_options.extra_body == {"serviceAccount": ACCOUNT}


def test_a_manifest_carries_the_same_options() -> None:
    manifest = load_manifest(
        f"train: datasets/r/train.jsonl\nservice_account: {ACCOUNT}\ndescription: from a manifest\n".encode(),
        "r.tuning.yaml",
    )
    assert manifest.job_options == JobOptions(service_account=ACCOUNT, description="from a manifest")


def test_the_deployments_options_apply_where_the_upload_gives_none() -> None:
    job, request = _job(JobOptions(description="mine"))
    settings = Settings(
        tuning_description="everyone's",
        tuning_output_uri="gs://bucket/artifacts",
        tuning_kms_key_name=KEY,
        tuning_service_account=ACCOUNT,
    )

    config = _config(job, request, settings)

    assert config.description == "mine"
    assert config.output_uri == "gs://bucket/artifacts"
    assert config.encryption_spec == types.EncryptionSpec(kms_key_name=KEY)
    assert config.http_options.extra_body == {"serviceAccount": ACCOUNT}  # type: ignore[union-attr]
    plain = _config(*_job(JobOptions()), Settings())
    assert (plain.description, plain.output_uri, plain.encryption_spec) == (None, None, None)
    assert plain.http_options.extra_body is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("output-uri", "/tmp/out", "output_uri"),
        ("kms-key-name", "my-key", "kms_key_name"),
        ("service-account", "someone@example.com", "service_account"),
        ("pre-tuned-model", "gemini-2.5-flash", "pre_tuned_model"),
        ("pre-tuned-model-checkpoint-id", "best", "pre_tuned_model_checkpoint_id"),
        ("description", "x" * 1025, "description"),
    ],
)
def test_a_bad_option_is_rejected_at_ingest_naming_its_key(key: str, value: str, field: str) -> None:
    with pytest.raises(UploadSettingsError) as rejected:
        parse_object_metadata({f"x-goog-meta-{key}": value})
    # Named as the uploader wrote it; a manifest names its own key.
    assert rejected.value.field == f"x-goog-meta-{key}"
    with pytest.raises(UploadSettingsError) as in_manifest:
        load_manifest(f"train: datasets/r/train.jsonl\n{field}: '{value}'\n".encode(), "r.tuning.yaml")
    assert in_manifest.value.field == field


def test_a_checkpoint_without_its_model_and_a_key_in_another_region_are_rejected() -> None:
    with pytest.raises(UploadSettingsError) as lone:
        parse_object_metadata({"x-goog-meta-pre-tuned-model-checkpoint-id": "2"})
    assert lone.value.field == "x-goog-meta-pre-tuned-model-checkpoint-id"
    assert "needs pre_tuned_model" in str(lone.value)
    elsewhere = parse_object_metadata(
        {"x-goog-meta-kms-key-name": "projects/p/locations/europe-west4/keyRings/ml/cryptoKeys/k"}
    )
    with pytest.raises(UploadSettingsError) as region:
        PrepareOptions.from_settings(Settings(location="us-central1"), elsewhere)
    assert region.value.field == "kms_key_name"
    assert "europe-west4" in str(region.value)
    assert "us-central1" in str(region.value)

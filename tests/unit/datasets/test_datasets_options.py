"""Per-upload settings from object metadata and manifests; errors name the key."""

from __future__ import annotations

import pytest

from shared.config import Settings
from shared.datasets import (
    ColumnMapping,
    PrepareOptions,
    UploadSettings,
    UploadSettingsError,
    is_manifest,
    load_manifest,
    parse_object_metadata,
)
from shared.errors import PermanentError
from shared.messages import Task


def test_metadata_keys_are_forgiving_and_typed() -> None:
    upload = parse_object_metadata(
        {
            "Base-Model": "gemini-2.5-pro",
            "sftpipe-epochs": "5",
            "learning_rate_multiplier": "2.5",
            "adapter-size": "4",
            "task": "classification",
            "column-mapping": "input=text,output=label",
            "skip-invalid": "true",
            "notify-emails": "a@x.org, b@y.org",
            "uploaded-by": "some other tool",
        }
    )
    assert upload.base_model == "gemini-2.5-pro"
    assert (upload.epochs, upload.learning_rate_multiplier, upload.adapter_size) == (5, 2.5, 4)
    assert upload.task is Task.CLASSIFICATION
    assert upload.column_mapping == ColumnMapping(input="text", output="label")
    assert upload.skip_invalid is True
    assert upload.notify_emails == ["a@x.org", "b@y.org"]


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"epochs": "many"}, "epochs"),
        ({"adapter-size": "3"}, "adapter-size"),
        ({"task": "translation"}, "task"),
        ({"notify-emails": "not-an-email"}, "notify-emails.0"),
        ({"sftpipe-colour": "blue"}, "sftpipe-colour"),
        ({"column_mapping": "input"}, "column_mapping"),
    ],
)
def test_metadata_errors_name_the_key(metadata: dict[str, str], field: str) -> None:
    with pytest.raises(UploadSettingsError) as caught:
        parse_object_metadata(metadata)
    assert isinstance(caught.value, PermanentError)
    assert caught.value.field == field
    assert field.split(".", maxsplit=1)[0] in caught.value.message


def test_manifest_json_and_yaml() -> None:
    yaml_text = b"""
base_model: gemini-2.5-flash
epochs: 3
train: data/train.csv
validation: data/val.csv
column_mapping: {input: question, output: answer, context: passage, style: qa}
notify_emails: [ops@x.org]
"""
    manifest = load_manifest(yaml_text, "run.tuning.yaml")
    assert manifest.files() == {"train": "data/train.csv", "validation": "data/val.csv"}
    assert manifest.column_mapping is not None
    assert manifest.column_mapping.style == "qa"
    json_manifest = load_manifest(b'{"train": "a.jsonl", "task": "summarization"}', "x.tuning.json")
    assert json_manifest.task is Task.SUMMARIZATION
    assert is_manifest("folder/run.tuning.yml")
    assert not is_manifest("train.jsonl")


@pytest.mark.parametrize(
    ("body", "filename", "field"),
    [
        (b'{"epochs": 3}', "x.tuning.json", "train"),
        (b'{"train": "a", "learning_rate_multiplier": -1}', "x.tuning.json", "learning_rate_multiplier"),
        (b"train: a\nunknown_key: 1\n", "x.tuning.yaml", "unknown_key"),
        (b"train: [a, b", "x.tuning.yaml", ""),
        (b"- a\n- b\n", "x.tuning.yaml", ""),
    ],
)
def test_manifest_errors_name_the_key(body: bytes, filename: str, field: str) -> None:
    with pytest.raises(UploadSettingsError) as caught:
        load_manifest(body, filename)
    assert caught.value.field == field


def test_options_from_settings_then_upload_then_overrides() -> None:
    settings = Settings(base_model="gemini-2.0-flash-001", epochs=4, skip_invalid=False, split_seed=9)
    options = PrepareOptions.from_settings(settings, UploadSettings(epochs=6, skip_invalid=True))
    assert options.base_model == "gemini-2.0-flash-001"
    assert options.hyperparameters.epochs == 6
    assert options.skip_invalid is True
    assert options.split_seed == 9
    assert options.price_per_m_tokens == settings.training_price_per_m_tokens["gemini-2.0-flash-001"]
    overridden = PrepareOptions.from_settings(settings, None, base_model="gemini-2.5-pro", split="test")
    assert overridden.hyperparameters.epochs == 4
    assert overridden.price_per_m_tokens == settings.training_price_per_m_tokens["gemini-2.5-pro"]
    assert overridden.split == "test"


# --- Adapter sizes are checked against the base model -----------------------------------------


@pytest.mark.parametrize(
    ("settings", "upload", "overrides", "mentions"),
    [
        ({}, {"base_model": "gemini-2.5-pro", "adapter_size": 16}, {}, "upload setting 'adapter_size'"),
        ({"base_model": "gemini-2.5-pro"}, {"adapter_size": 16}, {}, "upload setting 'adapter_size'"),
        ({}, {"base_model": "gemini-1.5-pro", "adapter_size": 8}, {}, "gemini-1.5-pro-002"),
        ({"base_model": "gemini-2.5-pro", "adapter_size": 16}, {}, {}, "SFTPIPE_ADAPTER_SIZE"),
        ({"adapter_size": 16}, {"base_model": "gemini-2.0-flash-001"}, {}, "SFTPIPE_ADAPTER_SIZE"),
        ({"adapter_size": 16}, {}, {"base_model": "gemini-2.5-pro"}, "SFTPIPE_ADAPTER_SIZE"),
        ({"adapter_size": 3}, {}, {}, "SFTPIPE_ADAPTER_SIZE"),
    ],
    ids=[
        "upload",
        "upload-size-default-model",
        "alias",
        "default",
        "default-size-upload-model",
        "override",
        "no-model",
    ],
)
def test_an_adapter_size_the_base_model_does_not_accept_is_an_upload_error(
    settings: dict[str, object], upload: dict[str, object], overrides: dict[str, object], mentions: str
) -> None:
    with pytest.raises(UploadSettingsError) as caught:
        PrepareOptions.from_settings(Settings(**settings), UploadSettings(**upload), **overrides)
    assert caught.value.field == "adapter_size"
    assert caught.value.code == "invalid_upload_setting"
    assert mentions in caught.value.message
    assert "adapter sizes 1, " in caught.value.message


def test_allowed_adapter_sizes_pass_and_the_upload_overrides_a_bad_default() -> None:
    pro = Settings(base_model="gemini-2.5-pro", adapter_size=16)
    assert PrepareOptions.from_settings(pro, UploadSettings(adapter_size=8)).hyperparameters.adapter_size == 8
    flash = PrepareOptions.from_settings(Settings(adapter_size=16))
    assert (flash.base_model, flash.hyperparameters.adapter_size) == ("gemini-2.5-flash", 16)
    assert PrepareOptions.from_settings(Settings()).hyperparameters.adapter_size is None


def test_pro_with_adapter_16_from_metadata_or_a_manifest_is_refused_with_the_allowed_sizes() -> None:
    metadata = parse_object_metadata({"sftpipe-base-model": "gemini-2.5-pro", "sftpipe-adapter-size": "16"})
    manifest = load_manifest(
        b'{"train": "datasets/a.jsonl", "base_model": "gemini-2.5-pro", "adapter_size": 16}', "x.tuning.json"
    )
    for upload in (metadata, manifest):
        with pytest.raises(UploadSettingsError) as caught:
            PrepareOptions.from_settings(Settings(), upload)
        assert caught.value.field == "adapter_size"
        assert "gemini-2.5-pro accepts adapter sizes 1, 2, 4, 8" in caught.value.message

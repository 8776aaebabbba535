"""A manifest uploaded under incoming/ names data files kept outside it; ingest prepares them as one
dataset (strict across all files) and publishes one tuning request with the manifest's settings,
or rejects the whole manifest with a report naming the field at fault."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.datasets import PrepareOptions, prepare
from shared.runtime import Runtime
from tests.integration.conftest import wait_for

SAMPLE_LINES = (
    (Path(__file__).resolve().parents[2] / "local" / "samples" / "reviews.jsonl")
    .read_bytes()
    .splitlines(keepends=True)
)
TRAIN, TEST = SAMPLE_LINES[:120], SAMPLE_LINES[120:]


def _settled(runtime: Runtime) -> list[dict[str, Any]]:
    docs = [
        doc.to_dict() for doc in runtime.firestore.collection(runtime.settings.datasets_collection).stream()
    ]
    return [d for d in docs if d.get("status") in ("READY", "REJECTED")]


def _upload(runtime: Runtime, name: str, data: bytes) -> None:
    runtime.storage.bucket(runtime.settings.bucket).blob(name).upload_from_string(data)


def _read(runtime: Runtime, name: str) -> bytes:
    return runtime.storage.bucket(runtime.settings.bucket).blob(name).download_as_bytes()


def _exists(runtime: Runtime, name: str) -> bool:
    return runtime.storage.bucket(runtime.settings.bucket).blob(name).exists()


def test_manifest_with_train_and_test_files_becomes_one_dataset_and_one_request(
    runtime: Runtime, requests_seen: Callable[[], list[dict[str, Any]]]
) -> None:
    _upload(runtime, "datasets/reviews/train.jsonl", b"".join(TRAIN))
    _upload(runtime, "datasets/reviews/test.jsonl", b"".join(TEST))
    manifest = {
        "train": "datasets/reviews/train.jsonl",
        "test": f"gs://{runtime.settings.bucket}/datasets/reviews/test.jsonl",
        "epochs": 3,
        "adapter_size": 4,
        "task": "classification",
        "notify_emails": ["ml-team@example.com"],
    }
    _upload(runtime, "incoming/reviews.tuning.json", orjson.dumps(manifest))

    [dataset] = wait_for(lambda: _settled(runtime), what="the manifest's dataset to settle")

    assert dataset["status"] == "READY", dataset.get("error_counts")
    assert dataset["source_uri"] == f"gs://{runtime.settings.bucket}/incoming/reviews.tuning.json"
    assert (dataset["split"]["train"], dataset["split"]["validation"], dataset["split"]["test"]) == (
        120,
        0,
        40,
    )
    assert dataset["examples"] == 160
    prefix = f"prepared/{dataset['dataset_id']}/"
    assert len(_read(runtime, f"{prefix}train.jsonl").splitlines()) == 120
    test_lines = _read(runtime, f"{prefix}test.jsonl").splitlines()
    assert len(test_lines) == 40
    assert orjson.loads(test_lines[0])["contents"] == orjson.loads(TEST[0])["contents"]
    assert not _exists(runtime, f"{prefix}validation.jsonl")

    report = orjson.loads(_read(runtime, f"{prefix}report.json"))
    assert report["ok"] is True
    assert [(f["role"], f["result"]["examples"]) for f in report["files"]] == [("train", 120), ("test", 40)]
    assert report["files"][1]["uri"] == manifest["test"]
    assert report["examples"] == 160
    assert "## test: " in _read(runtime, f"{prefix}report.md").decode()

    [request] = wait_for(requests_seen, what="the tuning request")
    body = request["body"]
    bucket_uri = f"gs://{runtime.settings.bucket}/{prefix}"
    assert body["dataset_id"] == dataset["dataset_id"]
    assert body["training_uri"] == f"{bucket_uri}train.jsonl"
    assert body["test_uri"] == f"{bucket_uri}test.jsonl"
    assert "validation_uri" not in body
    assert (body["hyperparameters"]["epochs"], body["hyperparameters"]["adapter_size"]) == (3, 4)
    assert body["task"] == "classification"
    assert body["notify"]["emails"] == ["ml-team@example.com"]


def test_yaml_manifest_with_only_train_gets_the_seeded_three_way_split(
    runtime: Runtime, requests_seen: Callable[[], list[dict[str, Any]]]
) -> None:
    _upload(runtime, "datasets/all.jsonl", b"".join(SAMPLE_LINES))
    _upload(
        runtime, "incoming/all.tuning.yaml", b"train: datasets/all.jsonl\nlearning_rate_multiplier: 0.5\n"
    )

    [dataset] = wait_for(lambda: _settled(runtime), what="the manifest's dataset to settle")

    assert dataset["status"] == "READY", dataset.get("error_counts")
    single_file = prepare(
        io.BytesIO(b"".join(SAMPLE_LINES)),
        filename="all.jsonl",
        options=PrepareOptions.from_settings(runtime.settings),
    )
    expected = (single_file.split.train, single_file.split.validation, single_file.split.test)
    assert sum(expected) == 160
    assert (dataset["split"]["train"], dataset["split"]["validation"], dataset["split"]["test"]) == expected
    [request] = wait_for(requests_seen, what="the tuning request")
    assert request["body"]["hyperparameters"]["learning_rate_multiplier"] == 0.5
    assert request["body"]["validation_uri"].endswith(f"{dataset['dataset_id']}/validation.jsonl")


def test_manifest_naming_a_missing_file_is_rejected_naming_the_field(
    runtime: Runtime, stack: dict[str, str], requests_seen: Callable[[], list[dict[str, Any]]]
) -> None:
    _upload(runtime, "datasets/reviews/train.jsonl", b"".join(TRAIN))
    manifest = b'{"train": "datasets/reviews/train.jsonl", "test": "datasets/reviews/nope.jsonl"}'
    _upload(runtime, "incoming/missing.tuning.json", manifest)

    [dataset] = wait_for(lambda: _settled(runtime), what="the manifest's dataset to settle")

    assert dataset["status"] == "REJECTED"
    assert dataset["error_counts"] == {"manifest_file_missing": 1}
    prefix = f"prepared/{dataset['dataset_id']}/"
    report = orjson.loads(_read(runtime, f"{prefix}report.json"))
    [error] = report["errors"]
    assert (error["field"], error["code"]) == ("test", "manifest_file_missing")
    assert "datasets/reviews/nope.jsonl" in error["message"]
    assert not _exists(runtime, f"{prefix}train.jsonl")

    def posts() -> list[str]:
        texts = [post.read_text() for post in Path(stack["SFTPIPE_SLACK_DIR"]).glob("*.json")]
        return [text for text in texts if dataset["dataset_id"] in text]

    [post] = wait_for(posts, what="a Slack post about the dataset")
    assert "datasets/reviews/nope.jsonl does not exist" in post
    assert requests_seen() == []


@pytest.mark.parametrize(
    ("manifest", "field", "code"),
    [
        (b'{"train": "incoming/train.jsonl"}', "train", "manifest_file_in_incoming"),
        (b'{"train": "datasets/t.jsonl", "epochs": 0}', "epochs", "invalid_upload_setting"),
        (b'{"train": "datasets/t.jsonl", "test": ', "manifest", "invalid_upload_setting"),
        (
            b'{"train": "datasets/t.jsonl", "base_model": "gemini-2.5-pro", "adapter_size": 16}',
            "adapter_size",
            "invalid_upload_setting",
        ),
    ],
    ids=["file-under-incoming", "bad-setting", "not-json", "adapter-size-the-model-refuses"],
)
def test_manifest_that_cannot_work_is_rejected_naming_the_field(
    runtime: Runtime, manifest: bytes, field: str, code: str
) -> None:
    _upload(runtime, "incoming/bad.tuning.json", manifest)

    [dataset] = wait_for(lambda: _settled(runtime), what="the manifest's dataset to settle")

    assert dataset["status"] == "REJECTED"
    report = orjson.loads(_read(runtime, f"prepared/{dataset['dataset_id']}/report.json"))
    assert [(e["field"], e["code"]) for e in report["errors"]] == [(field, code)]


def test_an_example_in_train_and_test_rejects_the_whole_manifest_and_writes_nothing(
    runtime: Runtime, requests_seen: Callable[[], list[dict[str, Any]]]
) -> None:
    _upload(runtime, "datasets/leaky/train.jsonl", b"".join(TRAIN))
    _upload(runtime, "datasets/leaky/test.jsonl", b"".join(TEST) + TRAIN[7])
    manifest = b"train: datasets/leaky/train.jsonl\ntest: datasets/leaky/test.jsonl\n"
    _upload(runtime, "incoming/leaky.tuning.yaml", manifest)

    [dataset] = wait_for(lambda: _settled(runtime), what="the manifest's dataset to settle")

    assert dataset["status"] == "REJECTED"
    assert dataset["error_counts"] == {"example_in_multiple_splits": 1}
    prefix = f"prepared/{dataset['dataset_id']}/"
    report = orjson.loads(_read(runtime, f"{prefix}report.json"))
    train, test = report["files"]
    assert train["result"]["ok"] is True
    [error] = test["result"]["errors"]
    assert (error["line"], error["code"]) == (41, "example_in_multiple_splits")
    # The train file was valid and went through its writing pass, but nothing is committed.
    assert [blob.name for blob in runtime.storage.list_blobs(runtime.settings.bucket, prefix=prefix)] == [
        f"{prefix}report.json",
        f"{prefix}report.md",
    ]
    assert requests_seen() == []


def _other_bucket(runtime: Runtime, name: str) -> Any:
    """A second bucket of the stack's fake-gcs-server, emptied: ingest may not read it."""
    bucket = runtime.storage.lookup_bucket(name) or runtime.storage.create_bucket(name)
    for blob in runtime.storage.list_blobs(name):
        blob.delete()
    return bucket


def test_a_manifest_may_name_only_files_under_the_uploads_prefixes_of_its_bucket(
    runtime: Runtime, requests_seen: Callable[[], list[dict[str, Any]]]
) -> None:
    """Someone else's prepared data, reports and another bucket are refused (each file exists, so
    the refusal cannot be a missing file); the allowed datasets/ upload is READY."""
    _upload(runtime, "datasets/victim/train.jsonl", b"".join(TRAIN))
    _upload(runtime, "incoming/victim.tuning.json", b'{"train": "datasets/victim/train.jsonl"}')
    [victim] = wait_for(lambda: _settled(runtime), what="the allowed manifest's dataset to settle")
    assert victim["status"] == "READY", victim.get("error_counts")
    victim_train = f"prepared/{victim['dataset_id']}/train.jsonl"
    assert _exists(runtime, victim_train)
    _upload(runtime, "reports/some-job/results.jsonl", b"".join(TEST))
    other = _other_bucket(runtime, f"{runtime.settings.bucket}-other")
    other.blob("datasets/test.jsonl").upload_from_string(b"".join(TEST))

    attempts = {
        "incoming/steal-prepared.tuning.json": ({"train": victim_train}, "train"),
        "incoming/steal-reports.tuning.json": (
            {"train": "datasets/victim/train.jsonl", "validation": "reports/some-job/results.jsonl"},
            "validation",
        ),
        "incoming/steal-bucket.tuning.json": (
            {"train": "datasets/victim/train.jsonl", "test": f"gs://{other.name}/datasets/test.jsonl"},
            "test",
        ),
    }
    for name, (manifest, _field) in attempts.items():
        _upload(runtime, name, orjson.dumps(manifest))

    def all_settled() -> list[dict[str, Any]]:
        docs = _settled(runtime)
        return docs if len(docs) == 1 + len(attempts) else []

    settled = wait_for(all_settled, what="every manifest's dataset to settle")

    by_source = {doc["source_uri"].split("/", 3)[3]: doc for doc in settled}
    assert sorted(doc["status"] for doc in settled) == ["READY", "REJECTED", "REJECTED", "REJECTED"]
    for name, (_manifest, field) in attempts.items():
        dataset = by_source[name]
        assert dataset["status"] == "REJECTED", name
        assert dataset["error_counts"] == {"manifest_file_not_allowed": 1}, name
        assert [(e["field"], e["code"]) for e in dataset["manifest_errors"]] == [
            (field, "manifest_file_not_allowed")
        ]
        assert "datasets/" in dataset["manifest_errors"][0]["message"]
        prefix = f"prepared/{dataset['dataset_id']}/"
        report = orjson.loads(_read(runtime, f"{prefix}report.json"))
        assert report["ok"] is False
        assert report["error_counts"] == {"manifest_file_not_allowed": 1}
        assert [(e["field"], e["code"]) for e in report["errors"]] == [(field, "manifest_file_not_allowed")]
        # Nothing of any file was read: no file has a result, the refused one not even a size.
        assert all(f["result"] is None for f in report["files"])
        [refused] = [f for f in report["files"] if f["role"] == field]
        assert (refused["generation"], refused["size"]) == (None, None)
        assert not _exists(runtime, f"{prefix}train.jsonl")
    assert len(requests_seen()) == 1

"""An upload travels fake-gcs-server -> Pub/Sub emulator -> push -> functions-framework -> ingest,
which writes the prepared dataset and its report, records it, and publishes one tuning request
(or, for a bad file, a report, a REJECTED record and a notification, and no retry)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from shared.events import GCS_NOTIFICATION_FINALIZE, StorageObject
from shared.ingest import ingest_upload
from shared.runtime import Runtime
from tests.integration.conftest import wait_for

SAMPLE = Path(__file__).resolve().parents[2] / "local" / "samples" / "reviews.jsonl"
GOOD_LINE = b'{"contents": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "hello"}]}]}\n'


def _datasets(runtime: Runtime) -> list[dict[str, Any]]:
    return [
        doc.to_dict() for doc in runtime.firestore.collection(runtime.settings.datasets_collection).stream()
    ]


def _settled(runtime: Runtime, count: int = 1) -> list[dict[str, Any]]:
    docs = [d for d in _datasets(runtime) if d.get("status") in ("READY", "REJECTED")]
    return docs if len(docs) >= count else []


def test_valid_upload_becomes_a_prepared_dataset_and_one_tuning_request(
    runtime: Runtime, requests_seen: Callable[[], list[dict[str, Any]]]
) -> None:
    bucket = runtime.storage.bucket(runtime.settings.bucket)
    blob = bucket.blob("incoming/reviews.jsonl")
    blob.metadata = {"epochs": "2", "task": "classification"}
    blob.upload_from_filename(str(SAMPLE))

    [dataset] = wait_for(lambda: _settled(runtime), what="the dataset to be READY or REJECTED")

    assert dataset["status"] == "READY", dataset.get("error_counts")
    assert dataset["source_generation"] == blob.generation
    assert dataset["examples"] == 160
    prefix = f"prepared/{dataset['dataset_id']}/"
    lines = {
        split: bucket.blob(f"{prefix}{split}.jsonl").download_as_bytes().splitlines()
        for split in ("train", "validation", "test")
    }
    assert sum(len(v) for v in lines.values()) == 160
    assert {split: len(v) for split, v in lines.items()} == {
        split: dataset["split"][split] for split in ("train", "validation", "test")
    }
    assert all(orjson.loads(line)["contents"][-1]["role"] == "model" for v in lines.values() for line in v)
    assert set(lines["train"]).isdisjoint(lines["test"])
    report = orjson.loads(bucket.blob(f"{prefix}report.json").download_as_bytes())
    assert report["ok"] is True
    assert report["examples"] == 160

    [request] = wait_for(requests_seen, what="the tuning request")
    body = request["body"]
    assert body["schema"] == "tuning-request/v1"
    assert body["dataset_id"] == dataset["dataset_id"]
    assert body["training_uri"] == f"gs://{runtime.settings.bucket}/{prefix}train.jsonl"
    assert body["test_uri"] == f"gs://{runtime.settings.bucket}/{prefix}test.jsonl"
    assert body["hyperparameters"]["epochs"] == 2
    assert body["task"] == "classification"
    assert request["attributes"]["dataset_id"] == dataset["dataset_id"]


def test_bad_upload_is_rejected_with_a_report_a_notification_and_no_retry(
    runtime: Runtime,
    stack: dict[str, str],
    requests_seen: Callable[[], list[dict[str, Any]]],
    function_log: Callable[[str], list[dict[str, Any]]],
) -> None:
    bucket = runtime.storage.bucket(runtime.settings.bucket)
    bad = (
        GOOD_LINE * 3
        + b'{"contents": [{"role": "user", "parts": [{"text": "no answer"}]}]}\n'
        + b"{not json\n"
    )
    bucket.blob("incoming/broken.jsonl").upload_from_string(bad)

    [dataset] = wait_for(lambda: _settled(runtime), what="the dataset to be settled")

    assert dataset["status"] == "REJECTED"
    prefix = f"prepared/{dataset['dataset_id']}/"
    report = orjson.loads(bucket.blob(f"{prefix}report.json").download_as_bytes())
    assert report["ok"] is False
    assert {error["line"] for error in report["errors"]} == {4, 5}
    assert all(error["code"] for error in report["errors"])
    assert not bucket.blob(f"{prefix}train.jsonl").exists()

    # Other tests' jobs notify into the same folders: count only what names this dataset.
    def about_this(folder: str, pattern: str) -> list[Path]:
        paths = Path(stack[folder]).glob(pattern)
        return [p for p in paths if dataset["dataset_id"] in p.read_text(errors="replace")]

    wait_for(lambda: about_this("SFTPIPE_SLACK_DIR", "*.json"), what="a Slack post")
    wait_for(lambda: about_this("SFTPIPE_MAIL_DIR", "*.eml"), what="a mail")

    time.sleep(3)  # long enough for Pub/Sub to have redelivered a nacked event several times
    rejections = [
        line
        for line in function_log("ingest")
        if line["message"] == "dataset rejected" and line.get("dataset_id") == dataset["dataset_id"]
    ]
    assert len(rejections) == 1
    # An earlier test's job hands its request to the tuner again after its baseline: only this
    # dataset's requests count.
    assert [r for r in requests_seen() if r["body"]["dataset_id"] == dataset["dataset_id"]] == []
    assert len(about_this("SFTPIPE_SLACK_DIR", "*.json")) == 1
    assert len(about_this("SFTPIPE_MAIL_DIR", "*.eml")) == 1


def test_objects_outside_incoming_empty_objects_and_media_files_are_ignored(
    runtime: Runtime, function_log: Callable[[str], list[dict[str, Any]]]
) -> None:
    bucket = runtime.storage.bucket(runtime.settings.bucket)
    bucket.blob("elsewhere/elsewhere.jsonl").upload_from_string(GOOD_LINE)
    bucket.blob("incoming/empty.jsonl").upload_from_string(b"")
    # The images of a LLaVA-style dataset sit beside it under incoming/: no run of their own.
    bucket.blob("incoming/llava/cat.png").upload_from_string(b"\x89PNG fake", content_type="image/png")
    bucket.blob("incoming/real.jsonl").upload_from_string(GOOD_LINE)

    wait_for(lambda: _settled(runtime), what="the dataset of incoming/real.jsonl")

    def ignored() -> set[str]:
        return {
            line.get("object", "")
            for line in function_log("ingest")
            if line["message"].startswith("upload ignored")
        }

    expected = {
        "gs://sftpipe-local/elsewhere/elsewhere.jsonl",
        "gs://sftpipe-local/incoming/empty.jsonl",
        "gs://sftpipe-local/incoming/llava/cat.png",
    }
    seen = wait_for(lambda: expected <= ignored() and ignored(), what="ingest to log both ignored objects")
    assert "gs://sftpipe-local/incoming/real.jsonl" not in seen
    assert [doc["source_uri"] for doc in _datasets(runtime)] == ["gs://sftpipe-local/incoming/real.jsonl"]


def test_a_re_upload_is_a_new_dataset(runtime: Runtime) -> None:
    blob = runtime.storage.bucket(runtime.settings.bucket).blob("incoming/twice.jsonl")
    blob.upload_from_string(GOOD_LINE)
    first_generation = blob.generation
    wait_for(lambda: _settled(runtime, 1), what="the first dataset")
    blob.upload_from_string(GOOD_LINE + GOOD_LINE.replace(b"hello", b"hi there"))

    docs = wait_for(lambda: _settled(runtime, 2), what="the second dataset")

    assert sorted(d["source_generation"] for d in docs) == sorted([first_generation, blob.generation])


def test_an_event_whose_generation_is_gone_rejects_the_dataset_with_the_reason(runtime: Runtime) -> None:
    gone = StorageObject(
        bucket=runtime.settings.bucket, name="incoming/deleted-before-read.jsonl", generation=1234, size=512
    )

    result = ingest_upload(gone, GCS_NOTIFICATION_FINALIZE, runtime)

    assert result is not None
    assert result["status"] == "REJECTED"
    dataset = runtime.firestore.collection("datasets").document(gone.dataset_id).get().to_dict()
    assert dataset["status"] == "REJECTED"
    assert dataset["error_counts"] == {"source_unreadable": 1}
    bucket = runtime.storage.bucket(runtime.settings.bucket)
    prefix = f"{runtime.settings.prepared_prefix}{gone.dataset_id}/"
    assert sorted(blob.name.removeprefix(prefix) for blob in bucket.list_blobs(prefix=prefix)) == [
        "report.json",
        "report.md",
    ]
    [error] = orjson.loads(bucket.blob(f"{prefix}report.json").download_as_bytes())["errors"]
    assert error["code"] == "source_unreadable"
    assert "gs://" in error["message"]
    assert "does not exist any more" in error["message"]
    assert ingest_upload(gone, GCS_NOTIFICATION_FINALIZE, runtime) == result  # a redelivery: same answer


def test_a_file_part_naming_a_missing_object_rejects_the_dataset_before_any_job(
    runtime: Runtime, requests_seen: Callable[[], list[dict[str, Any]]]
) -> None:
    bucket = runtime.storage.bucket(runtime.settings.bucket)
    # Outside incoming/ (where it would start a run of its own), under the readable datasets/ prefix.
    bucket.blob("datasets/media/cat.png").upload_from_string(b"\x89PNG fake", content_type="image/png")
    missing = f"gs://{runtime.settings.bucket}/datasets/media/nowhere.png"

    def line(uri: str, answer: str) -> bytes:
        part = {"fileData": {"mimeType": "image/png", "fileUri": uri}}
        return (
            orjson.dumps(
                {
                    "contents": [
                        {"role": "user", "parts": [{"text": "what is this?"}, part]},
                        {"role": "model", "parts": [{"text": answer}]},
                    ]
                }
            )
            + b"\n"
        )

    data = line(f"gs://{runtime.settings.bucket}/datasets/media/cat.png", "a cat") + line(missing, "a dog")
    bucket.blob("incoming/media/images.jsonl").upload_from_string(data)

    def this_one() -> list[dict[str, Any]]:
        return [d for d in _settled(runtime) if d["source_uri"].endswith("/incoming/media/images.jsonl")]

    [dataset] = wait_for(this_one, what="the media dataset to be settled")
    assert dataset["status"] == "REJECTED"
    assert dataset["error_counts"].get("media_not_found") == 1
    prefix = f"prepared/{dataset['dataset_id']}/"
    report = orjson.loads(bucket.blob(f"{prefix}report.json").download_as_bytes())
    [error] = [e for e in report["errors"] if e["code"] == "media_not_found"]
    assert error["line"] == 2
    assert error["field"] == "contents[0].parts[1].fileData.fileUri"
    assert missing in error["message"]
    assert not bucket.blob(f"{prefix}train.jsonl").exists()
    time.sleep(3)
    assert [r for r in requests_seen() if r["body"]["dataset_id"] == dataset["dataset_id"]] == []

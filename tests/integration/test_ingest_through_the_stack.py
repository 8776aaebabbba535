"""An upload travels fake-gcs-server -> Pub/Sub emulator -> push -> functions-framework -> ingest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.runtime import Runtime
from tests.integration.conftest import wait_for

SAMPLE = b'{"contents": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "hello"}]}]}\n'


def _datasets(runtime: Runtime) -> list[dict[str, Any]]:
    return [
        doc.to_dict() for doc in runtime.firestore.collection(runtime.settings.datasets_collection).stream()
    ]


def test_upload_under_incoming_is_recorded_once(runtime: Runtime) -> None:
    blob = runtime.storage.bucket(runtime.settings.bucket).blob("incoming/greetings.jsonl")
    blob.metadata = {"base-model": "gemini-2.5-flash"}
    blob.upload_from_string(SAMPLE)

    docs = wait_for(lambda: _datasets(runtime), what="the dataset document")

    assert len(docs) == 1
    assert docs[0]["source_uri"] == f"gs://{runtime.settings.bucket}/incoming/greetings.jsonl"
    assert docs[0]["source_generation"] == blob.generation
    assert docs[0]["source_metadata"] == {"base-model": "gemini-2.5-flash"}
    assert docs[0]["status"] == "RECEIVED"


def test_objects_outside_incoming_and_empty_objects_are_ignored(
    runtime: Runtime, function_log: Callable[[str], list[dict[str, Any]]]
) -> None:
    bucket = runtime.storage.bucket(runtime.settings.bucket)
    bucket.blob("prepared/elsewhere.jsonl").upload_from_string(SAMPLE)
    bucket.blob("incoming/empty.jsonl").upload_from_string(b"")
    bucket.blob("incoming/real.jsonl").upload_from_string(SAMPLE)

    wait_for(lambda: _datasets(runtime), what="the dataset of incoming/real.jsonl")

    def ignored() -> set[str]:
        return {
            line.get("object", "")
            for line in function_log("ingest")
            if line["message"].startswith("upload ignored")
        }

    seen = wait_for(
        lambda: (
            {"gs://sftpipe-local/prepared/elsewhere.jsonl", "gs://sftpipe-local/incoming/empty.jsonl"}
            <= ignored()
            and ignored()
        ),
        what="ingest to log both ignored objects",
    )
    assert "gs://sftpipe-local/incoming/real.jsonl" not in seen
    assert [doc["source_uri"] for doc in _datasets(runtime)] == ["gs://sftpipe-local/incoming/real.jsonl"]


def test_a_re_upload_is_a_new_dataset(runtime: Runtime) -> None:
    blob = runtime.storage.bucket(runtime.settings.bucket).blob("incoming/twice.jsonl")
    blob.upload_from_string(SAMPLE)
    first_generation = blob.generation
    wait_for(lambda: len(_datasets(runtime)) == 1, what="the first dataset")
    blob.upload_from_string(SAMPLE + SAMPLE)

    docs = wait_for(lambda: (d := _datasets(runtime)) and len(d) == 2 and d, what="the second dataset")

    assert sorted(d["source_generation"] for d in docs) == sorted([first_generation, blob.generation])

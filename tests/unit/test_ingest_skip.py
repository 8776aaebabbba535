"""Which finalized objects start a run (shared.ingest.upload.skip_reason)."""

from __future__ import annotations

import pytest

from shared.events import GCS_NOTIFICATION_FINALIZE, StorageObject
from shared.ingest.upload import skip_reason

INCOMING = "incoming/"


def _object(name: str, content_type: str | None = None, size: int = 10) -> StorageObject:
    return StorageObject(bucket="b", name=name, generation=1, size=size, contentType=content_type)


@pytest.mark.parametrize(
    ("name", "content_type", "reason"),
    [
        ("incoming/llava/cat.png", "image/png", "media file (image/png)"),
        # The python client uploads a string as text/plain: the name still says what it is.
        ("incoming/llava/dog.JPG", "text/plain", "media file (image/jpeg)"),
        ("incoming/audio/clip.mp3", None, "media file (audio/mpeg)"),
        ("incoming/docs/paper.pdf", "application/octet-stream", "media file (application/pdf)"),
        ("incoming/video/v.mp4", "video/mp4", "media file (video/mp4)"),
        ("elsewhere/data.jsonl", None, "outside incoming/"),
        ("incoming/folder/", None, "folder placeholder"),
    ],
)
def test_objects_that_are_not_datasets_are_skipped_with_the_reason(
    name: str, content_type: str | None, reason: str
) -> None:
    assert reason in (skip_reason(_object(name, content_type), GCS_NOTIFICATION_FINALIZE, INCOMING) or "")


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("incoming/data.jsonl", "application/octet-stream"),
        ("incoming/data.csv", "text/csv"),
        ("incoming/data.json", "application/json"),
        ("incoming/no-extension", None),
        ("incoming/chat.tuning.yaml", "application/x-yaml"),
    ],
)
def test_dataset_files_start_a_run(name: str, content_type: str | None) -> None:
    assert skip_reason(_object(name, content_type), GCS_NOTIFICATION_FINALIZE, INCOMING) is None


def test_an_empty_object_is_skipped() -> None:
    assert "empty" in (
        skip_reason(_object("incoming/a.jsonl", size=0), GCS_NOTIFICATION_FINALIZE, INCOMING) or ""
    )

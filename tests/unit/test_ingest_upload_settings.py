"""A single-file upload whose settings cannot work is rejected before it is read, naming the field:
here an adapter size the base model does not accept (Vertex AI would refuse the job later)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from shared.config import Settings
from shared.events import StorageObject
from shared.ingest.upload import _prepare_file
from shared.runtime import Runtime


class _NoStorage:
    """Any read would be a bug: the upload is rejected from its metadata alone."""

    def bucket(self, name: str) -> Any:
        raise AssertionError(f"the upload was read from bucket {name}")


class _Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings, self.storage = settings, _NoStorage()


@pytest.mark.parametrize(
    ("metadata", "settings", "mentions"),
    [
        ({"base-model": "gemini-2.5-pro", "adapter-size": "16"}, {}, "upload setting 'adapter_size'"),
        ({"sftpipe-adapter-size": "16"}, {"base_model": "gemini-2.0-flash-001"}, "adapter sizes 1, 2, 4, 8"),
        ({"base-model": "gemini-2.5-pro"}, {"adapter_size": 16}, "SFTPIPE_ADAPTER_SIZE"),
    ],
    ids=["metadata", "metadata-size-default-model", "deployment-default"],
)
def test_an_adapter_size_the_base_model_refuses_rejects_the_upload_naming_the_field(
    metadata: dict[str, str], settings: dict[str, Any], mentions: str
) -> None:
    obj = StorageObject(bucket="b", name="incoming/data.jsonl", generation=1, size=100, metadata=metadata)
    written: list[tuple[str, bytes]] = []
    runtime = cast(Runtime, _Runtime(Settings(bucket="b", **settings)))

    outcome = _prepare_file(obj, runtime, lambda split, line: written.append((split, line)))

    assert outcome.ok is False
    assert outcome.facts["error_counts"] == {"invalid_upload_setting": 1}
    [error] = outcome.top_errors
    assert "adapter_size: invalid_upload_setting" in error
    assert mentions in error
    assert written == []

"""``sftpipe submit`` as a person runs it: a subprocess with the stack's environment, uploading to
fake-gcs-server; the printed dataset id is the one ingest records, and the options reach ingest
as the object's custom metadata."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.runtime import Runtime
from tests.integration.conftest import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "local" / "samples" / "reviews.jsonl"
#: Seconds one `sftpipe submit --wait` may take (start-up, upload, ingest).
SUBMIT_TIMEOUT_S = 90


def _submit(*arguments: str) -> subprocess.CompletedProcess[str]:
    # The stack fixture has put the stack's environment into os.environ (what `eval "$(sftpipe stack env)"` does).
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "submit", *arguments],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=SUBMIT_TIMEOUT_S,
        check=False,
    )


def _dataset(runtime: Runtime, dataset_id: str) -> dict[str, Any]:
    snapshot = runtime.firestore.collection(runtime.settings.datasets_collection).document(dataset_id).get()
    return snapshot.to_dict() or {}


@pytest.fixture
def requests_seen(
    subscribe: Callable[[str], Callable[[], list[dict[str, Any]]]], runtime: Runtime
) -> Callable[[], list[dict[str, Any]]]:
    return subscribe(runtime.settings.tuning_requests_topic)


def test_submit_uploads_with_metadata_prints_the_dataset_id_and_waits_for_ready(
    runtime: Runtime, requests_seen: Callable[[], list[dict[str, Any]]]
) -> None:
    done = _submit(
        str(SAMPLE),
        "--epochs",
        "4",
        "--adapter-size",
        "8",
        "--task",
        "classification",
        "--notify-email",
        "a@example.com",
        "--notify-email",
        "b@example.com",
        "--wait",
    )

    assert done.returncode == 0, done.stderr
    dataset_id, outcome = done.stdout.splitlines()
    dataset = _dataset(runtime, dataset_id)
    assert dataset["status"] == "READY"
    assert dataset["source_uri"] == f"gs://{runtime.settings.bucket}/incoming/reviews.jsonl"
    assert dataset["source_metadata"]["epochs"] == "4"
    assert outcome == f"READY gs://{runtime.settings.bucket}/prepared/{dataset_id}/report.json"
    [request] = wait_for(requests_seen, what="the tuning request")
    body = request["body"]
    assert body["dataset_id"] == dataset_id
    assert (body["hyperparameters"]["epochs"], body["hyperparameters"]["adapter_size"]) == (4, 8)
    assert body["task"] == "classification"
    assert body["notify"]["emails"] == ["a@example.com", "b@example.com"]


def test_submit_a_manifest_uploads_the_files_next_to_it_then_the_manifest(
    runtime: Runtime, tmp_path: Path, requests_seen: Callable[[], list[dict[str, Any]]]
) -> None:
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    data = tmp_path / "datasets" / "submitted"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_bytes(b"".join(lines[:150]))
    (data / "test.jsonl").write_bytes(b"".join(lines[150:]))
    manifest = tmp_path / "reviews.tuning.yaml"
    manifest.write_text(
        "train: datasets/submitted/train.jsonl\ntest: datasets/submitted/test.jsonl\nepochs: 2\n"
    )

    done = _submit(str(manifest))

    assert done.returncode == 0, done.stderr
    [dataset_id] = done.stdout.splitlines()
    dataset = wait_for(
        lambda: _dataset(runtime, dataset_id).get("status") == "READY" and _dataset(runtime, dataset_id)
    )
    assert dataset["source_uri"] == f"gs://{runtime.settings.bucket}/incoming/reviews.tuning.yaml"
    assert (dataset["split"]["train"], dataset["split"]["test"]) == (150, 10)
    bucket = runtime.storage.bucket(runtime.settings.bucket)
    assert bucket.blob("datasets/submitted/test.jsonl").download_as_bytes() == b"".join(lines[150:])
    [request] = wait_for(requests_seen, what="the tuning request")
    assert request["body"]["hyperparameters"]["epochs"] == 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--epochs", "0"], "--epochs: upload setting 'epochs'"),
        (["--base-model", "gemini-0-nope"], "unknown base model"),
        (["--map", "input"], "--map: upload setting 'column-mapping'"),
    ],
    ids=["bad-epochs", "unknown-model", "bad-map"],
)
def test_submit_refuses_bad_options_with_exit_2_and_uploads_nothing(
    runtime: Runtime, arguments: list[str], message: str
) -> None:
    done = _submit(str(SAMPLE), *arguments)

    assert done.returncode == 2
    assert done.stdout == ""
    assert message in done.stderr
    assert _uploaded(runtime) == []


def _uploaded(runtime: Runtime) -> list[str]:
    """What `sftpipe submit` writes (incoming/ and the uploads prefix); the pipeline's own
    prepared/ and reports/ objects of an earlier test's run may still be appearing."""
    bucket = runtime.settings.bucket
    return [
        blob.name
        for prefix in (runtime.settings.incoming_prefix, *runtime.settings.upload_prefixes)
        for blob in runtime.storage.list_blobs(bucket, prefix=prefix)
    ]


def test_submit_a_missing_file_or_a_manifest_naming_a_missing_file_exits_2(
    runtime: Runtime, tmp_path: Path
) -> None:
    missing = _submit(str(tmp_path / "nope.jsonl"))
    manifest = tmp_path / "x.tuning.json"
    manifest.write_text('{"train": "datasets/nowhere/train.jsonl"}')
    unresolved = _submit(str(manifest))

    assert (missing.returncode, unresolved.returncode) == (2, 2)
    assert "is not a file" in missing.stderr
    assert "train: datasets/nowhere/train.jsonl is neither" in unresolved.stderr
    assert _uploaded(runtime) == []

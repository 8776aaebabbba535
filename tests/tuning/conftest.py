"""Fixtures for the local tuning service: a real fake-gcs-server, the service as a subprocess on a
free port with a temporary state directory, and the real google-genai client pointed at it the
way the pipeline points it (vertex-and-genai.md). Nothing is mocked."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import storage
from tuning_helpers import BUCKET, TuningService, wait_until

from local.services import fake_gcs_argv, free_port, http_answers


@contextlib.contextmanager
def storage_emulator(url: str) -> Iterator[None]:
    """STORAGE_EMULATOR_HOST set to ``url`` inside the block only.

    Other suites run in the same process (pytest-xdist puts integration tests, whose local stack
    has a fake-gcs-server of its own, on the same worker), so the variable must not outlive the
    client or the test that needs it.
    """
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(fake_gcs_argv(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_answers(f"{url}/storage/v1/b"), 30, "fake-gcs-server")
        with storage_emulator(url):
            storage.Client(project="p").create_bucket(BUCKET)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(autouse=True)
def _tests_use_this_fake_gcs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test that uses the suite's fake-gcs-server sees it as STORAGE_EMULATOR_HOST."""
    if "fake_gcs" not in request.fixturenames and "upload" not in request.fixturenames:
        yield
        return
    with storage_emulator(request.getfixturevalue("fake_gcs")):
        yield


@pytest.fixture(scope="session")
def service_env(fake_gcs: str) -> dict[str, str]:
    return {**os.environ, "STORAGE_EMULATOR_HOST": fake_gcs, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="session")
def upload(fake_gcs: str) -> Callable[[list[Any] | str, str], str]:
    """Writes records (or raw text) as a JSONL object; returns its gs:// URI."""
    with storage_emulator(fake_gcs):  # the client keeps the endpoint it was made with
        bucket = storage.Client(project="p").bucket(BUCKET)

    def write(records: list[Any] | str, name: str = "") -> str:
        text = records if isinstance(records, str) else "".join(json.dumps(r) + "\n" for r in records)
        blob_name = f"datasets/{name or uuid.uuid4().hex}.jsonl"
        bucket.blob(blob_name).upload_from_string(text)
        return f"gs://{BUCKET}/{blob_name}"

    return write


@pytest.fixture(scope="session")
def tiny_service(
    tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]
) -> Iterator[TuningService]:
    """One tiny-model service for the lifecycle tests (a quota of 4 so that they never collide)."""
    service = TuningService(tmp_path_factory.mktemp("tiny") / "state", "tiny", 4, service_env)
    service.state_dir.mkdir()
    service.start()
    yield service
    service.stop()


@pytest.fixture
def new_service(tmp_path: Path, service_env: dict[str, str]) -> Iterator[Callable[..., TuningService]]:
    """Starts services of the test's own (quota, restart); stops them afterwards."""
    started: list[TuningService] = []

    def start(model: str = "tiny", max_concurrent_jobs: int = 1) -> TuningService:
        state_dir = tmp_path / f"state-{len(started)}"
        state_dir.mkdir()
        service = TuningService(state_dir, model, max_concurrent_jobs, service_env)
        started.append(service)
        return service.start()

    yield start
    for service in started:
        service.stop()

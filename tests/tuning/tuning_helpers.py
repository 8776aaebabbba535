"""Helpers for the tuning-service tests: the service as a child process, the pipeline's client
configuration, and polling."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google.oauth2.credentials
import pytest
from google import genai
from google.genai import types

from local.services import free_port, http_answers

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT, LOCATION = "tuning-tests", "us-central1"
BUCKET = "tuning-test-data"
#: Seconds a service gets to answer /healthz, and a tiny job to end. Alone here a service starts
#: in a few seconds and a tiny job trains in about 10; in the parallel run (3 workers on 2 cores,
#: each with services of its own) several times that. A passing test never waits this long.
START_TIMEOUT_S = 180.0
JOB_TIMEOUT_S = 180.0


def wait_until(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class TuningService:
    """``python -m local.tuning`` as a child process; restartable on the same state directory."""

    def __init__(self, state_dir: Path, model: str, max_concurrent_jobs: int, env: dict[str, str]) -> None:
        self.state_dir = state_dir
        self.model = model
        self.max_concurrent_jobs = max_concurrent_jobs
        self.env = env
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._client: genai.Client | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> TuningService:
        argv = [sys.executable, "-m", "local.tuning", "--port", str(self.port), "--model", self.model]
        argv += ["--state-dir", str(self.state_dir), "--max-concurrent-jobs", str(self.max_concurrent_jobs)]
        log = open(self.state_dir.parent / f"service-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        wait_until(self._ready, START_TIMEOUT_S, "the tuning service's /healthz")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(
                f"the tuning service exited with {self.process.returncode}; see {self.state_dir.parent}"
            )
        return http_answers(self.url + "healthz", expect_body='"status":"ok"')

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=60)
        self.process = None

    def client(self) -> genai.Client:
        # One client per service: a genai.Client closes its HTTP connection pool when it is
        # garbage-collected, which would break `service.client().tunings` chains mid-call.
        if self._client is None:
            self._client = make_client(self.url)
        return self._client


def make_client(base_url: str, retries: bool = False) -> genai.Client:
    """The pipeline's client configuration (vertex-and-genai.md); no retries unless asked."""
    return genai.Client(
        vertexai=True,
        project=PROJECT,
        location=LOCATION,
        credentials=google.oauth2.credentials.Credentials(token="local"),
        http_options=types.HttpOptions(
            base_url=base_url,
            api_version="v1",
            retry_options=types.HttpRetryOptions(attempts=5) if retries else None,
        ),
    )


def wait_for_end(client: genai.Client, name: str, timeout: float) -> types.TuningJob:
    def ended() -> types.TuningJob | None:
        job = client.tunings.get(name=name)
        return job if job.has_ended else None

    return wait_until(ended, timeout, f"tuning job {name} to end", interval=0.2)

"""`sftpipe status` and `sftpipe cancel`, run as a person would, against the stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.messages import Hyperparameters, TuningRequestV1
from shared.runtime import Runtime
from shared.tuning.submit import derive_job_id
from tests.integration.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
STATUS_KEYS = {"job_id", "dataset_id", "state", "tuning_job_name", "tuned_endpoint", "created", "updated"}


def _sftpipe(stack: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=REPO,
        env={**os.environ, **stack},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _job(runtime: Runtime, job_id: str) -> dict[str, Any]:
    snapshot = runtime.firestore.collection(runtime.settings.jobs_collection).document(job_id).get()
    return snapshot.to_dict() or {}


@pytest.mark.slow(32)
def test_status_lists_the_job_and_cancel_stops_it(runtime: Runtime, stack: dict[str, str]) -> None:
    lines = [
        orjson.dumps(
            {
                "contents": [
                    {"role": "user", "parts": [{"text": f"q{i}"}]},
                    {"role": "model", "parts": [{"text": "a"}]},
                ]
            }
        )
        for i in range(400)
    ]
    bucket = runtime.storage.bucket(runtime.settings.bucket)
    bucket.blob("prepared/long/train.jsonl").upload_from_string(b"\n".join(lines) + b"\n")
    request = TuningRequestV1(
        dataset_id="long-0000000000000000",
        base_model="gemini-2.5-flash",
        training_uri=f"gs://{runtime.settings.bucket}/prepared/long/train.jsonl",
        hyperparameters=Hyperparameters(epochs=100),  # long enough to be cancelled while running
    )
    runtime.publish(runtime.settings.tuning_requests_topic, request.to_json(), **request.attributes())
    job_id = derive_job_id(request)
    wait_for(
        lambda: _job(runtime, job_id).get("tuning_job_name"), timeout=120, what="the job to be submitted"
    )

    status = _sftpipe(stack, "status", "--json")

    assert status.returncode == 0, status.stderr
    rows = {row["job_id"]: row for row in json.loads(status.stdout)}
    assert set(rows[job_id]) >= STATUS_KEYS
    assert rows[job_id]["dataset_id"] == request.dataset_id
    assert rows[job_id]["tuning_job_name"] == _job(runtime, job_id)["tuning_job_name"]

    cancel = _sftpipe(stack, "cancel", job_id)

    assert cancel.returncode == 0, cancel.stderr
    job = wait_for(
        lambda: (j := _job(runtime, job_id)).get("status") == "JOB_STATE_CANCELLED" and j,
        timeout=120,
        what="the poller to record CANCELLED",
    )
    assert job["history"][-1]["state"] == "JOB_STATE_CANCELLED"
    one = _sftpipe(stack, "status", job_id, "--json")
    assert [row["state"] for row in json.loads(one.stdout)] == ["JOB_STATE_CANCELLED"]


def test_status_and_cancel_of_an_unknown_job_fail_clearly(runtime: Runtime, stack: dict[str, str]) -> None:
    for command in ("status", "cancel"):
        result = _sftpipe(stack, command, "no-such-job")
        assert result.returncode == 1
        assert "no job no-such-job" in result.stderr

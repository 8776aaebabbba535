"""The deployed entry points, served in-process by functions-framework, on the emulators.

Eventarc sends CloudEvents in binary or structured mode; Pub/Sub push sends its own JSON body.
All three must reach the same handler and give one result, however often they are delivered.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from functions_framework import create_app

from shared.budgets import claim_call_timeout_s
from shared.runtime import Runtime
from tests.conftest import load_event_json

MAIN = str(Path(__file__).resolve().parents[2] / "main.py")


def _finalize_event(runtime: Runtime, name: str, generation: int) -> CloudEvent:
    raw = load_event_json("storage_finalized.json")
    raw["data"].update(bucket=runtime.settings.bucket, name=name, generation=str(generation))
    raw["attributes"]["time"] = None
    attributes = {k: v for k, v in raw["attributes"].items() if v is not None}
    return CloudEvent(attributes, raw["data"])


def _datasets(runtime: Runtime) -> list[dict[str, Any]]:
    return [d.to_dict() for d in runtime.firestore.collection(runtime.settings.datasets_collection).stream()]


@pytest.mark.parametrize("mode", [to_binary, to_structured], ids=["binary", "structured"])
def test_eventarc_finalize_in_both_modes_records_one_dataset(runtime: Runtime, mode) -> None:
    client = create_app("ingest", MAIN).test_client()
    event = _finalize_event(runtime, "incoming/modes.jsonl", 1700000000000001)
    headers, body = mode(event)

    first = client.post("/", headers=headers, data=body)
    again = client.post("/", headers=headers, data=body)

    assert (first.status_code, again.status_code) == (200, 200)
    docs = _datasets(runtime)
    assert len(docs) == 1
    assert docs[0]["source_generation"] == 1700000000000001


def test_pubsub_push_body_reaches_ingest(runtime: Runtime) -> None:
    client = create_app("ingest", MAIN).test_client()
    push = load_event_json("gcs_notification_push.json")
    resource = {
        "bucket": runtime.settings.bucket,
        "name": "incoming/pushed.jsonl",
        "generation": "7",
        "size": "10",
    }
    push["message"]["data"] = base64.b64encode(json.dumps(resource).encode()).decode()
    push["message"]["attributes"].update(bucketId=runtime.settings.bucket, objectId="incoming/pushed.jsonl")
    push["message"]["publishTime"] = None
    del push["message"]["publishTime"]

    response = client.post("/", json=push)

    assert response.status_code == 200
    assert [d["source_uri"] for d in _datasets(runtime)] == [
        f"gs://{runtime.settings.bucket}/incoming/pushed.jsonl"
    ]


def test_invalid_message_is_acknowledged_not_retried(runtime: Runtime) -> None:
    client = create_app("tuner", MAIN).test_client()
    body = {
        "subscription": "projects/local-project/subscriptions/tuner-tuning-requests",
        "message": {"data": base64.b64encode(b'{"schema": "tuning-request/v1"}').decode(), "messageId": "9"},
    }

    response = client.post("/", json=body)

    assert response.status_code == 200  # acknowledged: a 5xx would make Pub/Sub redeliver it


@pytest.mark.slow(25)
def test_transient_failure_answers_500_so_pubsub_redelivers(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Point the ingest function at a Firestore emulator port where nothing listens.
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")
    from shared import runtime as runtime_module

    runtime_module.reset_runtime()
    client = create_app("ingest", MAIN).test_client()
    headers, body = to_binary(_finalize_event(runtime, "incoming/unreachable.jsonl", 3))

    started = time.monotonic()
    try:
        response = client.post("/", headers=headers, data=body)
    finally:
        runtime_module.reset_runtime()
    answered_in = time.monotonic() - started

    assert response.status_code == 500
    assert response.headers.get("X-Google-Status") == "crash"
    # The claim gives up after its own bound (its retries, then the attempt in flight), not the
    # Firestore client's default minute.
    bound = 2 * claim_call_timeout_s(runtime.settings.idempotency_lease_s)
    assert answered_in < bound + 5, f"answered after {answered_in:.0f} s"

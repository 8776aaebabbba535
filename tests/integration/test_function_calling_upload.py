"""A tool-calling dataset through the whole local stack: an OpenAI chat upload with ``tools`` and
``tool_calls`` is converted to Vertex's function-calling format, tuned by the local service (which
trains on the calls), and evaluated with the same ``tools`` sent to both models; the evaluation
scores the calls (function-name accuracy, exact-argument match) beside the text metrics."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from shared.runtime import Runtime
from tests.integration.conftest import wait_for

CITIES = (
    "Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Quito", "Dakar", "Hanoi", "Rome", "Kyiv", "Bern",
    "Doha", "Baku", "Riga", "Sofia", "Accra", "Seoul", "Delhi", "Minsk", "Tunis",
)  # fmt: skip
WEATHER_QUESTIONS = ("What is the weather in {}?", "Is it raining in {}?", "How warm is it in {}?")
TIME_QUESTIONS = ("What time is it in {}?", "Tell me the local time in {}.", "What is the hour in {}?")
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
]
EXAMPLES = 120
#: Ingest, a baseline, a tiny tuning job (behind the quota of one job, which another module may
#: hold) and the evaluation.
PIPELINE_TIMEOUT_S = 480.0


def _records(count: int, seed: int) -> list[dict[str, Any]]:
    """Questions whose answer is one call (the target is the call); every fourth example goes on
    to the call's result and a text answer, so that results are trained on too."""
    rng = random.Random(seed)
    records = []
    for index in range(count):
        city = CITIES[index // 2 % len(CITIES)]
        function, questions = (
            ("get_weather", WEATHER_QUESTIONS) if index % 2 == 0 else ("get_time", TIME_QUESTIONS)
        )
        question = rng.choice(questions).format(city)
        call_id = f"call_{index}"
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": question},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": function, "arguments": json.dumps({"city": city})},
                    }
                ],
            },
        ]
        if index % 4 == 3:
            messages += [
                {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"time": "10:30"})},
                {"role": "assistant", "content": f"It is 10:30 in {city}."},
            ]
        records.append({"messages": messages, "tools": TOOLS})
    return records


def _document(runtime: Runtime, collection: str, doc_id: str) -> dict[str, Any]:
    return runtime.firestore.collection(collection).document(doc_id).get().to_dict() or {}


@pytest.mark.slow(120)
def test_a_tool_calling_upload_becomes_a_job_whose_evaluation_scores_the_calls(runtime: Runtime) -> None:
    settings = runtime.settings
    bucket = runtime.storage.bucket(settings.bucket)
    blob = bucket.blob("incoming/tools/weather-and-time.jsonl")
    blob.metadata = {"epochs": "2"}
    blob.upload_from_string(b"".join(orjson.dumps(r) + b"\n" for r in _records(EXAMPLES, seed=5)))

    def dataset() -> dict[str, Any] | None:
        for doc in runtime.firestore.collection(settings.datasets_collection).stream():
            record = doc.to_dict() or {}
            if record.get("source_uri", "").endswith("/incoming/tools/weather-and-time.jsonl") and record.get(
                "status"
            ) in ("READY", "REJECTED"):
                return record
        return None

    ready = wait_for(dataset, what="the tool-calling dataset to be settled")
    assert ready["status"] == "READY", ready.get("error_counts")
    prefix = f"prepared/{ready['dataset_id']}/"
    test_lines = bucket.blob(f"{prefix}test.jsonl").download_as_bytes().splitlines()
    first = orjson.loads(test_lines[0])
    assert first["tools"][0]["functionDeclarations"][0]["parameters"]["type"] == "OBJECT"

    def job() -> dict[str, Any] | None:
        jobs = runtime.firestore.collection(settings.jobs_collection).where(
            filter=FieldFilter("dataset_id", "==", ready["dataset_id"])
        )
        found = [doc.to_dict() for doc in jobs.stream()]
        return found[0] if found else None

    job_id = wait_for(job, what="the tuning job")["job_id"]

    def evaluated() -> dict[str, Any] | None:
        doc = _document(runtime, settings.evaluations_collection, job_id)
        return doc if doc.get("status") in ("DONE", "FAILED") else None

    evaluation = wait_for(evaluated, timeout=PIPELINE_TIMEOUT_S, what="the evaluation")
    assert evaluation["status"] == "DONE", evaluation
    reports = f"{settings.reports_prefix}{job_id}/"
    summary = orjson.loads(bucket.blob(f"{reports}summary.json").download_as_bytes())
    metrics = {m["name"]: m for m in summary["metrics"]}
    assert {"function_name_accuracy", "function_args_exact_match"} <= set(metrics)
    for name in ("function_name_accuracy", "function_args_exact_match"):
        for model in ("base", "tuned"):
            assert 0.0 <= metrics[name][model] <= 1.0
    assert summary["counts"]["test_examples"] == len(test_lines)

    predictions = [
        orjson.loads(line)
        for line in bucket.blob(f"{reports}predictions.jsonl").download_as_bytes().splitlines()
    ]
    references = [orjson.loads(line)["contents"][-1] for line in test_lines]
    # The references' calls are read from the test split as it was converted.
    assert [p["reference_calls"] for p in predictions] == [
        [part["functionCall"] for part in ref["parts"] if "functionCall" in part] for ref in references
    ]
    assert any(p["reference_calls"] for p in predictions)
    # The scores are those of the recorded calls: a call counts when its name (and arguments) match.
    name_hits = [
        sorted(c["name"] for c in p["tuned_calls"]) == sorted(c["name"] for c in p["reference_calls"])
        for p in predictions
    ]
    assert metrics["function_name_accuracy"]["tuned"] == pytest.approx(
        sum(name_hits) / len(name_hits), abs=1e-3
    )
    # Each answer's calls are recorded (the tiny model is too small to learn the tagged calls
    # reliably, and its byte-level base has 256 positions, fewer than a prompt with two
    # declarations: local/tuning/README.md). That the service turns a declared call into a
    # functionCall part is tests/unit/tuning_data/test_function_calls.py's.
    assert all(isinstance(p["tuned_calls"], list) and isinstance(p["base_calls"], list) for p in predictions)
    html = bucket.blob(f"{reports}report.html").download_as_bytes().decode()
    assert "function_name_accuracy" in html

    # Vertex's own count (the local service's, from its tokenizer) beside ingest's estimate.
    counts = summary["vertex_counts"]
    assert counts["billable_tokens"] > 0
    assert counts["estimated_tokens"] > 0
    assert counts["estimate_error_percent"] == pytest.approx(
        (counts["estimated_tokens"] - counts["billable_tokens"]) / counts["billable_tokens"] * 100, abs=0.1
    )
    assert counts["examples"] == ready["split"]["train"]
    assert "billable tokens counted by Vertex AI" in html

    # The baseline, taken before the job, scored the base model's calls the same way.
    baseline = _document(runtime, settings.jobs_collection, job_id)["baseline"]
    assert "function_name_accuracy" in baseline["metrics"]

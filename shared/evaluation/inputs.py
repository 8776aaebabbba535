"""What an evaluation reads: the job, its test split (pinned to one generation) and the
dataset's facts (statistics and the training cost) from ingest's records."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from google.api_core import exceptions as gexc

from shared.errors import PermanentError
from shared.evaluation.report import (
    CostEstimate,
    estimate_training_cost,
)
from shared.evaluation.runner import (
    TestExample,
    parse_test_examples,
)
from shared.runtime import Runtime
from shared.state.jobs import JobRecord

if TYPE_CHECKING:
    pass


def load_job(runtime: Runtime, job_id: str) -> JobRecord:
    snapshot = runtime.firestore.collection(runtime.settings.jobs_collection).document(job_id).get()
    if not snapshot.exists:
        raise PermanentError(
            f"job {job_id} has no document in {runtime.settings.jobs_collection}", code="job_not_found"
        )
    try:
        return JobRecord.model_validate(snapshot.to_dict())
    except ValueError as exc:
        raise PermanentError(
            f"job {job_id}'s document is not a JobRecord: {exc}", code="invalid_job"
        ) from exc


def reports_bucket(runtime: Runtime) -> Any:
    return runtime.storage.bucket(runtime.settings.bucket)


def split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://") or "/" not in uri.removeprefix("gs://"):
        raise PermanentError(
            f"{uri!r} is not a gs:// object URI", code="invalid_uri", field="request.test_uri"
        )
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    return bucket, name


def test_file_facts(runtime: Runtime, test_uri: str) -> tuple[int, int]:
    """(generation, example count) of the test split; the generation pins every later read."""
    bucket_name, name = split_uri(test_uri)
    blob = runtime.storage.bucket(bucket_name).get_blob(name)
    if blob is None:
        raise PermanentError(f"test split {test_uri} does not exist", code="test_split_missing")
    examples = parse_test_examples(blob.download_as_bytes().splitlines())
    return int(blob.generation), len(examples)


def load_test_examples(runtime: Runtime, test_uri: str, generation: int) -> list[TestExample]:
    bucket_name, name = split_uri(test_uri)
    try:
        data = runtime.storage.bucket(bucket_name).blob(name, generation=generation).download_as_bytes()
    except gexc.NotFound as exc:
        raise PermanentError(
            f"test split {test_uri}#{generation} is gone", code="test_split_missing"
        ) from exc
    return parse_test_examples(data.splitlines())


def dataset_facts(
    runtime: Runtime, job: JobRecord
) -> tuple[dict[str, str | int | float], CostEstimate | None, str | None]:
    """Dataset statistics and training cost from the dataset record and ingest's report.json."""
    settings = runtime.settings
    snapshot = runtime.firestore.collection(settings.datasets_collection).document(job.dataset_id).get()
    if not snapshot.exists:
        return {}, None, "No dataset record was found, so no statistics or cost are shown."
    dataset = snapshot.to_dict()
    split = dataset.get("split") or {}
    tokens = dataset.get("tokens") or {}
    statistics: dict[str, str | int | float] = {
        key: value
        for key, value in (
            ("examples", dataset.get("examples")),
            ("training examples", split.get("train")),
            ("validation examples", split.get("validation")),
            ("test examples", split.get("test")),
            ("duplicates removed", dataset.get("duplicates")),
            ("tokens (all splits)", tokens.get("total")),
            ("tokens per example, median", tokens.get("p50")),
            ("tokens per example, p95", tokens.get("p95")),
            ("token counting", tokens.get("method")),
        )
        if value is not None
    }
    report = read_json(runtime, dataset.get("report_uri"))
    estimate = (report or {}).get("estimated_cost") or {}
    epochs = (job.request.get("hyperparameters") or {}).get("epochs") or estimate.get("epochs")
    if not estimate.get("billable_tokens") or not estimate.get("epochs") or not epochs:
        return statistics, None, "The training cost could not be estimated: ingest recorded no token count."
    cost = estimate_training_cost(
        training_tokens=int(estimate["billable_tokens"]) // int(estimate["epochs"]),
        epochs=int(epochs),
        base_model=job.base_model,
        prices_per_m_tokens=settings.training_price_per_m_tokens,
        tokens_counted="exact" if tokens.get("method") == "exact" else "estimated",
    )
    return statistics, cost, None


def read_json(runtime: Runtime, uri: str | None) -> dict[str, Any] | None:
    if not uri:
        return None
    try:
        bucket_name, name = split_uri(uri)
        return orjson.loads(runtime.storage.bucket(bucket_name).blob(name).download_as_bytes())
    except (PermanentError, gexc.NotFound, orjson.JSONDecodeError):
        return None

"""Tuning jobs: validation of create requests, the on-disk store, and one supervisor thread per
running job that drives a trainer process (trainer.py) and turns its progress into job state.

State directory layout (``--state-dir``)::

    jobs/<JOB_ID>/job.json          the TuningJob exactly as the API returns it (Vertex camelCase),
                                    plus a ``localTuning`` object the SDK ignores (model mapping,
                                    resolved training settings, timings, endpoint ids)
    jobs/<JOB_ID>/metrics.jsonl     one line per metric point: {"metric", "step", "epoch", "value"}
    jobs/<JOB_ID>/spec.json         resolved training settings handed to the trainer
    jobs/<JOB_ID>/training.jsonl    the validated training set, as chat messages
    jobs/<JOB_ID>/validation.jsonl  the validated validation set (when given)
    jobs/<JOB_ID>/checkpoints/<EPOCH>/  LoRA adapter (peft format) saved at the end of that epoch
    jobs/<JOB_ID>/base/             tiny only: the seeded base model and its data-trained tokenizer
    jobs/<JOB_ID>/trainer.log       the trainer process's stderr

``job.json`` is rewritten atomically (temp file + os.replace) on every state change and at each
epoch, so a crash never leaves half a record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local.tuning import data, models
from local.tuning.errors import ApiError
from local.tuning.trainer import (
    DEFAULT_ADAPTER_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_SEED,
    TrainingSpec,
)

log = logging.getLogger("local.tuning")

ACTIVE_STATES = frozenset({"JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_CANCELLING"})
ENDED_STATES = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"})
#: google.rpc.Code values used in job errors.
CODE_CANCELLED, CODE_INTERNAL, CODE_ABORTED, CODE_UNAVAILABLE = 1, 13, 10, 14
#: Seconds between SIGTERM (stop after the current step) and SIGKILL on cancel or shutdown.
CANCEL_GRACE_S = 30.0
#: How often a job waiting for quota looks for a free slot.
QUOTA_WAIT_POLL_S = 0.2
MAX_EPOCHS = 100
SUPERVISED_SPEC_KEYS = ("trainingDatasetUri", "validationDatasetUri", "exportLastCheckpointOnly")
MAX_LABELS = 64
#: Metric series recorded per step (``/train_...``) and per epoch (``/eval_...``): (series, event
#: key). Next-step accuracy and its count are over the answers' content tokens (no end-of-turn,
#: newline or other template token); the ``_all_tokens`` series count every labelled token.
METRIC_KEYS = (
    ("total_loss", "loss"),
    ("fraction_of_correct_next_step_preds", "accuracy"),
    ("num_predictions", "predictions"),
    ("fraction_of_correct_next_step_preds_all_tokens", "accuracyAllTokens"),
    ("num_predictions_all_tokens", "predictionsAllTokens"),
)


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_numeric_id() -> str:
    """Vertex resource ids are large decimal numbers."""
    return str(secrets.randbelow(9 * 10**18) + 10**18)


def write_json_atomically(path: Path, value: Any) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(value, handle, indent=2, allow_nan=False)
    os.replace(temp, path)


def resolve_request(body: dict[str, Any], local_model: str) -> tuple[TrainingSpec, dict[str, Any]]:
    """Checks a create request like Vertex does (400 on anything wrong) and resolves the
    training settings. Returns the spec and the ``supervisedTuningSpec`` to store and echo."""
    base_model = body.get("baseModel")
    if not isinstance(base_model, str) or not base_model:
        raise ApiError.invalid_argument("baseModel is required")
    try:
        adapter_sizes = models.allowed_adapter_sizes(base_model, local_model)
    except models.UnknownBaseModelError as exc:
        raise ApiError.invalid_argument(str(exc)) from exc
    supervised = body.get("supervisedTuningSpec")
    if not isinstance(supervised, dict) or not supervised.get("trainingDatasetUri"):
        raise ApiError.invalid_argument("supervisedTuningSpec.trainingDatasetUri is required")
    if supervised.get("evaluationConfig"):
        raise ApiError.invalid_argument(
            "supervisedTuningSpec.evaluationConfig is not supported: the local tuning service does "
            "not run Vertex AI's Gen AI evaluation service (completion's own evaluation still runs)"
        )
    hyper = supervised.get("hyperParameters") or {}
    if not isinstance(hyper, dict):
        raise ApiError.invalid_argument("supervisedTuningSpec.hyperParameters must be an object")

    epochs = _positive_int(hyper.get("epochCount", DEFAULT_EPOCHS), "epochCount", MAX_EPOCHS)
    adapter_name = hyper.get("adapterSize") or "ADAPTER_SIZE_UNSPECIFIED"
    if adapter_name == "ADAPTER_SIZE_UNSPECIFIED":
        adapter_size = DEFAULT_ADAPTER_SIZE if DEFAULT_ADAPTER_SIZE in adapter_sizes else max(adapter_sizes)
    elif (
        adapter_name in models.ADAPTER_SIZE_NAMES and models.ADAPTER_SIZE_NAMES[adapter_name] in adapter_sizes
    ):
        adapter_size = models.ADAPTER_SIZE_NAMES[adapter_name]
    else:
        raise ApiError.invalid_argument(
            f"adapterSize {adapter_name!r} is not supported for {base_model}; supported sizes: "
            + ", ".join(str(size) for size in adapter_sizes)
        )
    multiplier = hyper.get("learningRateMultiplier", 1.0)
    if not isinstance(multiplier, int | float) or not 0 < multiplier <= 100:
        raise ApiError.invalid_argument("learningRateMultiplier must be a number in (0, 100]")
    local_spec = models.LOCAL_MODELS[local_model]
    learning_rate = hyper.get("learningRate")
    if learning_rate is not None and (not isinstance(learning_rate, int | float) or learning_rate <= 0):
        raise ApiError.invalid_argument("learningRate must be a positive number")
    batch_size = _positive_int(hyper.get("batchSize", local_spec.batch_size), "batchSize", 1024)

    spec = TrainingSpec(
        local_model=local_model,
        epochs=epochs,
        learning_rate=float(learning_rate or local_spec.base_learning_rate * multiplier),
        lora_rank=adapter_size,
        batch_size=batch_size,
        seed=DEFAULT_SEED,
        has_validation=bool(supervised.get("validationDatasetUri")),
    )
    stored = {key: supervised[key] for key in SUPERVISED_SPEC_KEYS if key in supervised}
    stored["hyperParameters"] = {
        "epochCount": epochs,
        "learningRateMultiplier": float(multiplier),
        "adapterSize": next(name for name, size in models.ADAPTER_SIZE_NAMES.items() if size == adapter_size),
        "batchSize": batch_size,
    }
    if learning_rate is not None:
        stored["hyperParameters"]["learningRate"] = float(learning_rate)
    return spec, stored


def _positive_int(value: Any, name: str, maximum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ApiError.invalid_argument(f"{name} must be an integer") from None
    if not 1 <= number <= maximum or number != float(value):
        raise ApiError.invalid_argument(f"{name} must be an integer between 1 and {maximum}")
    return number


def _validated_labels(labels: Any) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise ApiError.invalid_argument(f"labels must be an object of at most {MAX_LABELS} string pairs")
    for key, value in labels.items():
        if not isinstance(value, str) or not key or not key[0].islower():
            raise ApiError.invalid_argument(f"invalid label {key!r}: keys start with a lowercase letter")
    return dict(labels)


def matches_filter(job: dict[str, Any], clauses: list[tuple[str, str, str]]) -> bool:
    labels = job.get("labels") or {}
    for field, operator, value in clauses:
        if field.startswith("labels."):
            key = field.removeprefix("labels.")
            if operator == ":" and value == "*":
                if key not in labels:
                    return False
            elif labels.get(key) != value:
                return False
        elif field == "state" and job["state"] != value:
            return False
    return True


def parse_filter(text: str) -> list[tuple[str, str, str]]:
    """The subset of Vertex's list filter syntax the pipeline needs: ``labels.KEY="VALUE"``,
    ``labels.KEY:*`` and ``state=JOB_STATE_...``, joined by ``AND``."""
    clause = re.compile(r'^\s*(labels\.[a-z][a-z0-9_-]*|state)\s*(=|:)\s*("([^"]*)"|[A-Za-z0-9_*.-]+)\s*$')
    clauses = []
    for part in re.split(r"\s+AND\s+", text.strip()) if text.strip() else []:
        match = clause.match(part)
        if not match or (match.group(2) == ":" and match.group(3) != "*"):
            raise ApiError.invalid_argument(
                f'unsupported filter {part!r}: use labels.KEY="VALUE", labels.KEY:* or state=JOB_STATE_...'
            )
        value = match.group(4) if match.group(4) is not None else match.group(3)
        clauses.append((match.group(1), match.group(2), value))
    return clauses


class JobStore:
    """Every job of this service, in memory and in the state directory; thread safe."""

    def __init__(
        self, state_dir: Path, local_model: str, max_concurrent_jobs: int, queue_over_quota: bool = False
    ) -> None:
        self.jobs_dir = state_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.local_model = local_model
        self.max_concurrent_jobs = max_concurrent_jobs
        #: Over the quota, accept a create and hold the job PENDING in TUNING_JOB_STATE_WAITING_FOR_QUOTA
        #: until a slot frees (as Vertex AI may), instead of answering 429.
        self.queue_over_quota = queue_over_quota
        self._lock = threading.RLock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._processes: dict[str, subprocess.Popen[str]] = {}
        self._cancel_requested: set[str] = set()
        # Set by shutdown(): a trainer stopped because the service stops is a failure, not a
        # cancellation (nobody asked for it), whichever thread records the end first.
        self._shutting_down = False
        #: When this service started (the create time of its one TensorBoard).
        self.started_at = now_rfc3339()
        self._load()

    # --- persistence --------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def _save(self, job_id: str) -> None:
        job = self._jobs[job_id]
        job["updateTime"] = now_rfc3339()
        write_json_atomically(self.job_dir(job_id) / "job.json", job)

    def _load(self) -> None:
        """Reads every job back; a job that was active when the service stopped cannot resume."""
        for path in sorted(self.jobs_dir.glob("*/job.json")):
            job = json.loads(path.read_text())
            job_id = path.parent.name
            self._jobs[job_id] = job
            if job["state"] in ACTIVE_STATES:
                _kill_orphan_trainer(job.get("localTuning", {}).get("trainerPid"), path.parent)
                if job["state"] == "JOB_STATE_CANCELLING":
                    self._end(job_id, "JOB_STATE_CANCELLED", CODE_CANCELLED, "CANCELLED")
                else:
                    self._end(
                        job_id,
                        "JOB_STATE_FAILED",
                        CODE_ABORTED,
                        "Interrupted: the local tuning service stopped while this job was "
                        f"{job['state'].removeprefix('JOB_STATE_').lower()}; its training did not "
                        "finish. Submit the job again.",
                    )
                log.warning("job %s was interrupted by a restart and is now %s", job_id, job["state"])

    def _end(self, job_id: str, state: str, code: int | None = None, message: str | None = None) -> None:
        job = self._jobs[job_id]
        job["state"] = state
        job["endTime"] = now_rfc3339()
        if code is not None:
            job["error"] = {"code": code, "message": message}
        self._save(job_id)

    # --- queries ------------------------------------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            if job_id not in self._jobs:
                raise ApiError.not_found(f"tuning job {job_id} not found")
            return json.loads(json.dumps(self._jobs[job_id]))

    def list(self, parent: str, clauses: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        """Jobs under ``parent`` that match, newest first (as Vertex lists them)."""
        with self._lock:
            chosen = [
                job
                for job in self._jobs.values()
                if job["name"].startswith(parent + "/") and matches_filter(job, clauses)
            ]
            chosen.sort(key=lambda job: (job["createTime"], job["name"]), reverse=True)
            return json.loads(json.dumps(chosen))

    def active_count(self) -> int:
        with self._lock:
            return sum(job["state"] in ACTIVE_STATES for job in self._jobs.values())

    def endpoints(self) -> Iterator[tuple[str, str, int | None]]:
        """(endpoint id, job id, checkpoint epoch or None for the tuned model) of ended jobs."""
        with self._lock:
            for job_id, job in self._jobs.items():
                if job["state"] != "JOB_STATE_SUCCEEDED":
                    continue
                local = job["localTuning"]
                yield local["endpointId"], job_id, None
                for epoch, endpoint_id in local.get("checkpointEndpointIds", {}).items():
                    yield endpoint_id, job_id, int(epoch)

    def resolve_endpoint(self, endpoint_id: str) -> tuple[dict[str, Any], Path]:
        """The job and adapter directory serving ``endpoint_id``."""
        for candidate, job_id, epoch in self.endpoints():
            if candidate == endpoint_id:
                job = self.get(job_id)
                chosen = epoch if epoch is not None else job["localTuning"]["finalCheckpointEpoch"]
                return job, self.job_dir(job_id) / "checkpoints" / str(chosen)
        raise ApiError.not_found(f"endpoint {endpoint_id} not found (or its tuning job has not succeeded)")

    def metrics(self, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        series: dict[str, list[dict[str, Any]]] = {}
        path = self.job_dir(job_id) / "metrics.jsonl"
        if path.is_file():
            for line in path.read_text().splitlines():
                point = json.loads(line)
                if isinstance(point.get("value"), float) and not math.isfinite(point["value"]):
                    continue  # written by an older service as a NaN literal: not a value
                series.setdefault(point.pop("metric"), []).append(point)
        return {
            "name": job["name"],
            "state": job["state"],
            "series": series,
            "timings": job["localTuning"].get("timings", {}),
        }

    # --- commands -----------------------------------------------------------------------------

    def _continued_from(self, pre_tuned: Any) -> tuple[dict[str, Any], Path, Path | None]:
        """(the earlier job, its adapter directory, its tiny base or None) of ``preTunedModel``:
        a model this service tuned, at the checkpoint named (default: the final one)."""
        if not isinstance(pre_tuned, dict) or not isinstance(pre_tuned.get("tunedModelName"), str):
            raise ApiError.invalid_argument("preTunedModel.tunedModelName is required")
        name = pre_tuned["tunedModelName"]
        with self._lock:
            found = [
                (job_id, job)
                for job_id, job in self._jobs.items()
                if job["state"] == "JOB_STATE_SUCCEEDED"
                and name in (job["tunedModel"]["model"], job["tunedModel"]["model"].split("@")[0])
            ]
        if not found:
            raise ApiError.invalid_argument(
                f"preTunedModel {name} is not a model this local tuning service tuned (only those can be continued)"
            )
        job_id, job = found[0]
        if job["localTuning"]["localModel"] != self.local_model:
            raise ApiError.invalid_argument(
                f"preTunedModel {name} was tuned on the local model {job['localTuning']['localModel']!r}; "
                f"this service runs {self.local_model!r}, on which its adapter cannot continue"
            )
        checkpoint = pre_tuned.get("checkpointId")
        epoch = job["localTuning"]["finalCheckpointEpoch"]
        if checkpoint:
            epochs = {c["checkpointId"]: int(c["epoch"]) for c in job["tunedModel"].get("checkpoints", [])}
            if str(checkpoint) not in epochs:
                raise ApiError.invalid_argument(
                    f"preTunedModel.checkpointId {checkpoint} is not a checkpoint of {name} "
                    f"(it has {', '.join(sorted(epochs)) or 'none'})"
                )
            epoch = epochs[str(checkpoint)]
        base = self.job_dir(job_id) / "base" if self.local_model == "tiny" else None
        return job, self.job_dir(job_id) / "checkpoints" / str(epoch), base

    def create(self, parent: str, body: dict[str, Any]) -> dict[str, Any]:
        for option, why in (
            ("encryptionSpec", "it has no Cloud KMS: customer-managed keys work on Vertex AI only"),
            ("serviceAccount", "it has no IAM: the job runs as the service itself"),
        ):
            if body.get(option):
                raise ApiError.invalid_argument(
                    f"{option} is not supported by the local tuning service: {why}"
                )
        continued = None
        if body.get("preTunedModel"):
            continued = self._continued_from(body["preTunedModel"])
            # As on Vertex: the base model is the one the continued model was tuned from.
            body = {**body, "baseModel": body.get("baseModel") or continued[0]["baseModel"]}
        spec, supervised = resolve_request(body, self.local_model)
        if continued is not None:
            # The continued adapter keeps its rank: a different adapter size cannot be honoured.
            rank = continued[0]["localTuning"]["training"]["loraRank"]
            asked = ((body.get("supervisedTuningSpec") or {}).get("hyperParameters") or {}).get("adapterSize")
            if asked not in (None, "ADAPTER_SIZE_UNSPECIFIED") and spec.lora_rank != rank:
                raise ApiError.invalid_argument(
                    f"adapterSize {asked} differs from the continued model's adapter (rank {rank}): "
                    "continuing keeps its adapter size; leave adapterSize unset"
                )
            spec = dataclasses.replace(
                spec,
                lora_rank=rank,
                start_adapter=str(continued[1]),
                start_base=str(continued[2]) if continued[2] is not None else None,
            )
            supervised["hyperParameters"]["adapterSize"] = next(
                size_name for size_name, size in models.ADAPTER_SIZE_NAMES.items() if size == rank
            )
        labels = _validated_labels(body.get("labels"))
        self._check_quota()
        try:
            training = data.load_examples(supervised["trainingDatasetUri"])
            validation = data.load_examples(supervised["validationDatasetUri"]) if spec.has_validation else []
        except data.DatasetError as exc:
            raise ApiError.invalid_argument(f"invalid dataset: {exc}") from exc
        with self._lock:
            self._check_quota()
            job_id = new_numeric_id()
            directory = self.job_dir(job_id)
            directory.mkdir(parents=True)
            (directory / "training.jsonl").write_text(data.examples_to_jsonl(training))
            if validation:
                (directory / "validation.jsonl").write_text(data.examples_to_jsonl(validation))
            spec.save(directory)
            created = now_rfc3339()
            job: dict[str, Any] = {
                "name": f"{parent}/tuningJobs/{job_id}",
                "tunedModelDisplayName": body.get("tunedModelDisplayName") or f"tuned-{job_id}",
                "baseModel": body["baseModel"],
                "supervisedTuningSpec": supervised,
                "state": "JOB_STATE_PENDING",
                "createTime": created,
                "updateTime": created,
                "labels": labels,
                "experiment": f"{parent}/metadataStores/default/contexts/tuning-experiment-{job_id}",
                "tuningJobState": "TUNING_JOB_STATE_PROCESSING_DATASET",
                "localTuning": {
                    "localModel": self.local_model,
                    "localModelDescription": models.LOCAL_MODELS[self.local_model].description,
                    "training": {
                        "loraRank": spec.lora_rank,
                        "loraAlpha": spec.lora_alpha,
                        "learningRate": spec.learning_rate,
                        "batchSize": spec.batch_size,
                        "epochs": spec.epochs,
                        "seed": spec.seed,
                    },
                    "metricsPath": str(directory / "metrics.jsonl"),
                    "endpointId": new_numeric_id(),
                    "modelId": new_numeric_id(),
                    "checkpointEndpointIds": {},
                },
            }
            for optional in ("description", "outputUri", "preTunedModel"):
                if body.get(optional):
                    job[optional] = body[optional]
            self._jobs[job_id] = job
            self._save(job_id)
            threading.Thread(
                target=self._supervise, args=(job_id,), name=f"job-{job_id}", daemon=True
            ).start()
            return self.get(job_id)

    def _check_quota(self) -> None:
        if self.queue_over_quota:
            return
        if self.active_count() >= self.max_concurrent_jobs:
            raise ApiError.resource_exhausted(
                f"Quota exceeded: at most {self.max_concurrent_jobs} concurrent tuning job(s) "
                "in this local tuning service (--max-concurrent-jobs)."
            )

    def cancel(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise ApiError.not_found(f"tuning job {job_id} not found")
            if job["state"] in ENDED_STATES:
                raise ApiError.failed_precondition(
                    f"tuning job {job_id} is already in a final state ({job['state']}) and cannot be cancelled"
                )
            self._cancel_requested.add(job_id)
            process = self._processes.get(job_id)
            if process is None:
                self._end(job_id, "JOB_STATE_CANCELLED", CODE_CANCELLED, "CANCELLED")
                return
            job["state"] = "JOB_STATE_CANCELLING"
            job["localTuning"]["cancelRequestedAtStep"] = job.get("tuningJobMetadata", {}).get(
                "completedStepCount", 0
            )
            self._save(job_id)
        _stop(process)

    def shutdown(self) -> None:
        """Stops every trainer and records why, so that no job is left RUNNING."""
        with self._lock:
            self._shutting_down = True
            running = list(self._processes.values())
        for process in running:
            _stop(process, grace_s=5.0)
        with self._lock:
            for job_id, job in self._jobs.items():
                if job["state"] == "JOB_STATE_CANCELLING":
                    self._end(job_id, "JOB_STATE_CANCELLED", CODE_CANCELLED, "CANCELLED")
                elif job["state"] in ACTIVE_STATES:
                    self._end_stopped_by_shutdown(job_id)

    def _end_stopped_by_shutdown(self, job_id: str) -> None:
        self._end(
            job_id,
            "JOB_STATE_FAILED",
            CODE_UNAVAILABLE,
            "The local tuning service was stopped while this job was running. Submit it again.",
        )

    # --- the supervisor -----------------------------------------------------------------------

    def _first_in_line(self, job_id: str) -> bool:
        """Whether ``job_id`` is the oldest job not yet started: queued jobs start in the order
        they were created (called under the lock)."""
        waiting = [
            (job["createTime"], name)
            for name, job in self._jobs.items()
            if job["state"] == "JOB_STATE_PENDING"
            and name not in self._processes
            and name not in self._cancel_requested
        ]
        return min(waiting, default=(None, job_id))[1] == job_id

    def _start_when_free(self, job_id: str, stderr: Any) -> subprocess.Popen[str] | None:
        """Starts the job's trainer; with ``queue_over_quota``, first holds the job PENDING in
        WAITING_FOR_QUOTA until a slot is free and it is first in line. The check and the start
        are one lock hold, so two waiting jobs never take one slot. None: cancelled or stopping."""
        waiting = False
        while True:
            with self._lock:
                if job_id in self._cancel_requested or self._shutting_down:
                    return None
                job = self._jobs[job_id]
                free = len(self._processes) < self.max_concurrent_jobs and self._first_in_line(job_id)
                if not self.queue_over_quota or free:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "local.tuning.trainer", str(self.job_dir(job_id))],
                        stdout=subprocess.PIPE,
                        stderr=stderr,
                        text=True,
                        cwd=Path(__file__).resolve().parents[2],
                    )
                    self._processes[job_id] = process
                    job["state"] = "JOB_STATE_RUNNING"
                    job["tuningJobState"] = "TUNING_JOB_STATE_TUNING"
                    job["startTime"] = now_rfc3339()
                    job["localTuning"]["trainerPid"] = process.pid
                    self._save(job_id)
                    return process
                if not waiting:
                    waiting = True
                    job["tuningJobState"] = "TUNING_JOB_STATE_WAITING_FOR_QUOTA"
                    job["updateTime"] = now_rfc3339()
                    self._save(job_id)
            time.sleep(QUOTA_WAIT_POLL_S)

    def _supervise(self, job_id: str) -> None:
        directory = self.job_dir(job_id)
        try:
            with open(directory / "trainer.log", "a") as stderr:
                process = self._start_when_free(job_id, stderr)
            if process is None:
                return
            outcome = self._follow(job_id, process)
            process.wait()
        except Exception as exc:
            log.exception("supervising job %s failed", job_id)
            outcome = {"event": "failed", "message": f"{type(exc).__name__}: {exc}"}
            process = None
        with self._lock:
            self._processes.pop(job_id, None)
            if self._jobs[job_id]["state"] in ENDED_STATES:
                return
            if job_id in self._cancel_requested:
                self._end(job_id, "JOB_STATE_CANCELLED", CODE_CANCELLED, "CANCELLED")
            elif outcome.get("event") == "finished" and process is not None and process.returncode == 0:
                self._succeed(job_id)
            elif self._shutting_down:
                self._end_stopped_by_shutdown(job_id)
            else:
                self._end(
                    job_id, "JOB_STATE_FAILED", CODE_INTERNAL, _failure_message(outcome, process, directory)
                )

    def _follow(self, job_id: str, process: subprocess.Popen[str]) -> dict[str, Any]:
        """Applies the trainer's progress events; returns the last one."""
        assert process.stdout is not None
        last: dict[str, Any] = {}
        step_seconds: list[float] = []
        step_tokens: list[int] = []
        with open(self.job_dir(job_id) / "metrics.jsonl", "a") as metrics:

            def record(metric: str, event: dict[str, Any], key: str) -> None:
                # A value the trainer left out (a mean over no token) is no point; NaN never is one.
                value = event.get(key)
                if not isinstance(value, int | float) or not math.isfinite(value):
                    return
                point = {
                    "metric": metric,
                    "step": event["step"],
                    "epoch": event["epoch"],
                    "value": value,
                    "time": now_rfc3339(),
                }
                metrics.write(json.dumps(point, allow_nan=False) + "\n")

            for line in process.stdout:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                last = event
                kind = event["event"]
                if kind == "step":
                    for metric, key in METRIC_KEYS:
                        record(f"/train_{metric}", event, key)
                    metrics.flush()
                    step_seconds.append(event["seconds"])
                    step_tokens.append(event["tokens"])
                    with self._lock:
                        self._jobs[job_id].setdefault("tuningJobMetadata", {})["completedStepCount"] = event[
                            "step"
                        ]
                elif kind == "eval":
                    for metric, key in METRIC_KEYS:
                        record(f"/eval_{metric}", event, key)
                    metrics.flush()
                else:
                    self._apply(job_id, event, step_seconds, step_tokens)
        return last

    def _apply(
        self, job_id: str, event: dict[str, Any], step_seconds: list[float], step_tokens: list[int]
    ) -> None:
        with self._lock:
            job = self._jobs[job_id]
            local = job["localTuning"]
            kind = event["event"]
            if kind == "started":
                local["device"] = event["device"]
                local["timings"] = {"setupSeconds": event["setupSeconds"]}
                training = event.get("trainingDataStats") or {}
                job["tuningDataStats"] = {
                    "supervisedTuningDataStats": {
                        "tuningDatasetExampleCount": event["trainingExamples"],
                        "totalTruncatedExampleCount": event["truncatedExamples"],
                        "truncatedExampleIndices": training.get("truncatedExampleIndices", []),
                        "droppedExampleReasons": training.get("droppedExampleReasons", []),
                        "totalBillableTokenCount": event["datasetTokens"] * local["training"]["epochs"],
                        "tuningStepCount": event["totalSteps"],
                        **{
                            key: training[key]
                            for key in (
                                "userInputTokenDistribution",
                                "userOutputTokenDistribution",
                                "userMessagePerExampleDistribution",
                            )
                            if key in training
                        },
                    }
                }
                # Vertex has no stats of the validation set; both sets' full counts are kept here.
                local["trainingDataStats"] = training
                if event.get("validationDataStats"):
                    local["validationDataStats"] = event["validationDataStats"]
            elif kind == "checkpoint":
                local.setdefault("checkpoints", []).append({"epoch": event["epoch"], "step": event["step"]})
                local["checkpointEndpointIds"][str(event["epoch"])] = new_numeric_id()
                job.setdefault("tuningJobMetadata", {})["completedEpochCount"] = event["epoch"]
            elif kind == "cancelled":
                local["stoppedAtStep"] = event["step"]
                local["cancelSignalledAtStep"] = event["signalledAtStep"]
            elif kind == "finished":
                local["timings"].update(_timings(event, step_seconds, step_tokens))
                job["tuningJobState"] = "TUNING_JOB_STATE_POST_PROCESSING"
            else:
                return
            self._save(job_id)

    def _succeed(self, job_id: str) -> None:
        job = self._jobs[job_id]
        local = job["localTuning"]
        parent = job["name"].split("/tuningJobs/")[0]
        checkpoints = local.get("checkpoints", [])
        if not checkpoints:
            self._end(job_id, "JOB_STATE_FAILED", CODE_INTERNAL, "training produced no checkpoint")
            return
        local["finalCheckpointEpoch"] = checkpoints[-1]["epoch"]
        if (job.get("supervisedTuningSpec") or {}).get("exportLastCheckpointOnly"):
            # As on Vertex: only the final checkpoint is exported (and served).
            checkpoints = checkpoints[-1:]
        job["tunedModel"] = {
            "model": f"{parent}/models/{local['modelId']}@1",
            "endpoint": f"{parent}/endpoints/{local['endpointId']}",
            "checkpoints": [
                {
                    "checkpointId": str(index),
                    "epoch": str(checkpoint["epoch"]),
                    "step": str(checkpoint["step"]),
                    "endpoint": f"{parent}/endpoints/{local['checkpointEndpointIds'][str(checkpoint['epoch'])]}",
                }
                for index, checkpoint in enumerate(
                    checkpoints, start=len(local["checkpoints"]) - len(checkpoints) + 1
                )
            ],
        }
        self._end(job_id, "JOB_STATE_SUCCEEDED")
        if job.get("outputUri"):
            try:
                data.write_text(
                    job["outputUri"].rstrip("/") + "/metrics.json",
                    json.dumps(self.metrics(job_id), allow_nan=False),
                )
            except Exception:
                log.exception("writing metrics of job %s to %s failed", job_id, job["outputUri"])


def _timings(event: dict[str, Any], step_seconds: list[float], step_tokens: list[int]) -> dict[str, Any]:
    # The first step pays one-off costs (allocations, lazy kernels); keep it out of the rate.
    steady_seconds = step_seconds[1:] or step_seconds
    steady_tokens = step_tokens[1:] or step_tokens
    return {
        "trainSeconds": event["trainSeconds"],
        "steps": event["step"],
        "secondsPerStep": sum(steady_seconds) / max(len(steady_seconds), 1),
        "medianSecondsPerStep": statistics.median(steady_seconds) if steady_seconds else 0.0,
        "tokensPerSecond": sum(steady_tokens) / max(sum(steady_seconds), 1e-9),
        "peakRssBytes": event["peakRssBytes"],
    }


def _failure_message(outcome: dict[str, Any], process: subprocess.Popen[str] | None, directory: Path) -> str:
    if outcome.get("event") == "failed":
        return f"Training failed: {outcome['message']}"
    code = process.returncode if process is not None else "unknown"
    tail = ""
    with contextlib.suppress(OSError):
        tail = " | ".join((directory / "trainer.log").read_text(errors="replace").strip().splitlines()[-3:])
    return f"The training process exited with code {code} before finishing. {tail}".strip()


def _stop(process: subprocess.Popen[str], grace_s: float = CANCEL_GRACE_S) -> None:
    """SIGTERM asks the trainer to stop after its current step; SIGKILL if it does not."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)

    def escalate() -> None:
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    threading.Thread(target=escalate, daemon=True).start()


def _kill_orphan_trainer(pid: int | None, job_dir: Path) -> None:
    """A trainer left behind by a killed service (it would also stop at its next progress write).
    The command line is checked so that a recycled pid is never killed."""
    if not pid:
        return
    with contextlib.suppress(OSError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"local.tuning.trainer" in cmdline and str(job_dir).encode() in cmdline:
            os.kill(pid, signal.SIGKILL)

"""Versioned message bodies exchanged over Pub/Sub.

Every body is a JSON object whose ``schema`` field names its shape and version
(``tuning-request/v1``). A new incompatible shape is a new class with a new version, never an
edit of an old one, so a message published by an older deployment still parses. Attributes carry
``schema``, ``dataset_id`` and ``job_id`` for subscription filters and tracing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from shared.errors import InvalidMessageError
from shared.events import PubSubMessage

GcsUri = Annotated[str, StringConstraints(pattern=r"^gs://[a-z0-9][a-z0-9._-]{1,220}/.+$")]


def utcnow() -> datetime:
    return datetime.now(UTC)


#: Bounds of the task decision a tuning-request/v1 carries (``shared.evaluation.task_rule``
#: tracks at most 1,000 labels of at most 200 characters).
MAX_TASK_LABELS = 1_000
MAX_TASK_LABEL_CHARS = 200
MAX_TASK_EVIDENCE_CHARS = 1_000


class Task(StrEnum):
    """Evaluation task; decides the metrics (see shared/evaluation)."""

    CLASSIFICATION = "classification"
    SUMMARIZATION = "summarization"
    EXTRACTIVE_QA = "extractive_qa"
    GENERATION = "generation"


class Message(BaseModel):
    """Base of every message body."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)
    SCHEMA: ClassVar[str]

    schema_: str = Field(alias="schema")

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True))

    def attributes(self) -> dict[str, str]:
        attrs = {"schema": self.schema_}
        for key in ("dataset_id", "job_id"):
            value = getattr(self, key, None)
            if value:
                attrs[key] = str(value)
        return attrs


class Hyperparameters(BaseModel):
    """Vertex AI supervised tuning hyperparameters; None lets the recommendation decide."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int | None = Field(None, ge=1, le=100)
    learning_rate_multiplier: float | None = Field(None, gt=0, le=100)
    adapter_size: Literal[1, 2, 4, 8, 16] | None = None


#: Vertex AI's patterns for the job options (a located 400 at create is what they save).
KMS_KEY_PATTERN = r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$"
SERVICE_ACCOUNT_PATTERN = r"^[^@\s]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.gserviceaccount\.com$"
TUNED_MODEL_PATTERN = r"^projects/[^/]+/locations/[^/]+/models/[^/@]+(@[0-9]+)?$"
MAX_DESCRIPTION_CHARS = 1024


class JobOptionFields(BaseModel):
    """The tuning job's options beside its hyperparameters, as fields of whatever carries them
    (:class:`JobOptions`, and the upload settings, so that a bad value is named by its key)."""

    #: The job's description in the Cloud Console.
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    #: Where Vertex writes the job's artifacts (``gs://BUCKET/PREFIX``).
    output_uri: GcsUri | None = None
    #: Customer-managed encryption key (CMEK) of the job and its tuned model, in the job's region.
    kms_key_name: str | None = Field(None, pattern=KMS_KEY_PATTERN)
    #: The service account the tuning job runs as (it must be able to read the datasets).
    service_account: str | None = Field(None, pattern=SERVICE_ACCOUNT_PATTERN)
    #: Continue from this tuned model (``projects/P/locations/L/models/M[@VERSION]``) instead of
    #: the base model; ``base_model`` must be the one it was tuned from.
    pre_tuned_model: str | None = Field(None, pattern=TUNED_MODEL_PATTERN)
    #: Which checkpoint of ``pre_tuned_model`` to continue from (default: its final one).
    pre_tuned_model_checkpoint_id: str | None = Field(None, pattern=r"^[0-9]{1,20}$")

    @field_validator("pre_tuned_model_checkpoint_id")
    @classmethod
    def _checkpoint_needs_a_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and not info.data.get("pre_tuned_model"):
            raise ValueError("needs pre_tuned_model (the tuned model the checkpoint belongs to)")
        return value


class JobOptions(JobOptionFields):
    """Options of the Vertex AI tuning job; None: Vertex's default (or the deployment's,
    ``SFTPIPE_TUNING_*``). Each goes to ``CreateTuningJobConfig`` (the service account in the
    create's body, which the SDK's config does not carry)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def of(cls, fields: JobOptionFields) -> JobOptions:
        return cls(**{name: getattr(fields, name) for name in JobOptionFields.model_fields})


class NotifyTargets(BaseModel):
    """Where the result goes, on top of the deployment's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    emails: list[Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(
        default_factory=list
    )
    slack_channel: str | None = None


#: The request label (also on the Vertex job) that names a lineage: jobs of one lineage are
#: compared, champion and challenger (``shared.evaluation.champion``).
LINEAGE_LABEL = "lineage"
#: The metrics the Gen AI evaluation service computes by name (google-genai maps each to its spec).
VertexEvaluationMetric = Literal["exact_match", "bleu", "rouge1", "rouge2", "rougeL", "rougeLsum"]


class TuningRequestV1(Message):
    """Start one tuning run. Anyone may publish it (see README, "Messages")."""

    SCHEMA: ClassVar[str] = "tuning-request/v1"
    schema_: Literal["tuning-request/v1"] = Field("tuning-request/v1", alias="schema")

    dataset_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")]
    base_model: str = Field(min_length=1)
    training_uri: GcsUri
    validation_uri: GcsUri | None = None
    test_uri: GcsUri | None = None
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    #: The evaluation task the user set; completion reports it as "explicit".
    task: Task | None = None
    #: The task ingest inferred from the data when the user set none ("inferred" in the report).
    inferred_task: Task | None = None
    #: Why: who set the task, or the inference's evidence with its numbers.
    task_evidence: str | None = Field(None, max_length=MAX_TASK_EVIDENCE_CHARS)
    #: The dataset's class labels (normalised), counted over every split; completion scores the
    #: lenient classification match against them. None: unknown (the test references are used).
    task_labels: list[Annotated[str, StringConstraints(max_length=MAX_TASK_LABEL_CHARS)]] | None = Field(
        None, max_length=MAX_TASK_LABELS
    )
    #: Training examples prepended to each baseline prompt (``few_shot`` upload setting); the
    #: base side of the final comparison is then the few-shot base model.
    few_shot: int | None = Field(None, ge=0, le=16)
    #: Vertex exports (and completion scores) only the final checkpoint; None: Vertex's default (all).
    export_last_checkpoint_only: bool | None = None
    #: Metrics for Vertex AI's own evaluation of the job (its ``evaluation_config``: the Gen AI
    #: evaluation service scores each checkpoint on the validation split; results in the report).
    vertex_evaluation_metrics: list[VertexEvaluationMetric] | None = Field(None, min_length=1, max_length=6)
    #: ``METRIC>=VALUE`` (shared.evaluation.gate): when the baseline meets it, no job is created.
    baseline_gate: str | None = Field(None, max_length=100)
    #: Description, output URI, CMEK key, service account, continuing from a tuned model.
    job_options: JobOptions = Field(default_factory=JobOptions)
    display_name: str | None = Field(None, max_length=128)
    notify: NotifyTargets = Field(default_factory=NotifyTargets)
    labels: dict[str, str] = Field(default_factory=dict)
    requested_at: datetime = Field(default_factory=utcnow)


class JobEventV1(Message):
    """One state transition of a tuning job, published exactly once by the poller or tuner."""

    SCHEMA: ClassVar[str] = "job-event/v1"
    schema_: Literal["job-event/v1"] = Field("job-event/v1", alias="schema")

    job_id: str = Field(min_length=1)
    dataset_id: str = Field(min_length=1)
    sequence: int = Field(ge=0, description="Index of this transition in the job's history.")
    state: str = Field(description="google.genai.types.JobState name, or QUEUED before submission.")
    previous_state: str | None = None
    terminal: bool = False
    tuning_job_name: str | None = None
    tuned_model: str | None = None
    tuned_endpoint: str | None = None
    error: str | None = None
    kind: Literal["transition", "stalled"] = "transition"
    #: The job's running sub-state (google.genai.types.TuningJobState name) when it was observed;
    #: on a ``stalled`` alert, set when the job waits for quota or capacity.
    tuning_job_state: str | None = None
    occurred_at: datetime = Field(default_factory=utcnow)


class EvaluationContinuationV1(Message):
    """Resume a job's evaluation where its checkpointed cursor stands (published by completion).

    ``cursor`` is the number of test examples already evaluated when the message was published;
    a copy whose cursor is behind the stored one is stale and dropped.
    """

    SCHEMA: ClassVar[str] = "evaluation-continuation/v1"
    schema_: Literal["evaluation-continuation/v1"] = Field("evaluation-continuation/v1", alias="schema")

    job_id: str = Field(min_length=1)
    dataset_id: str = Field(min_length=1)
    cursor: int = Field(ge=0)
    published_at: datetime = Field(default_factory=utcnow)


class BaselineContinuationV1(Message):
    """Resume a job's pre-tuning baseline where its checkpointed cursor stands (published by
    completion, like :class:`EvaluationContinuationV1`, on ``job-events``)."""

    SCHEMA: ClassVar[str] = "baseline-continuation/v1"
    schema_: Literal["baseline-continuation/v1"] = Field("baseline-continuation/v1", alias="schema")

    job_id: str = Field(min_length=1)
    dataset_id: str = Field(min_length=1)
    cursor: int = Field(ge=0)
    published_at: datetime = Field(default_factory=utcnow)


class PollTickV1(Message):
    """A Cloud Scheduler (or local ticker) tick asking the poller to run."""

    SCHEMA: ClassVar[str] = "poll-tick/v1"
    schema_: Literal["poll-tick/v1"] = Field("poll-tick/v1", alias="schema")

    scheduled_at: datetime = Field(default_factory=utcnow)


M = TypeVar("M", bound=Message)


def parse_message(message: PubSubMessage, *expected: type[M]) -> M:
    """Validate a message body against the expected schema(s).

    Raises InvalidMessageError (permanent: the message is dead-lettered, not retried) naming the
    first offending field.
    """
    body = message.json()
    if not isinstance(body, dict):
        raise InvalidMessageError("message body is not a JSON object", field="schema")
    schema = body.get("schema")
    by_schema = {cls.SCHEMA: cls for cls in expected}
    cls = by_schema.get(schema) if isinstance(schema, str) else None
    if cls is None:
        raise InvalidMessageError(
            f"unknown schema {schema!r}; expected one of {sorted(by_schema)}", field="schema"
        )
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"]) or "schema"
        raise InvalidMessageError(f"{schema}: {path}: {first['msg']}", field=path) from exc

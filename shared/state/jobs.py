"""The ``jobs/{job_id}`` document: one tuning run, from request to evaluation.

Status values are ours before submission (``BASELINE``: the base model is being scored on the test
split before any money is spent; ``QUEUED``: waiting for a quota slot; ``SUBMITTING``: a tuner or
poller holds the submission claim; ``BASELINE_MET``, terminal: the base model already met the
request's ``baseline_gate``, so no tuning job was created) and ``google.genai.types.JobState``
names after it.
Statuses only move forward (:func:`is_forward`); every recorded change appends to ``history``
with a ``sequence`` number, and each sequence number is published once as a ``job-event/v1``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.genai import types
from pydantic import BaseModel, ConfigDict, Field

from shared.messages import LINEAGE_LABEL

BASELINE = "BASELINE"
QUEUED = "QUEUED"
SUBMITTING = "SUBMITTING"
BASELINE_MET = "BASELINE_MET"

#: Rank of each status: a change is recorded only when the rank grows, so a stale read of an
#: earlier state (two overlapping poller ticks) can never move a job backwards.
_RANK: dict[str, int] = {
    BASELINE: 0,
    QUEUED: 1,
    SUBMITTING: 2,
    types.JobState.JOB_STATE_QUEUED.value: 3,
    types.JobState.JOB_STATE_PENDING.value: 4,
    types.JobState.JOB_STATE_RUNNING.value: 5,
    types.JobState.JOB_STATE_UPDATING.value: 5,
    types.JobState.JOB_STATE_PAUSED.value: 5,
    types.JobState.JOB_STATE_CANCELLING.value: 6,
    BASELINE_MET: 9,
    types.JobState.JOB_STATE_SUCCEEDED.value: 9,
    types.JobState.JOB_STATE_PARTIALLY_SUCCEEDED.value: 9,
    types.JobState.JOB_STATE_FAILED.value: 9,
    types.JobState.JOB_STATE_CANCELLED.value: 9,
    types.JobState.JOB_STATE_EXPIRED.value: 9,
}
TERMINAL = frozenset(state for state, rank in _RANK.items() if rank == 9)
#: Statuses that hold (or are about to hold) one of the project's concurrent tuning-job slots.
ACTIVE = frozenset(state for state, rank in _RANK.items() if _RANK[SUBMITTING] <= rank < 9)
SUCCEEDED = types.JobState.JOB_STATE_SUCCEEDED.value
FAILED = types.JobState.JOB_STATE_FAILED.value


def lineage_of(request: dict[str, Any]) -> str | None:
    """The lineage a request belongs to (``shared.evaluation.champion``): its ``lineage`` label,
    else its display name (the uploaded file's name)."""
    labels = request.get("labels") or {}
    return labels.get(LINEAGE_LABEL) or request.get("display_name") or None


def is_forward(current: str, new: str) -> bool:
    """Whether moving from ``current`` to ``new`` is progress (unknown states never are)."""
    return new in _RANK and _RANK[new] > _RANK.get(current, -1)


class Checkpoint(BaseModel):
    checkpoint_id: str | None = None
    epoch: int | None = None
    step: int | None = None
    endpoint: str | None = None


class HistoryEntry(BaseModel):
    sequence: int
    state: str
    at: datetime
    detail: str | None = None


class SubStateEntry(BaseModel):
    """One running sub-state as the poller first saw it: the state it was in, and when."""

    sub_state: str
    state: str
    at: datetime


#: Sub-states in which a job waits for Vertex AI rather than works; a long wait raises one notice.
WAITING_SUB_STATES = frozenset(
    {"TUNING_JOB_STATE_WAITING_FOR_QUOTA", "TUNING_JOB_STATE_WAITING_FOR_CAPACITY"}
)


class JobRecord(BaseModel):
    """The fields of ``jobs/{job_id}`` that other parts read (the document may hold more)."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    dataset_id: str
    #: The tuning-request/v1 body that started the job (JSON, schema field included).
    request: dict[str, Any]
    base_model: str
    status: str
    sequence: int = 0
    history: list[HistoryEntry] = Field(default_factory=list)
    tuning_job_name: str | None = None
    tuned_model: str | None = None
    tuned_endpoint: str | None = None
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    #: Vertex AI's own evaluation runs, when the request asked for them (``shared.tuning.observe``).
    vertex_evaluation_runs: list[dict[str, Any]] = Field(default_factory=list)
    #: The Vertex AI Experiment (metadata context) holding the job's metric series.
    experiment: str | None = None
    #: Vertex AI's count of the training set, once it has counted (``shared.tuning.observe.data_stats``).
    tuning_data_stats: dict[str, Any] | None = None
    #: The running sub-state Vertex reports (``TuningJob.tuning_job_state``: WAITING_FOR_QUOTA,
    #: PROCESSING_DATASET, ...), since when, and each one seen, in order.
    tuning_job_state: str | None = None
    tuning_job_state_since: datetime | None = None
    sub_states: list[SubStateEntry] = Field(default_factory=list)
    #: When the poller raised the one "waiting" notice for the current wait.
    waiting_alerted_at: datetime | None = None
    error: str | None = None
    #: Jobs of one lineage are compared, champion and challenger (:func:`lineage_of`).
    lineage: str | None = None
    #: The endpoint the evaluation asked (the best checkpoint's, else the tuned endpoint): what
    #: a later job of the lineage is compared with.
    evaluated_endpoint: str | None = None
    #: The base model's scores on the test split before tuning (``shared.evaluation.baseline``):
    #: ``{metrics, examples, evaluated_at, few_shot, predictions_uri, ...}``; None: none was taken.
    baseline: dict[str, Any] | None = None
    created: datetime | None = None
    updated: datetime | None = None
    queued_at: datetime | None = None
    submitted_at: datetime | None = None
    ended_at: datetime | None = None
    last_progress_at: datetime | None = None
    #: What last changed at Vertex (update time, checkpoint count): a new value is progress.
    progress_marker: str | None = None
    stalled_alerted_at: datetime | None = None
    #: Who holds the SUBMITTING claim (a fresh id per claim): only that holder may give it back.
    submit_owner: str | None = None
    #: When a create ended without a clear answer (timeout, connection error, 5xx): Vertex may
    #: hold a job no lookup has found yet, so no second create until that has settled.
    create_unclear_at: datetime | None = None


class OutboxEntry(BaseModel):
    """``job_events/{job_id}-{sequence}``: a job-event/v1 waiting to be published once."""

    job_id: str
    sequence: int
    event: dict[str, Any]
    published: bool = False
    claimed_until: datetime | None = None

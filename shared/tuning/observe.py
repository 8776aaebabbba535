"""What a ``types.TuningJob`` read from Vertex says, as the fields of ``jobs/{job_id}``.

One reading for the poller's refresh and for the tuner's recovery of a job it finds already
submitted (possibly already finished): both record the tuned model, endpoint, checkpoints,
error and experiment the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.state.jobs import Checkpoint

if TYPE_CHECKING:
    from google.genai import types


def observed_fields(tuning_job: types.TuningJob) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    tuned = tuning_job.tuned_model
    if tuned is not None:
        fields["tuned_model"] = tuned.model
        fields["tuned_endpoint"] = tuned.endpoint
        fields["checkpoints"] = [
            Checkpoint(
                checkpoint_id=c.checkpoint_id, epoch=c.epoch, step=c.step, endpoint=c.endpoint
            ).model_dump()
            for c in tuned.checkpoints or []
        ]
    if tuning_job.error is not None and tuning_job.error.message:
        fields["error"] = f"{tuning_job.error.code}: {tuning_job.error.message}"
    if tuning_job.experiment:
        fields["experiment"] = tuning_job.experiment
    return {k: v for k, v in fields.items() if v is not None}


def progress_marker(tuning_job: types.TuningJob) -> str:
    """What last changed at Vertex (update time, checkpoint count): a new value is progress."""
    checkpoints = len(tuning_job.tuned_model.checkpoints or []) if tuning_job.tuned_model else 0
    updated = tuning_job.update_time.isoformat() if tuning_job.update_time else ""
    return f"{updated}|{checkpoints}"

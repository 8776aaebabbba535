"""Every checkpoint scored: the seeds choose the checkpoint by validation, not by default.

Before the test split is evaluated, a job with two or more checkpoint endpoints (Vertex exports
one per epoch unless ``export_last_checkpoint_only``) and a validation split has each checkpoint
asked the first ``SFTPIPE_CHECKPOINT_MAX_EXAMPLES`` validation examples. The best by the task's
primary metric (the later checkpoint on a tie: it is the one Vertex serves by default) becomes
``best_checkpoint``, and the test-split comparison asks its endpoint.

Resumable and exactly-once like the chunks: each checkpoint's answers are written to
``reports/<job_id>/checkpoints/<checkpoint_id>.jsonl``, then its scores are committed to
``evaluations/{job_id}.checkpoint_scores`` in a transaction by the lease holder only, and a
checkpoint already there is never asked again. An invocation stops before a checkpoint that could
run past its time budget and hands over (an ``evaluation-continuation/v1`` at cursor 0).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc

from shared.budgets import EVALUATION_RECORD_MARGIN_S
from shared.evaluation.inputs import reports_bucket, split_uri
from shared.evaluation.metrics import compute_metrics
from shared.evaluation.record import LeaseLostError
from shared.evaluation.runner import GenerationOptions, TestExample, parse_test_examples, run_predictions
from shared.logging import get_logger
from shared.runtime import Runtime
from shared.state.jobs import Checkpoint, JobRecord

if TYPE_CHECKING:
    pass

log = get_logger("sftpipe.completion")

#: Why no checkpoint was chosen (``checkpoint_selection`` on the evaluation record).
SELECTED = "selected"


def candidates(job: JobRecord) -> list[Checkpoint]:
    """The job's checkpoints that have an endpoint to ask, in training order."""
    found = [c for c in job.checkpoints if c.endpoint and c.checkpoint_id]
    return sorted(found, key=lambda c: (c.step or 0, c.epoch or 0))


def skip_reason(job: JobRecord, max_examples: int) -> str:
    """Why the checkpoints are not compared ("" when they are)."""
    if max_examples <= 0:
        return "checkpoints are not compared (SFTPIPE_CHECKPOINT_MAX_EXAMPLES is 0)"
    if len(candidates(job)) < 2:
        return "the job exported one checkpoint, so the tuned model is the one evaluated"
    if not job.request.get("validation_uri"):
        return "the dataset has no validation split, so the final checkpoint is evaluated"
    return ""


def choose_best(scores: Mapping[str, Mapping[str, Any]], primary: str) -> str:
    """The checkpoint with the highest ``primary`` score; on a tie the latest (highest step)."""
    if not scores:
        raise ValueError("no checkpoint was scored")
    return max(
        scores,
        key=lambda cid: (scores[cid]["metrics"].get(primary, 0.0), scores[cid].get("step") or 0, cid),
    )


def checkpoint_object_name(reports_prefix: str, job_id: str, checkpoint_id: str) -> str:
    return f"{reports_prefix}{job_id}/checkpoints/{checkpoint_id}.jsonl"


def validation_examples(runtime: Runtime, job: JobRecord, limit: int) -> list[TestExample]:
    bucket_name, name = split_uri(job.request["validation_uri"])
    try:
        data = runtime.storage.bucket(bucket_name).blob(name).download_as_bytes()
    except gexc.NotFound:
        return []
    return parse_test_examples(data.splitlines())[:limit]


def select_checkpoint(
    ref: Any, runtime: Runtime, job: JobRecord, doc: dict[str, Any], owner: str, *, started: float
) -> dict[str, Any] | None:
    """Score the checkpoints not scored yet; the updated record once the choice is made (or
    skipped), None when this invocation ran out of time first (the caller hands over)."""
    settings = runtime.settings
    reason = skip_reason(job, settings.checkpoint_max_examples)
    examples = validation_examples(runtime, job, settings.checkpoint_max_examples) if not reason else []
    if not reason and not examples:
        reason = "the validation split is empty or gone, so the final checkpoint is evaluated"
    if reason:
        ref.update({"checkpoint_selection": reason})
        log.info("checkpoints not compared", extra={"reason": reason})
        return {**doc, "checkpoint_selection": reason}
    options = GenerationOptions.from_settings(settings, job.base_model, examples)
    scored: dict[str, Any] = dict(doc.get("checkpoint_scores") or {})
    slowest = 0.0
    primary = ""
    for checkpoint in candidates(job):
        if checkpoint.checkpoint_id is None or checkpoint.endpoint is None:
            continue  # candidates() keeps only checkpoints with both
        if checkpoint.checkpoint_id in scored:
            continue
        elapsed = time.monotonic() - started
        if slowest and elapsed + slowest > settings.evaluation_time_budget_s:
            return None
        began = time.monotonic()
        predictions = run_predictions(
            settings,
            examples,
            base_model=None,
            tuned_model=checkpoint.endpoint,
            options=options,
            deadline=started + settings.function_timeout_s - EVALUATION_RECORD_MARGIN_S,
        )
        if len(predictions) < len(examples):
            return None  # the deadline kept calls from starting: the next invocation asks again
        from shared.evaluation.finalize import decide_task, task_prompt

        references = [e.reference for e in examples]
        choice = decide_task(job, references, [task_prompt(e) for e in examples])
        result = compute_metrics(
            choice.task,
            references,
            [p.tuned_output for p in predictions],
            labels=choice.labels,
            reference_calls=[e.reference_calls for e in examples],
            answer_calls=[p.tuned_calls for p in predictions],
        )
        primary = result.primary_metric
        reports_bucket(runtime).blob(
            checkpoint_object_name(settings.reports_prefix, job.job_id, checkpoint.checkpoint_id)
        ).upload_from_string(b"".join(p.to_jsonl() for p in predictions), content_type="application/x-ndjson")
        entry = {
            "checkpoint_id": checkpoint.checkpoint_id,
            "epoch": checkpoint.epoch,
            "step": checkpoint.step,
            "endpoint": checkpoint.endpoint,
            "metrics": {name: round(value, 4) for name, value in result.scores.items()},
            "primary_metric": primary,
            "examples": len(examples),
            "failed": result.failed,
            "seconds": round(time.monotonic() - began, 1),
        }
        scored = _commit_score(ref, runtime, owner, entry)
        slowest = max(slowest, time.monotonic() - began)
        log.info(
            "checkpoint scored on the validation split",
            extra={"checkpoint_id": checkpoint.checkpoint_id, primary: entry["metrics"].get(primary)},
        )
    primary = primary or next(iter(scored.values()))["primary_metric"]
    best = choose_best(scored, primary)
    fields = {
        "checkpoint_selection": SELECTED,
        "best_checkpoint": best,
        "tuned_endpoint": scored[best]["endpoint"],
        "updated": datetime.now(UTC),
    }
    ref.update(fields)
    log.info("best checkpoint chosen", extra={"best_checkpoint": best, "primary_metric": primary})
    return {**doc, "checkpoint_scores": scored, **fields}


def _commit_score(ref: Any, runtime: Runtime, owner: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Record one checkpoint's scores if this invocation still holds the lease and nobody has
    recorded them yet; the scores recorded so far."""
    from google.cloud import firestore

    @firestore.transactional
    def commit(transaction: firestore.Transaction) -> dict[str, Any]:
        current = ref.get(transaction=transaction).to_dict()
        if current.get("lease_owner") != owner:
            raise LeaseLostError(f"lease now held by {current.get('lease_owner')}")
        scores = dict(current.get("checkpoint_scores") or {})
        if entry["checkpoint_id"] not in scores:
            scores[entry["checkpoint_id"]] = entry
            transaction.update(ref, {"checkpoint_scores": scores, "updated": datetime.now(UTC)})
        return scores

    return commit(runtime.firestore.transaction())


def summary_checkpoints(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The evaluation record's checkpoint scores in training order, for summary.json."""
    scores: Sequence[dict[str, Any]] = list((doc.get("checkpoint_scores") or {}).values())
    return sorted(scores, key=lambda s: (s.get("step") or 0, s.get("epoch") or 0))

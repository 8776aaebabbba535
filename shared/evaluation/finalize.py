"""The last step of an evaluation: merge the chunks, score both models, write the report.

:func:`finalize` runs once every example has answers from both models; it writes
``predictions.jsonl``, ``summary.json`` and ``report.html`` under ``reports/<job_id>/`` and records
REPORTED (the notices are sent after it, by ``shared.evaluation.completion``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from google.api_core import exceptions as gexc

from shared.evaluation.champion import champion_comparison
from shared.evaluation.checkpoints import summary_checkpoints
from shared.evaluation.chunks import merged_predictions
from shared.evaluation.inputs import dataset_facts, reports_bucket
from shared.evaluation.judge import judge_items, run_judge
from shared.evaluation.losses import fetch_loss_curves, job_experiment
from shared.evaluation.metrics import TaskChoice, choice_from_request, compute_metrics
from shared.evaluation.notices import tuning_duration
from shared.evaluation.record import REPORTED, LeaseLostError
from shared.evaluation.report import (
    BaselineFacts,
    CheckpointScore,
    ExampleComparison,
    TuningFacts,
    VertexEvaluation,
    build_summary,
    render_report_html,
    vertex_counts,
)
from shared.evaluation.runner import (
    Prediction,
    TestExample,
    content_text,
    truncation_counts,
)
from shared.logging import get_logger
from shared.runtime import Runtime
from shared.state.jobs import JobRecord
from shared.tuning.backend import local_stand_in

if TYPE_CHECKING:
    pass

log = get_logger("sftpipe.completion")

#: Examples shown side by side in report.html (predictions.jsonl has all of them).
REPORT_EXAMPLES = 12


def finalize(
    ref: Any,
    runtime: Runtime,
    job: JobRecord,
    examples: list[TestExample],
    owner: str,
    *,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Merge the chunks, score both models, ask the judge, write predictions.jsonl, summary.json
    and report.html.

    ``deadline`` (``time.monotonic()``) bounds the judge's calls: none starts that could end after
    it, and the examples it leaves are counted as not judged. The judge is a pure function of the
    predictions, so a redelivered finalize asks it again and writes the summary once more, whole.
    """
    settings = runtime.settings
    doc = ref.get().to_dict()
    if doc.get("lease_owner") != owner:
        raise LeaseLostError(job.job_id)
    predictions = merged_predictions(runtime, job.job_id, doc["chunks"], doc["total"])
    references = [p.reference for p in predictions]
    task_choice = decide_task(job, references, [task_prompt(e) for e in examples])
    # Identical prompts (system instruction and turns) share their reference answers (QA).
    prompts = [orjson.dumps([e.system_instruction, e.contents]) for e in examples]
    reference_calls = [p.reference_calls for p in predictions]
    base, tuned = (
        compute_metrics(
            task_choice.task,
            references,
            answers,
            labels=task_choice.labels,
            prompts=prompts,
            reference_calls=reference_calls,
            answer_calls=calls,
        )
        for answers, calls in (
            ([p.base_output for p in predictions], [p.base_calls for p in predictions]),
            ([p.tuned_output for p in predictions], [p.tuned_calls for p in predictions]),
        )
    )
    base_truncated, tuned_truncated = truncation_counts(predictions)
    curves, curves_note = fetch_loss_curves(settings, job_experiment(settings, job))
    statistics, cost, cost_note = dataset_facts(runtime, job)
    champion = champion_comparison(runtime, job, examples, predictions, task_choice, deadline=deadline)
    judge = run_judge(
        settings, judge_items(predictions), task_choice.task, base_model=job.base_model, deadline=deadline
    )
    summary = build_summary(
        job_id=job.job_id,
        dataset_id=job.dataset_id,
        base_model=job.base_model,
        task_choice=task_choice,
        base=base,
        tuned=tuned,
        tuned_model=job.tuned_model,
        tuned_endpoint=doc.get("tuned_endpoint") or job.tuned_endpoint,
        tuning_duration_s=tuning_duration(job),
        evaluation_duration_s=(datetime.now(UTC) - doc["started"]).total_seconds(),
        cost=cost,
        dataset_statistics=statistics,
        loss_curves=curves,
        base_truncated=base_truncated,
        tuned_truncated=tuned_truncated,
        judge=judge,
    )
    baseline, baseline_notes = _baseline_facts(job, doc)
    checkpoints = [CheckpointScore.model_validate(c) for c in summary_checkpoints(doc)]
    selection = doc.get("checkpoint_selection") or ""
    checkpoint_note = _checkpoint_note(doc, len(checkpoints)) if checkpoints else selection
    notes = [n for n in (curves_note, cost_note, *baseline_notes, checkpoint_note) if n]
    summary = summary.model_copy(
        update={
            "notes": [*summary.notes, *notes],
            "baseline": baseline,
            "tuning": TuningFacts(
                submitted_at=job.submitted_at, ended_at=job.ended_at, tuning_job_name=job.tuning_job_name
            ),
            "checkpoints": checkpoints,
            "best_checkpoint": doc.get("best_checkpoint"),
            "vertex_evaluation": _vertex_evaluation(runtime, job),
            "vertex_counts": vertex_counts(job.tuning_data_stats, cost),
            "served_locally_by": local_stand_in(settings),
            "champion": champion,
        }
    )

    prefix = f"{settings.reports_prefix}{job.job_id}/"
    bucket = reports_bucket(runtime)
    bucket.blob(f"{prefix}predictions.jsonl").upload_from_string(
        b"".join(p.to_jsonl() for p in predictions), content_type="application/x-ndjson"
    )
    bucket.blob(f"{prefix}summary.json").upload_from_string(
        summary.to_json(), content_type="application/json"
    )
    bucket.blob(f"{prefix}report.html").upload_from_string(
        render_report_html(summary, report_examples(predictions)), content_type="text/html; charset=utf-8"
    )
    primary = summary.primary
    fields = {
        "status": REPORTED,
        "task": summary.task.value,
        "task_decided_by": summary.task_decided_by,
        "task_reason": summary.task_reason,
        "verdict": summary.verdict,
        "primary_metric": primary.name,
        "base_score": primary.base,
        "tuned_score": primary.tuned,
        "summary_object": f"{prefix}summary.json",
        "report_uri": f"gs://{settings.bucket}/{prefix}report.html",
        "summary_uri": f"gs://{settings.bucket}/{prefix}summary.json",
        "predictions_uri": f"gs://{settings.bucket}/{prefix}predictions.jsonl",
        "reported": datetime.now(UTC),
        "updated": datetime.now(UTC),
    }
    ref.update(fields)
    try:
        runtime.firestore.collection(settings.jobs_collection).document(job.job_id).update(
            {
                "evaluation_status": REPORTED,
                "evaluation_report_uri": fields["report_uri"],
                # What a later job of the same lineage is compared with (shared.evaluation.champion).
                "evaluated_endpoint": summary.tuned_endpoint,
            }
        )
    except gexc.NotFound:
        log.warning("job document vanished before the evaluation was recorded on it")
    log.info(
        "evaluation reported",
        extra={"task": summary.task.value, "verdict": summary.verdict, "report_uri": fields["report_uri"]},
    )
    return {**doc, **fields}


def _vertex_evaluation(runtime: Runtime, job: JobRecord) -> VertexEvaluation | None:
    from shared.tuning.submit import vertex_evaluation_prefix

    metrics = job.request.get("vertex_evaluation_metrics")
    if not metrics:
        return None
    return VertexEvaluation(
        metrics=list(metrics),
        output_uri_prefix=vertex_evaluation_prefix(runtime.settings, job.job_id),
        runs=job.vertex_evaluation_runs,
    )


def _checkpoint_note(doc: dict[str, Any], count: int) -> str:
    scores = doc.get("checkpoint_scores") or {}
    calls = sum(int(entry.get("examples") or 0) for entry in scores.values())
    return (
        f"checkpoints: {count} scored on the validation split ({calls:,} calls of the checkpoint "
        f"endpoints); the test split was asked of the best, checkpoint {doc.get('best_checkpoint')}"
    )


def _baseline_facts(job: JobRecord, doc: dict[str, Any]) -> tuple[BaselineFacts | None, list[str]]:
    """The job's baseline for the summary, whether its answers were reused (as the evaluation's
    invocations recorded it: ``base_reused``, ``base_reuse_note``), and notes on both."""
    if not job.baseline:
        return None, []
    reused, why_not = bool(doc.get("base_reused")), str(doc.get("base_reuse_note") or "")
    facts = BaselineFacts.model_validate({**job.baseline, "reused": reused})
    notes = [why_not] if why_not else []
    cost = facts.cost or {}
    if cost:
        dollars = cost.get("dollars")
        price = "no price known" if dollars is None else f"${dollars:,.2f}"
        reuse = "its answers were reused, so the evaluation asked the base model nothing" if reused else ""
        notes.append(
            f"baseline cost (before tuning): {cost.get('calls', 0):,} calls, about "
            f"{cost.get('input_tokens', 0):,} input tokens and at most {cost.get('max_output_tokens', 0):,} "
            f"output tokens: {price}" + (f"; {reuse}" if reuse else "")
        )
    return facts, notes


def decide_task(job: JobRecord, references: list[str], prompts: list[str]) -> TaskChoice:
    """The request's task decision: ``task`` (the user's: explicit), else ``inferred_task`` (ingest's
    rule, with its evidence), else the same rule on the test split; labels from the request."""
    return choice_from_request(job.request, references, prompts)


def task_prompt(example: TestExample) -> str:
    """The prompt as the task rule reads it at ingest: system instruction, then every turn but the last."""
    system = content_text(example.system_instruction) if example.system_instruction else ""
    return "\n\n".join(text for text in (system, example.prompt_text) if text)


def report_examples(predictions: list[Prediction]) -> list[ExampleComparison]:
    """Examples where the two models disagree first: they show what tuning changed."""
    ordered = sorted(predictions, key=lambda p: (p.base_output == p.tuned_output, p.index))
    return [
        ExampleComparison(
            prompt=p.prompt, reference=p.reference, base_output=p.base_output, tuned_output=p.tuned_output
        )
        for p in ordered[:REPORT_EXAMPLES]
    ]

"""Champion and challenger: a newly tuned model compared with the one it would replace.

A job's lineage is its request's ``lineage`` label (upload setting ``lineage``), else its display
name (the uploaded file's name): uploads of the same dataset over time share it. When the job
being evaluated (the challenger) has an earlier job of the same lineage whose evaluation was
reported, that job's evaluated endpoint (its best checkpoint's, else its tuned endpoint) is the
champion. At finalize the champion is asked the first ``SFTPIPE_CHAMPION_MAX_EXAMPLES`` test
examples of the challenger's test split, with the same generation settings, and both are scored on
those examples with the task's metrics and a paired bootstrap: the challenger is "better" or
"worse" only when the primary delta's interval excludes zero, as for the verdict.

The champion's calls are bounded by the invocation's deadline like the judge's; examples whose
champion call failed are scored as empty answers and counted. A champion endpoint that no longer
answers (undeployed) fails every call: the section says so instead of a comparison.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import orjson
from google.cloud.firestore_v1.base_query import FieldFilter

from shared.evaluation.confidence import excludes_zero, paired_bootstrap
from shared.evaluation.metrics import Calls, TaskChoice, compute_metrics
from shared.evaluation.report import ChampionComparison, ChampionMetric, ChampionVerdict
from shared.evaluation.runner import GenerationOptions, Prediction, TestExample, run_predictions
from shared.logging import get_logger
from shared.runtime import Runtime
from shared.state.jobs import JobRecord, lineage_of

log = get_logger("sftpipe.completion")

#: Jobs of one lineage read to find the champion (the newest reported one wins).
LINEAGE_SCAN_LIMIT = 50


#: The function calls of the references, the champion's answers and the challenger's answers.
CallsCompared = tuple[Sequence[Calls], Sequence[Calls], Sequence[Calls]]


def find_champion(runtime: Runtime, job: JobRecord) -> JobRecord | None:
    """The newest other job of ``job``'s lineage whose evaluation was reported before this one."""
    lineage = lineage_of(job.request)
    if not lineage:
        return None
    jobs = runtime.firestore.collection(runtime.settings.jobs_collection)
    query = jobs.where(filter=FieldFilter("lineage", "==", lineage)).limit(LINEAGE_SCAN_LIMIT)
    found: list[JobRecord] = []
    for snapshot in query.stream():
        data = snapshot.to_dict() or {}
        if snapshot.id == job.job_id or data.get("evaluation_status") not in ("REPORTED", "DONE"):
            continue
        if not (data.get("evaluated_endpoint") or data.get("tuned_endpoint")):
            continue
        try:
            found.append(JobRecord.model_validate(data))
        except ValueError:
            continue
    cutoff = job.ended_at
    earlier = [c for c in found if c.ended_at and (cutoff is None or c.ended_at <= cutoff)]
    earlier.sort(key=lambda c: c.ended_at or cutoff)
    return earlier[-1] if earlier else None


def compare(
    champion_outputs: Sequence[str | None],
    challenger_outputs: Sequence[str | None],
    references: Sequence[str],
    choice: TaskChoice,
    prompts: Sequence[bytes] | None = None,
    *,
    calls: CallsCompared | None = None,
) -> tuple[list[ChampionMetric], ChampionVerdict, str]:
    """Both models scored on the same examples; the verdict on the primary metric's paired
    interval. ``calls``: the function calls of the references, the champion's and the
    challenger's answers, when the examples declare tools."""
    reference_calls, champion_calls, challenger_calls = calls or (None, None, None)
    champion = compute_metrics(
        choice.task,
        references,
        champion_outputs,
        labels=choice.labels,
        prompts=prompts,
        reference_calls=reference_calls,
        answer_calls=champion_calls,
    )
    challenger = compute_metrics(
        choice.task,
        references,
        challenger_outputs,
        labels=choice.labels,
        prompts=prompts,
        reference_calls=reference_calls,
        answer_calls=challenger_calls,
    )
    if champion.examples is None or challenger.examples is None:
        raise ValueError("compute_metrics keeps the per-example scores the intervals need")
    intervals = paired_bootstrap(champion.examples, challenger.examples)
    primary = champion.primary_metric
    metrics = []
    for name, champion_score in champion.scores.items():
        challenger_score = challenger.scores.get(name, 0.0)
        interval = intervals.get(name)
        metrics.append(
            ChampionMetric(
                name=name,
                champion=round(champion_score, 4),
                challenger=round(challenger_score, 4),
                delta=round(challenger_score - champion_score, 4),
                delta_ci=interval.delta if interval else None,
                significant=bool(interval and excludes_zero(interval.delta)),
                primary=name == primary,
            )
        )
    main = next(m for m in metrics if m.primary)
    if main.significant and main.delta > 0:
        verdict: ChampionVerdict = "challenger_better"
    elif main.significant and main.delta < 0:
        verdict = "champion_better"
    else:
        verdict = "not_distinguishable"
    reason = f"{primary} {main.champion:.3f} (champion) -> {main.challenger:.3f} (this model)"
    if main.delta_ci is not None:
        reason += f", delta 95% CI [{main.delta_ci[0]:+.3f}, {main.delta_ci[1]:+.3f}]"
    return metrics, verdict, reason


def champion_comparison(
    runtime: Runtime,
    job: JobRecord,
    examples: Sequence[TestExample],
    predictions: Sequence[Prediction],
    choice: TaskChoice,
    *,
    deadline: float | None,
) -> ChampionComparison | None:
    """Ask the champion (if there is one) and compare; None when the job has no champion or the
    setting is 0."""
    settings = runtime.settings
    if settings.champion_max_examples <= 0:
        return None
    champion = find_champion(runtime, job)
    if champion is None:
        return None
    endpoint = champion.evaluated_endpoint or champion.tuned_endpoint or ""
    subset = list(examples[: settings.champion_max_examples])
    options = GenerationOptions.from_settings(settings, job.base_model, examples)
    began = time.monotonic()
    answers = run_predictions(
        settings, subset, base_model=None, tuned_model=endpoint, options=options, deadline=deadline
    )
    seconds = round(time.monotonic() - began, 1)
    answered = {p.index: p for p in answers}
    champion_outputs = [answered[e.index].tuned_output if e.index in answered else None for e in subset]
    failed = sum(output is None for output in champion_outputs)
    lineage = lineage_of(job.request) or ""
    base = {
        "job_id": champion.job_id,
        "endpoint": endpoint,
        "lineage": lineage,
        "ended_at": champion.ended_at,
        "examples": len(subset),
        "failed": failed,
        "seconds": seconds,
    }
    if failed == len(subset):
        return ChampionComparison(
            **base, reason=f"the champion's endpoint {endpoint} answered none of the {len(subset)} examples"
        )
    by_index = {p.index: p for p in predictions}
    challenger_outputs = [by_index[e.index].tuned_output for e in subset]
    references = [e.reference for e in subset]
    prompts = [orjson.dumps([e.system_instruction, e.contents]) for e in subset]
    calls = (
        [e.reference_calls for e in subset],
        [answered[e.index].tuned_calls if e.index in answered else [] for e in subset],
        [by_index[e.index].tuned_calls for e in subset],
    )
    metrics, verdict, reason = compare(
        champion_outputs, challenger_outputs, references, choice, prompts, calls=calls
    )
    log.info("compared with the champion", extra={"champion_job_id": champion.job_id, "verdict": verdict})
    return ChampionComparison(**base, metrics=metrics, verdict=verdict, reason=reason)

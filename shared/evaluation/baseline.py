"""The baseline before spend: the base model scored on the test split before any tuning job exists.

A job whose request has a test split is created BASELINE (``shared.tuning.submit``). Its first
``job-event/v1`` brings it here, to completion, which owns the machinery this needs: the base
model is asked every test example in checkpointed chunks under a lease, exactly like the final
evaluation (``shared.evaluation.record`` on ``baselines/{job_id}``, chunks under
``reports/<job_id>/baseline/chunks/``, ``baseline-continuation/v1`` when an invocation runs out of
time; the reconciler continues one whose lease lapsed). Then, once:

1. REPORTED: the base model's scores (the task's metrics, as the final evaluation computes them)
   go on ``baselines/{job_id}``, ``jobs/{job_id}.baseline``, ``datasets/{dataset_id}.baseline``
   and the ingest report (``report.json`` gains ``baseline``, ``report.md`` a section);
2. the request's ``baseline_gate`` decides: met, the job ends BASELINE_MET and no tuning job is
   ever created (completion's notice for that terminal state says why); otherwise the job moves
   to QUEUED, one baseline notice goes to each channel ("baseline: macro_f1 0.42 on 120 test
   examples; tuning job queued"), and the request is published again so that a tuner dispatches
   it at once (the poller's tick would otherwise);
3. DONE.

A redelivery at any point repeats only what is missing: the transition only moves forward, each
notice is recorded per channel, a duplicate request is a duplicate to the tuner.

The final evaluation reuses these answers instead of asking the base model again
(:func:`reusable_answers`) when they were asked with the same generation settings of the same
test split; otherwise it asks again and says why. With ``few_shot: K`` the base model's prompts
begin with the first K training examples (every turn of each), so the final comparison is tuned
model against K-shot base model. A baseline that cannot be taken (its test split is unreadable)
does not strand the job: the job is queued and the notice gives the reason.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from google.api_core import exceptions as gexc

from shared.budgets import heartbeat_interval_s
from shared.errors import PermanentError
from shared.evaluation.chunks import ChunkStage, merged_predictions, publish_continuation, run_chunks
from shared.evaluation.finalize import decide_task, task_prompt
from shared.evaluation.gate import BaselineGate
from shared.evaluation.inputs import load_test_examples, reports_bucket, split_uri
from shared.evaluation.metrics import compute_metrics
from shared.evaluation.record import (
    DONE,
    FAILED,
    REPORTED,
    RUNNING,
    LeaseLostError,
    acquire,
    release,
    renew_lease,
)
from shared.evaluation.report import prompting_label
from shared.evaluation.runner import GenerationOptions, Prediction, TestExample
from shared.leases import Heartbeat
from shared.logging import get_logger
from shared.messages import BaselineContinuationV1, TuningRequestV1
from shared.pricing import inference_usd
from shared.runtime import Runtime
from shared.state.jobs import BASELINE, BASELINE_MET, QUEUED, TERMINAL, JobRecord
from shared.state.store import JobStore
from shared.tuning.backend import local_stand_in

if TYPE_CHECKING:
    from google.cloud import firestore

log = get_logger("sftpipe.baseline")

#: The generation settings that change an answer: a baseline is reused only when these match.
ANSWER_SETTINGS = ("temperature", "max_output_tokens", "thinking_budget")


def baseline_ref(runtime: Runtime, job_id: str) -> firestore.DocumentReference:
    return runtime.firestore.collection(runtime.settings.baselines_collection).document(job_id)


def baseline_folder(job_id: str) -> str:
    return f"{job_id}/baseline"


def answer_settings(options: GenerationOptions) -> dict[str, Any]:
    values = asdict(options)
    return {name: values[name] for name in ANSWER_SETTINGS}


# --- Running it --------------------------------------------------------------------------------


def handle_baseline(
    job: JobRecord, runtime: Runtime, *, started: float, message_cursor: int
) -> dict[str, Any] | None:
    """Take (or continue, or conclude) the job's baseline; None when there is nothing to do."""
    ref = baseline_ref(runtime, job.job_id)
    snapshot = ref.get()
    if not snapshot.exists and job.status != BASELINE:
        log.info("no baseline to take: the job is %s", job.status)
        return None
    if snapshot.exists and snapshot.to_dict().get("status") in (DONE, FAILED):
        log.info("duplicate message: the baseline is done")
        return None
    owner = uuid.uuid4().hex
    try:
        doc = acquire(ref, runtime, job, owner, message_cursor)
    except PermanentError as exc:
        return _baseline_failed(job, runtime, ref, exc)
    if doc is None:
        return None
    heartbeat = Heartbeat(
        lambda: renew_lease(ref, runtime, owner),
        max_hold_s=runtime.settings.function_timeout_s,
        interval_s=heartbeat_interval_s(runtime.settings.idempotency_lease_s),
        what=f"baseline lease of {job.job_id}",
    )
    try:
        with heartbeat:
            return _baseline_held(job, runtime, ref, owner, doc, started=started)
    except LeaseLostError:
        log.warning("baseline lease lost to another invocation; stopping")
        return None
    except PermanentError as exc:
        release(ref, runtime, owner)
        if exc.code == "notify_failed":
            raise
        return _baseline_failed(job, runtime, ref, exc)
    except BaseException:
        release(ref, runtime, owner)
        raise


def _baseline_held(
    job: JobRecord, runtime: Runtime, ref: Any, owner: str, doc: dict[str, Any], *, started: float
) -> dict[str, Any] | None:
    if doc["status"] == RUNNING:
        examples = load_test_examples(runtime, doc["test_uri"], doc["test_generation"])
        if len(examples) != doc["total"]:
            raise PermanentError(
                f"the test file has {len(examples)} examples, the baseline started with {doc['total']}",
                code="test_split_changed",
            )
        shots, shot_examples = few_shot_turns(runtime, job)
        stage = ChunkStage(
            folder=baseline_folder(job.job_id), base_model=job.base_model, tuned_model=None, base_shots=shots
        )
        cursor, _ = run_chunks(
            ref, runtime, job, examples=examples, doc=doc, owner=owner, started=started, stage=stage
        )
        if cursor < doc["total"]:
            release(ref, runtime, owner)
            publish_continuation(runtime, job, ref, cursor, BaselineContinuationV1)
            return {"job_id": job.job_id, "status": RUNNING, "cursor": cursor, "total": doc["total"]}
        doc = _report_baseline(
            ref, runtime, job, examples, owner, shots=shots, shot_examples=shot_examples, started=started
        )
    return _conclude(ref, runtime, job, doc["baseline"])


def few_shot_turns(runtime: Runtime, job: JobRecord) -> tuple[tuple[dict[str, Any], ...], int]:
    """Every turn of the first ``few_shot`` examples of the training split, and how many examples
    that is (fewer when the split is shorter); ``((), 0)``: zero-shot.

    Read line by line from the prepared training file, so a large file costs K lines; an example
    ingest prepared is already valid Gemini tuning JSONL.
    """
    wanted = int(job.request.get("few_shot") or 0)
    if wanted <= 0:
        return (), 0
    bucket_name, name = split_uri(job.request["training_uri"])
    turns: list[dict[str, Any]] = []
    taken = 0
    try:
        with runtime.storage.bucket(bucket_name).blob(name).open("rb") as handle:
            for line in handle:
                if taken >= wanted:
                    break
                if not line.strip():
                    continue
                turns.extend(orjson.loads(line).get("contents") or [])
                taken += 1
    except gexc.NotFound as exc:
        raise PermanentError(
            f"training split {job.request['training_uri']} is gone: no few-shot examples",
            code="training_split_missing",
        ) from exc
    return tuple(turns), taken


def _report_baseline(
    ref: Any,
    runtime: Runtime,
    job: JobRecord,
    examples: list[TestExample],
    owner: str,
    *,
    shots: tuple[dict[str, Any], ...],
    shot_examples: int,
    started: float,
) -> dict[str, Any]:
    """Score the base model's answers and record them everywhere the user looks; REPORTED."""
    settings = runtime.settings
    doc = ref.get().to_dict()
    if doc.get("lease_owner") != owner:
        raise LeaseLostError(job.job_id)
    predictions = merged_predictions(runtime, baseline_folder(job.job_id), doc["chunks"], doc["total"])
    references = [p.reference for p in predictions]
    choice = decide_task(job, references, [task_prompt(e) for e in examples])
    prompts = [orjson.dumps([e.system_instruction, e.contents]) for e in examples]
    result = compute_metrics(
        choice.task,
        references,
        [p.base_output for p in predictions],
        labels=choice.labels,
        prompts=prompts,
        reference_calls=[p.reference_calls for p in predictions],
        answer_calls=[p.base_calls for p in predictions],
    )
    prefix = f"{settings.reports_prefix}{baseline_folder(job.job_id)}/"
    bucket = reports_bucket(runtime)
    bucket.blob(f"{prefix}predictions.jsonl").upload_from_string(
        b"".join(p.to_jsonl() for p in predictions), content_type="application/x-ndjson"
    )
    options = GenerationOptions.from_settings(settings, job.base_model, examples)
    now = datetime.now(UTC)
    baseline: dict[str, Any] = {
        "metrics": {name: round(value, 4) for name, value in result.scores.items()},
        "primary_metric": result.primary_metric,
        "task": choice.task.value,
        "examples": len(predictions),
        "failed": result.failed,
        "few_shot": shot_examples,
        "evaluated_at": now,
        "seconds": round((now - doc["started"]).total_seconds(), 1),
        "calls": sum(p.base_output is not None or p.base_error is not None for p in predictions),
        "test_uri": doc["test_uri"],
        "test_generation": doc["test_generation"],
        "answer_settings": answer_settings(options),
        "predictions_uri": f"gs://{settings.bucket}/{prefix}predictions.jsonl",
        "cost": baseline_cost(examples, job, options, local=bool(settings.tuning_api_url), shots=shots),
        **gate_outcome(job.request.get("baseline_gate"), choice.task.value, result.scores),
    }
    bucket.blob(f"{prefix}baseline.json").upload_from_string(
        orjson.dumps(baseline, option=orjson.OPT_INDENT_2), content_type="application/json"
    )
    ref.update({"status": REPORTED, "baseline": baseline, "updated": now})
    _record_everywhere(runtime, job, baseline)
    log.info(
        "baseline reported",
        extra={
            "primary_metric": baseline["primary_metric"],
            "score": baseline["metrics"].get(baseline["primary_metric"]),
            "examples": baseline["examples"],
            "gate_met": baseline["gate_met"],
            "elapsed_s": round(time.monotonic() - started, 1),
        },
    )
    return {**doc, "status": REPORTED, "baseline": baseline}


def gate_outcome(gate_text: str | None, task: str, scores: dict[str, float]) -> dict[str, Any]:
    """``gate``, ``gate_met`` (None: no gate, or it does not apply) and ``gate_note``."""
    if not gate_text:
        return {"gate": None, "gate_met": None, "gate_note": ""}
    gate = BaselineGate.parse(gate_text)
    if not gate.applies_to(task) or gate.metric not in scores:
        reported = ", ".join(sorted(scores))
        return {
            "gate": str(gate),
            "gate_met": None,
            "gate_note": f"baseline_gate {gate} was not applied: this {task} run reports {reported}",
        }
    score = scores[gate.metric]
    met = gate.met_by(score)
    verb = "meets" if met else "does not meet"
    return {
        "gate": str(gate),
        "gate_met": met,
        "gate_note": f"the base model {verb} baseline_gate {gate} ({gate.metric} {score:.3f})",
    }


def baseline_cost(
    examples: list[TestExample],
    job: JobRecord,
    options: GenerationOptions,
    *,
    local: bool,
    shots: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """What the baseline's calls cost at most: prompt tokens (few-shot turns included) are UTF-8
    bytes of the JSON / 4 (as for the datasets), output tokens the evaluation's ceiling per call;
    0 on the local tuning service."""
    shot_tokens = -(-len(orjson.dumps(shots)) // 4) if shots else 0
    input_tokens = sum(
        shot_tokens + -(-len(orjson.dumps([e.system_instruction, e.contents])) // 4) for e in examples
    )
    output_tokens = len(examples) * options.max_output_tokens
    dollars = 0.0 if local else inference_usd(job.base_model, input_tokens, output_tokens)
    return {
        "calls": len(examples),
        "input_tokens": input_tokens,
        "max_output_tokens": output_tokens,
        "dollars": dollars,
    }


def _record_everywhere(runtime: Runtime, job: JobRecord, baseline: dict[str, Any]) -> None:
    """The baseline on the job, the dataset and the ingest report (each write is idempotent)."""
    settings = runtime.settings
    runtime.firestore.collection(settings.jobs_collection).document(job.job_id).update({"baseline": baseline})
    dataset_ref = runtime.firestore.collection(settings.datasets_collection).document(job.dataset_id)
    snapshot = dataset_ref.get()
    if not snapshot.exists:
        return
    dataset_ref.set({"baseline": {**baseline, "job_id": job.job_id}}, merge=True)
    report_uri = str(snapshot.to_dict().get("report_uri") or "")
    if report_uri.endswith("/report.json"):
        _add_to_ingest_report(runtime, report_uri, job, baseline)


def _add_to_ingest_report(
    runtime: Runtime, report_uri: str, job: JobRecord, baseline: dict[str, Any]
) -> None:
    bucket_name, name = split_uri(report_uri)
    bucket = runtime.storage.bucket(bucket_name)
    try:
        report = orjson.loads(bucket.blob(name).download_as_bytes())
        markdown = bucket.blob(name.removesuffix(".json") + ".md").download_as_text()
    except gexc.NotFound:
        log.warning("the ingest report is gone; the baseline is recorded on the dataset only")
        return
    report["baseline"] = orjson.loads(orjson.dumps({**baseline, "job_id": job.job_id}))
    bucket.blob(name).upload_from_string(
        orjson.dumps(report, option=orjson.OPT_INDENT_2), content_type="application/json"
    )
    section = baseline_markdown(baseline)
    head, _, _ = markdown.partition(BASELINE_HEADING)
    bucket.blob(name.removesuffix(".json") + ".md").upload_from_string(
        f"{head.rstrip()}\n\n{section}", content_type="text/markdown"
    )


BASELINE_HEADING = "## Baseline (base model, before tuning)"


def baseline_line(baseline: dict[str, Any]) -> str:
    """``macro_f1 0.420 on 120 test examples (zero-shot)``."""
    primary = baseline["primary_metric"]
    score = baseline["metrics"].get(primary)
    prompting = prompting_label(int(baseline.get("few_shot") or 0))
    value = f"{score:.3f}" if isinstance(score, float | int) else "n/a"
    return f"{primary} {value} on {baseline['examples']:,} test examples ({prompting})"


def baseline_markdown(baseline: dict[str, Any]) -> str:
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(baseline["metrics"].items()))
    cost = baseline.get("cost") or {}
    dollars = cost.get("dollars")
    price = "no price known" if dollars is None else f"${dollars:,.2f}"
    lines = [
        BASELINE_HEADING,
        "",
        f"Baseline: {baseline_line(baseline)}, taken before any tuning job was created.",
        "",
        "| metric | base model |",
        "|---|---|",
        rows,
        "",
        f"Cost: {cost.get('calls', 0):,} calls, about {cost.get('input_tokens', 0):,} input tokens "
        f"and at most {cost.get('max_output_tokens', 0):,} output tokens ({price}); "
        f"{baseline.get('seconds', 0):g} s.",
    ]
    if baseline.get("gate_note"):
        lines += ["", f"Gate: {baseline['gate_note']}."]
    return "\n".join(lines) + "\n"


# --- Concluding it -----------------------------------------------------------------------------


def gate_met_reason(baseline: dict[str, Any]) -> str:
    return (
        f"{baseline['gate_note']} on the test split ({baseline_line(baseline)}), so no tuning job was created"
    )


def _conclude(ref: Any, runtime: Runtime, job: JobRecord, baseline: dict[str, Any]) -> dict[str, Any]:
    """Gate, queue (or end) the job, tell the user, hand the job to a tuner; DONE."""
    from shared.tuning.submit import publish_event

    settings = runtime.settings
    store = JobStore(runtime.firestore, settings)
    if baseline.get("gate_met"):
        store.record_transition(
            job.job_id, BASELINE_MET, detail=gate_met_reason(baseline), allow_from=[BASELINE]
        )
        store.publish_pending(lambda event: publish_event(runtime, event))
        ref.update(
            {"status": DONE, "finished": datetime.now(UTC), "lease_owner": None, "lease_expires": None}
        )
        log.info("baseline gate met: no tuning job created", extra={"gate": baseline.get("gate")})
        return {"job_id": job.job_id, "status": BASELINE_MET}
    if _queue(runtime, store, job, f"baseline taken: {baseline_line(baseline)}"):
        _notify_baseline(ref, runtime, job, baseline)
    else:
        log.info("the job ended (cancelled) before its baseline did: nothing queued, nobody told")
    ref.update({"status": DONE, "finished": datetime.now(UTC), "lease_owner": None, "lease_expires": None})
    return {"job_id": job.job_id, "status": DONE, "baseline": baseline_line(baseline)}


def _queue(runtime: Runtime, store: JobStore, job: JobRecord, detail: str) -> bool:
    """BASELINE -> QUEUED (once), its event published, and the request handed to a tuner; False
    when the job had already ended (cancelled while its baseline ran)."""
    from shared.tuning.submit import publish_event

    store.record_transition(
        job.job_id, QUEUED, fields={"queued_at": datetime.now(UTC)}, detail=detail, allow_from=[BASELINE]
    )
    store.publish_pending(lambda published: publish_event(runtime, published))
    current = store.get(job.job_id)
    if current is None or current.status in TERMINAL:
        return False
    # The tuner finds the job already there and dispatches the queue; a duplicate is harmless.
    request = TuningRequestV1.model_validate(job.request)
    runtime.publish(runtime.settings.tuning_requests_topic, request.to_json(), **request.attributes())
    log.info("job queued after its baseline; request handed to the tuner")
    return True


def _notify_baseline(ref: Any, runtime: Runtime, job: JobRecord, baseline: dict[str, Any]) -> None:
    from shared.evaluation.notices import notify_targets
    from shared.notify.content import BaselineOutcome
    from shared.notify.notifier import notify_once

    outcome = BaselineOutcome(
        job_id=job.job_id,
        dataset_id=job.dataset_id,
        base_model=job.base_model,
        summary_line=baseline_line(baseline),
        metrics=baseline.get("metrics") or {},
        gate_note=baseline.get("gate_note") or "",
        error=baseline.get("error") or "",
        served_locally_by=local_stand_in(runtime.settings),
    )
    notify_once(ref, outcome, runtime.settings, notify_targets(job))


def _baseline_failed(job: JobRecord, runtime: Runtime, ref: Any, exc: PermanentError) -> dict[str, Any]:
    """A baseline that cannot be taken must not strand the job: queue it and say why."""
    from shared.evaluation.notices import notify_targets
    from shared.notify.content import BaselineOutcome
    from shared.notify.notifier import notify_once

    reason = f"the baseline could not be taken: {exc.message}"
    log.error(reason, extra={"error_code": exc.code})
    ref.set(
        {
            "job_id": job.job_id,
            "dataset_id": job.dataset_id,
            "status": FAILED,
            "reason": reason,
            "lease_owner": None,
            "lease_expires": None,
            "updated": datetime.now(UTC),
        },
        merge=True,
    )
    store = JobStore(runtime.firestore, runtime.settings)
    _queue(runtime, store, job, reason)
    outcome = BaselineOutcome(
        job_id=job.job_id, dataset_id=job.dataset_id, base_model=job.base_model, error=reason
    )
    notify_once(ref, outcome, runtime.settings, notify_targets(job))
    return {"job_id": job.job_id, "status": FAILED, "reason": reason}


# --- Reusing it --------------------------------------------------------------------------------


def reusable_answers(
    runtime: Runtime, job: JobRecord, evaluation: dict[str, Any], options: GenerationOptions
) -> tuple[dict[int, Prediction] | None, str]:
    """The baseline's base-model answers by example index, when the final evaluation may use them
    (same test split and generation, same answer settings); else None and why not ("" when the
    job has no baseline)."""
    baseline = job.baseline
    if not baseline:
        return None, ""
    if (baseline.get("test_uri"), baseline.get("test_generation")) != (
        evaluation.get("test_uri"),
        evaluation.get("test_generation"),
    ):
        return None, "the baseline was taken on another test file, so the base model was asked again"
    if baseline.get("answer_settings") != answer_settings(options):
        return None, (
            "the generation settings changed since the baseline "
            f"({baseline.get('answer_settings')} then, {answer_settings(options)} now), "
            "so the base model was asked again"
        )
    bucket_name, name = split_uri(str(baseline.get("predictions_uri") or ""))
    try:
        data = runtime.storage.bucket(bucket_name).blob(name).download_as_bytes()
    except gexc.NotFound:
        return None, "the baseline's answers are gone, so the base model was asked again"
    answers = {
        p.index: p
        for p in (Prediction.model_validate_json(line) for line in data.splitlines() if line.strip())
    }
    if len(answers) != evaluation.get("total"):
        return None, "the baseline does not cover the test split, so the base model was asked again"
    return answers, ""

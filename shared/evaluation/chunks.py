"""An evaluation in chunks: each chunk's answers are written to its own object before the cursor
moves, so an invocation that dies loses at most the chunk it was on; the next invocation is a
continuation message. :func:`merged_predictions` reads them back, checking they cover the test
split exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.budgets import EVALUATION_RECORD_MARGIN_S
from shared.errors import PermanentError
from shared.evaluation.inputs import reports_bucket
from shared.evaluation.record import advance
from shared.evaluation.runner import (
    GenerationOptions,
    Prediction,
    TestExample,
    chunk_name,
    chunk_object_name,
    chunk_ranges_cover,
    parse_chunk_name,
    plan_chunk,
    run_predictions,
    truncation_counts,
)
from shared.logging import get_logger
from shared.messages import BaselineContinuationV1, EvaluationContinuationV1
from shared.runtime import Runtime
from shared.state.jobs import JobRecord

if TYPE_CHECKING:
    pass

log = get_logger("sftpipe.completion")


@dataclass(frozen=True)
class ChunkStage:
    """Who is asked in a stage's chunks, and where its chunk objects go.

    The evaluation asks both models (the base model only where the baseline's answers cannot be
    reused); the baseline asks the base model alone, with its few-shot turns, and keeps its chunks
    under ``reports/<job_id>/baseline/``.
    """

    #: ``<job_id>`` or ``<job_id>/baseline``: the chunks are ``reports/<folder>/chunks/``.
    folder: str
    base_model: str | None
    tuned_model: str | None
    base_shots: tuple[dict[str, Any], ...] = ()
    reused_base: Mapping[int, Prediction] | None = None


def evaluation_stage(
    job: JobRecord,
    reused_base: Mapping[int, Prediction] | None = None,
    tuned_endpoint: str | None = None,
) -> ChunkStage:
    """The final evaluation's chunks: base model (where its baseline answers cannot be reused)
    and ``tuned_endpoint`` (the best checkpoint's; default the job's tuned endpoint)."""
    return ChunkStage(
        folder=job.job_id,
        base_model=job.base_model,
        tuned_model=tuned_endpoint or job.tuned_endpoint or "",
        reused_base=reused_base,
    )


def run_chunks(
    ref: Any,
    runtime: Runtime,
    job: JobRecord,
    *,
    examples: list[TestExample],
    doc: dict[str, Any],
    owner: str,
    started: float,
    stage: ChunkStage | None = None,
) -> tuple[int, int]:
    """Evaluate chunks from the stored cursor until done or out of time: (new cursor, chunks done)."""
    settings = runtime.settings
    stage = stage or evaluation_stage(job)
    cursor = doc["cursor"]
    chunks_done = 0
    slowest_chunk_s = 0.0
    while (chunk := plan_chunk(cursor, len(examples), settings.evaluation_chunk_size)) is not None:
        elapsed = time.monotonic() - started
        if slowest_chunk_s and elapsed + slowest_chunk_s > settings.evaluation_time_budget_s:
            log.info(
                "time budget reached, continuing in a new invocation",
                extra={"cursor": cursor, "elapsed_s": round(elapsed, 1)},
            )
            break
        start, end = chunk
        chunk_started = time.monotonic()
        predictions = run_predictions(
            settings,
            examples[start:end],
            base_model=stage.base_model,
            tuned_model=stage.tuned_model,
            options=GenerationOptions.from_settings(settings, job.base_model, examples),
            deadline=started + settings.function_timeout_s - EVALUATION_RECORD_MARGIN_S,
            base_shots=stage.base_shots,
            reused_base=stage.reused_base,
        )
        cut_short = len(predictions) < end - start
        end = start + len(predictions)  # the calls that could not end in time are the next chunk's
        reports_bucket(runtime).blob(
            chunk_object_name(settings.reports_prefix, stage.folder, start, end)
        ).upload_from_string(b"".join(p.to_jsonl() for p in predictions), content_type="application/x-ndjson")
        cursor = advance(
            ref,
            runtime,
            owner,
            start,
            end,
            base_failures=sum(p.base_output is None for p in predictions) if stage.base_model else 0,
            tuned_failures=sum(p.tuned_output is None for p in predictions) if stage.tuned_model else 0,
            truncated=truncation_counts(predictions),
        )
        chunks_done += 1
        chunk_s = time.monotonic() - chunk_started
        slowest_chunk_s = max(slowest_chunk_s, chunk_s)
        log.info("chunk evaluated", extra={"chunk": chunk_name(start, end), "seconds": round(chunk_s, 2)})
        if cut_short:
            log.info(
                "chunk cut short: no call starts that could outlive the invocation; continuing",
                extra={"cursor": cursor, "elapsed_s": round(time.monotonic() - started, 1)},
            )
            break
    return cursor, chunks_done


def publish_continuation(
    runtime: Runtime,
    job: JobRecord,
    ref: Any,
    cursor: int,
    message_type: type[EvaluationContinuationV1 | BaselineContinuationV1] = EvaluationContinuationV1,
) -> None:
    from google.cloud import firestore

    message = message_type(job_id=job.job_id, dataset_id=job.dataset_id, cursor=cursor)
    message_id = runtime.publish(runtime.settings.job_events_topic, message.to_json(), **message.attributes())
    # Recorded after the publish: if this invocation dies in between, the message that started it
    # is not stale and its redelivery carries the evaluation on.
    ref.update({"continuation_cursor": firestore.Maximum(cursor)})
    log.info(
        "%s continues in a new invocation",
        "baseline" if message_type is BaselineContinuationV1 else "evaluation",
        extra={"cursor": cursor, "message_id": message_id},
    )


def merged_predictions(runtime: Runtime, folder: str, chunks: list[str], total: int) -> list[Prediction]:
    """Every chunk of ``reports/<folder>/chunks/``, in order; PermanentError unless they tile 0..total."""
    ranges = [parse_chunk_name(name) for name in chunks]
    if not chunk_ranges_cover(ranges, total):
        raise PermanentError(
            f"evaluation chunks {sorted(chunks)} do not cover 0..{total} exactly", code="bad_chunks"
        )
    bucket = reports_bucket(runtime)
    predictions: list[Prediction] = []
    for start, end in sorted(ranges):
        data = bucket.blob(
            chunk_object_name(runtime.settings.reports_prefix, folder, start, end)
        ).download_as_bytes()
        rows = [Prediction.model_validate_json(line) for line in data.splitlines() if line.strip()]
        if [row.index for row in rows] != list(range(start, end)):
            raise PermanentError(
                f"chunk {chunk_name(start, end)} does not hold examples {start}..{end - 1}", code="bad_chunks"
            )
        predictions.extend(rows)
    return predictions

"""Operator commands: ``sftpipe status [JOB_ID] [--json]``, ``sftpipe cancel JOB_ID`` and
``sftpipe report JOB_ID [--json] [--out DIR]``.

They read the same settings as the functions (``eval "$(sftpipe stack env)"`` for the local stack).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from shared.cli.output import EXIT_FAILED, EXIT_OK, console, emit_json, error, metric_table, say

#: Jobs listed by `sftpipe status` without a job id (newest first).
STATUS_LIMIT = 50


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", nargs="?", help="one job (default: the newest jobs)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of job objects")


def add_cancel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the job to cancel")


def _store() -> Any:
    from shared.runtime import Runtime
    from shared.state.store import JobStore

    runtime = Runtime()
    return runtime, JobStore(runtime.firestore, runtime.settings)


def job_summary(job: Any, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    return {
        "job_id": job.job_id,
        "dataset_id": job.dataset_id,
        "state": job.status,
        "tuning_job_state": job.tuning_job_state,
        "tuning_job_state_since": job.tuning_job_state_since.isoformat()
        if job.tuning_job_state_since
        else None,
        "sub_states": [
            {"sub_state": e.sub_state, "state": e.state, "at": e.at.isoformat()} for e in job.sub_states
        ],
        "base_model": job.base_model,
        "tuning_job_name": job.tuning_job_name,
        "tuned_model": job.tuned_model,
        "tuned_endpoint": job.tuned_endpoint,
        "error": job.error,
        "created": job.created.isoformat() if job.created else None,
        "updated": job.updated.isoformat() if job.updated else None,
        "age_s": round((now - job.created).total_seconds(), 1) if job.created else None,
    }


def state_text(row: dict[str, Any], now: datetime | None = None) -> str:
    """The state as `sftpipe status` shows it: with the running sub-state, and for how long,
    while the job is PENDING or RUNNING (why a job has been PENDING for an hour)."""
    state = row["state"]
    sub_state = row.get("tuning_job_state")
    if not sub_state or state not in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING"):
        return state
    text = sub_state.removeprefix("TUNING_JOB_STATE_")
    since = row.get("tuning_job_state_since")
    if since:
        minutes = ((now or datetime.now(UTC)) - datetime.fromisoformat(since)).total_seconds() / 60
        text += f" for {minutes:.0f} min"
    return f"{state} ({text})"


def run_status(args: argparse.Namespace) -> int:
    _, store = _store()
    if args.job_id:
        job = store.get(args.job_id)
        if job is None:
            error("status", f"no job {args.job_id}")
            return EXIT_FAILED
        jobs = [job]
    else:
        jobs = store.recent(STATUS_LIMIT)
    rows = [job_summary(job) for job in jobs]
    if args.json:
        emit_json(rows)
        return EXIT_OK
    from rich.table import Table

    table = Table("job", "state", "base model", "dataset", "age", "endpoint")
    for row in rows:
        age = f"{row['age_s'] / 60:.0f} min" if row["age_s"] is not None else ""
        table.add_row(
            row["job_id"],
            state_text(row),
            row["base_model"],
            row["dataset_id"],
            age,
            row["tuned_endpoint"] or "",
        )
    console().print(table)
    return EXIT_OK


def run_cancel(args: argparse.Namespace) -> int:
    from shared.state.jobs import QUEUED, TERMINAL

    runtime, store = _store()
    job = store.get(args.job_id)
    if job is None:
        error("cancel", f"no job {args.job_id}")
        return EXIT_FAILED
    if job.status in TERMINAL:
        say(f"job {job.job_id} has already ended ({job.status})")
        return EXIT_OK
    if job.tuning_job_name is None:
        event = store.record_transition(
            job.job_id, "JOB_STATE_CANCELLED", detail="cancelled before submission", allow_from=[QUEUED]
        )
        if event is None:
            say(f"job {job.job_id} is being submitted; try again in a few seconds")
            return EXIT_FAILED
        say(f"job {job.job_id} cancelled before submission")
        return EXIT_OK
    runtime.tuning.tunings.cancel(name=job.tuning_job_name)
    say(f"cancel requested for {job.tuning_job_name}; the poller records CANCELLED")
    return EXIT_OK


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the job whose evaluation report to show")
    parser.add_argument("--json", action="store_true", help="print summary.json")
    parser.add_argument("--out", default=None, help="download report.html and summary.json into this folder")


def run_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    runtime, _ = _store()
    snapshot = (
        runtime.firestore.collection(runtime.settings.evaluations_collection).document(args.job_id).get()
    )
    evaluation = snapshot.to_dict() if snapshot.exists else None
    if not evaluation or not evaluation.get("summary_uri"):
        status = (evaluation or {}).get("status", "not started")
        error("report", f"no report for {args.job_id} yet (evaluation: {status})")
        return EXIT_FAILED
    bucket = runtime.storage.bucket(runtime.settings.bucket)
    prefix = f"{runtime.settings.reports_prefix}{args.job_id}/"
    summary = json.loads(bucket.blob(f"{prefix}summary.json").download_as_bytes())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        bucket.blob(f"{prefix}report.html").download_to_filename(str(out / "report.html"))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        emit_json(summary)
        return EXIT_OK
    out_console = console()
    out_console.print(metric_table(summary))
    out_console.print(f"report: {evaluation['report_uri']}", soft_wrap=True)
    if args.out:
        out_console.print(f"downloaded: {Path(args.out) / 'report.html'}", soft_wrap=True)
    return EXIT_OK

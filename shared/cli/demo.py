"""``sftpipe demo``: the whole pipeline, locally, on the bundled sample dataset.

Starts the local stack with the local tuning service (SmolLM2-135M by default, ``--tiny`` for a
one-minute run that shows the flow but learns nothing useful), uploads
``local/samples/reviews.jsonl`` under ``incoming/`` as a person would, follows the run live
(dataset validated -> job queued -> running with epoch and loss -> succeeded -> evaluation ->
notifications), prints the metric table base versus tuned and where the report, the Slack post
and the email are, and stops the stack.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from shared.cli.output import console as output_console
from shared.cli.output import metric_table

SAMPLE = Path(__file__).resolve().parents[2] / "local" / "samples" / "reviews.jsonl"
#: Upload settings of the demo (custom metadata, as a person would set them).
DEMO_METADATA = {"epochs": "2", "task": "classification", "learning-rate-multiplier": "5"}
#: Minutes the demo waits for the whole run before it gives up (and says where the logs are).
FOLLOW_TIMEOUT_MIN = {"smollm2": 20.0, "tiny": 5.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--file", type=Path, default=SAMPLE, help="dataset to upload (default: the bundled sample)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="use the tiny model: about a minute, no real improvement"
    )
    parser.add_argument(
        "--run-dir", type=Path, default=Path(".sftpipe/demo"), help="where the demo stack lives"
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")


def run(args: argparse.Namespace) -> int:
    from local.stack import Stack, StackError, StackOptions

    console = output_console(stderr=True)
    model = "tiny" if args.tiny else "smollm2"
    stack = Stack(args.run_dir)
    started = time.monotonic()
    try:
        with console.status(
            f"starting the local stack (emulators, fake-gcs-server, functions, tuning service on {model})"
        ):
            env = stack.up(StackOptions(tick_interval_s=3.0, model=model), log=console.log)
    except StackError as exc:
        console.print(f"[red]the local stack did not start:[/red] {exc}")
        return 1
    os.environ.update(env)
    try:
        return _follow(args.file, env, console, model=model, started=started, stack=stack)
    finally:
        if not args.keep:
            stack.down()
            console.log("stack stopped")


def _follow(path: Path, env: dict[str, str], console: Any, *, model: str, started: float, stack: Any) -> int:
    from google.cloud import firestore, storage
    from rich.live import Live

    project = env["SFTPIPE_PROJECT"]
    bucket = storage.Client(project=project).bucket(env["SFTPIPE_BUCKET"])
    db = firestore.Client(project=project)
    blob = bucket.blob(f"incoming/{path.name}")
    blob.metadata = DEMO_METADATA
    blob.upload_from_filename(str(path))
    console.log(f"uploaded {path} to gs://{bucket.name}/{blob.name} with metadata {DEMO_METADATA}")

    from shared.events import StorageObject

    dataset_id = StorageObject(bucket=bucket.name, name=blob.name, generation=blob.generation).dataset_id
    follower = _Follower(db, env, dataset_id)
    deadline = time.monotonic() + FOLLOW_TIMEOUT_MIN[model] * 60
    with Live(follower.render(started), console=console, refresh_per_second=2) as live:
        while time.monotonic() < deadline:
            follower.refresh()
            live.update(follower.render(started))
            if follower.finished:
                break
            time.sleep(1.0)
    if not console.is_terminal:  # off a terminal, Live prints its last frame without a newline
        console.line()
    if not follower.finished:
        console.print(
            f"[red]the run did not finish in {FOLLOW_TIMEOUT_MIN[model]:.0f} min; logs: {stack.log_dir}[/red]"
        )
        return 1
    return follower.conclude(bucket, console, Path(env["SFTPIPE_RUN_DIR"]), started)


def stage_rows(summary: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(stage, model calls, seconds, result) of each evaluation stage the summary records."""
    rows: list[tuple[str, str, str, str]] = []
    baseline = summary.get("baseline")
    if baseline:
        calls = (baseline.get("cost") or {}).get("calls", baseline.get("examples"))
        from shared.evaluation.report import prompting_label

        shots = prompting_label(baseline.get("few_shot"))
        primary = baseline.get("primary_metric", "")
        result = f"{primary} {baseline['metrics'].get(primary, 0.0):.3f} ({shots}), before the job"
        rows.append(("baseline", f"{calls}", f"{baseline.get('seconds', '')}", result))
    checkpoints = summary.get("checkpoints") or []
    if checkpoints:
        primary = summary.get("primary_metric", "")
        curve = ", ".join(
            f"{c['checkpoint_id']}{'*' if c['checkpoint_id'] == summary.get('best_checkpoint') else ''}: "
            f"{c['metrics'].get(primary, 0.0):.3f}"
            for c in checkpoints
        )
        rows.append(
            (
                "checkpoints",
                f"{sum(int(c.get('examples') or 0) for c in checkpoints)}",
                f"{sum(float(c.get('seconds') or 0) for c in checkpoints):.1f}",
                f"validation {primary} {curve}",
            )
        )
    counts = summary.get("counts") or {}
    reused = bool((baseline or {}).get("reused"))
    tests = int(counts.get("test_examples") or 0)
    # evaluation_duration_s runs from the evaluation's start to its report: the checkpoints, the
    # judge and the champion (rows of their own) are inside it.
    rows.append(
        (
            "test split",
            f"{tests if reused else 2 * tests}",
            f"{summary.get('evaluation_duration_s') or 0:.1f} in all",
            f"verdict {summary.get('verdict')}" + (" (base answers reused)" if reused else ""),
        )
    )
    judge = summary.get("judge")
    if judge:
        rate = judge.get("win_rate") or {}
        result = (
            f"tuned wins {rate.get('tuned', 0):.0%}, ties {rate.get('tie', 0):.0%}, base wins {rate.get('base', 0):.0%}"
            if rate
            else "no verdict parsed"
        )
        calls = (judge.get("cost") or {}).get("calls", "")
        rows.append(("judge", f"{calls}", f"{judge.get('seconds') or ''}", result))
    champion = summary.get("champion")
    if champion:
        rows.append(
            (
                "champion",
                f"{champion.get('examples')}",
                f"{champion.get('seconds') or ''}",
                f"{champion.get('verdict')}",
            )
        )
    return rows


def stage_table(summary: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="evaluation stages", expand=False)
    for column in ("stage", "model calls", "seconds", "result"):
        table.add_column(column)
    for row in stage_rows(summary):
        table.add_row(*row)
    return table


class _Follower:
    """Reads what the pipeline records (Firestore, the tuning service) and renders it."""

    def __init__(self, db: Any, env: dict[str, str], dataset_id: str) -> None:
        self.db = db
        self.env = env
        self.dataset_id = dataset_id
        self.dataset: dict[str, Any] = {}
        self.job: dict[str, Any] = {}
        self.evaluation: dict[str, Any] = {}
        self.baseline: dict[str, Any] = {}
        self.training: str = ""

    @property
    def finished(self) -> bool:
        if self.dataset.get("status") == "REJECTED":
            return True
        if self.job.get("status") in (
            "JOB_STATE_FAILED",
            "JOB_STATE_CANCELLED",
            "JOB_STATE_EXPIRED",
            "BASELINE_MET",
        ):
            return self._notified() >= 2
        # A job that had a baseline was notified twice per channel: the baseline, then the result.
        expected = 4 if self.job.get("baseline") else 2
        return bool(self.evaluation.get("report_uri")) and self._notified() >= expected

    def notifications(self) -> tuple[list[Path], list[Path]]:
        """This run's Slack posts and mails, oldest first. The sinks' folders outlive a run (the
        demo's run dir is reused), so a file counts only if it names this run's dataset."""

        def naming_this_run(folder: str, pattern: str) -> list[Path]:
            paths = sorted(Path(self.env[folder]).glob(pattern))
            return [path for path in paths if self.dataset_id in path.read_text(errors="replace")]

        return naming_this_run("SFTPIPE_SLACK_DIR", "*.json"), naming_this_run("SFTPIPE_MAIL_DIR", "*.eml")

    def _notified(self) -> int:
        slack, mails = self.notifications()
        return len(slack) + len(mails)

    def refresh(self) -> None:
        from google.cloud.firestore_v1.base_query import FieldFilter

        snapshot = self.db.collection("datasets").document(self.dataset_id).get()
        self.dataset = snapshot.to_dict() or {} if snapshot.exists else {}
        jobs = list(
            self.db.collection("jobs")
            .where(filter=FieldFilter("dataset_id", "==", self.dataset_id))
            .limit(1)
            .stream()
        )
        self.job = jobs[0].to_dict() if jobs else {}
        if self.job:
            evaluation = self.db.collection("evaluations").document(self.job["job_id"]).get()
            self.evaluation = evaluation.to_dict() or {} if evaluation.exists else {}
            baseline = self.db.collection("baselines").document(self.job["job_id"]).get()
            self.baseline = baseline.to_dict() or {} if baseline.exists else {}
            self.training = self._training_progress()

    def _training_progress(self) -> str:
        """The last training (and validation) loss, read from the job's experiment through the
        TensorBoard API, as the report reads it."""
        from shared.config import Settings
        from shared.tuning.experiment import ExperimentReadError, read_series

        experiment = self.job.get("experiment")
        if not experiment or not self.env.get("SFTPIPE_TUNING_API_URL"):
            return ""
        settings = Settings(tuning_api_url=self.env["SFTPIPE_TUNING_API_URL"])
        try:
            series = read_series(settings, experiment, ("/train_total_loss", "/eval_total_loss"))
        except ExperimentReadError:
            return ""
        train = series.get("/train_total_loss") or []
        if not train:
            return ""
        # Three significant digits: a tuned model's loss goes well below 0.001.
        text = f"step {train[-1].step}, training loss {train[-1].value:.3g}"
        evals = series.get("/eval_total_loss") or []
        if evals:
            text += f", validation loss {evals[-1].value:.3g}"
        return text

    def _baseline_progress(self) -> str:
        from shared.evaluation.baseline import baseline_line

        recorded = self.baseline.get("baseline")
        if recorded:
            return f"{baseline_line(recorded)}, {recorded.get('seconds')} s, before any tuning job"
        return f"{self.baseline.get('status')}: {self.baseline.get('cursor')}/{self.baseline.get('total')} test examples"

    def render(self, started: float) -> Any:
        from rich.table import Table

        table = Table(
            title=f"sftpipe demo: {time.monotonic() - started:.0f} s", show_header=False, expand=False
        )
        dataset = self.dataset
        if not dataset:
            table.add_row("dataset", "waiting for the ingest function")
        else:
            detail = f"{dataset.get('status')}"
            if dataset.get("status") in ("READY", "REJECTED"):
                split = dataset.get("split") or {}
                detail += (
                    f": {dataset.get('examples')} examples ({dataset.get('format')}, {dataset.get('shape')}); "
                    f"train {split.get('train')}, validation {split.get('validation')}, test {split.get('test')}"
                )
            table.add_row("dataset", detail)
        if self.baseline:
            table.add_row("baseline", self._baseline_progress())
        if self.job:
            table.add_row("tuning job", f"{self.job.get('status')} ({self.job.get('job_id')})")
            if self.training:
                table.add_row("training", self.training)
        if self.evaluation:
            total, cursor = self.evaluation.get("total"), self.evaluation.get("cursor")
            table.add_row("evaluation", f"{self.evaluation.get('status')}: {cursor}/{total} test examples")
        if self.evaluation.get("report_uri") or self.job.get("status", "").endswith(("FAILED", "CANCELLED")):
            table.add_row("notifications", f"{self._notified()} received (Slack + email)")
        return table

    def conclude(self, bucket: Any, console: Any, run_dir: Path, started: float) -> int:

        if self.dataset.get("status") == "REJECTED":
            console.print(f"[red]the dataset was rejected[/red]: {self.dataset.get('error_counts')}")
            return 1
        recorded = self.job.get("baseline")
        if recorded:
            console.print(f"baseline:    {self._baseline_progress()}", soft_wrap=True)
        if self.job.get("status") == "BASELINE_MET":
            console.print(
                f"the base model met the gate: {recorded.get('gate_note') if recorded else ''}; no tuning job"
            )
            return 0
        if not self.evaluation.get("report_uri"):
            console.print(
                f"[red]the tuning job ended {self.job.get('status')}[/red]: {self.job.get('error')}"
            )
            return 1
        job_id = self.job["job_id"]
        out = run_dir / "reports" / job_id
        out.mkdir(parents=True, exist_ok=True)
        prefix = f"reports/{job_id}/"
        summary = json.loads(bucket.blob(f"{prefix}summary.json").download_as_bytes())
        bucket.blob(f"{prefix}report.html").download_to_filename(str(out / "report.html"))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        console.print(metric_table(summary))
        console.print(stage_table(summary))
        slack, mails = self.notifications()
        console.print(f"report:      {out / 'report.html'}", soft_wrap=True)
        console.print(f"Slack post:  {slack[-1] if slack else '(none)'}", soft_wrap=True)
        console.print(f"email:       {mails[-1] if mails else '(none)'}", soft_wrap=True)
        console.print(f"done in {time.monotonic() - started:.0f} s")
        return 0

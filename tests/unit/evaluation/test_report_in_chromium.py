"""Open report.html in a real browser: it must render, without console errors, as a person sees it.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``). Set SFTPIPE_TEST_ARTIFACTS
to a directory to keep the screenshot for a look.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.evaluation.report import EvaluationSummary, ExampleComparison, render_report_html

pytestmark = pytest.mark.slow(3)

XSS = "<script>alert(1)</script>"


def _chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail(
            "chromium is not installed: run `apt-get install -y chromium` (the report test needs a real browser)"
        )
    return binary


def _run_chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on a file URL, console messages logged to stderr."""
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *extra,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def _console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_console_errors_are_detected(tmp_path: Path) -> None:
    """The check below would see a script error if the report had one."""
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>undefinedFunction()</script></body></html>")
    completed = _run_chromium(broken, tmp_path / "profile", "--dump-dom")
    assert any("Uncaught ReferenceError" in line for line in _console_messages(completed.stderr))


def test_report_renders_in_chromium_without_errors(
    tmp_path: Path, hostile_summary: EvaluationSummary, hostile_examples: list[ExampleComparison]
) -> None:
    report = tmp_path / "report.html"
    report.write_text(render_report_html(hostile_summary, hostile_examples), encoding="utf-8")
    screenshot = tmp_path / "report.png"

    shot = _run_chromium(
        report, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1200,2400"
    )
    dom = _run_chromium(report, tmp_path / "profile", "--dump-dom")

    assert _console_messages(shot.stderr + dom.stderr) == []
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 50_000  # a blank page is a few KB
    # The browser's own DOM: the dataset's script tag is text, not an element.
    assert "<script" not in dom.stdout
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom.stdout
    assert "Tuning report · job-&lt;script&gt;" in dom.stdout
    artifacts = os.environ.get("SFTPIPE_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(artifacts) / "report.png")
        shutil.copy(report, Path(artifacts) / "report.html")


def test_the_baseline_checkpoint_and_champion_sections_agree_with_summary_json(
    tmp_path: Path, hostile_summary: EvaluationSummary
) -> None:
    from datetime import UTC, datetime

    from shared.evaluation.report import (
        BaselineFacts,
        ChampionComparison,
        ChampionMetric,
        CheckpointScore,
        TuningFacts,
        VertexEvaluation,
    )

    summary = hostile_summary.model_copy(
        update={
            "baseline": BaselineFacts(
                metrics={"accuracy": 0.4125, "macro_f1": 0.3333},
                examples=80,
                evaluated_at=datetime(2026, 12, 2, 3, 0, tzinfo=UTC),
                few_shot=2,
                primary_metric="macro_f1",
                reused=True,
            ),
            "tuning": TuningFacts(submitted_at=datetime(2026, 12, 2, 3, 1, tzinfo=UTC)),
            "checkpoints": [
                CheckpointScore(
                    checkpoint_id="1",
                    epoch=1,
                    step=10,
                    endpoint=f"endpoints/{XSS}",
                    metrics={"macro_f1": 0.5},
                ),
                CheckpointScore(
                    checkpoint_id="2", epoch=2, step=20, endpoint="endpoints/2", metrics={"macro_f1": 0.75}
                ),
            ],
            "best_checkpoint": "2",
            "champion": ChampionComparison(
                job_id="older-job",
                endpoint="endpoints/9",
                lineage=f"reviews {XSS}",
                examples=80,
                metrics=[
                    ChampionMetric(
                        name="macro_f1",
                        champion=0.61,
                        challenger=0.74,
                        delta=0.13,
                        delta_ci=(0.05, 0.2),
                        significant=True,
                        primary=True,
                    )
                ],
                verdict="challenger_better",
                reason="macro_f1 0.610 (champion) -> 0.740 (this model)",
            ),
            "vertex_evaluation": VertexEvaluation(
                metrics=["rougeL"],
                output_uri_prefix="gs://b/reports/vertex-evaluation/j/",
                runs=[
                    {"checkpoint_id": "2", "scores": {"rouge/AVERAGE": 0.41}, "output_directory": "gs://b/o"}
                ],
            ),
        }
    )
    report = tmp_path / "report.html"
    report.write_text(render_report_html(summary), encoding="utf-8")
    dom = _run_chromium(report, tmp_path / "profile", "--dump-dom")
    assert _console_messages(dom.stderr) == []
    text = dom.stdout
    assert "<script" not in text
    # Each section's figures are summary.json's, as the browser shows them.
    stored = EvaluationSummary.model_validate_json(summary.to_json())
    assert stored.baseline is not None
    assert "Baseline, before tuning" in text
    assert "2-shot" in text
    assert f"{stored.baseline.metrics['macro_f1']:.3f}" in text
    assert "before the tuning job was submitted at 2026-12-02T03:01:00+00:00" in text
    assert "Checkpoints, validation split" in text
    assert "2 ★" in text
    assert "0.750" in text
    assert "This model is better than the champion" in text
    assert "reviews &lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Vertex AI evaluation" in text
    assert "rouge/AVERAGE 0.410" in text

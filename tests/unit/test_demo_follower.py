"""`make demo` reuses its run dir: what an earlier run's sinks wrote must not finish this run."""

from __future__ import annotations

from pathlib import Path

from shared.cli.demo import _Follower


def _follower(tmp_path: Path, dataset_id: str) -> _Follower:
    env = {"SFTPIPE_SLACK_DIR": str(tmp_path / "slack"), "SFTPIPE_MAIL_DIR": str(tmp_path / "mail")}
    for folder in env.values():
        Path(folder).mkdir()
    return _Follower(db=None, env=env, dataset_id=dataset_id)


def test_only_notifications_naming_this_runs_dataset_count(tmp_path: Path) -> None:
    follower = _follower(tmp_path, "reviews-new")
    earlier_post = tmp_path / "slack" / "1-a.json"
    earlier_post.write_text('{"text": "improved: reviews-old-1 (gemini on reviews-old)"}')
    (tmp_path / "mail" / "1-a.eml").write_text("Subject: [sftpipe] improved: reviews-old-1\n\nbody\n")
    follower.evaluation = {"report_uri": "gs://b/reports/reviews-new-1/report.html"}

    assert follower.notifications() == ([], [])
    assert not follower.finished  # the earlier run's two files do not end this one

    this_post = tmp_path / "slack" / "2-b.json"
    this_post.write_text('{"text": "improved: reviews-new-1 (gemini on reviews-new)"}')
    this_mail = tmp_path / "mail" / "2-b.eml"
    this_mail.write_text("Subject: [sftpipe] improved: reviews-new-1 (gemini on reviews-new)\n\nbody\n")

    assert follower.notifications() == ([this_post], [this_mail])
    assert follower.finished


def test_a_run_with_a_baseline_waits_for_both_notices_per_channel(tmp_path: Path) -> None:
    follower = _follower(tmp_path, "reviews-new")
    follower.job = {"job_id": "reviews-new-1", "status": "JOB_STATE_SUCCEEDED", "baseline": {"examples": 20}}
    follower.evaluation = {"report_uri": "gs://b/reports/reviews-new-1/report.html"}
    for index in range(2):  # the baseline's notice on each channel
        (tmp_path / "slack" / f"{index}-s.json").write_text("baseline: reviews-new-1")
    assert not follower.finished
    for index in range(2, 4):
        (tmp_path / "mail" / f"{index}-m.eml").write_text("Subject: improved: reviews-new-1")
    assert follower.finished


def test_the_stage_table_gives_each_stage_its_calls_seconds_and_result() -> None:
    from shared.cli.demo import stage_rows

    summary = {
        "primary_metric": "macro_f1",
        "verdict": "improved",
        "evaluation_duration_s": 30.0,
        "counts": {"test_examples": 20},
        "baseline": {
            "metrics": {"macro_f1": 0.1},
            "primary_metric": "macro_f1",
            "few_shot": 0,
            "seconds": 12.5,
            "reused": True,
            "cost": {"calls": 20},
        },
        "checkpoints": [
            {"checkpoint_id": "1", "metrics": {"macro_f1": 0.4}, "examples": 10, "seconds": 3.0},
            {"checkpoint_id": "2", "metrics": {"macro_f1": 0.6}, "examples": 10, "seconds": 3.5},
        ],
        "best_checkpoint": "2",
        "judge": {
            "win_rate": {"tuned": 0.5, "tie": 0.25, "base": 0.25},
            "cost": {"calls": 24},
            "seconds": 40.2,
        },
    }
    rows = {row[0]: row[1:] for row in stage_rows(summary)}
    assert rows["baseline"] == ("20", "12.5", "macro_f1 0.100 (zero-shot), before the job")
    assert rows["checkpoints"] == ("20", "6.5", "validation macro_f1 1: 0.400, 2*: 0.600")
    assert rows["test split"] == ("20", "30.0 in all", "verdict improved (base answers reused)")
    assert rows["judge"] == ("24", "40.2", "tuned wins 50%, ties 25%, base wins 25%")
    assert "champion" not in rows

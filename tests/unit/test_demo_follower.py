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

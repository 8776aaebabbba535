"""`sftpipe status` says why a job is PENDING: its running sub-state and for how long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.cli.jobs import job_summary, state_text
from shared.state.jobs import JobRecord

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _job(status: str, sub_state: str | None, minutes: int = 65) -> JobRecord:
    since = NOW - timedelta(minutes=minutes)
    return JobRecord.model_validate(
        {
            "job_id": "job-1",
            "dataset_id": "d",
            "request": {},
            "base_model": "gemini-2.5-flash",
            "status": status,
            "tuning_job_state": sub_state,
            "tuning_job_state_since": since if sub_state else None,
            "sub_states": [{"sub_state": sub_state, "state": status, "at": since}] if sub_state else [],
        }
    )


def test_a_pending_job_shows_its_sub_state_and_how_long_it_has_been_in_it() -> None:
    row = job_summary(_job("JOB_STATE_PENDING", "TUNING_JOB_STATE_WAITING_FOR_QUOTA"), NOW)

    assert state_text(row, NOW) == "JOB_STATE_PENDING (WAITING_FOR_QUOTA for 65 min)"
    assert row["sub_states"] == [
        {
            "sub_state": "TUNING_JOB_STATE_WAITING_FOR_QUOTA",
            "state": "JOB_STATE_PENDING",
            "at": (NOW - timedelta(minutes=65)).isoformat(),
        }
    ]


def test_an_ended_job_or_one_without_a_sub_state_shows_its_state_only() -> None:
    ended = job_summary(_job("JOB_STATE_SUCCEEDED", "TUNING_JOB_STATE_POST_PROCESSING"), NOW)
    plain = job_summary(_job("JOB_STATE_RUNNING", None), NOW)
    assert state_text(ended, NOW) == "JOB_STATE_SUCCEEDED"
    assert state_text(plain, NOW) == "JOB_STATE_RUNNING"

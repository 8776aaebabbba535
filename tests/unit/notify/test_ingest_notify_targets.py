"""Ingest filters an upload's notification targets before they reach the tuning request."""

from __future__ import annotations

from shared.config import Settings
from shared.events import StorageObject
from shared.ingest.upload import _notify_targets, _Outcome, _tuning_request
from shared.messages import Hyperparameters, NotifyTargets


def _outcome(emails: list[str]) -> _Outcome:
    return _Outcome(
        ok=True,
        report_json=b"{}",
        report_md="",
        facts={},
        split_counts={"train": 1, "validation": 0, "test": 0},
        top_errors=[],
        error_count=0,
        base_model="gemini-2.5-flash",
        hyperparameters=Hyperparameters(),
        task=None,
        notify_emails=emails,
    )


def test_a_disallowed_address_never_reaches_the_request() -> None:
    settings = Settings(_env_file=None, notify_email_domains="example.com")
    obj = StorageObject(bucket="sftpipe-local", name="incoming/<!here>.jsonl", generation=1, size=10)
    outcome = _outcome(["owner@example.com", "x@evil.example"])

    request = _tuning_request(obj, outcome, {"train": "gs://sftpipe-local/prepared/d/train.jsonl"}, settings)

    assert request.notify == NotifyTargets(emails=["owner@example.com"])
    assert _notify_targets(outcome, settings)[1] == [
        "not notified: x@evil.example (domain evil.example is not on SFTPIPE_NOTIFY_EMAIL_DOMAINS)"
    ]


def test_without_an_allowlist_the_request_keeps_only_the_deployments_recipients() -> None:
    settings = Settings(_env_file=None, mail_to="ml-team@example.com")
    targets, warnings = _notify_targets(_outcome(["ml-team@example.com", "a@example.com"]), settings)
    assert targets == NotifyTargets(emails=["ml-team@example.com"])
    assert warnings == [
        "not notified: a@example.com (domain example.com is not on SFTPIPE_NOTIFY_EMAIL_DOMAINS)"
    ]

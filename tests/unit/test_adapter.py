"""The delivery rules: raise to retry, return to drop, drop events past their maximum age."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from cloudevents.http import CloudEvent
from google.api_core import exceptions as gexc

from shared.adapter import deliver
from shared.config import Settings
from shared.dead_letter import dead_letter_topic
from shared.errors import ConfigurationError, InvalidMessageError, TransientError
from shared.events import PubSubMessage
from tests.conftest import pubsub_cloudevent

SETTINGS = Settings(max_event_age_s=3600)


def _event(age: timedelta = timedelta(0)) -> CloudEvent:
    time = (datetime.now(UTC) - age).isoformat()
    return pubsub_cloudevent({"message": {"data": "", "messageId": "1"}}, event_id="e-42", time=time)


def test_result_of_the_work_is_returned() -> None:
    assert deliver(_event(), "tuner", lambda: {"ok": 1}, settings=SETTINGS) == {"ok": 1}


def test_permanent_error_is_logged_and_acknowledged(caplog: pytest.LogCaptureFixture) -> None:
    def work() -> None:
        raise InvalidMessageError("tuning-request/v1: base_model: Field required", field="base_model")

    with caplog.at_level(logging.ERROR):
        assert deliver(_event(), "tuner", work, settings=SETTINGS) is None

    record = caplog.records[-1]
    assert record.error_code == "invalid_message"
    assert record.error_field == "base_model"


def _invalid_request() -> None:
    raise InvalidMessageError("tuning-request/v1: base_model: Field required", field="base_model")


def test_an_invalid_message_is_handed_to_dead_letter_as_it_arrived_then_acknowledged() -> None:
    event = pubsub_cloudevent(
        {"message": {"data": "eyJzY2hlbWEiOiAieCJ9", "messageId": "m-7", "attributes": {"job_id": "j1"}}},
        event_id="e-43",
        time=datetime.now(UTC).isoformat(),
    )
    handed: list[tuple[PubSubMessage, InvalidMessageError]] = []

    def dead_letter(message: PubSubMessage, error: InvalidMessageError) -> str:
        handed.append((message, error))
        return "dead-1"

    assert deliver(event, "tuner", _invalid_request, settings=SETTINGS, dead_letter=dead_letter) is None

    [(message, error)] = handed
    assert (message.message_id, message.data, message.attributes) == (
        "m-7",
        b'{"schema": "x"}',
        {"job_id": "j1"},
    )
    assert (error.code, error.field) == ("invalid_message", "base_model")


def test_an_invalid_message_that_cannot_be_dead_lettered_is_redelivered() -> None:
    def dead_letter(message: PubSubMessage, error: InvalidMessageError) -> str:
        raise gexc.ServiceUnavailable("pubsub down")

    with pytest.raises(gexc.ServiceUnavailable):
        deliver(_event(), "tuner", _invalid_request, settings=SETTINGS, dead_letter=dead_letter)


def test_dead_letter_topics_are_named_like_the_stack_and_deploy_name_them() -> None:
    settings = Settings(tuning_requests_topic="requests", dead_letter_suffix="-dlq")
    assert dead_letter_topic("tuner", settings) == "tuner-requests-dlq"
    assert dead_letter_topic("completion", settings) == "completion-job-events-dlq"
    with pytest.raises(ConfigurationError):
        dead_letter_topic("ingest", settings)  # Eventarc's storage trigger: no Pub/Sub message to keep


@pytest.mark.parametrize(
    "exc", [TransientError("firestore down"), gexc.ServiceUnavailable("busy"), KeyError("bug")]
)
def test_transient_and_unexpected_errors_are_raised_for_redelivery(exc: Exception) -> None:
    def work() -> None:
        raise exc

    with pytest.raises(type(exc)):
        deliver(_event(), "tuner", work, settings=SETTINGS)


def test_permanent_google_api_errors_are_acknowledged() -> None:
    def work() -> None:
        raise gexc.PermissionDenied("no access to bucket")

    assert deliver(_event(), "ingest", work, settings=SETTINGS) is None


def test_events_older_than_the_maximum_age_are_dropped_without_running() -> None:
    calls: list[int] = []

    result = deliver(_event(age=timedelta(hours=2)), "tuner", lambda: calls.append(1), settings=SETTINGS)

    assert result is None
    assert calls == []


def test_log_lines_carry_the_event_id_for_correlation(capsys: pytest.CaptureFixture[str]) -> None:
    deliver(_event(), "poller", lambda: None, settings=SETTINGS)

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    handled = [line for line in lines if line["message"] == "handled"]
    assert handled
    assert handled[-1]["event_id"] == "e-42"
    assert handled[-1]["function"] == "poller"
    assert handled[-1]["severity"] == "INFO"

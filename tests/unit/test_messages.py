from __future__ import annotations

import orjson
import pytest

from shared.errors import InvalidMessageError
from shared.events import PubSubMessage
from shared.messages import JobEventV1, PollTickV1, Task, TuningRequestV1, parse_message
from tests.conftest import EVENTS_DIR


def _message(body: object) -> PubSubMessage:
    return PubSubMessage(message_id="1", data=orjson.dumps(body))


def test_documented_tuning_request_example_parses() -> None:
    body = orjson.loads((EVENTS_DIR / "tuning_request_v1.json").read_bytes())

    request = parse_message(_message(body), TuningRequestV1)

    assert request.task is Task.CLASSIFICATION
    assert request.hyperparameters.adapter_size == 4
    assert request.notify.emails == ["ml-team@example.com"]
    assert request.attributes() == {"schema": "tuning-request/v1", "dataset_id": "reviews-3f2a9c1d0b7e6a51"}


def test_round_trip_keeps_the_schema_field() -> None:
    event = JobEventV1(job_id="j1", dataset_id="d1", sequence=2, state="JOB_STATE_RUNNING")

    body = orjson.loads(event.to_json())

    assert body["schema"] == "job-event/v1"
    assert parse_message(_message(body), JobEventV1) == event


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.update(training_uri="/local/file.jsonl"), "training_uri"),
        (lambda b: b["hyperparameters"].update(adapter_size=3), "hyperparameters.adapter_size"),
        (lambda b: b.update(surprise=1), "surprise"),
        (lambda b: b.pop("base_model"), "base_model"),
        (lambda b: b["notify"].update(emails=["not-an-address"]), "notify.emails.0"),
    ],
)
def test_invalid_request_names_the_field(mutate, field: str) -> None:
    body = orjson.loads((EVENTS_DIR / "tuning_request_v1.json").read_bytes())
    mutate(body)

    with pytest.raises(InvalidMessageError) as caught:
        parse_message(_message(body), TuningRequestV1)

    assert caught.value.field == field


def test_unknown_schema_and_non_object_bodies_are_rejected() -> None:
    with pytest.raises(InvalidMessageError, match="unknown schema 'tuning-request/v9'"):
        parse_message(_message({"schema": "tuning-request/v9"}), TuningRequestV1)
    with pytest.raises(InvalidMessageError, match="not a JSON object"):
        parse_message(_message([1, 2]), PollTickV1)


def test_parse_accepts_any_of_several_expected_schemas() -> None:
    tick = parse_message(_message({"schema": "poll-tick/v1"}), JobEventV1, PollTickV1)

    assert isinstance(tick, PollTickV1)

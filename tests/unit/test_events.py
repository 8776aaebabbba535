from __future__ import annotations

import base64
import copy

import orjson
import pytest
from cloudevents.http import CloudEvent

from shared.errors import InvalidEventError
from shared.events import GCS_NOTIFICATION_FINALIZE, parse_pubsub_event, parse_storage_event
from tests.conftest import load_event_json, pubsub_cloudevent


def test_eventarc_finalize_and_gcs_notification_parse_to_the_same_object(
    storage_finalized_event: CloudEvent,
) -> None:
    from_eventarc, kind_a = parse_storage_event(storage_finalized_event)
    from_pubsub, kind_b = parse_storage_event(
        pubsub_cloudevent(load_event_json("gcs_notification_push.json"))
    )

    assert kind_a == kind_b == GCS_NOTIFICATION_FINALIZE
    assert from_eventarc.uri == from_pubsub.uri == "gs://sftpipe-test/incoming/reviews.jsonl"
    assert from_eventarc.generation == from_pubsub.generation == 1763805600000000
    assert from_eventarc.size == 2048
    assert from_eventarc.metadata == {"base-model": "gemini-2.5-flash", "epochs": "3"}
    assert from_eventarc.dataset_id == from_pubsub.dataset_id


def test_dataset_id_is_stable_per_generation_and_safe_for_firestore(
    storage_finalized_event: CloudEvent,
) -> None:
    obj, _ = parse_storage_event(storage_finalized_event)
    newer = obj.model_copy(update={"generation": obj.generation + 1})

    assert obj.dataset_id == parse_storage_event(storage_finalized_event)[0].dataset_id
    assert obj.dataset_id != newer.dataset_id
    assert obj.dataset_id.startswith("reviews-")
    assert "/" not in obj.dataset_id


def test_notification_without_payload_uses_attributes() -> None:
    body = load_event_json("gcs_notification_push.json")
    body["message"]["attributes"]["payloadFormat"] = "NONE"
    del body["message"]["data"]
    body["message"]["data"] = ""

    obj, kind = parse_storage_event(pubsub_cloudevent(body))

    assert (obj.bucket, obj.name, obj.generation, kind) == (
        "sftpipe-test",
        "incoming/reviews.jsonl",
        1763805600000000,
        "OBJECT_FINALIZE",
    )


def test_other_notification_kinds_are_reported_not_hidden() -> None:
    body = load_event_json("gcs_notification_push.json")
    body["message"]["attributes"]["eventType"] = "OBJECT_DELETE"

    _, kind = parse_storage_event(pubsub_cloudevent(body))

    assert kind == "OBJECT_DELETE"


def test_storage_event_without_generation_names_the_field(storage_finalized_event: CloudEvent) -> None:
    data = copy.deepcopy(storage_finalized_event.data)
    del data["generation"]
    event = CloudEvent(dict(storage_finalized_event.get_attributes()), data)

    with pytest.raises(InvalidEventError) as caught:
        parse_storage_event(event)

    assert caught.value.field == "data.generation"


def test_pubsub_message_that_is_not_a_gcs_notification_is_rejected() -> None:
    body = {"message": {"data": base64.b64encode(b"{}").decode(), "messageId": "1", "attributes": {}}}

    with pytest.raises(InvalidEventError) as caught:
        parse_storage_event(pubsub_cloudevent(body))

    assert caught.value.field == "message.attributes.eventType"


def test_pubsub_event_decodes_base64_and_keeps_attributes() -> None:
    payload = {"schema": "poll-tick/v1"}
    body = {
        "subscription": "projects/p/subscriptions/s",
        "message": {
            "data": base64.b64encode(orjson.dumps(payload)).decode(),
            "attributes": {"schema": "poll-tick/v1"},
            "messageId": "42",
            "publishTime": "2026-11-22T10:00:00Z",
        },
    }

    message = parse_pubsub_event(pubsub_cloudevent(body))

    assert message.json() == payload
    assert message.message_id == "42"
    assert message.attributes == {"schema": "poll-tick/v1"}
    assert message.subscription == "projects/p/subscriptions/s"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"nomessage": {}}, "data.message"),
        ({"message": {"data": "%%%not-base64%%%", "messageId": "1"}}, "data.message.data"),
    ],
)
def test_malformed_pubsub_events_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_pubsub_event(pubsub_cloudevent(data))

    assert caught.value.field == field


def test_wrong_event_type_is_rejected(storage_finalized_event: CloudEvent) -> None:
    with pytest.raises(InvalidEventError, match="messagePublished"):
        parse_pubsub_event(storage_finalized_event)

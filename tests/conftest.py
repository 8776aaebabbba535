"""Shared test helpers: event fixtures as JSON files under tests/events/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import CloudEvent

EVENTS_DIR = Path(__file__).parent / "events"


def load_event_json(name: str) -> dict[str, Any]:
    return json.loads((EVENTS_DIR / name).read_text())


def pubsub_cloudevent(
    push_body: dict[str, Any], event_id: str = "evt-1", time: str | None = None
) -> CloudEvent:
    """The CloudEvent functions-framework builds from a Pub/Sub push body."""
    attributes = {
        "id": event_id,
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": "//pubsub.googleapis.com/projects/local-project/topics/test",
    }
    if time:
        attributes["time"] = time
    return CloudEvent(attributes, push_body)


@pytest.fixture
def storage_finalized_event() -> CloudEvent:
    raw = load_event_json("storage_finalized.json")
    return CloudEvent(raw["attributes"], raw["data"])

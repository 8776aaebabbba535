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


#: Seconds assumed for a test marked ``slow`` without a figure.
DEFAULT_SLOW_S = 30.0


def _expected_seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("slow")
    if marker is None:
        return 0.0
    return float(marker.args[0]) if marker.args else DEFAULT_SLOW_S


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest work first, so that the parallel run (``make test``: pytest-xdist, ``--dist
    loadgroup``) starts the long tests at once on separate workers instead of ending on one.

    A unit of work is a test, or every test of one ``xdist_group`` (they share a module fixture,
    such as a tuned model, that each worker would otherwise build again); its cost is the sum of
    its tests' ``slow(seconds)`` figures. Units keep their tests in file order, and units of
    equal cost keep theirs, so a serial run (``-p no:xdist``) runs in the usual order too.
    """
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        group = item.get_closest_marker("xdist_group")
        key = f"group:{group.args[0] if group.args else group.kwargs['name']}" if group else item.nodeid
        units.setdefault(key, []).append(item)
    ordered = sorted(units.values(), key=lambda unit: -sum(_expected_seconds(i) for i in unit))
    items[:] = [item for unit in ordered for item in unit]

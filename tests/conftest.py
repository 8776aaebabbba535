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
    """Longest modules first, so that the parallel run (``make test``: pytest-xdist with
    ``--dist loadfile``, one module per worker at a time) starts the long ones at once on separate
    workers instead of ending on one.

    A module is the unit because its tests share module fixtures (a tuned model, a tuning
    service) that a second worker would build again. (``--dist loadgroup`` would allow finer
    units, but it silently stops grouping on pytest 9.2: pytest-xdist issue 1386.) A module's
    cost is the sum of its tests' ``slow(seconds)`` figures; tests keep their order within a
    module, and modules of equal cost keep theirs, so a serial run (``-p no:xdist``) runs in the
    usual order too.
    """
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    ordered = sorted(modules.values(), key=lambda tests: -sum(_expected_seconds(t) for t in tests))
    items[:] = [item for tests in ordered for item in tests]

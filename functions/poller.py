"""Poller: a poll-tick/v1 message from Cloud Scheduler (the ticker locally)."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapter import deliver
from shared.dead_letter import dead_letter_for
from shared.events import parse_pubsub_event
from shared.messages import PollTickV1, parse_message
from shared.runtime import get_runtime
from shared.tuning.poll import poll_tick


@functions_framework.cloud_event
def poller(cloud_event: CloudEvent) -> None:
    def work() -> object:
        parse_message(parse_pubsub_event(cloud_event), PollTickV1)
        runtime = get_runtime()
        return poll_tick(runtime, runtime.tuning)

    deliver(cloud_event, "poller", work, dead_letter=dead_letter_for("poller", get_runtime))

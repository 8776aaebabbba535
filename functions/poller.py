"""Poller: a poll-tick/v1 message from Cloud Scheduler (the ticker locally)."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapter import deliver
from shared.events import parse_pubsub_event
from shared.logging import get_logger
from shared.messages import PollTickV1, parse_message

log = get_logger("sftpipe.poller")


@functions_framework.cloud_event
def poller(cloud_event: CloudEvent) -> None:
    def work() -> object:
        tick = parse_message(parse_pubsub_event(cloud_event), PollTickV1)
        # Reading job states lands with the poller issue; until then the tick is logged.
        log.debug("poll tick received", extra={"scheduled_at": tick.scheduled_at.isoformat()})
        return tick

    deliver(cloud_event, "poller", work)

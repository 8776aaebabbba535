"""Completion: a job-event/v1 message; terminal states start the evaluation and notifications."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapter import deliver
from shared.events import parse_pubsub_event
from shared.logging import get_logger
from shared.messages import JobEventV1, parse_message

log = get_logger("sftpipe.completion")


@functions_framework.cloud_event
def completion(cloud_event: CloudEvent) -> None:
    def work() -> object:
        event = parse_message(parse_pubsub_event(cloud_event), JobEventV1)
        # Evaluation and notification land with the completion issue; until then it is logged.
        log.info("job event received", extra={"job_id": event.job_id, "state": event.state})
        return event

    deliver(cloud_event, "completion", work)

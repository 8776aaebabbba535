"""Tuner: a tuning-request/v1 message from Pub/Sub."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapter import deliver
from shared.events import parse_pubsub_event
from shared.logging import get_logger
from shared.messages import TuningRequestV1, parse_message

log = get_logger("sftpipe.tuner")


@functions_framework.cloud_event
def tuner(cloud_event: CloudEvent) -> None:
    def work() -> object:
        request = parse_message(parse_pubsub_event(cloud_event), TuningRequestV1)
        # Submission to Vertex AI lands with the tuner issue; until then the request is logged.
        log.info("tuning request received", extra={"dataset_id": request.dataset_id})
        return request

    deliver(cloud_event, "tuner", work)

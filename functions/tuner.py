"""Tuner: a tuning-request/v1 message from Pub/Sub -> exactly one tuning job."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapter import deliver
from shared.dead_letter import dead_letter_for
from shared.events import parse_pubsub_event
from shared.messages import TuningRequestV1, parse_message
from shared.runtime import get_runtime
from shared.tuning.submit import handle_tuning_request


@functions_framework.cloud_event
def tuner(cloud_event: CloudEvent) -> None:
    def work() -> object:
        request = parse_message(parse_pubsub_event(cloud_event), TuningRequestV1)
        runtime = get_runtime()
        return handle_tuning_request(request, runtime, runtime.tuning)

    deliver(cloud_event, "tuner", work, dead_letter=dead_letter_for("tuner", get_runtime))

"""Completion: a job-events message (job-event/v1, or evaluation-continuation/v1 and
baseline-continuation/v1 from itself)."""

from __future__ import annotations

import time

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapter import deliver
from shared.dead_letter import dead_letter_for
from shared.evaluation.completion import handle_job_message
from shared.events import parse_pubsub_event
from shared.messages import BaselineContinuationV1, EvaluationContinuationV1, JobEventV1, parse_message
from shared.runtime import get_runtime


@functions_framework.cloud_event
def completion(cloud_event: CloudEvent) -> None:
    started = time.monotonic()

    def work() -> object:
        message = parse_message(
            parse_pubsub_event(cloud_event), JobEventV1, EvaluationContinuationV1, BaselineContinuationV1
        )
        return handle_job_message(message, get_runtime(), started=started)

    deliver(cloud_event, "completion", work, dead_letter=dead_letter_for("completion", get_runtime))

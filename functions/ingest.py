"""Ingest: a Cloud Storage upload (Eventarc finalize, or a GCS notification via Pub/Sub push)."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapter import deliver
from shared.events import parse_storage_event
from shared.ingest import ingest_upload
from shared.runtime import get_runtime


@functions_framework.cloud_event
def ingest(cloud_event: CloudEvent) -> None:
    def work() -> object:
        obj, event_type = parse_storage_event(cloud_event)
        return ingest_upload(obj, event_type, get_runtime())

    deliver(cloud_event, "ingest", work)

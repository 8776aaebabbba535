"""Typed parsing of the events the functions receive.

Production can deliver an upload two ways, and the local stack uses the second:
- an Eventarc CloudEvent ``google.cloud.storage.object.v1.finalized`` whose data is the object
  resource;
- a GCS Pub/Sub notification (``eventType=OBJECT_FINALIZE``, ``payloadFormat=JSON_API_V1``)
  delivered through a push subscription, which functions-framework turns into a
  ``google.cloud.pubsub.topic.v1.messagePublished`` CloudEvent.
Both parse into one :class:`StorageObject`. Anything malformed raises
:class:`~shared.errors.InvalidEventError` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import InvalidEventError

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
GCS_NOTIFICATION_FINALIZE = "OBJECT_FINALIZE"


class CloudEventLike(Protocol):
    """What we use of ``cloudevents.http.CloudEvent`` (functions-framework passes one)."""

    data: Any

    def get_attributes(self) -> Any: ...


class EventEnvelope(BaseModel):
    """The CloudEvent attributes every handler logs and checks."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    source: str = ""
    subject: str | None = None
    time: datetime | None = None

    def age_seconds(self, now: datetime | None = None) -> float | None:
        if self.time is None:
            return None
        now = now or datetime.now(UTC)
        event_time = self.time if self.time.tzinfo else self.time.replace(tzinfo=UTC)
        return (now - event_time).total_seconds()


class StorageObject(BaseModel):
    """A finalized Cloud Storage object, whichever way its event arrived."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    bucket: str = Field(min_length=1)
    name: str = Field(min_length=1)
    generation: int = Field(ge=0)
    size: int = Field(0, ge=0)
    content_type: str | None = Field(None, alias="contentType")
    metageneration: int | None = None
    md5_hash: str | None = Field(None, alias="md5Hash")
    time_created: datetime | None = Field(None, alias="timeCreated")
    metadata: dict[str, str] = Field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    @property
    def dataset_id(self) -> str:
        """Stable id of the dataset this generation of the object becomes.

        A redelivered event gives the same id; a re-upload (new generation) a new one. Readable
        prefix for people, hash suffix for uniqueness (Firestore ids cannot contain '/').
        """
        digest = hashlib.sha256(f"{self.bucket}/{self.name}#{self.generation}".encode()).hexdigest()
        return f"{readable_stem(self.name) or 'dataset'}-{digest[:16]}"


#: Characters of an object's base name kept in its dataset id, before the hash.
READABLE_ID_CHARS = 40


def readable_stem(object_name: str) -> str:
    """The ASCII letters, digits, '-' and '_' of the base name (up to the first '.'), others as
    '-': any name a bucket accepts (any Unicode, spaces, ``<>|&``, 1,024 bytes) gives a prefix
    that every id rule downstream accepts (Firestore ids, tuning-request/v1, Vertex labels)."""
    stem = object_name.rsplit("/", 1)[-1].split(".", 1)[0]
    kept = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in stem)
    return kept[:READABLE_ID_CHARS].strip("-_")


class PubSubMessage(BaseModel):
    """A decoded Pub/Sub message (``data`` is bytes, no longer base64)."""

    model_config = ConfigDict(frozen=True)

    message_id: str
    data: bytes = b""
    attributes: dict[str, str] = Field(default_factory=dict)
    publish_time: datetime | None = None
    subscription: str | None = None

    def json(self) -> Any:  # type: ignore[override]
        try:
            return orjson.loads(self.data)
        except orjson.JSONDecodeError as exc:
            raise InvalidEventError(
                f"message {self.message_id} data is not JSON: {exc}", field="message.data"
            ) from exc


def envelope(event: CloudEventLike) -> EventEnvelope:
    attributes = dict(event.get_attributes())
    try:
        return EventEnvelope.model_validate(attributes)
    except ValidationError as exc:
        raise _invalid(exc, "cloudevent") from exc


def parse_pubsub_event(event: CloudEventLike) -> PubSubMessage:
    """Decode the Pub/Sub message inside a ``messagePublished`` CloudEvent."""
    head = envelope(event)
    if head.type != PUBSUB_PUBLISHED:
        raise InvalidEventError(f"expected a {PUBSUB_PUBLISHED} event, got {head.type}", field="type")
    data = event.data
    if isinstance(data, (bytes, str)):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidEventError(f"event data is not JSON: {exc}", field="data") from exc
    if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
        raise InvalidEventError("event data has no 'message' object", field="data.message")
    message = data["message"]
    raw = message.get("data") or ""
    try:
        decoded = base64.b64decode(raw, validate=True) if raw else b""
    except (binascii.Error, TypeError) as exc:
        raise InvalidEventError("message data is not base64", field="data.message.data") from exc
    message_id = message.get("messageId") or message.get("message_id") or head.id
    publish_time = message.get("publishTime") or message.get("publish_time") or head.time
    try:
        return PubSubMessage(
            message_id=str(message_id),
            data=decoded,
            attributes=message.get("attributes") or {},
            publish_time=publish_time,
            subscription=data.get("subscription"),
        )
    except ValidationError as exc:
        raise _invalid(exc, "data.message") from exc


def parse_storage_event(event: CloudEventLike) -> tuple[StorageObject, str]:
    """Parse an upload event of either shape into (object, event type).

    The event type is ``OBJECT_FINALIZE`` for both shapes when the object was finalized; GCS
    notifications of other kinds (delete, metadata update) keep their own names so the caller
    can ignore them.
    """
    head = envelope(event)
    if head.type == STORAGE_FINALIZED:
        resource = event.data
        if isinstance(resource, (bytes, str)):
            resource = orjson.loads(resource)
        return _storage_object(resource, "data"), GCS_NOTIFICATION_FINALIZE
    if head.type == PUBSUB_PUBLISHED:
        message = parse_pubsub_event(event)
        event_type = message.attributes.get("eventType")
        if not event_type:
            raise InvalidEventError(
                "Pub/Sub message is not a Cloud Storage notification (no eventType attribute)",
                field="message.attributes.eventType",
            )
        payload_format = message.attributes.get("payloadFormat", "JSON_API_V1")
        if payload_format == "JSON_API_V1" and message.data:
            resource = message.json()
        else:  # NONE payload: the attributes still identify the object
            resource = {
                "bucket": message.attributes.get("bucketId"),
                "name": message.attributes.get("objectId"),
                "generation": message.attributes.get("objectGeneration"),
            }
        return _storage_object(resource, "message.data"), event_type
    raise InvalidEventError(f"unsupported event type {head.type}", field="type")


def _storage_object(resource: Any, where: str) -> StorageObject:
    if not isinstance(resource, dict):
        raise InvalidEventError("object resource is not a JSON object", field=where)
    try:
        return StorageObject.model_validate(resource)
    except ValidationError as exc:
        raise _invalid(exc, where) from exc


def _invalid(exc: ValidationError, where: str) -> InvalidEventError:
    first = exc.errors()[0]
    path = ".".join(str(p) for p in (where, *first["loc"]))
    return InvalidEventError(f"{path}: {first['msg']}", field=path)

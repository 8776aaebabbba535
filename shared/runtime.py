"""Clients the handlers need, created lazily and reused across invocations of a warm instance.

Handlers in ``shared`` take a :class:`Runtime` argument instead of creating clients, so tests pass
one built on the emulators and nothing reaches for global state. Each client is created on first
use: a function that never publishes never pays for a publisher at cold start.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from shared.config import Settings, get_settings

if TYPE_CHECKING:
    from google import genai
    from google.cloud import firestore, pubsub_v1, storage

#: Seconds to wait for Pub/Sub to confirm a publish before treating it as transient failure.
PUBLISH_TIMEOUT_S = 30.0


class Runtime:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()

    @cached_property
    def storage(self) -> storage.Client:
        from google.cloud import storage

        return storage.Client(project=self.settings.project)

    @cached_property
    def firestore(self) -> firestore.Client:
        from google.cloud import firestore

        return firestore.Client(project=self.settings.project)

    @cached_property
    def publisher(self) -> pubsub_v1.PublisherClient:
        from google.cloud import pubsub_v1

        return pubsub_v1.PublisherClient()

    @cached_property
    def tuning(self) -> genai.Client:
        """google-genai client for tuning calls: a 429 is seen at once (the job is queued), and
        every call ends within the submission lease."""
        from shared.budgets import TUNING_CALL_TIMEOUT_S
        from shared.tuning.client import make_client

        return make_client(self.settings, retry_quota_errors=False, timeout_s=TUNING_CALL_TIMEOUT_S)

    def publish(self, topic: str, data: bytes, **attributes: str) -> str:
        """Publish and wait for the server's message id (so a failure raises in the handler)."""
        future = self.publisher.publish(self.settings.topic_path(topic), data, **attributes)
        return future.result(timeout=PUBLISH_TIMEOUT_S)


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process-wide runtime used by the deployed functions."""
    global _runtime  # noqa: PLW0603 - one set of clients per warm instance is the point
    if _runtime is None:
        _runtime = Runtime()
    return _runtime


def reset_runtime() -> None:
    """Forget the process-wide clients (after the environment changed, e.g. in tests)."""
    global _runtime  # noqa: PLW0603
    _runtime = None

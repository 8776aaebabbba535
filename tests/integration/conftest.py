"""Integration fixtures: one local stack of real services per test session.

The stack (Pub/Sub and Firestore emulators, fake-gcs-server, the four functions behind push
subscriptions) starts once; between tests Firestore is wiped through the emulator's own DELETE
endpoint and the bucket is emptied through the storage API. No Google Cloud client is mocked.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.cloud import pubsub_v1

from local.stack import Stack, StackOptions
from shared import runtime as runtime_module
from shared.config import Settings, get_settings
from shared.events import PubSubMessage
from shared.runtime import Runtime

T = TypeVar("T")
#: Seconds a test waits for the pipeline to react to an upload or a message (a few seconds here;
#: generous because a shared CI machine can be several times slower).
PIPELINE_TIMEOUT_S = 60.0
#: The claims' lease in the test stack (production: 60 s). The tests that kill a worker wait for
#: its claim to lapse; a quarter of the lease keeps them short, and the heartbeat (a quarter of
#: the lease, shared.budgets.heartbeat_interval_s) keeps every live claim as it does with 60 s.
TEST_LEASE_S = 15


def wait_for(probe: Callable[[], T], timeout: float = PIPELINE_TIMEOUT_S, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    run_dir = tmp_path_factory.mktemp("stack")
    local_stack = Stack(run_dir)
    env = local_stack.up(
        StackOptions(tick_interval_s=2.0, function_env={"SFTPIPE_IDEMPOTENCY_LEASE_S": str(TEST_LEASE_S)})
    )
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    get_settings.cache_clear()
    runtime_module.reset_runtime()
    try:
        yield env
    finally:
        local_stack.down()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        runtime_module.reset_runtime()


#: Attempts at wiping Firestore: the emulator answers 409 while a transaction holds a document
#: (the stack's poller ticks, a heartbeat of the previous test's work), which ends within moments.
WIPE_ATTEMPTS = 20


def _wipe_firestore(host: str, project: str) -> None:
    request = urllib.request.Request(
        f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents", method="DELETE"
    )
    for attempt in range(WIPE_ATTEMPTS):
        try:
            urllib.request.urlopen(request, timeout=10).close()
            return
        except urllib.error.HTTPError as exc:
            if exc.code != 409 or attempt == WIPE_ATTEMPTS - 1:
                raise
            time.sleep(0.25)


@pytest.fixture
def runtime(stack: dict[str, str]) -> Runtime:
    """A clean slate: empty Firestore and an empty bucket, and fresh clients on the emulators."""
    settings = Settings()
    _wipe_firestore(stack["FIRESTORE_EMULATOR_HOST"], settings.project)
    rt = Runtime(settings)
    for blob in rt.storage.list_blobs(settings.bucket):
        blob.delete()
    return rt


@pytest.fixture
def subscribe(runtime: Runtime) -> Iterator[Callable[[str], Callable[[], list[dict[str, Any]]]]]:
    """``subscribe(topic)`` creates a pull subscription now and returns a function that returns
    every message received so far as ``{"body": ..., "attributes": ...}`` (acknowledged)."""
    import orjson
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    created: list[str] = []

    def make(topic: str) -> Callable[[], list[dict[str, Any]]]:
        name = subscriber.subscription_path(runtime.settings.project, f"test-{topic}-{time.monotonic_ns()}")
        subscriber.create_subscription(name=name, topic=runtime.settings.topic_path(topic))
        created.append(name)
        received: list[dict[str, Any]] = []

        def pull() -> list[dict[str, Any]]:
            response = subscriber.pull(subscription=name, max_messages=100, timeout=3)
            for message in response.received_messages:
                received.append(
                    {
                        "body": orjson.loads(message.message.data),
                        "attributes": dict(message.message.attributes),
                    }
                )
            if response.received_messages:
                subscriber.acknowledge(
                    subscription=name, ack_ids=[m.ack_id for m in response.received_messages]
                )
            return received

        return pull

    yield make
    for name in created:
        subscriber.delete_subscription(subscription=name)
    subscriber.close()


@pytest.fixture
def requests_seen(
    subscribe: Callable[[str], Callable[[], list[dict[str, Any]]]], runtime: Runtime
) -> Callable[[], list[dict[str, Any]]]:
    """What ingest publishes to tuning-requests, from a pull subscription created before the
    test's uploads, for the datasets this test creates. An earlier test's job hands its request
    back to the tuner once its baseline is taken, possibly after this test has begun, and this
    subscription sees it too; ``runtime`` emptied Firestore, so this test's datasets are the ones
    there when the requests are read."""
    datasets = runtime.firestore.collection(runtime.settings.datasets_collection)
    pull = subscribe(runtime.settings.tuning_requests_topic)

    def seen() -> list[dict[str, Any]]:
        received = pull()
        ours = {doc.id for doc in datasets.stream()}
        return [r for r in received if r["body"].get("dataset_id") in ours]

    return seen


@pytest.fixture
def function_log(stack: dict[str, str]) -> Callable[[str], list[dict[str, Any]]]:
    """Read the JSON log lines a function of the stack has written so far."""
    import json

    def read(function: str) -> list[dict[str, Any]]:
        path = Path(stack["SFTPIPE_RUN_DIR"]) / "logs" / f"{function}.log"
        lines = []
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        return lines

    return read


@pytest.fixture
def continuations(runtime: Runtime) -> Iterator[tuple[str, Callable[[], list[PubSubMessage]]]]:
    """A topic of the test's own for what an in-process handler publishes (continuations, events,
    re-published requests), and a way to read it back."""
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = f"test-continuations-{uuid.uuid4().hex[:8]}"
    topic_path = runtime.settings.topic_path(topic)
    subscription = subscriber.subscription_path(runtime.settings.project, topic)
    publisher.create_topic(name=topic_path)
    subscriber.create_subscription(name=subscription, topic=topic_path)

    def pull() -> list[PubSubMessage]:
        response = subscriber.pull(subscription=subscription, max_messages=10, timeout=5)
        if response.received_messages:
            subscriber.acknowledge(
                subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages]
            )
        return [
            PubSubMessage(
                message_id=m.message.message_id, data=m.message.data, attributes=dict(m.message.attributes)
            )
            for m in response.received_messages
        ]

    yield topic, pull
    subscriber.delete_subscription(subscription=subscription)
    publisher.delete_topic(topic=topic_path)
    subscriber.close()

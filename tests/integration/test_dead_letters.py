"""An invalid message is dead-lettered at once, with the reason, and acknowledged (architecture.md:
"an unknown or invalid message is dead-lettered with a log line, not retried forever")."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from shared.dead_letter import dead_letter_topic, source_topic
from shared.runtime import Runtime
from tests.integration.conftest import wait_for

Subscribe = Callable[[str], Callable[[], list[dict[str, Any]]]]


#: (function, an invalid body for its topic, the field the error names, or None).
CASES = [
    ("tuner", {"schema": "tuning-request/v1", "dataset_id": "d-invalid"}, "base_model"),
    ("poller", {"schema": "poll-tick/v9"}, "schema"),
    ("completion", {"schema": "job-event/v1", "job_id": "j-1", "state": "JOB_STATE_BOGUS"}, None),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_an_invalid_message_is_dead_lettered_once_with_the_reason(
    runtime: Runtime,
    subscribe: Subscribe,
    function_log: Callable[[str], list[dict[str, Any]]],
    case: tuple[str, dict[str, Any], str | None],
) -> None:
    function, body, field = case
    dead_letters = subscribe(dead_letter_topic(function, runtime.settings))
    message_id = runtime.publish(source_topic(function, runtime.settings), orjson.dumps(body), origin="test")

    [letter] = wait_for(dead_letters, what=f"{function}'s dead letter")

    assert letter["body"] == body  # kept as it arrived
    attributes = letter["attributes"]
    assert attributes["origin"] == "test"
    assert attributes["sftpipe_error_code"] == "invalid_message"
    assert attributes["sftpipe_function"] == function
    assert attributes["sftpipe_source_message_id"] == message_id
    assert body["schema"].split("/")[0] in attributes["sftpipe_error"]
    if field is not None:
        assert attributes["sftpipe_error_field"] == field
    time.sleep(3)  # an unacknowledged original would have been redelivered and dead-lettered again
    assert len(dead_letters()) == 1
    logged = [line for line in function_log(function) if line.get("message_id") == message_id]
    assert [line["message"].split(":")[0] for line in logged] == ["invalid message dead-lettered"]
    assert logged[0]["severity"] == "ERROR"

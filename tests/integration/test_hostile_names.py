"""Any object name a bucket accepts starts a run that ends: a job for valid data, one rejection
notice for invalid data, with the name escaped wherever it lands (architecture.md, "Identity")."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from shared.runtime import Runtime
from tests.integration.conftest import wait_for

#: Every id rule downstream: Firestore ids, tuning-request/v1's dataset_id, Vertex label values.
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
VALID = b"".join(
    orjson.dumps(
        {
            "contents": [
                {"role": "user", "parts": [{"text": f"is review {i} good?"}]},
                {"role": "model", "parts": [{"text": "yes" if i % 2 else "no"}]},
            ]
        }
    )
    + b"\n"
    for i in range(20)
)
INVALID = VALID + b"{not json\n"
#: (object name under incoming/, data): non-Latin scripts, spaces, Slack control sequences, '&',
#: and a name of 1,000 bytes.
NAMES = {
    "german": ("Übersicht.jsonl", VALID),
    "japanese-with-spaces": ("名前 の データ.jsonl", VALID),
    "slack-controls": ("<!here> <!channel> <https://evil.example|click> & co.jsonl", INVALID),
    "long": ("ü" * 494 + ".jsonl", INVALID),  # 988 + 6 + len("incoming/") = 1,003 bytes
}


def _dataset(runtime: Runtime, object_name: str) -> dict[str, Any] | None:
    uri = f"gs://{runtime.settings.bucket}/{object_name}"
    for snapshot in runtime.firestore.collection(runtime.settings.datasets_collection).stream():
        if snapshot.to_dict().get("source_uri") == uri:
            return snapshot.to_dict()
    return None


def _jobs_of(runtime: Runtime, dataset_id: str) -> list[dict[str, Any]]:
    jobs = runtime.firestore.collection(runtime.settings.jobs_collection)
    return [doc.to_dict() for doc in jobs.where(filter=FieldFilter("dataset_id", "==", dataset_id)).stream()]


@pytest.mark.parametrize("case", NAMES)
def test_any_object_name_gives_a_valid_id_and_a_run_that_ends(
    runtime: Runtime, stack: dict[str, str], case: str
) -> None:
    name, data = NAMES[case]
    object_name = f"incoming/{name}"
    runtime.storage.bucket(runtime.settings.bucket).blob(object_name).upload_from_string(data)

    dataset = wait_for(
        lambda: (d := _dataset(runtime, object_name)) and d["status"] != "VALIDATING" and d,
        what=f"the dataset of {case} to settle",
    )

    assert ID.match(dataset["dataset_id"]), dataset["dataset_id"]
    if data is VALID:
        assert dataset["status"] == "READY"
        [job] = wait_for(lambda: _jobs_of(runtime, dataset["dataset_id"]), what="its tuning job")
        assert ID.match(job["job_id"])
        return
    assert dataset["status"] == "REJECTED"

    def posts() -> list[dict[str, Any]]:
        found = []
        for path in Path(stack["SFTPIPE_SLACK_DIR"]).glob("*.json"):
            text = path.read_text(errors="replace")
            if dataset["dataset_id"] in text:
                found.append(orjson.loads(text))
        return found

    def mails() -> list[str]:
        paths = Path(stack["SFTPIPE_MAIL_DIR"]).glob("*.eml")
        return [t for p in paths if dataset["dataset_id"] in (t := p.read_text(errors="replace"))]

    wait_for(posts, what="the Slack notice")
    wait_for(mails, what="the mail")
    time.sleep(3)
    [post], [mail] = posts(), mails()
    texts = [post.get("text", "")] + [value for block in post.get("blocks", []) for value in _mrkdwn(block)]
    for text in texts:
        assert not any(marker in text for marker in ("<!", "<http", "<@")), text
    assert len([line for line in mail.splitlines() if line.lower().startswith("subject:")]) == 1


def _mrkdwn(block: dict[str, Any]) -> list[str]:
    """Every mrkdwn string of a Block Kit block (the fields Slack parses for links and mentions)."""
    found = []
    for part in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
        if isinstance(part, dict) and part.get("type") == "mrkdwn":
            found.append(part["text"])
    return found

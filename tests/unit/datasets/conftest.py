from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.datasets import PrepareOptions, PrepareResult, prepare

REALWORLD = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "realworld"


def run(
    data: bytes, filename: str = "data.jsonl", **options: Any
) -> tuple[PrepareResult, dict[str, list[dict[str, Any]]]]:
    """prepare() on in-memory bytes, estimate mode; returns the result and what the sink got.

    Two passes, as ingest makes them: a validate-only pass plans the split, the second applies
    the plan and writes (also for a rejected file, to see what a lone prepare() gives the sink).
    """
    options.setdefault("token_counting", "estimate")
    written: dict[str, list[dict[str, Any]]] = {"train": [], "validation": [], "test": []}

    def sink(split: str, line: bytes) -> None:
        assert line.endswith(b"\n")
        assert line.count(b"\n") == 1
        written[split].append(orjson.loads(line))

    prepared = PrepareOptions(**options)
    checked = prepare(io.BytesIO(data), filename=filename, size=len(data), options=prepared)
    result = prepare(
        io.BytesIO(data),
        filename=filename,
        size=len(data),
        options=prepared,
        sink=sink,
        split_plan=checked.split.plan(),
    )
    assert result == checked, "the writing pass must report what the validate-only pass planned"
    return result, written


def jsonl(*records: Any) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def gemini(user: str, model: str, system: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "contents": [
            {"role": "user", "parts": [{"text": user}]},
            {"role": "model", "parts": [{"text": model}]},
        ]
    }
    if system is not None:
        record["systemInstruction"] = {"role": "system", "parts": [{"text": system}]}
    return record


#: The public samples live beside the repository (CI has them); a lone clone does not, and the
#: tests that read them are skipped there with this reason instead of failing.
REALWORLD_MISSING = f"the public real-world samples are not at {REALWORLD.resolve()} (a lone clone)"
requires_realworld = pytest.mark.skipif(not REALWORLD.is_dir(), reason=REALWORLD_MISSING)


@pytest.fixture
def realworld() -> Path:
    if not REALWORLD.is_dir():
        pytest.skip(REALWORLD_MISSING)
    return REALWORLD


#: The keys `sftpipe validate --json` (and report.json) promise; other tools rely on them.
CONTRACT_KEYS = {
    "ok",
    "format",
    "records_in",
    "examples",
    "rejected",
    "errors",
    "error_counts",
    "warnings",
    "tokens",
    "duplicates",
    "near_duplicates",
    "split",
    "recommended",
    "estimated_cost",
}


def check_accepted_cli_output(code: int, stdout: str, out: Path, examples: int) -> None:
    """What `sftpipe validate --json --out OUT` promises for a valid file: exit 0, one JSON object
    with the contract's keys, the three splits written as counted, and both reports."""
    assert code == 0
    body = orjson.loads(stdout)  # exactly one JSON object
    assert set(body) >= CONTRACT_KEYS
    assert body["ok"] is True
    assert body["tokens"]["method"] == "estimate"
    lines = {
        split: (out / f"{split}.jsonl").read_text().splitlines() for split in ("train", "validation", "test")
    }
    assert [len(v) for v in lines.values()] == [
        body["split"]["train"],
        body["split"]["validation"],
        body["split"]["test"],
    ]
    assert orjson.loads(lines["train"][0])["contents"][0]["role"] == "user"
    assert orjson.loads((out / "report.json").read_text())["examples"] == examples
    assert "ACCEPTED" in (out / "report.md").read_text()

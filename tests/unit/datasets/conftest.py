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
    "split",
    "recommended",
    "estimated_cost",
}

"""Who may read what: a manifest names only objects under the uploads prefixes of its own bucket,
or objects of an allowed bucket; everything else is refused before anything of it is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from shared.config import Settings
from shared.events import StorageObject
from shared.ingest.manifest import (
    MANIFEST_ERROR_CODES,
    ReadPolicy,
    normalise_prefixes,
    prepare_manifest,
)
from shared.runtime import Runtime

BUCKET = "uploads-bucket"
SAMPLE = (Path(__file__).resolve().parents[2] / "local" / "samples" / "reviews.jsonl").read_bytes()


def policy(**settings: Any) -> ReadPolicy:
    return ReadPolicy.from_settings(Settings(**settings), BUCKET)


# --- The pure rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "datasets/reviews/train.jsonl",
        "datasets/x",
        f"gs://{BUCKET}/datasets/reviews/test.jsonl",
        "datasets/Übersicht/données 1.jsonl",
        "datasets/日本語/訓練.csv",
        "datasets/%2e%2e/x",  # a literal object name: GCS decodes nothing
        "datasets/a..b/x",
    ],
)
def test_objects_under_an_uploads_prefix_of_the_same_bucket_are_allowed(name: str) -> None:
    assert policy().refusal(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("prepared/other-dataset-0123/train.jsonl", "may not be read"),
        ("reports/job-1/report.json", "may not be read"),
        ("secret/keys.json", "may not be read"),
        ("datasetsx/train.jsonl", "may not be read"),
        ("datasets", "may not be read"),
        ("Datasets/train.jsonl", "may not be read"),
        ("gs://other-bucket/datasets/train.jsonl", "another bucket"),
        (f"gs://{BUCKET}/prepared/x/train.jsonl", "may not be read"),
        (f"gs://{BUCKET}/reports/x.json", "may not be read"),
        ("datasets/../prepared/x/train.jsonl", "'.' or '..' segment"),
        ("datasets/./x", "'.' or '..' segment"),
        ("datasets/..", "'.' or '..' segment"),
        ("datasets//x", "empty segment"),
        ("datasets/x/", "empty segment"),
        ("/datasets/x", "leading '/'"),
        (f"gs://{BUCKET}//datasets/x", "leading '/'"),
        ("", "empty object name"),
        (f"gs://{BUCKET}", "empty object name"),
        (f"gs://{BUCKET}/", "empty object name"),
        ("gs:///datasets/x", "no bucket"),
        ("datasets/x\u202e/lmth.jsonl", "control or invisible"),  # right-to-left override
        ("datasets/x\u200b/y", "control or invisible"),  # zero-width space
        ("datasets/x\ny", "control or invisible"),
        ("datasets/x\x00y", "control or invisible"),
        ("ｄatasets/x", "may not be read"),  # fullwidth: another object name, not datasets/
        ("datasets\u2215..\u2215prepared/x", "may not be read"),  # division slash is no '/'
        ("datasets\\..\\prepared/x", "may not be read"),
    ],
)
def test_anything_else_is_refused_with_the_rule_in_the_message(name: str, reason: str) -> None:
    refusal = policy().refusal(name)
    assert refusal is not None, name
    code, message = refusal
    assert code == "manifest_file_not_allowed"
    assert code in MANIFEST_ERROR_CODES
    assert reason in message
    assert "datasets/" in message
    assert "SFTPIPE_UPLOAD_PREFIXES" in message
    assert "no other bucket" in message


def test_incoming_keeps_its_own_code() -> None:
    code, message = policy().refusal("incoming/train.jsonl") or ("", "")
    assert code == "manifest_file_in_incoming"
    assert "starts a run of its own" in message
    assert policy().refusal(f"gs://{BUCKET}/incoming/train.jsonl") is not None


def test_allowed_buckets_open_every_object_of_those_buckets_only() -> None:
    rule = policy(allowed_buckets="shared-data, partner-data")
    assert rule.refusal("gs://shared-data/anything/at/all.jsonl") is None
    assert rule.refusal("gs://partner-data/prepared/x.jsonl") is None
    code, message = rule.refusal("gs://shared-data-2/x.jsonl") or ("", "")
    assert code == "manifest_file_not_allowed"
    assert "partner-data, shared-data" in message
    # Path hygiene holds in allowed buckets too.
    assert rule.refusal("gs://shared-data/a/../b") is not None
    assert rule.refusal("gs://shared-data/a//b") is not None


def test_listing_the_own_bucket_as_allowed_does_not_open_its_outputs() -> None:
    rule = policy(allowed_buckets=BUCKET)
    assert rule.refusal("prepared/x/train.jsonl") is not None
    assert rule.refusal(f"gs://{BUCKET}/reports/r.json") is not None
    assert rule.refusal("elsewhere/x.jsonl") is not None
    assert rule.refusal("datasets/x.jsonl") is None


def test_configured_prefixes_are_normalised_and_never_open_the_outputs() -> None:
    rule = policy(upload_prefixes="teams/a, /teams/b/ ,uploads,,")
    assert rule.upload_prefixes == ("teams/a/", "teams/b/", "uploads/")
    assert rule.refusal("teams/a/train.jsonl") is None
    assert rule.refusal("teams/b/x/y.csv") is None
    assert rule.refusal("uploads/y.csv") is None
    assert rule.refusal("teams/ab/train.jsonl") is not None  # "teams/a" must not match "teams/ab"
    assert rule.refusal("datasets/x.jsonl") is not None  # the default is replaced, not extended
    # An operator's prefix that covers the pipeline's own outputs still cannot reach them.
    broad = policy(upload_prefixes="prepared/,reports/x")
    assert broad.refusal("prepared/x/train.jsonl") is not None
    assert broad.refusal("reports/x/y.json") is not None


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        (["datasets/"], ("datasets/",)),
        (["datasets"], ("datasets/",)),
        (["datasets//"], ("datasets//",)),
        (["", "/", "  ", "//"], ()),
        (["a/", "a", " a "], ("a/",)),
        (["/lead/"], ("lead/",)),
    ],
)
def test_normalise_prefixes(raw: list[str], normalised: tuple[str, ...]) -> None:
    assert normalise_prefixes(raw) == normalised


def test_no_prefix_configured_allows_nothing_in_the_own_bucket() -> None:
    rule = ReadPolicy.from_settings(Settings(upload_prefixes=[]), BUCKET)
    assert rule.upload_prefixes == ()
    refusal = rule.refusal("datasets/x.jsonl")
    assert refusal is not None
    assert "(none)" in refusal[1]


# --- prepare_manifest: nothing of a refused object is read ---------------------------------------


class _Blob:
    def __init__(self, storage: _Storage, bucket: str, name: str) -> None:
        self._storage, self._bucket, self.name = storage, bucket, name
        self.generation, self.size = 1, len(storage.objects.get((bucket, name), b""))

    def download_as_bytes(self) -> bytes:
        self._storage.reads.append((self._bucket, self.name))
        return self._storage.objects[(self._bucket, self.name)]

    def open(self, mode: str = "rb") -> Any:
        import io

        self._storage.reads.append((self._bucket, self.name))
        return io.BytesIO(self._storage.objects[(self._bucket, self.name)])


class _Bucket:
    def __init__(self, storage: _Storage, name: str) -> None:
        self._storage, self.name = storage, name

    def blob(self, name: str, generation: int | None = None) -> _Blob:
        return _Blob(self._storage, self.name, name)

    def get_blob(self, name: str) -> _Blob | None:
        self._storage.looked_up.append((self.name, name))
        return _Blob(self._storage, self.name, name) if (self.name, name) in self._storage.objects else None


class _Storage:
    """Just what prepare_manifest calls, recording every lookup and read."""

    def __init__(self, objects: dict[tuple[str, str], bytes]) -> None:
        self.objects = objects
        self.looked_up: list[tuple[str, str]] = []
        self.reads: list[tuple[str, str]] = []

    def bucket(self, name: str) -> _Bucket:
        return _Bucket(self, name)


class _Runtime:
    def __init__(self, settings: Settings, storage: _Storage) -> None:
        self.settings, self.storage = settings, storage


def _run(manifest: dict[str, Any], objects: dict[tuple[str, str], bytes], **settings: Any) -> Any:
    body = orjson.dumps(manifest)
    storage = _Storage({**objects, (BUCKET, "incoming/run.tuning.json"): body})
    runtime = _Runtime(Settings(bucket=BUCKET, **settings), storage)
    obj = StorageObject(bucket=BUCKET, name="incoming/run.tuning.json", generation=1, size=len(body))
    written: list[tuple[str, bytes]] = []
    outcome = prepare_manifest(obj, cast(Runtime, runtime), lambda split, line: written.append((split, line)))
    return outcome, storage, written


def test_a_manifest_naming_other_data_is_rejected_and_nothing_of_it_is_looked_up_or_read() -> None:
    objects = {
        (BUCKET, "prepared/someone-else/train.jsonl"): SAMPLE,
        (BUCKET, "reports/someone-else/report.json"): b"{}",
        ("other-bucket", "datasets/test.jsonl"): SAMPLE,
    }
    manifest = {
        "train": "prepared/someone-else/train.jsonl",
        "validation": "reports/someone-else/report.json",
        "test": "gs://other-bucket/datasets/test.jsonl",
    }
    outcome, storage, written = _run(manifest, objects)

    report = outcome.report
    assert report.ok is False
    assert [(e.field, e.code) for e in report.errors] == [
        ("train", "manifest_file_not_allowed"),
        ("validation", "manifest_file_not_allowed"),
        ("test", "manifest_file_not_allowed"),
    ]
    assert report.error_counts == {"manifest_file_not_allowed": 3}
    assert storage.looked_up == []
    assert storage.reads == [(BUCKET, "incoming/run.tuning.json")]
    assert written == []
    assert all(file.result is None and file.size is None for file in report.files)


def test_one_refused_file_rejects_the_manifest_while_the_allowed_ones_are_only_looked_up() -> None:
    objects = {(BUCKET, "datasets/train.jsonl"): SAMPLE, (BUCKET, "prepared/x/test.jsonl"): SAMPLE}
    outcome, storage, written = _run(
        {"train": "datasets/train.jsonl", "test": "prepared/x/test.jsonl"}, objects
    )
    assert [(e.field, e.code) for e in outcome.report.errors] == [("test", "manifest_file_not_allowed")]
    assert storage.looked_up == [(BUCKET, "datasets/train.jsonl")]
    assert storage.reads == [(BUCKET, "incoming/run.tuning.json")]
    assert written == []


def test_allowed_files_in_the_prefixes_and_allowed_buckets_are_prepared() -> None:
    lines = SAMPLE.splitlines(keepends=True)
    objects = {
        (BUCKET, "teams/a/train.jsonl"): b"".join(lines[:120]),
        ("partner-data", "any/test.jsonl"): b"".join(lines[120:]),
    }
    outcome, storage, written = _run(
        {"train": "teams/a/train.jsonl", "test": "gs://partner-data/any/test.jsonl"},
        objects,
        upload_prefixes="teams/a",
        allowed_buckets="partner-data",
    )
    assert outcome.report.ok is True, outcome.report.errors
    assert outcome.report.split.train == 120
    assert outcome.report.split.test == 40
    assert set(storage.looked_up) == {(BUCKET, "teams/a/train.jsonl"), ("partner-data", "any/test.jsonl")}
    assert {split for split, _ in written} == {"train", "test"}


# --- Settings a manifest cannot use are refused before any file is looked up ---------------------


def test_a_manifest_with_an_adapter_size_its_base_model_refuses_is_rejected_naming_the_field() -> None:
    objects = {(BUCKET, "datasets/train.jsonl"): SAMPLE}
    manifest = {"train": "datasets/train.jsonl", "base_model": "gemini-2.5-pro", "adapter_size": 16}
    outcome, storage, written = _run(manifest, objects)
    [error] = outcome.report.errors
    assert (error.field, error.code) == ("adapter_size", "invalid_upload_setting")
    assert "gemini-2.5-pro accepts adapter sizes 1, 2, 4, 8" in error.message
    assert storage.looked_up == []
    assert written == []


def test_the_deployment_default_adapter_size_is_held_to_the_manifest_base_model() -> None:
    objects = {(BUCKET, "datasets/train.jsonl"): SAMPLE}
    manifest = {"train": "datasets/train.jsonl", "base_model": "gemini-2.5-pro"}
    outcome, _storage, written = _run(manifest, objects, adapter_size=16)
    [error] = outcome.report.errors
    assert (error.field, error.code) == ("adapter_size", "invalid_upload_setting")
    assert "SFTPIPE_ADAPTER_SIZE" in error.message
    assert written == []


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ({"train": "datasets/../prepared/x/train.jsonl"}, "train"),
        ({"train": "/datasets/x.jsonl"}, "train"),
        ({"train": "datasets/./x.jsonl"}, "train"),
        ({"train": "   "}, "train"),
        ({"train": ""}, "train"),
        ({"train": "datasets/a.jsonl", "test": "https://example.com/x.jsonl"}, "test"),
        ({"train": "datasets/a.jsonl", "validation": "gs://only-a-bucket"}, "validation"),
        ({"train": "/{detail}/{0}"}, "train"),  # braces in a name are no format string
    ],
)
def test_names_that_cannot_be_one_object_are_refused_with_the_same_code(
    manifest: dict[str, Any], field: str
) -> None:
    objects = {(BUCKET, "datasets/a.jsonl"): SAMPLE, (BUCKET, "prepared/x/train.jsonl"): SAMPLE}
    outcome, storage, written = _run(manifest, objects)
    [error] = outcome.report.errors
    assert (error.field, error.code) == (field, "manifest_file_not_allowed")
    assert "SFTPIPE_UPLOAD_PREFIXES" in error.message
    assert storage.looked_up == []
    assert storage.reads == [(BUCKET, "incoming/run.tuning.json")]
    assert written == []

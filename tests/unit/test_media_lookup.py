"""Ingest's object-facts lookup reads metadata only, and only what the read policy allows."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from shared.datasets.media import ObjectFacts, ObjectRefusedError
from shared.ingest.manifest import ReadPolicy
from shared.ingest.media_lookup import object_facts_lookup, upload_folder


class Storage:
    """Object metadata by (bucket, name); records every get_blob."""

    def __init__(self, objects: dict[tuple[str, str], tuple[int, str]]) -> None:
        self.objects = objects
        self.read: list[tuple[str, str]] = []

    def bucket(self, bucket: str) -> SimpleNamespace:
        def get_blob(name: str) -> SimpleNamespace | None:
            self.read.append((bucket, name))
            found = self.objects.get((bucket, name))
            return None if found is None else SimpleNamespace(size=found[0], content_type=found[1])

        return SimpleNamespace(get_blob=get_blob)


POLICY = ReadPolicy(
    bucket="up",
    upload_prefixes=("datasets/",),
    allowed_buckets=frozenset({"media"}),
    incoming_prefix="incoming/",
    reserved_prefixes=("prepared/", "reports/"),
)


def test_upload_folder() -> None:
    assert upload_folder("incoming/alice/d.jsonl") == "incoming/alice/"
    assert upload_folder("d.jsonl") == ""


def test_facts_of_allowed_objects_and_missing_ones() -> None:
    storage = Storage(
        {("up", "incoming/alice/a.png"): (10, "image/png"), ("media", "x.png"): (5, "image/png")}
    )
    lookup = object_facts_lookup(storage, POLICY, "incoming/alice/d.jsonl")
    assert lookup("gs://up/incoming/alice/a.png") == ObjectFacts(size=10, content_type="image/png")
    assert lookup("gs://media/x.png") == ObjectFacts(size=5, content_type="image/png")
    assert lookup("gs://up/datasets/none.png") is None
    lookup("gs://up/incoming/alice/a.png")
    assert storage.read.count(("up", "incoming/alice/a.png")) == 1  # cached


@pytest.mark.parametrize(
    "uri",
    ["gs://other/a.png", "gs://up/prepared/x/train.jsonl", "gs://up/incoming/bob/a.png", "gs://up/top.png"],
)
def test_objects_outside_the_policy_are_refused_and_never_read(uri: str) -> None:
    storage = Storage({})
    lookup = object_facts_lookup(storage, POLICY, "incoming/alice/d.jsonl")
    with pytest.raises(ObjectRefusedError) as refused:
        lookup(uri)
    assert refused.value.code == "media_not_allowed"
    assert storage.read == []


def test_https_is_not_checked() -> None:
    lookup = object_facts_lookup(Storage({}), POLICY, "incoming/alice/d.jsonl")
    assert lookup("https://example.com/a.png") == ObjectFacts(size=None)

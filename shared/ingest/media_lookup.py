"""The object-facts lookup that ingest injects into prepare() for ``fileData`` parts.

It reads metadata only (size, contentType: one ``get_blob`` per distinct URI, cached), and only of
objects the read policy allows (:class:`shared.ingest.manifest.ReadPolicy`) or of the upload's own
folder in its bucket (where a placeholder dataset's images are resolved). Anything else is an error
of the dataset, decided from the URI alone: it is never read.
"""

from __future__ import annotations

import posixpath
from typing import Any

from google.api_core import exceptions as gexc

from shared.datasets.media import ObjectFacts, ObjectLookup, ObjectRefusedError
from shared.ingest.manifest import ReadPolicy


def upload_folder(object_name: str) -> str:
    """``incoming/alice/data.jsonl`` -> ``incoming/alice/`` ("" at the bucket's root)."""
    folder = posixpath.dirname(object_name)
    return f"{folder}/" if folder else ""


def object_facts_lookup(storage: Any, policy: ReadPolicy, upload_name: str) -> ObjectLookup:
    """A lookup for the upload ``gs://{policy.bucket}/{upload_name}``, through ``storage``."""
    folder = upload_folder(upload_name)
    cache: dict[str, ObjectFacts | None] = {}

    def lookup(uri: str) -> ObjectFacts | None:
        if not uri.startswith("gs://"):
            return ObjectFacts(size=None)  # https://: not ours to fetch; reported as not checked
        if uri in cache:
            return cache[uri]
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        in_folder = bucket == policy.bucket and name.startswith(folder) and ".." not in name.split("/")
        if not in_folder:
            refusal = policy.refusal(uri)
            if refusal is not None:
                raise ObjectRefusedError(
                    "media_not_allowed",
                    f"{uri} may not be read: a fileData object must be in the upload's folder "
                    f"(gs://{policy.bucket}/{folder}) or allowed by the read policy ({refusal[1]})",
                )
        try:
            blob = storage.bucket(bucket).get_blob(name)
        except gexc.Forbidden as exc:
            raise ObjectRefusedError("media_unreadable", f"{uri} exists but may not be read: {exc}") from exc
        except gexc.NotFound:
            blob = None
        cache[uri] = None if blob is None else ObjectFacts(size=blob.size, content_type=blob.content_type)
        return cache[uri]

    return lookup

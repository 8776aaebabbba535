"""Media (``fileData`` parts) of a tuning dataset: per-modality limits, the object checks, the tokens.

A ``fileData`` part is checked for shape by :mod:`shared.datasets.convert`; this module checks what
the URI names, before any spend: the object exists and may be read, its size and contentType, and
the per-example and per-dataset limits of Vertex AI's image / document / audio / video tuning pages
(summarised in shared/design/vertex-and-genai.md, "Media per example").

:func:`shared.datasets.prepare.prepare` is pure: the object facts come from an injected
:data:`ObjectLookup`, a callable ``uri -> ObjectFacts | None`` that the ingest entry
(:mod:`shared.ingest.upload`) builds from its storage client and read policy. Without one
(``sftpipe validate`` on a local file) the counts and MIME types are still checked, and the report
says that the objects were not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from shared.datasets.issues import Issue

MB = 1024**2

Modality = Literal["image", "document", "audio", "video"]

# --- Limits (source: Vertex AI "Image tuning", "Document tuning", "Audio tuning", "Video tuning"
# pages, as summarised in shared/design/vertex-and-genai.md, "Media per example") ---------------

#: Image tuning: at most 30 images per example.
MAX_IMAGES_PER_EXAMPLE = 30
#: Image tuning: at most 20 MB an image.
MAX_IMAGE_BYTES = 20 * MB
#: Document tuning: at most 4 PDF / text files per example.
MAX_DOCUMENTS_PER_EXAMPLE = 4
#: Document tuning: at most 20 MB of documents per example (all its files together).
MAX_DOCUMENT_BYTES_PER_EXAMPLE = 20 * MB
#: Audio tuning: one audio file per example.
MAX_AUDIO_PER_EXAMPLE = 1
#: Audio tuning: at most 100 MB an audio file.
MAX_AUDIO_BYTES = 100 * MB
#: Video tuning: one video file per example.
MAX_VIDEO_PER_EXAMPLE = 1
#: Video tuning ("Maximum video file size: 100MB").
MAX_VIDEO_BYTES = 100 * MB
#: Supervised tuning limits: at most 300K multimodal training examples (1M text-only).
MAX_MULTIMODAL_EXAMPLES = 300_000

MAX_PER_EXAMPLE: dict[Modality, int] = {
    "image": MAX_IMAGES_PER_EXAMPLE,
    "document": MAX_DOCUMENTS_PER_EXAMPLE,
    "audio": MAX_AUDIO_PER_EXAMPLE,
    "video": MAX_VIDEO_PER_EXAMPLE,
}
#: Largest object of each modality (documents are bounded per example instead).
MAX_OBJECT_BYTES: dict[Modality, int] = {
    "image": MAX_IMAGE_BYTES,
    "document": MAX_DOCUMENT_BYTES_PER_EXAMPLE,
    "audio": MAX_AUDIO_BYTES,
    "video": MAX_VIDEO_BYTES,
}

# --- Tokens (source: Gemini "Understand and count tokens" / media pages: an image up to 384 px is
# 258 tokens, video 263 tokens a second, audio 32 tokens a second, a PDF page 258 tokens) --------

TOKENS_PER_IMAGE = 258
TOKENS_PER_VIDEO_SECOND = 263
TOKENS_PER_AUDIO_SECOND = 32
TOKENS_PER_DOCUMENT_PAGE = 258
#: The duration is not known before the job (we read no media): each video / audio file is
#: assumed to last this long. A stated assumption, not a measurement.
ASSUMED_MEDIA_SECONDS = 60
#: Pages of a document, assumed likewise.
ASSUMED_DOCUMENT_PAGES = 1

TOKENS_PER_FILE: dict[Modality, int] = {
    "image": TOKENS_PER_IMAGE,
    "document": TOKENS_PER_DOCUMENT_PAGE * ASSUMED_DOCUMENT_PAGES,
    "audio": TOKENS_PER_AUDIO_SECOND * ASSUMED_MEDIA_SECONDS,
    "video": TOKENS_PER_VIDEO_SECOND * ASSUMED_MEDIA_SECONDS,
}

MEDIA_TOKENS_DESCRIPTION = (
    f"media: {TOKENS_PER_IMAGE} per image, {TOKENS_PER_DOCUMENT_PAGE} per document page "
    f"(assumed {ASSUMED_DOCUMENT_PAGES} page), {TOKENS_PER_VIDEO_SECOND}/s of video and "
    f"{TOKENS_PER_AUDIO_SECOND}/s of audio (duration unknown: assumed {ASSUMED_MEDIA_SECONDS} s a file)"
)


def modality(mime: str) -> Modality:
    """The modality of an accepted MIME type (application/pdf and text/plain are documents)."""
    kind = mime.partition("/")[0]
    if kind in ("image", "audio", "video"):
        return kind  # type: ignore[return-value]
    return "document"


def file_parts(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(field path, fileData) of every file part of a converted (Gemini) record."""
    found = []
    for i, content in enumerate(record.get("contents", ())):
        for j, part in enumerate(content.get("parts", ())):
            data = part.get("fileData")
            if data is not None:
                found.append((f"contents[{i}].parts[{j}].fileData", data))
    return found


def media_tokens(record: dict[str, Any]) -> int:
    """Estimated tokens of the file parts, by modality (see MEDIA_TOKENS_DESCRIPTION)."""
    return sum(TOKENS_PER_FILE[modality(data["mimeType"])] for _, data in file_parts(record))


@dataclass(frozen=True, slots=True)
class ObjectFacts:
    """What the storage metadata says of one object (nothing of its content is read)."""

    size: int | None
    content_type: str | None = None


class ObjectRefusedError(Exception):
    """The lookup may not (or cannot) read this object: outside the read policy, or forbidden."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: ``uri -> ObjectFacts``, or None when there is no such object; raises ObjectRefusedError when
#: the object may not be read. Returns facts with ``size=None`` for a URI it cannot check (https).
ObjectLookup = Callable[[str], ObjectFacts | None]


def _resolution(raw: Any) -> tuple[str, ...]:
    """Every ``mediaResolution`` the source record sets (generationConfig or a part)."""
    if type(raw) is not dict:
        return ()
    found: list[str] = []
    config = raw.get("generationConfig", raw.get("generation_config"))
    if type(config) is dict:
        value = config.get("mediaResolution", config.get("media_resolution"))
        if value is not None:
            found.append(str(value))
    contents = raw.get("contents")
    if type(contents) is list:
        for content in contents:
            parts = content.get("parts") if type(content) is dict else None
            for part in parts if type(parts) is list else ():
                if type(part) is dict:
                    value = part.get("mediaResolution", part.get("media_resolution"))
                    if value is not None:
                        found.append(str(value.get("level", value)) if type(value) is dict else str(value))
    return tuple(found)


class MediaChecker:
    """Checks the file parts of each example, and the dataset's counts at the end."""

    def __init__(self, lookup: ObjectLookup | None) -> None:
        self.lookup = lookup
        self.multimodal_examples = 0
        self.resolution: str | None = None
        self.resolution_line = 0
        self.unchecked_lines: list[int] = []
        self.unchecked = 0

    def check(self, record: dict[str, Any], raw: Any, line: int) -> list[Issue]:
        """The issues of one example (empty when it passes)."""
        parts = file_parts(record)
        issues: list[Issue] = []
        resolutions = _resolution(raw)
        if resolutions:
            issues.extend(self._check_resolution(resolutions, line))
        if not parts:
            return issues
        self.multimodal_examples += 1
        counts: Counter[str] = Counter()
        document_bytes = 0
        for path, data in parts:
            kind = modality(data["mimeType"])
            counts[kind] += 1
            if counts[kind] == MAX_PER_EXAMPLE[kind] + 1:
                issues.append(
                    Issue(
                        line=line,
                        field=path,
                        code="too_many_media_files",
                        message=f"the example has more than {MAX_PER_EXAMPLE[kind]} {kind} file"
                        f"{'s' if MAX_PER_EXAMPLE[kind] > 1 else ''}; Vertex AI accepts at most "
                        f"{MAX_PER_EXAMPLE[kind]} per example",
                    )
                )
            if self.lookup is None:
                continue
            uri = data["fileUri"]
            field = f"{path}.fileUri"
            try:
                facts = self.lookup(uri)
            except ObjectRefusedError as refused:
                issues.append(Issue(line=line, field=field, code=refused.code, message=refused.message))
                continue
            if facts is None:
                issues.append(
                    Issue(line=line, field=field, code="media_not_found", message=f"there is no object {uri}")
                )
                continue
            if facts.size is None:
                self._unchecked(line)
                continue
            if kind == "document":
                document_bytes += facts.size
            elif facts.size > MAX_OBJECT_BYTES[kind]:
                issues.append(
                    Issue(
                        line=line,
                        field=field,
                        code="media_too_large",
                        message=f"{uri} has {facts.size:,} bytes; a {kind} may have at most "
                        f"{MAX_OBJECT_BYTES[kind]:,} ({MAX_OBJECT_BYTES[kind] // MB} MB)",
                    )
                )
            declared = data["mimeType"]
            actual = (facts.content_type or "").split(";")[0].strip().lower()
            if actual and actual not in ("application/octet-stream", declared):
                issues.append(
                    Issue(
                        line=line,
                        field=f"{path}.mimeType",
                        code="media_type_mismatch",
                        message=f"the part says {declared} but {uri} is stored as {actual}",
                    )
                )
        if document_bytes > MAX_DOCUMENT_BYTES_PER_EXAMPLE:
            issues.append(
                Issue(
                    line=line,
                    field="",
                    code="media_too_large",
                    message=f"the example's documents have {document_bytes:,} bytes together; at most "
                    f"{MAX_DOCUMENT_BYTES_PER_EXAMPLE:,} ({MAX_DOCUMENT_BYTES_PER_EXAMPLE // MB} MB) per example",
                )
            )
        if self.lookup is None:
            self._unchecked(line)
        return issues

    def _check_resolution(self, resolutions: tuple[str, ...], line: int) -> list[Issue]:
        first = self.resolution or resolutions[0]
        other = next((r for r in resolutions if r != first), None)
        if self.resolution is None:
            self.resolution, self.resolution_line = first, line
        if other is None:
            return []
        where = "this example" if self.resolution_line == line else f"line {self.resolution_line}"
        return [
            Issue(
                line=line,
                field="mediaResolution",
                code="mixed_media_resolution",
                message=f"mediaResolution {other} differs from {first} ({where}); Vertex AI needs the same "
                "mediaResolution on every example",
            )
        ]

    def _unchecked(self, line: int) -> None:
        self.unchecked += 1
        if len(self.unchecked_lines) < 10:
            self.unchecked_lines.append(line)

    def dataset_issue(self) -> Issue | None:
        """The file-level issue of the multimodal-example cap, None when within it."""
        if self.multimodal_examples <= MAX_MULTIMODAL_EXAMPLES:
            return None
        return Issue(
            line=0,
            field="",
            code="too_many_multimodal_examples",
            message=f"the dataset has {self.multimodal_examples:,} examples with media; Vertex AI accepts at "
            f"most {MAX_MULTIMODAL_EXAMPLES:,} multimodal examples",
        )

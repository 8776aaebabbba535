"""fileData parts are checked against what they name, through an injected object-facts lookup."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
from conftest import jsonl

from shared.datasets import PrepareOptions, prepare, prepare_and_write
from shared.datasets.issues import ERROR_CODES, WARNING_CODES
from shared.datasets.media import (
    MAX_IMAGE_BYTES,
    MAX_IMAGES_PER_EXAMPLE,
    TOKENS_PER_FILE,
    TOKENS_PER_IMAGE,
    MediaChecker,
    ObjectFacts,
    ObjectRefusedError,
)

BUCKET = "gs://uploads/incoming/alice/"


def facts_of(objects: dict[str, ObjectFacts], refused: tuple[str, ...] = ()):
    """A dict-backed lookup: our own interface, not a storage mock."""
    looked: list[str] = []

    def lookup(uri: str) -> ObjectFacts | None:
        looked.append(uri)
        if uri.startswith(refused):
            raise ObjectRefusedError("media_not_allowed", f"{uri} may not be read")
        return objects.get(uri)

    lookup.looked = looked  # type: ignore[attr-defined]
    return lookup


def image(name: str, mime: str = "image/png") -> dict[str, Any]:
    return {"fileData": {"mimeType": mime, "fileUri": f"{BUCKET}{name}"}}


def example(*files: dict[str, Any], answer: str = "a cat", **extra: Any) -> dict[str, Any]:
    return {
        "contents": [
            {"role": "user", "parts": [{"text": "what is this?"}, *files]},
            {"role": "model", "parts": [{"text": answer}]},
        ],
        **extra,
    }


def check(data: bytes, lookup=None, **options: Any):
    options.setdefault("token_counting", "estimate")
    options.setdefault("split", "train")
    return prepare(
        io.BytesIO(data),
        filename="d.jsonl",
        size=len(data),
        options=PrepareOptions(**options),
        object_facts=lookup,
    )


def media_errors(result):
    return [e for e in result.errors if e.code != "no_examples"]


def small(*names: str, mime: str = "image/png") -> dict[str, ObjectFacts]:
    return {f"{BUCKET}{n}": ObjectFacts(size=1000, content_type=mime) for n in names}


def test_every_code_is_documented() -> None:
    for code in (
        "media_not_found",
        "media_not_allowed",
        "media_too_large",
        "too_many_media_files",
        "mixed_media_resolution",
        "too_many_multimodal_examples",
        "media_type_mismatch",
    ):
        assert code in ERROR_CODES
    assert "media_not_checked" in WARNING_CODES


def test_existing_small_images_pass() -> None:
    lookup = facts_of(small("a.png", "b.png"))
    result = check(jsonl(example(image("a.png")), example(image("b.png"), answer="a dog")), lookup)
    assert result.ok, result.errors
    assert lookup.looked == [f"{BUCKET}a.png", f"{BUCKET}b.png"]
    assert not any(w.code == "media_not_checked" for w in result.warnings)


def test_missing_object_names_line_field_and_uri() -> None:
    result = check(
        jsonl(example(image("a.png")), example(image("gone.png"), answer="b")), facts_of(small("a.png"))
    )
    assert not result.ok
    [issue] = media_errors(result)
    assert issue.code == "media_not_found"
    assert issue.line == 2
    assert issue.field == "contents[0].parts[1].fileData.fileUri"
    assert f"{BUCKET}gone.png" in issue.message


def test_object_outside_the_read_policy_is_refused_not_read() -> None:
    lookup = facts_of(small("a.png"), refused=("gs://elsewhere/",))
    bad = {"fileData": {"mimeType": "image/png", "fileUri": "gs://elsewhere/secret.png"}}
    result = check(jsonl(example(bad)), lookup)
    assert [e.code for e in media_errors(result)] == ["media_not_allowed"]


def test_a_50_mb_image_is_too_large() -> None:
    objects = {f"{BUCKET}big.png": ObjectFacts(size=50 * 1024**2, content_type="image/png")}
    result = check(jsonl(example(image("big.png"))), facts_of(objects))
    [issue] = media_errors(result)
    assert issue.code == "media_too_large"
    assert f"{MAX_IMAGE_BYTES:,}" in issue.message


def test_31_images_in_one_example() -> None:
    names = [f"{i}.png" for i in range(MAX_IMAGES_PER_EXAMPLE + 1)]
    result = check(
        jsonl(example(*(image(n) for n in names))), facts_of(small(*names)), base_model="gemini-2.5-flash"
    )
    assert "too_many_media_files" in result.error_counts or "too_many_files" in result.error_counts
    checker = MediaChecker(None)
    issues = checker.check(example(*(image(n) for n in names)), {}, 1)
    assert [i.code for i in issues] == ["too_many_media_files"]


def test_two_videos_in_one_example() -> None:
    names = ["a.mp4", "b.mp4"]
    videos = [image(n, "video/mp4") for n in names]
    result = check(jsonl(example(*videos)), facts_of(small(*names, mime="video/mp4")))
    assert [e.code for e in media_errors(result)] == ["too_many_media_files"]
    assert "1 video" in media_errors(result)[0].message


def test_mixed_media_resolution_across_examples() -> None:
    low = {"mediaResolution": "MEDIA_RESOLUTION_LOW"}
    high = {"mediaResolution": "MEDIA_RESOLUTION_HIGH"}
    data = jsonl(
        example(image("a.png"), generationConfig=low),
        example(image("b.png"), answer="b", generationConfig=high),
    )
    result = check(data, facts_of(small("a.png", "b.png")))
    [issue] = media_errors(result)
    assert issue.code == "mixed_media_resolution"
    assert issue.line == 2
    assert "line 1" in issue.message


def test_stored_content_type_must_match() -> None:
    objects = {f"{BUCKET}a.png": ObjectFacts(size=10, content_type="image/jpeg")}
    result = check(jsonl(example(image("a.png"))), facts_of(objects))
    [issue] = media_errors(result)
    assert issue.code == "media_type_mismatch"
    assert issue.field == "contents[0].parts[1].fileData.mimeType"


def test_without_a_lookup_shapes_are_checked_and_the_report_says_objects_were_not() -> None:
    result = check(jsonl(example(image("a.png"))))
    assert result.ok
    [warning] = [w for w in result.warnings if w.code == "media_not_checked"]
    assert "not checked" in warning.message


def test_multimodal_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.datasets import media

    monkeypatch.setattr(media, "MAX_MULTIMODAL_EXAMPLES", 1)
    data = jsonl(example(image("a.png")), example(image("b.png"), answer="b"))
    result = check(data, facts_of(small("a.png", "b.png")))
    assert not result.ok
    assert "too_many_multimodal_examples" in result.error_counts


def test_token_estimate_counts_media_by_modality() -> None:
    text_only = check(jsonl(example()))
    with_image = check(jsonl(example(image("a.png"))), facts_of(small("a.png")))
    with_video = check(
        jsonl(example(image("a.mp4", "video/mp4"))), facts_of(small("a.mp4", mime="video/mp4"))
    )
    assert with_image.tokens.max - text_only.tokens.max == TOKENS_PER_IMAGE
    assert with_video.tokens.max - text_only.tokens.max == TOKENS_PER_FILE["video"]
    assert "assumed 60 s" in with_image.tokens.description


# --- Placeholder (LLaVA-style) datasets ---------------------------------------------------------

BASE = "gs://uploads/incoming/alice/"


def convert_placeholders(*records: dict[str, Any], lookup=None):
    data = jsonl(*records)
    options = PrepareOptions(token_counting="estimate", split="train")
    written: list[dict[str, Any]] = []
    result = prepare(
        io.BytesIO(data),
        filename="d.jsonl",
        size=len(data),
        options=options,
        object_facts=lookup,
        media_base=BASE,
        sink=lambda split, line: written.append(orjson.loads(line)),
    )
    return result, written


def sharegpt(text: str, images: list[Any], answer: str = "a cat") -> dict[str, Any]:
    return {
        "conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": answer}],
        "images": images,
    }


def test_sharegpt_placeholders_become_file_parts_where_they_stood() -> None:
    lookup = facts_of({f"{BASE}img/a.png": ObjectFacts(size=10, content_type="image/png")})
    result, written = convert_placeholders(
        sharegpt("Look: <image> what is it?", ["img/a.png"]), lookup=lookup
    )
    assert result.ok, result.errors
    parts = written[0]["contents"][0]["parts"]
    assert parts == [
        {"text": "Look: "},
        {"fileData": {"mimeType": "image/png", "fileUri": f"{BASE}img/a.png"}},
        {"text": " what is it?"},
    ]


def test_openai_messages_placeholders() -> None:
    record = {
        "messages": [
            {"role": "user", "content": "<image>\n<image>\nCompare them"},
            {"role": "assistant", "content": "same"},
        ],
        "images": ["a.jpg", "./b.webp"],
    }
    lookup = facts_of(
        {
            f"{BASE}a.jpg": ObjectFacts(size=10, content_type="image/jpeg"),
            f"{BASE}b.webp": ObjectFacts(size=10, content_type="image/webp"),
        }
    )
    result, written = convert_placeholders(record, lookup=lookup)
    assert result.ok, result.errors
    parts = written[0]["contents"][0]["parts"]
    assert [p.get("fileData", {}).get("fileUri") for p in parts[:2]] == [f"{BASE}a.jpg", f"{BASE}b.webp"]
    assert parts[1]["fileData"]["mimeType"] == "image/webp"
    assert parts[2] == {"text": "\nCompare them"}


def test_placeholder_count_must_equal_images_count() -> None:
    result, _ = convert_placeholders(sharegpt("<image> and <image>", ["a.png"]))
    [issue] = media_errors(result)
    assert (issue.code, issue.line, issue.field) == ("invalid_image_placeholders", 1, "images")
    assert "2 <image> placeholders and 1 images" in issue.message


@pytest.mark.parametrize(
    "path", ["../secret.png", "/etc/a.png", "gs://other/a.png", "https://x.test/a.png", "a/../../b.png"]
)
def test_unsafe_paths_are_rejected_naming_line_and_path(path: str) -> None:
    result, _ = convert_placeholders(sharegpt("hi", []), sharegpt("<image>", [path], answer="b"))
    [issue] = media_errors(result)
    assert (issue.code, issue.line, issue.field) == ("invalid_media_path", 2, "images[0]")
    assert path in issue.message


def test_missing_placeholder_image_is_found_by_the_lookup() -> None:
    result, _ = convert_placeholders(sharegpt("<image>", ["gone.png"]), lookup=facts_of({}))
    [issue] = media_errors(result)
    assert issue.code == "media_not_found"
    assert issue.field == "contents[0].parts[0].fileData.fileUri"
    assert f"{BASE}gone.png" in issue.message


def _written(data: bytes, lookup) -> tuple[Any, list[dict[str, Any]]]:
    lines: list[bytes] = []
    result = prepare_and_write(
        lambda: io.BytesIO(data),
        filename="d.jsonl",
        size=len(data),
        options=PrepareOptions(token_counting="estimate", split="train"),
        sink=lambda split, line: lines.append(line),
        object_facts=lookup,
    )
    return result, [orjson.loads(line) for line in lines]


def test_the_media_resolution_is_kept_in_the_written_records_and_other_config_is_dropped_by_name() -> None:
    config = {"mediaResolution": "MEDIA_RESOLUTION_LOW", "temperature": 0.2}
    data = jsonl(example(image("a.png"), generationConfig=config))

    result, [record] = _written(data, facts_of(small("a.png")))

    # Before: generationConfig was dropped whole, so Vertex tuned at its default resolution.
    assert record["generationConfig"] == {"mediaResolution": "MEDIA_RESOLUTION_LOW"}
    [dropped] = [w for w in result.warnings if w.code == "unknown_keys_dropped"]
    assert "generationConfig.temperature" in dropped.message


def test_an_unknown_media_resolution_is_rejected_with_its_line_and_field() -> None:
    data = jsonl(
        example(image("a.png")), example(image("b.png"), generationConfig={"mediaResolution": "ULTRA"})
    )

    result = check(data, facts_of(small("a.png", "b.png")))

    [issue] = media_errors(result)
    assert (issue.code, issue.line, issue.field) == (
        "invalid_media_resolution",
        2,
        "generationConfig.mediaResolution",
    )
    assert issue.code in ERROR_CODES

"""Format detection and streaming readers: JSONL, JSON array/documents, CSV, TSV; BOM, CRLF, encodings."""

from __future__ import annotations

import gzip
import io

import orjson
import pytest
from conftest import gemini, jsonl, run

from shared.datasets import formats
from shared.datasets.formats import Source, SourceFormat, SourceUnreadableError, detect_format


@pytest.mark.parametrize(
    ("head", "filename", "expected"),
    [
        (b'{"contents": []}\n{"contents": []}\n', "x.txt", SourceFormat.JSONL),
        (b'[{"a": 1}]', "x.jsonl", SourceFormat.JSON_ARRAY),
        (b"[1]\n[2]\n[3]\n", "x.jsonl", SourceFormat.JSONL),
        (b'{\n  "conversations": []\n}\n', "x.json", SourceFormat.JSON),
        (b'{"broken": \n{"contents": []}\n', "x.txt", SourceFormat.JSONL),
        (b'{\n  "contents": []\n}\n', "x.jsonl", SourceFormat.JSONL),
        (b"input,output\na,b\n", "upload", SourceFormat.CSV),
        (b"input\toutput\na\tb\n", "upload", SourceFormat.TSV),
        (b"input,output\na,b\n", "x.tsv", SourceFormat.TSV),
    ],
)
def test_detect_format(head: bytes, filename: str, expected: SourceFormat) -> None:
    assert detect_format(head, filename) is expected


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"  \n\n", "empty_file"),
        (gzip.compress(b'{"a": 1}\n', mtime=0), "unsupported_format"),
        (b"\xff\xfe{\x00", "invalid_encoding"),
        (b"just some words\n", "unsupported_format"),
    ],
)
def test_unreadable_sources_are_rejected_whole(data: bytes, code: str) -> None:
    result, _ = run(data, skip_invalid=True)
    assert not result.ok
    assert [(e.line, e.code) for e in result.errors] == [(0, code)]


def test_bom_crlf_and_blank_lines() -> None:
    body = jsonl(gemini("a", "b"), gemini("c", "d")).replace(b"\n", b"\r\n")
    result, written = run(b"\xef\xbb\xbf" + body + b"\r\n\r\n" + orjson.dumps(gemini("e", "f")))
    assert result.ok
    assert result.records_in == 3
    assert result.examples == 3
    assert written["train"][0] == gemini("a", "b")


def test_jsonl_errors_carry_their_line_numbers() -> None:
    data = jsonl(gemini("a", "b")) + b"\n" + b'{"contents": [}\n' + b"[1, 2]\n" + b'{"x": "\xff"}\n'
    result, _ = run(data)
    assert [(e.line, e.code) for e in result.errors] == [
        (3, "invalid_json"),
        (4, "data_type"),
        (5, "invalid_encoding"),
    ]


def test_too_long_line_is_skipped_without_being_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "MAX_LINE_BYTES", 120)
    data = jsonl(gemini("a", "b"), gemini("x" * 200, "y"), gemini("c", "d"))
    result, _ = run(data, skip_invalid=True)
    assert [(e.line, e.code) for e in result.errors] == [(2, "line_too_long")]
    assert result.examples == 2


def test_json_array_errors_use_record_indexes() -> None:
    data = orjson.dumps([gemini("a", "b"), {"contents": "nope"}, gemini("c", "d")])
    result, _ = run(data, filename="x.json")
    assert result.format == "json_array"
    assert [(e.line, e.code, e.field) for e in result.errors] == [(2, "missing_contents_list", "contents")]


def test_truncated_json_array_is_unreadable_even_with_skip_invalid() -> None:
    data = orjson.dumps([gemini("a", "b"), gemini("c", "d")])[:-20]
    result, _ = run(data, filename="x.json", skip_invalid=True)
    assert not result.ok
    assert result.errors[-1].code == "unreadable_json"
    assert result.errors[-1].line == 2


def test_concatenated_pretty_printed_documents() -> None:
    data = b"\n".join(orjson.dumps(gemini(u, "ok"), option=orjson.OPT_INDENT_2) for u in ("a", "b", "c"))
    result, _ = run(data, filename="x.json")
    assert (result.ok, result.format, result.examples) == (True, "json", 3)


def test_tsv_and_csv_rows() -> None:
    tsv = b"prompt\tresponse\nhello\tworld\nbye\tnow\n"
    result, written = run(tsv, filename="x.tsv")
    assert (result.ok, result.format, result.examples) == (True, "tsv", 2)
    assert written["train"][0]["contents"][0]["parts"][0]["text"] == "hello"
    csv_data = b'input,output\r\n"multi\r\nline",x\r\n"a,b",y\r\nshort\r\n'
    result, written = run(csv_data, filename="x.csv")
    assert [(e.line, e.code) for e in result.errors] == [(5, "csv_column_count")]
    assert written["train"][0]["contents"][0]["parts"][0]["text"] == "multi\r\nline"


def test_csv_invalid_utf8_is_unreadable() -> None:
    result, _ = run(b"input,output\na,b\n\xff\xfe,c\n", filename="x.csv", skip_invalid=True)
    assert not result.ok
    assert result.errors[-1].code == "invalid_encoding"


def test_csv_without_recognisable_columns_needs_a_mapping() -> None:
    data = b"q,a\nhello,world\n"
    result, _ = run(data, filename="x.csv")
    # One answer for the whole file, at its header, with the mapping that would convert it.
    assert result.error_counts == {"unmapped_columns": 1}
    assert (result.errors[0].line, result.errors[0].code) == (1, "unmapped_columns")
    assert "--map input=q,output=a" in result.errors[0].message
    assert "column_mapping" in result.errors[0].message
    mapped, written = run(data, filename="x.csv", column_mapping={"input": "q", "output": "a"})
    assert mapped.ok
    assert written["train"][0]["contents"][1]["parts"][0]["text"] == "world"
    missing, _ = run(data, filename="x.csv", column_mapping={"input": "q", "output": "answer"})
    assert [(e.line, e.code) for e in missing.errors] == [(1, "missing_column")]


def test_size_from_metadata_is_checked_before_reading() -> None:
    class Unreadable(io.RawIOBase):
        def read(self, n: int = -1) -> bytes:
            raise AssertionError("must not be read")

    from shared.datasets import PrepareOptions, check_size, prepare

    result = prepare(Unreadable(), filename="x.jsonl", size=2 * 1024**3, options=PrepareOptions())
    assert [(e.line, e.code) for e in result.errors] == [(0, "file_too_large")]
    assert check_size(2 * 1024**3, "gemini-2.5-flash") is not None
    assert check_size(1024, "gemini-2.5-flash") is None


def test_streamed_size_cap_applies_when_size_is_unknown() -> None:
    data = jsonl(*[gemini(f"q{i}", "a") for i in range(40_000)])
    assert len(data) > 2 * formats.HEAD_BYTES
    source = Source(io.BytesIO(data), "x.jsonl", max_bytes=len(data) - 1000)
    with pytest.raises(SourceUnreadableError) as caught:
        list(source.records())
    assert caught.value.issue.code == "file_too_large"


def test_lines_across_small_blocks_read_as_line_by_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few bytes split every line somewhere: the records, their line numbers and the
    parser's messages (which give positions) are those of reading line by line."""
    data = (
        jsonl(gemini("a", "b"))
        + b"\n   \r\n"
        + b'{"contents": [}\n'
        + b'{"x": "\xff"}\r\n'
        + jsonl(gemini("c " * 40, "d"))
        + b'{"contents": 1'  # the last line, without a newline
    )
    expected = [
        (line, value, issue)
        for line, raw in enumerate(data.split(b"\n"), 1)
        for value, issue in [_parsed(line, raw + b"\n" if line < data.count(b"\n") + 1 else raw)]
        if value is not None or issue is not None
    ]
    for block in (1, 7, 64, 1 << 20):
        monkeypatch.setattr(formats, "_BUFFER_BYTES", block)
        monkeypatch.setattr(formats, "HEAD_BYTES", min(block, 1 << 20))
        assert list(Source(io.BytesIO(data), "x.jsonl", max_bytes=10**9).records()) == expected


def _parsed(line: int, raw: bytes) -> tuple[object, object]:
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        return None, None if raw.isspace() else formats._json_issue(line, raw, exc)


def test_a_line_longer_than_the_limit_across_blocks_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "MAX_LINE_BYTES", 120)
    monkeypatch.setattr(formats, "_BUFFER_BYTES", 16)
    monkeypatch.setattr(formats, "HEAD_BYTES", 16)
    base = len(orjson.dumps(gemini("", "y")))
    fits, too_long = (orjson.dumps(gemini("x" * (n - base), "y")) for n in (119, 120))
    data = jsonl(gemini("a", "b")) + fits + b"\n" + too_long + b"\n" + jsonl(gemini("c", "d")) + too_long
    records = list(Source(io.BytesIO(data), "x.jsonl", max_bytes=10**9).records())
    assert [(line, issue.code if issue else None) for line, _, issue in records] == [
        (1, None),
        (2, None),
        (3, "line_too_long"),
        (4, None),
        (5, "line_too_long"),
    ]

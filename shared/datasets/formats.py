"""Detect a source's format from its first bytes and stream its records.

Formats: JSONL (one JSON value per line), a JSON array, one or more JSON documents that are not
one-per-line (a single pretty-printed object, say), CSV and TSV; UTF-8 with or without BOM; LF or
CRLF. Everything streams: JSONL a block of lines at a time, each parsed with orjson (a line is at
most ``MAX_LINE_BYTES``), JSON arrays and documents item by item with ijson (one item is held in
memory at a time; there is no cap on the file beyond ``MAX_FILE_BYTES``), CSV/TSV row by row with
the csv module.

Line numbers are 1-based lines of the file for JSONL and CSV/TSV (the line where a row starts),
and 1-based record indexes for JSON arrays and documents (ijson does not track lines).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any, BinaryIO

import msgspec
import orjson

from shared.datasets.issues import Issue
from shared.datasets.limits import MAX_LINE_BYTES, MIB

HEAD_BYTES = 1 * MIB
#: Bytes of one read (a JSONL block, split into lines at once).
_BUFFER_BYTES = 1 * MIB
UTF8_BOM = b"\xef\xbb\xbf"

Record = tuple[int, Any, Issue | None]
#: A JSONL line a typed decoder read: what it decoded, and the line's bytes.
Typed = tuple[Any, bytes]
#: Failed typed decodes, less the lines decoded (never below 0), after which read_jsonl stops trying.
TYPED_MISSES = 16


class SourceFormat(StrEnum):
    JSONL = "jsonl"
    JSON_ARRAY = "json_array"
    JSON = "json"
    CSV = "csv"
    TSV = "tsv"


class SourceUnreadableError(Exception):
    """The rest of the source cannot be read; the file is rejected whatever the options."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.message)
        self.issue = issue


def _file_issue(code: str, message: str, line: int = 0) -> SourceUnreadableError:
    return SourceUnreadableError(Issue(line=line, field="", code=code, message=message))


class _CountingReader(io.RawIOBase):
    """The already-read head, then the rest of the stream; counts bytes and enforces the size cap."""

    def __init__(
        self, head: bytes, stream: BinaryIO, max_bytes: int, progress: Callable[[int], None] | None
    ) -> None:
        self._head = memoryview(head)
        self._stream = stream
        self._max_bytes = max_bytes
        self._progress = progress
        self.bytes_read = len(head)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._stream.read(len(buffer))
        if not data:
            return 0
        n = len(data)
        buffer[:n] = data
        self.bytes_read += n
        if self.bytes_read > self._max_bytes:
            raise _file_issue(
                "file_too_large",
                f"the file is larger than {self._max_bytes:,} bytes, the training-file limit",
            )
        if self._progress is not None:
            self._progress(self.bytes_read)
        return n


def _read_head(stream: BinaryIO) -> bytes:
    chunks = []
    total = 0
    while total < HEAD_BYTES:
        chunk = stream.read(HEAD_BYTES - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _parses(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def _parses_as_object(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def detect_format(head: bytes, filename: str) -> SourceFormat:
    """The format of a source from its first bytes (BOM already removed) and its name.

    Raises SourceUnreadableError for empty, binary, compressed or UTF-16 data.
    """
    name = filename.lower()
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _file_issue("invalid_encoding", "the file is UTF-16; save it as UTF-8")
    if head.startswith((b"\x1f\x8b", b"PK\x03\x04", b"BZh")) or b"\x00" in head:
        raise _file_issue(
            "unsupported_format", "the file is binary or compressed; upload JSONL, JSON, CSV or TSV"
        )
    stripped = head.lstrip()
    if not stripped:
        raise _file_issue("empty_file", "the file is empty")
    first = stripped[:1]
    if first == b"[":
        # A one-line-per-value file of arrays is JSONL (each line then gets its own error).
        lines = [line for line in stripped.split(b"\n")[:20] if line.strip()]
        if (
            name.endswith((".jsonl", ".ndjson"))
            and len(lines) > 1
            and all(_parses(line) for line in lines[:-1])
        ):
            return SourceFormat.JSONL
        return SourceFormat.JSON_ARRAY
    if first == b"{":
        lines = [line for line in stripped.split(b"\n") if line.strip()]
        complete = lines if head.endswith(b"\n") or len(head) < HEAD_BYTES else lines[:-1]
        if not complete:  # the first line is longer than the head
            return SourceFormat.JSONL if name.endswith((".jsonl", ".ndjson")) else SourceFormat.JSON
        if _parses_as_object(complete[0]) or name.endswith((".jsonl", ".ndjson")):
            return SourceFormat.JSONL
        # A broken first line in a JSONL file still reads best as JSONL: every line gets its error.
        if any(_parses_as_object(line) for line in complete[1:20]):
            return SourceFormat.JSONL
        return SourceFormat.JSON
    if name.endswith((".tsv", ".tab")):
        return SourceFormat.TSV
    if name.endswith(".csv"):
        return SourceFormat.CSV
    first_line = stripped.split(b"\n", 1)[0]
    if b"\t" in first_line and first_line.count(b"\t") >= first_line.count(b","):
        return SourceFormat.TSV
    if b"," in first_line:
        return SourceFormat.CSV
    raise _file_issue("unsupported_format", "the file is not JSONL, a JSON array or object, CSV or TSV")


class Source:
    """An opened source: its format and an iterator over ``(line, value, issue)``."""

    def __init__(
        self,
        stream: BinaryIO,
        filename: str,
        *,
        max_bytes: int,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        head = _read_head(stream)
        self.had_bom = head.startswith(UTF8_BOM)
        if self.had_bom:
            head = head[len(UTF8_BOM) :]
        if len(head) > max_bytes:
            raise _file_issue("file_too_large", f"the file is larger than {max_bytes:,} bytes")
        self.format = detect_format(head, filename)
        self._raw = _CountingReader(head, stream, max_bytes, progress)
        self._buffered = io.BufferedReader(self._raw, buffer_size=_BUFFER_BYTES)

    @property
    def bytes_read(self) -> int:
        return self._raw.bytes_read

    def records(self, typed: msgspec.json.Decoder | None = None) -> Iterator[Record]:
        """``typed``: see :func:`read_jsonl` (JSONL only)."""
        if self.format is SourceFormat.JSONL:
            return read_jsonl(self._buffered, typed)
        if self.format in (SourceFormat.JSON_ARRAY, SourceFormat.JSON):
            return read_json_values(self._buffered, array=self.format is SourceFormat.JSON_ARRAY)
        return read_delimited(self._buffered, "\t" if self.format is SourceFormat.TSV else ",")


def read_jsonl(buffered: io.BufferedReader, typed: msgspec.json.Decoder | None = None) -> Iterator[Record]:
    """The lines of a JSONL source, parsed.

    Reads one block (one raw read, at most ``_BUFFER_BYTES``) at a time and splits it, rather than
    calling ``readline`` per line: the raw reads, and so where a ``file_too_large`` stops the pass,
    are the same as line by line. A line is at most ``MAX_LINE_BYTES`` without its ``\\n``; a
    longer one is an error, and its bytes are dropped as they arrive rather than held.

    With ``typed``, each line is first given to ``typed.decode``; a line it reads is yielded as
    :data:`Typed` (the decoded value and the line), any other as without it, so a line's number,
    and whether and how it is an error, do not depend on ``typed`` (a typed decoder reads a subset
    of what orjson reads: strict JSON, one value per line). A failed decode costs about a parse,
    so once the failures outnumber the lines it read by :data:`TYPED_MISSES` (a file of another
    shape) it is no longer tried.
    """
    read1 = buffered.read1
    loads = orjson.loads
    typed_decode = None if typed is None else typed.decode
    typed_error = msgspec.DecodeError  # ValidationError is one too
    misses = 0  # failed typed decodes, less those that succeeded
    decode_error = orjson.JSONDecodeError
    line_no = 0
    start: list[bytes] = []  # the beginning of a line that goes on in the next block
    start_bytes = 0
    too_long = False  # the line being read is already over MAX_LINE_BYTES
    while True:
        block = read1(_BUFFER_BYTES)
        if block:
            # Only a block longer than a line can hold a whole line that is too long.
            checked = len(block) > MAX_LINE_BYTES
            lines = block.split(b"\n")
            rest = lines.pop()  # after the block's last newline: the beginning of the next line
            if lines and (start or too_long):
                first = lines[0]
                if too_long or start_bytes + len(first) >= MAX_LINE_BYTES:
                    line_no += 1
                    yield line_no, None, _too_long(line_no)
                    del lines[0]
                else:
                    start.append(first)
                    lines[0] = b"".join(start)
                start, start_bytes, too_long = [], 0, False
        elif too_long:
            yield line_no + 1, None, _too_long(line_no + 1)
            return
        elif start:  # the last line, without a newline
            lines, rest, checked = [b"".join(start)], b"", False
        else:
            return
        for raw in lines:
            line_no += 1
            if checked and len(raw) >= MAX_LINE_BYTES:
                yield line_no, None, _too_long(line_no)
                continue
            if typed_decode is not None:
                try:
                    decoded = typed_decode(raw)
                except typed_error:
                    misses += 1
                    if misses > TYPED_MISSES:
                        typed_decode = None
                else:
                    if misses:
                        misses -= 1
                    yield line_no, (decoded, raw), None
                    continue
            try:
                value = loads(raw)
            except decode_error:
                if not raw or raw.isspace():
                    continue
                # Parse the line as it was, newline included, so that the message (which gives a
                # position) is the one a line-by-line reader gives.
                whole = raw + b"\n" if block else raw
                try:
                    loads(whole)
                except decode_error as exc:
                    yield line_no, None, _json_issue(line_no, whole, exc)
                continue
            yield line_no, value, None
        if not block:
            return
        if rest and not too_long:
            start.append(rest)
            start_bytes += len(rest)
            if start_bytes >= MAX_LINE_BYTES:
                start, start_bytes, too_long = [], 0, True


def _too_long(line_no: int) -> Issue:
    return Issue(
        line=line_no,
        field="",
        code="line_too_long",
        message=f"the line is longer than {MAX_LINE_BYTES:,} bytes; one example cannot be that long",
    )


def _json_issue(line_no: int, raw: bytes, exc: Exception) -> Issue:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return Issue(
            line=line_no,
            field="",
            code="invalid_encoding",
            message=f"the line is not valid UTF-8 (byte {bad.start + 1}); save the file as UTF-8",
        )
    return Issue(line=line_no, field="", code="invalid_json", message=f"the line is not valid JSON: {exc}")


def read_json_values(buffered: io.BufferedReader, *, array: bool) -> Iterator[Record]:
    import ijson

    items = ijson.items(buffered, "item" if array else "", multiple_values=not array, use_float=True)
    index = 0
    try:
        for value in items:
            index += 1
            yield index, value, None
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        what = "array item" if array else "JSON document"
        raise _file_issue(
            "unreadable_json",
            f"{what} {index + 1} is not valid JSON ({exc}); the rest of the file cannot be read",
            line=index + 1,
        ) from exc


def read_delimited(buffered: io.BufferedReader, delimiter: str) -> Iterator[Record]:
    """CSV/TSV rows as {column: value} dicts; the first row is the header."""
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))
    text = io.TextIOWrapper(buffered, encoding="utf-8", newline="")
    reader = csv.reader(text, delimiter=delimiter)
    line_no = 1
    try:
        header = next(reader, None)
        while header is not None and not any(name.strip() for name in header):
            header = next(reader, None)  # blank lines before the header
        if header is None:
            raise _file_issue("empty_file", "the file is empty")
        columns = [name.strip() for name in header]
        width = len(columns)
        while True:
            line_no = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                return
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                yield (
                    line_no,
                    None,
                    Issue(
                        line=line_no,
                        field="",
                        code="csv_column_count",
                        message=f"the row has {len(row)} fields; the header has {width}",
                    ),
                )
                continue
            yield line_no, dict(zip(columns, row, strict=True)), None
    except csv.Error as exc:
        raise _file_issue("csv_error", f"cannot parse the CSV/TSV here: {exc}", line=line_no) from exc
    except UnicodeDecodeError as exc:
        raise _file_issue(
            "invalid_encoding", f"the file is not valid UTF-8 near here: {exc.reason}", line=line_no
        ) from exc

"""The plain-Gemini fast path (convert.PLAIN_DECODER, GeminiConverter.plain) against the general
path: for any file, prepare() gives the same result and writes the same bytes either way.

The general path is forced by taking the typed decoder away (prepare() then parses every line
with orjson and converts the dicts, as it did before the fast path existed).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.datasets import PrepareOptions, PrepareResult, prepare
from shared.datasets import convert as cv
from shared.datasets.formats import TYPED_MISSES, read_jsonl

SETTINGS = settings(
    max_examples=int(os.environ.get("DATASETS_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _prepare_both(
    data: bytes, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> tuple[tuple[PrepareResult, list[tuple[str, bytes]]], tuple[PrepareResult, list[tuple[str, bytes]]]]:
    """(result, written lines) of a validate-only pass and a writing pass, fast path then general."""
    options.setdefault("token_counting", "estimate")
    prepared = PrepareOptions(**options)

    def passes() -> tuple[PrepareResult, list[tuple[str, bytes]]]:
        written: list[tuple[str, bytes]] = []
        checked = prepare(io.BytesIO(data), filename="data.jsonl", size=len(data), options=prepared)
        result = prepare(
            io.BytesIO(data),
            filename="data.jsonl",
            size=len(data),
            options=prepared,
            sink=lambda split, line: written.append((split, line)),
            split_plan=checked.split.plan() if prepared.split == "auto" else None,
        )
        assert result == checked
        return result, written

    fast = passes()
    with monkeypatch.context() as patched:
        patched.setattr(cv, "PLAIN_DECODER", None)
        general = passes()
    return fast, general


def _assert_same(data: bytes, monkeypatch: pytest.MonkeyPatch, **options: Any) -> PrepareResult:
    (fast, fast_lines), (general, general_lines) = _prepare_both(data, monkeypatch, **options)
    assert fast.model_dump() == general.model_dump()
    assert fast_lines == general_lines
    return fast


# --- records: mostly the plain shape, with every way out of it close by ------------------------

#: ASCII letters, whitespace, punctuation, JSON's escapes, the key separator (\x1e), and Unicode
#: that NFKC, case folding or Unicode whitespace change (a combining accent too).
_TEXT_CHARS = st.sampled_from(
    [
        *"abcXYZ019 .,;:!?",
        *'\t\n\r\x0b\x0c\x1e\x1f\x00"\\/\x7f',
        *"\u00a0\u2003\u3000\u2028\ufb01\u2168\u0130\u00df\u00e9\u0301",
        *"\u3002\u3001\U0001f600\u4e2d\u05d0\u0660\ufeff",
    ]
)
texts = st.one_of(
    st.text(_TEXT_CHARS, min_size=1, max_size=30),
    st.sampled_from(["", " ", "\n\t", "\u00a0", "\u3000", "\x1e", "Paris.", "paris", "PARIS!", "4", "4."]),
)
text_parts = texts.map(lambda t: {"text": t})
parts = st.lists(
    st.one_of(
        text_parts,
        text_parts,
        text_parts,
        st.sampled_from(
            [
                {"text": 5},
                {"text": "x", "thought": True},
                {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/a.png"}},
            ]
        ),
    ),
    max_size=3,
)


@st.composite
def turns(draw: st.DrawFn) -> list[Any]:
    n = draw(st.integers(1, 5))
    alternating = draw(st.booleans()) or draw(st.booleans())
    out: list[Any] = []
    for i in range(n):
        role: Any = (
            ("user", "model")[i % 2] if alternating else draw(st.sampled_from(["user", "model", "system", 1]))
        )
        item: dict[str, Any] = {"role": role, "parts": draw(parts)}
        shape = draw(st.sampled_from(["plain"] * 6 + ["parts_first", "extra", "no_role", "null_parts"]))
        if shape == "parts_first":
            item = {"parts": item["parts"], "role": role}
        elif shape == "extra":
            item["weight"] = 1
        elif shape == "no_role":
            del item["role"]
        elif shape == "null_parts":
            item["parts"] = None
        out.append(item)
    return out


@st.composite
def systems(draw: st.DrawFn) -> tuple[str, Any] | None:
    kind = draw(
        st.sampled_from(["none", "parts", "role_first", "role_last", "null", "string", "snake", "bad"])
    )
    system_parts = draw(st.lists(text_parts, min_size=1, max_size=2))
    if kind == "none":
        return None
    if kind == "parts":
        return "systemInstruction", {"parts": system_parts}
    if kind == "role_first":
        return "systemInstruction", {"role": "system", "parts": system_parts}
    if kind == "role_last":
        return "systemInstruction", {
            "parts": system_parts,
            "role": draw(st.sampled_from(["system", None, 3])),
        }
    if kind == "null":
        return "systemInstruction", None
    if kind == "string":
        return "systemInstruction", draw(texts)
    if kind == "snake":
        return "system_instruction", {"parts": system_parts}
    return "systemInstruction", {"parts": [{"text": "ok", "extra": 1}]}


words = st.text(_TEXT_CHARS, min_size=1, max_size=30).filter(lambda t: not t.isspace())


@st.composite
def plain_records(draw: st.DrawFn) -> dict[str, Any]:
    """The shape of the fast path: text turns that alternate, an optional text system
    instruction; a turn's keys sometimes in the other order."""
    contents = []
    for i in range(draw(st.sampled_from([2, 2, 2, 4]))):
        turn_parts = [{"text": t} for t in draw(st.lists(words, min_size=1, max_size=2))]
        role = ("user", "model")[i % 2]
        if draw(st.integers(0, 9)) == 0:
            contents.append({"parts": turn_parts, "role": role})
        else:
            contents.append({"role": role, "parts": turn_parts})
    system_parts = [{"text": t} for t in draw(st.lists(words, min_size=1, max_size=2))]
    system = draw(
        st.sampled_from(
            [
                None,
                {"parts": system_parts},
                {"role": "system", "parts": system_parts},
                {"parts": system_parts, "role": "system"},
            ]
        )
    )
    return {"contents": contents} if system is None else {"systemInstruction": system, "contents": contents}


@st.composite
def records(draw: st.DrawFn) -> Any:
    kind = draw(
        st.sampled_from(["plain"] * 10 + ["gemini"] * 4 + ["extra_key", "messages", "not_object", "empty"])
    )
    if kind == "plain":
        return draw(plain_records())
    if kind == "messages":
        return {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    if kind == "not_object":
        return draw(st.sampled_from([[], "x", 3, None]))
    record: dict[str, Any] = {}
    system = draw(systems())
    system_first = draw(st.booleans())
    if system is not None and system_first:
        record[system[0]] = system[1]
    record["contents"] = [] if kind == "empty" else draw(turns())
    if system is not None and not system_first:
        record[system[0]] = system[1]
    if kind == "extra_key":
        record[draw(st.sampled_from(["tools", "generationConfig", "labels", "images"]))] = {"x": 1}
    return record


def _serialise(value: Any, style: str) -> bytes:
    if style == "orjson":
        return orjson.dumps(value)
    if style == "spaced":  # json.dumps defaults: spaces, non-ASCII as \\u escapes
        return json.dumps(value).encode()
    if style == "unicode":
        return json.dumps(value, ensure_ascii=False).encode()
    return json.dumps(value, indent=None, separators=(" ,", " : ")).encode()


@st.composite
def files(draw: st.DrawFn) -> bytes:
    lines: list[bytes] = []
    for _ in range(draw(st.integers(1, 25))):
        roll = draw(st.integers(0, 19))
        if roll == 0 and lines:
            lines.append(draw(st.sampled_from(lines)))  # an exact duplicate of a line
        elif roll == 1:
            lines.append(
                draw(st.sampled_from([b"", b"   ", b"\t", b"{not json", b'{"contents": [}', b"\xff\xfe"]))
            )
        elif roll == 2:
            lines.append(b'{"contents": [{"role": "user", "parts": [{"text": "a\\ud800"}]}]}')
        elif roll == 3 and lines:  # a near duplicate: other case, spacing and end punctuation
            lines.append(lines[-1].upper().replace(b" ", b"  ").replace(b'"}]', b'!"}]'))
        else:
            style = draw(st.sampled_from(["orjson"] * 3 + ["spaced", "unicode", "odd"]))
            lines.append(_serialise(draw(records()), style))
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = ending.join(lines)
    if draw(st.booleans()):
        data += ending  # else the last line has no newline
    return data


OPTIONS = st.fixed_dictionaries(
    {
        "dedupe": st.sampled_from(["near", "exact"]),
        "skip_invalid": st.booleans(),
        "split": st.sampled_from(["auto", "train", "test"]),
    }
)


@SETTINGS
@given(data=files(), options=OPTIONS)
def test_fast_and_general_paths_agree(
    data: bytes, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _assert_same(data, monkeypatch, **options)


# --- files the property may rarely draw --------------------------------------------------------


def _plain(user: str, model: str, system: str | None = "Answer.") -> dict[str, Any]:
    record: dict[str, Any] = {
        "contents": [
            {"role": "user", "parts": [{"text": user}]},
            {"role": "model", "parts": [{"text": model}]},
        ]
    }
    if system is not None:
        record = {"systemInstruction": {"parts": [{"text": system}]}, **record}
    return record


def _file(records: list[Any]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def test_a_large_plain_file_with_near_duplicates_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    """Enough examples for a planned split (test and validation bands), prompts with several
    answers, exact and near duplicates, and a change of system instruction midway."""
    records = []
    for i in range(600):
        system = "Classify." if i < 300 else "Classify the review."
        records.append(
            _plain(f"Review number {i % 450}: it was fine", ["positive", "negative."][i % 2], system)
        )
        if i % 50 == 0:
            records.append(_plain(f"review   NUMBER {i % 450}: it was fine.", "Positive!", system))
        if i % 40 == 0:
            records.append(records[-1])
    result = _assert_same(_file(records), monkeypatch)
    assert result.ok
    assert result.duplicates
    assert result.near_duplicates
    assert result.split.test
    assert result.split.validation


def test_multi_turn_and_multi_part_records_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    record = {
        "systemInstruction": {"role": "system", "parts": [{"text": "Be brief."}, {"text": "Be kind!"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Hi."}, {"text": "What is 2+2?"}]},
            {"role": "model", "parts": [{"text": "4."}]},
            {"role": "user", "parts": [{"text": "And 3+3?"}]},
            {"role": "model", "parts": [{"text": "6"}, {"text": "Done."}]},
        ],
    }
    _assert_same(_file([record, _plain("x", "y", None), record]), monkeypatch)


def test_unicode_texts_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [
        _plain("\ufb01le \u2168 \u0130stanbul\u3002", "Stra\u00dfe\u3002", "\u00a0Syst\u00e8me\u00a0"),
        _plain("file IX i\u0307stanbul", "strasse", "Syst\u00e8me"),
        _plain("\U0001f600 \u4e2d\u6587\x1e\x1e", "\u05d0", None),
    ]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records) + _file(records)
    _assert_same(data, monkeypatch)


def test_the_written_line_keeps_a_turn_written_parts_first(monkeypatch: pytest.MonkeyPatch) -> None:
    record = {
        "contents": [{"parts": [{"text": "q"}], "role": "user"}, {"role": "model", "parts": [{"text": "a"}]}]
    }
    (fast, lines), _ = _prepare_both(_file([record]), monkeypatch, split="train")
    assert fast.ok
    assert lines == [("train", orjson.dumps(record) + b"\n")]


@pytest.mark.parametrize(
    "line",
    [
        # The first "contents" is dropped (the last value wins), but its role still counts.
        b'{"contents":[{"role":"user","parts":[{"text":"x"}]}],'
        b'"contents":[{"parts":[{"text":"q"}],"role":"user"},{"role":"model","parts":[{"text":"a"}]}]}',
        b'{"systemInstruction":{"role":"system","parts":[{"text":"s"}]},"systemInstruction":null,'
        b'"contents":[{"parts":[{"text":"q"}],"role":"user"},{"role":"model","parts":[{"text":"a"}]}]}',
    ],
)
def test_a_key_given_twice_writes_what_the_general_path_writes(
    line: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _file([_plain("first", "a", system=None)])
    _assert_same(first + line + b"\n", monkeypatch, split="train")


@pytest.mark.parametrize(
    "system",
    [
        {"parts": [{"text": "s"}]},
        {"role": "system", "parts": [{"text": "s"}]},
        {"role": "user", "parts": [{"text": "s"}]},
        {"parts": [{"text": "s"}], "role": "system"},
    ],
)
def test_a_compact_line_is_written_as_the_general_path_writes_it(
    system: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compact lines the written form may be compared with (plain_line's shortcut), and one
    (the role after the parts) it may not."""
    record = {"systemInstruction": system, **_plain("q", "a", system=None)}
    (fast, lines), _ = _prepare_both(
        _file([record, _plain("q2", "a2", system=None)]), monkeypatch, split="train"
    )
    assert fast.ok
    written = {
        "systemInstruction": {"role": "system", "parts": system["parts"]},
        **_plain("q", "a", system=None),
    }
    assert lines[0] == ("train", orjson.dumps(written) + b"\n")
    _assert_same(
        _file([record, record | {"contents": _plain("q3", "a3")["contents"]}]), monkeypatch, split="train"
    )


def test_too_many_tokens_is_the_same_error(monkeypatch: pytest.MonkeyPatch) -> None:
    long = "word " * 200_000
    result = _assert_same(_file([_plain(long, "a"), _plain("q", "a")]), monkeypatch, skip_invalid=True)
    assert result.error_counts == {"too_many_tokens": 1}


def test_the_decoder_reads_only_what_the_fast_path_handles() -> None:
    decode = cv.PLAIN_DECODER.decode
    assert decode(orjson.dumps(_plain("q", "a"))).contents[1].parts[0].text == "a"
    for bad in (
        {"contents": []},
        {"contents": [{"role": "user", "parts": [{"text": ""}]}]},
        {"contents": [{"role": "user", "parts": []}]},
        {"contents": [{"role": "system", "parts": [{"text": "x"}]}]},
        {"contents": [{"role": "user", "parts": [{"text": "x", "more": 1}]}]},
        {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "tools": []},
        {
            "contents": [{"role": "user", "parts": [{"text": "x"}]}],
            "systemInstruction": {"parts": [], "role": "s"},
        },
        {
            "contents": [{"role": "user", "parts": [{"text": "x"}]}],
            "systemInstruction": {"parts": [{"text": "x"}], "role": 1},
        },
    ):
        with pytest.raises(msgspec.DecodeError):
            decode(orjson.dumps(bad))
    with pytest.raises(msgspec.DecodeError):  # two values on a line
        decode(orjson.dumps(_plain("q", "a")) * 2)


def test_msgspec_escapes_strings_as_orjson_does() -> None:
    """The written bytes of the fast path rest on this: every code point, alone and in context."""
    encode = msgspec.json.Encoder().encode
    for start in range(0, 0x110000, 0x1000):
        chars = "".join(chr(c) for c in range(start, start + 0x1000) if not 0xD800 <= c < 0xE000)
        assert encode(chars) == orjson.dumps(chars)
    for c in range(0x80):
        assert encode(f"a{chr(c)}b") == orjson.dumps(f"a{chr(c)}b")


def test_the_property_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The files drawn above are mostly plain lines: the comparison is not vacuous."""
    taken = []
    plain = cv.GeminiConverter.plain

    def counting(self: cv.GeminiConverter, record: cv.PlainRecord) -> cv.PlainExample | None:
        result = plain(self, record)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(cv.GeminiConverter, "plain", counting)
    data = _file([_plain(f"q{i}", "a") for i in range(10)])
    prepare(io.BytesIO(data), filename="data.jsonl", options=PrepareOptions(token_counting="estimate"))
    assert taken == [True] * 9  # the first line decides the file's shape, by the general path


@pytest.mark.parametrize("blank", [" ", "\t\n", "\u00a0", "\u3000", "\x1e", "\x1c\u2028"])
def test_a_text_of_whitespace_is_the_general_paths_error(blank: str, monkeypatch: pytest.MonkeyPatch) -> None:
    multi = _plain("q", "a")
    multi["contents"] += [{"role": "user", "parts": [{"text": "r"}, {"text": blank}]}, multi["contents"][1]]
    records = [_plain("q", "a"), _plain(blank, "a"), _plain("q", blank), _plain("q", "a", blank), multi]
    result = _assert_same(_file(records), monkeypatch, skip_invalid=True)
    assert result.error_counts == {"missing_text": 4}


@SETTINGS
@given(data=files())
def test_typed_reading_gives_the_same_lines_numbers_and_errors(data: bytes) -> None:
    def lines(typed: msgspec.json.Decoder | None) -> list[tuple[int, Any, Any]]:
        out = []
        for line, value, issue in read_jsonl(io.BufferedReader(io.BytesIO(data)), typed):  # type: ignore[arg-type]
            if type(value) is tuple:
                decoded, raw = value
                assert type(decoded) is cv.PlainRecord
                out.append((line, orjson.loads(raw), issue))  # what the general path gets
            else:
                out.append((line, value, issue))
        return out

    assert lines(cv.PLAIN_DECODER) == lines(None)


def test_a_file_of_another_shape_stops_the_typed_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    data = _file([chat] * (TYPED_MISSES + 5) + [_plain("q", "a")] * 3)
    decoded = [
        type(v) is tuple for _, v, _ in read_jsonl(io.BufferedReader(io.BytesIO(data)), cv.PLAIN_DECODER)
    ]  # type: ignore[arg-type]
    assert decoded == [False] * (TYPED_MISSES + 5) + [False] * 3
    result = _assert_same(data, monkeypatch, skip_invalid=True)
    assert result.error_counts == {"mixed_shapes": 3}

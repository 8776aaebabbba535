"""Recognise the shape of one record and convert it to a Gemini tuning example.

Shapes: Gemini ``contents`` (with ``systemInstruction``), Gemini 1.0 ``messages`` (user/model),
OpenAI chat ``messages`` (system/user/assistant), ShareGPT ``conversations`` (from/value),
prompt/completion, Alpaca (instruction/input/output, system, history), Dolly
(instruction/context/response) and flat columns (CSV/TSV rows or flat JSON objects, mapped by
column name or an explicit :class:`~shared.datasets.options.ColumnMapping`).

Preference and label data have shapes of their own (see "preference data" below): DPO pairs in
ShareGPT style, OpenAI preference fine-tuning, LLaMA-Factory v1 ``chosen_messages`` /
``rejected_messages``, Vertex AI preference tuning (``contents`` + scored ``completions``) and KTO
labels (chat + a boolean ``label``). A rejected or undesirable answer is never a training target:
by default these records are errors that say what the file is; with ``preference_mode: chosen``
a pair becomes its prompt and its preferred answer, and a ``label: false`` example is dropped.

Each converter raises :class:`~shared.datasets.issues.RecordIssueError` naming the field of the source
record (``messages[2].content``), so users see their own field names, not ours. Tool calls become
Vertex's function-calling format (see :mod:`shared.datasets.tools`). What Gemini tuning cannot
express (built-in tools, preference pairs, inline media, per-message weights) is rejected with a
code that says so.

Three keys per example, all with every ASCII whitespace byte deleted:

- ``key``, the exact duplicate key: the texts and roles of the whole example joined. Two examples
  with the same key are the same example (same prompt, same answer).
- ``prompt_key``, the split key: the *prompt* (the system instruction and every turn but the
  last, which is the model's answer) normalised further by :func:`near_normalise`: Unicode NFKC,
  case folded, every Unicode whitespace deleted, trailing sentence punctuation of each text
  stripped. Every example of one prompt, or of two prompts that are near duplicates, lands in one
  split, so a prompt never straddles train and test, whatever its answers and whatever
  ``dedupe`` says.
- ``answer_key``, the answer (the last turn) normalised the same way. ``prompt_key`` and
  ``answer_key`` together are the near-duplicate key: "What is 2+2?" / "4." and
  "what is 2 + 2" / "4" share it. With the default ``dedupe: near`` the second of two examples
  with one near key is dropped; ``dedupe: exact`` keeps it and drops exact duplicates only.

Every exact duplicate is a near duplicate: the near keys are a function of the exact one. Deleting
(rather than collapsing) whitespace keeps the hash pass cheap, and it errs on the safe side: two
texts that differ only in whitespace, even where words break, are the same text. The exact key
keeps case, so with ``dedupe: exact`` an answer that differs only in case is a different target
(kept, and counted as a prompt-level duplicate).
"""

from __future__ import annotations

import json
import mimetypes
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import orjson

from shared.datasets.issues import RecordIssueError
from shared.datasets.limits import ALLOWED_FILE_MIME_TYPES
from shared.datasets.options import ColumnMapping
from shared.datasets.tools import (
    Tools,
    call_text,
    check_pairing,
    gemini_tools,
    openai_tools,
    piece,
    response_part,
    sharegpt_tools,
)

ASCII_WHITESPACE = b" \t\n\v\f\r"
_SEPARATOR = "\x1e"  # ASCII record separator: not whitespace, never in the deleted set
_SEPARATOR_BYTE = _SEPARATOR.encode()

GEMINI = "gemini"
GEMINI_MESSAGES = "gemini_messages"
OPENAI_CHAT = "openai_chat"
SHAREGPT = "sharegpt"
PROMPT_COMPLETION = "prompt_completion"
ALPACA = "alpaca"
DOLLY = "dolly"
COLUMNS = "columns"

OPENAI_CHAT_KTO = "openai_chat_kto"
SHAREGPT_KTO = "sharegpt_kto"
SHAREGPT_PREFERENCE = "sharegpt_preference"
OPENAI_PREFERENCE = "openai_preference"
CHOSEN_REJECTED_MESSAGES = "chosen_rejected_messages"
VERTEX_PREFERENCE = "vertex_preference"
TRL_PREFERENCE = "trl_preference"

#: Preference-pair shapes, with the words a message uses for them.
PAIR_SHAPES: dict[str, str] = {
    SHAREGPT_PREFERENCE: "DPO preference pairs in ShareGPT style (conversations + chosen + rejected, "
    "LLaMA-Factory's format)",
    OPENAI_PREFERENCE: "OpenAI preference fine-tuning data (input + preferred_output + non_preferred_output)",
    CHOSEN_REJECTED_MESSAGES: "preference pairs as two conversations (chosen_messages + rejected_messages, "
    "LLaMA-Factory v1)",
    VERTEX_PREFERENCE: "Vertex AI preference tuning data (contents + scored completions)",
    TRL_PREFERENCE: "DPO preference pairs in TRL style (prompt + chosen + rejected, as text or as messages)",
}
#: KTO shapes: a chat example and a boolean label (false: the answer is undesirable).
KTO_SHAPES: dict[str, str] = {
    OPENAI_CHAT_KTO: "KTO data (OpenAI chat messages + a boolean label)",
    SHAREGPT_KTO: "KTO data (ShareGPT conversations + a boolean label)",
}

SHAPES = (
    GEMINI,
    GEMINI_MESSAGES,
    OPENAI_CHAT,
    SHAREGPT,
    PROMPT_COMPLETION,
    ALPACA,
    DOLLY,
    COLUMNS,
    *KTO_SHAPES,
    *PAIR_SHAPES,
)

#: Tool speakers of ShareGPT files that are not LLaMA-Factory's function_call / observation: their
#: turns carry no call or result we can read as one.
_OTHER_TOOL_SPEAKERS = frozenset({"tool", "function", "ipython", "tool_call", "tool_response"})
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "model",
    "assistant": "model",
    "model": "model",
    "chatgpt": "model",
    "bard": "model",
    "bing": "model",
    "system": "system",
    # LLaMA-Factory's tool-use turns: a call is the model's, its result comes back in a user turn.
    "function_call": "model",
    "observation": "user",
}
_MESSAGE_ROLES = {
    "user": "user",
    "assistant": "model",
    "model": "model",
    "system": "system",
    "developer": "system",
}
_EXTENSION_MIME = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "pdf": "application/pdf",
}


#: What a conversion left out: (warning code, the key or field dropped, e.g. ``messages[].name``).
Note = tuple[str, str]
UNKNOWN_KEYS = "unknown_keys_dropped"


def _dropped(record: dict[str, Any], known: frozenset[str], prefix: str = "") -> tuple[Note, ...]:
    """A note per key of ``record`` outside ``known`` that carries a value (a null or empty value
    loses nothing), named as the report shows it."""
    return tuple(
        (UNKNOWN_KEYS, f"{prefix}{key or '(unnamed)'}")
        for key, value in record.items()
        if key not in known and value is not None and value != ""
    )


@dataclass(slots=True)
class Example:
    """One converted example and what the rest of the pipeline needs to know about it."""

    record: dict[str, Any]
    #: Normalised bytes of the whole example, whose hash decides duplicates.
    key: bytes
    #: Normalised bytes of the prompt (all but the last turn), whose hash decides the split.
    prompt_key: bytes
    #: The answer normalised like ``prompt_key``: with it, decides near duplicates.
    answer_key: bytes
    #: UTF-8 bytes of every text (system, user, model), for the token estimate.
    text_bytes: int
    turns: int
    files: int
    #: The last text of the last turn (the model's answer), "" when it has file parts only.
    answer: str
    #: Keys and fields the conversion dropped (each a warning in the report, with its lines).
    notes: tuple[Note, ...] = field(default=())
    #: Rejected answers of a preference record left out (``preference_mode: chosen``).
    rejected_answers: int = 0


def _fail(code: str, path: str, message: str) -> RecordIssueError:
    return RecordIssueError(code, path, message)


def _is_blank(text: str) -> bool:
    return not text or text.isspace()


# --- Gemini parts -----------------------------------------------------------------------------


def _file_part(file_data: Any, path: str) -> dict[str, Any]:
    if type(file_data) is not dict:
        raise _fail("invalid_file_data", path, "fileData must be an object with mimeType and fileUri")
    mime = file_data.get("mimeType", file_data.get("mime_type"))
    uri = file_data.get("fileUri", file_data.get("file_uri"))
    if type(mime) is not str or type(uri) is not str or not mime or not uri:
        raise _fail(
            "invalid_file_data", path, "fileData needs both mimeType and fileUri as non-empty strings"
        )
    if not (uri.startswith("gs://") or uri.startswith("https://")):
        raise _fail(
            "invalid_file_uri", f"{path}.fileUri", f"file URI {uri[:80]!r} must start with gs:// or https://"
        )
    if mime.lower() not in ALLOWED_FILE_MIME_TYPES:
        raise _fail(
            "unsupported_mime_type", f"{path}.mimeType", f"MIME type {mime!r} is not accepted for tuning"
        )
    return {"fileData": {"mimeType": mime.lower(), "fileUri": uri}}


def _gemini_part(part: Any, path: str, role: str = "user", tools: Tools | None = None) -> dict[str, Any]:
    if type(part) is not dict:
        raise _fail("invalid_part", path, 'a part must be an object: {"text": ...} or {"fileData": ...}')
    text = part.get("text")
    if text is not None:
        if type(text) is not str:
            raise _fail("invalid_part", f"{path}.text", "text must be a string")
        if _is_blank(text):
            raise _fail("missing_text", f"{path}.text", "text is empty or only whitespace")
        if len(part) != 1:
            extra = sorted(k for k in part if k != "text")
            raise _fail("invalid_part", path, f"a text part has only 'text'; found also {extra}")
        return part
    file_data = part.get("fileData", part.get("file_data"))
    if file_data is not None:
        return _file_part(file_data, f"{path}.fileData")
    call = part.get("functionCall", part.get("function_call"))
    if call is not None:
        key = "functionCall" if "functionCall" in part else "function_call"
        if role != "model":
            raise _fail("invalid_part", f"{path}.{key}", "a functionCall part belongs in a model turn")
        if type(call) is not dict:
            raise _fail("invalid_part", f"{path}.{key}", "a functionCall must be {name, args}")
        args = call.get("args")
        if args is not None and type(args) is not dict:
            raise _fail("invalid_function_arguments", f"{path}.{key}.args", "args must be a JSON object")
        return (tools or Tools()).call(call.get("name"), args, f"{path}.{key}")
    response = part.get("functionResponse", part.get("function_response"))
    if response is not None:
        key = "functionResponse" if "functionResponse" in part else "function_response"
        if role != "user":
            raise _fail("invalid_part", f"{path}.{key}", "a functionResponse part belongs in a user turn")
        name = response.get("name") if type(response) is dict else None
        result = response.get("response") if type(response) is dict else None
        if type(name) is not str or type(result) is not dict:
            raise _fail("invalid_part", f"{path}.{key}", "a functionResponse must be {name, response: {...}}")
        return {"functionResponse": {"name": name, "response": result}}
    if "inlineData" in part or "inline_data" in part:
        raise _fail(
            "unsupported_inline_data",
            path,
            "inline (base64) data is not accepted; upload the file and use fileData",
        )
    raise _fail(
        "invalid_part",
        path,
        f"a part needs 'text', 'fileData', 'functionCall' or 'functionResponse'; found keys {sorted(part)[:5]}",
    )


# --- the common end: order checks and the duplicate key ----------------------------------------


def _finish(
    system_parts: list[dict[str, Any]] | None,
    turns: list[tuple[str, list[dict[str, Any]], str]],
    list_path: str,
    notes: tuple[Note, ...] = (),
    tools: Tools | None = None,
) -> Example:
    """Check the user/model order (and that calls and results pair) and build the example. Each
    turn is (role, parts, source path)."""
    if not turns:
        raise _fail("missing_messages_list", list_path, "the conversation has no user or model turn")
    roles = [t[0] for t in turns]
    if "user" not in roles:
        raise _fail("example_missing_user_message", list_path, "the example has no user turn")
    if "model" not in roles:
        raise _fail(
            "example_missing_assistant_message",
            list_path,
            "the example has no model (assistant) turn to learn from",
        )
    if roles[0] != "user":
        raise _fail("first_turn_not_user", turns[0][2], "the conversation must start with a user turn")
    previous = ""
    for role, _, path in turns:
        if role == previous:
            raise _fail(
                "consecutive_turns", path, f"two {role} turns in a row; roles must alternate user/model"
            )
        previous = role
    if roles[-1] != "model":
        raise _fail("last_turn_not_model", turns[-1][2], "the last turn must be the model's (the target)")
    if tools is not None:
        check_pairing(turns)
        notes += tuple(note for note in dict.fromkeys(tools.notes) if note not in notes)
    contents = [{"role": role, "parts": parts} for role, parts, _ in turns]
    return _example(system_parts, contents, notes, tools.record_value() if tools else None)


def _keys(pieces: list[str], answer_at: int) -> tuple[bytes, bytes, bytes, int]:
    """``(key, prompt_key, answer_key, UTF-8 bytes of the pieces joined)``; the prompt is ``pieces``
    before the last turn's (its role, then its texts).

    Deleting whitespace is the costliest step of conversion (about as slow per byte as parsing
    the JSON), so every byte goes through it once: the key is the prompt's whitespace-free bytes,
    the separator and the answer's, and the near keys are made from those bytes.
    """
    prompt = _SEPARATOR.join(pieces[:answer_at]).encode()
    answer = _SEPARATOR.join(pieces[answer_at:]).encode()
    prompt_bare = prompt.translate(None, ASCII_WHITESPACE)
    answer_bare = answer.translate(None, ASCII_WHITESPACE)
    if not answer_at:  # no prompt (the converters never give one): the join has no separator
        return answer_bare, b"", near_normalise(answer_bare), len(answer)
    return (
        prompt_bare + _SEPARATOR_BYTE + answer_bare,
        near_normalise(prompt_bare),
        near_normalise(answer_bare),
        len(prompt) + 1 + len(answer),
    )


#: Punctuation a near-duplicate key strips from the end of each text: the marks that end a
#: sentence or clause ("Paris." and "Paris" are one answer), ASCII and the CJK ones NFKC leaves
#: as they are. Symbols ("50%", "$5") and brackets change what a text says and are kept.
TRAILING_PUNCTUATION = ".,;:!?。、"
_ASCII_TRAILING_PUNCTUATION = b".,;:!?"
#: Maps the ASCII trailing punctuation to NUL, so that "NUL, separator" in the translation finds
#: punctuation before a separator (a NUL of the text itself only takes the slower, equally right path).
_ASCII_PUNCTUATION_MARKS = bytes.maketrans(
    _ASCII_TRAILING_PUNCTUATION, b"\x00" * len(_ASCII_TRAILING_PUNCTUATION)
)
_MARK_BEFORE_SEPARATOR = b"\x00" + _SEPARATOR_BYTE
#: Every Unicode whitespace but the piece separator (which str.isspace() counts as whitespace).
_UNICODE_WHITESPACE = re.compile(r"[^\S\x1e]+")


def near_normalise(bare: bytes) -> bytes:
    """The near-duplicate form of whitespace-free ``bare`` (pieces joined by the separator): Unicode
    NFKC, case folded (``str.casefold``), every whitespace deleted (NFKC turns some characters,
    such as the no-break space, into spaces), and :data:`TRAILING_PUNCTUATION` stripped from the
    end of each piece. ASCII, the common case, takes a path without decoding: NFKC leaves ASCII
    as it is and ``casefold`` is ``lower`` there.

    Case-folding after the whitespace deletion instead of before gives the same bytes:
    ``str.casefold`` works character by character, maps ASCII whitespace to itself and nothing
    else to ASCII whitespace (checked over every code point), and deleting ASCII bytes from UTF-8
    never splits a character.
    """
    if bare.isascii():
        folded = bare.lower()
        # Punctuation before a separator is rare: found by one translate and one search.
        if _MARK_BEFORE_SEPARATOR in folded.translate(_ASCII_PUNCTUATION_MARKS):
            return _SEPARATOR_BYTE.join(
                [piece.rstrip(_ASCII_TRAILING_PUNCTUATION) for piece in folded.split(_SEPARATOR_BYTE)]
            )
        return folded.rstrip(_ASCII_TRAILING_PUNCTUATION)
    text = _UNICODE_WHITESPACE.sub("", unicodedata.normalize("NFKC", bare.decode()).casefold())
    return _SEPARATOR.join([piece.rstrip(TRAILING_PUNCTUATION) for piece in text.split(_SEPARATOR)]).encode()


def _example(
    system_parts: list[dict[str, Any]] | None,
    contents: list[dict[str, Any]],
    notes: tuple[Note, ...],
    tools: list[dict[str, Any]] | None = None,
    *,
    generation_config: dict[str, Any] | None = None,
) -> Example:
    pieces: list[str] = []
    files = 0
    uri_chars = 0
    if tools:
        # The declarations are part of the prompt: the same question with other tools is another example.
        pieces.append("tools")
        pieces.append(json.dumps(tools, sort_keys=True, ensure_ascii=False))
    if system_parts:
        pieces.append("system")
        for part in system_parts:
            pieces.append(part["text"])
    answer_at = len(pieces)
    for content in contents:
        answer_at = len(pieces)
        pieces.append(content["role"])
        for part in content["parts"]:
            text = part.get("text")
            if text is None and "fileData" not in part:
                pieces.append(piece(part) or "")
            elif text is None:
                uri = part["fileData"]["fileUri"]
                pieces.append(uri)
                uri_chars += len(uri)
                files += 1
            else:
                pieces.append(text)
    key, prompt_key, answer_key, joined_bytes = _keys(pieces, answer_at)
    last = contents[-1]["parts"]
    answer = next((part["text"] for part in reversed(last) if "text" in part), "")
    if not answer and "functionCall" in last[-1]:
        answer = call_text(last[-1]["functionCall"])  # what the evaluation scores as its text
    record: dict[str, Any] = {"contents": contents}
    if system_parts:
        record = {"systemInstruction": {"role": "system", "parts": system_parts}, "contents": contents}
    if tools:
        record["tools"] = tools
    if generation_config:
        record["generationConfig"] = generation_config
    return Example(
        record=record,
        key=key,
        prompt_key=prompt_key,
        answer_key=answer_key,
        text_bytes=joined_bytes - uri_chars,
        turns=len(contents),
        files=files,
        answer=answer,
        notes=notes,
    )


# --- Gemini contents ---------------------------------------------------------------------------

_GEMINI_KEYS = frozenset({"contents", "systemInstruction", "system_instruction"})
_CONTENT_KEYS = frozenset({"role", "parts"})


def convert_gemini(record: dict[str, Any]) -> Example:
    """Gemini contents (see :class:`GeminiConverter`, which a file's records share)."""
    return GeminiConverter()(record)


#: What a system instruction converts to: (the instruction as read, its parts, the whitespace-free
#: bytes of its pieces and a separator, the same near-normalised, UTF-8 bytes of its pieces joined).
_SystemKeys = tuple[Any, list[dict[str, Any]], bytes, bytes, int]


class GeminiConverter:
    """Gemini contents. The common case (text parts only, no extra keys) takes a tight loop that
    validates and collects the keys in one pass; anything else takes the general path, which also
    finds the precise error.

    Files usually give every record the same system instruction, so the converter remembers the
    last one with what it converted to: comparing a record's instruction with it (one ``==``)
    costs less than checking and normalising it again. The memory is one tuple, replaced whole.
    """

    def __init__(self) -> None:
        self._system: _SystemKeys | None = None
        # The written line's beginning for the remembered system instruction (plain records).
        self._plain_prefix: bytes | None = None
        self._plain_prefix_of: _SystemKeys | None = None
        # The same beginning as a compact line gives it (the system instruction's own role, if
        # any, first): see plain_line.
        self._source_prefix = b""

    def __call__(self, record: dict[str, Any]) -> Example:
        contents = record.get("contents")
        if (
            type(contents) is not list
            or not contents
            or (len(record) > 1 and not _GEMINI_KEYS.issuperset(record))
        ):
            return _convert_gemini_general(record)
        system_keys = None
        if len(record) > 1:
            system = record.get("systemInstruction", record.get("system_instruction"))
            if system is not None:
                system_keys = self._system
                if system_keys is None or system_keys[0] != system:
                    system_keys = self._system = _system_keys(system)
        pieces: list[str] = []  # the turns' roles and texts
        previous = "model"
        answer_at = 0
        for item in contents:
            if type(item) is not dict or len(item) != 2:
                return _convert_gemini_general(record)
            role = item.get("role")
            parts = item.get("parts")
            # A tuple, not a set: a role may be unhashable (a list), and that is an error to report.
            if role == previous or role not in ("user", "model") or type(parts) is not list or not parts:
                return _convert_gemini_general(record)
            previous = role
            answer_at = len(pieces)
            pieces.append(role)
            for part in parts:
                text = part.get("text") if type(part) is dict and len(part) == 1 else None
                if type(text) is not str or not text or text.isspace():
                    return _convert_gemini_general(record)
                pieces.append(text)
        if previous != "model":
            return _convert_gemini_general(record)
        key, prompt_key, answer_key, joined_bytes = _turn_keys(pieces, answer_at, system_keys)
        if system_keys is None:
            if len(record) > 1:
                record = {"contents": contents}
        else:
            record = {"systemInstruction": {"role": "system", "parts": system_keys[1]}, "contents": contents}
        return Example(record, key, prompt_key, answer_key, joined_bytes, len(contents), 0, pieces[-1])

    def plain(self, record: PlainRecord) -> PlainExample | None:
        """What ``self(...)`` gives for ``record`` (a line ``PLAIN_DECODER`` read), as a
        :data:`PlainExample`; None when the roles are out of order (the general path names the error).

        The decoder already checked every type, that there is no other key, that each role is
        "user" or "model" and that no list or text is empty, so what is left to check is that no
        text is only whitespace and that the turns alternate, from the user's to the model's.
        """
        contents = record.contents
        system = record.system
        if system is None:
            system_keys = None
            prefix = _PLAIN_PREFIX
        else:
            system_keys = self._system
            if system_keys is None or system_keys[0] != system:
                if any(part.text.isspace() for part in system.parts):
                    return None
                system_keys = self._system = _system_keys(system, msgspec.to_builtins(system))
            prefix = self._plain_prefix
            if prefix is None or self._plain_prefix_of is not system_keys:
                parts = _PLAIN_ENCODE(system.parts)
                prefix = self._plain_prefix = b"".join(
                    (b'{"systemInstruction":{"role":"system","parts":', parts, b'},"contents":')
                )
                role = b"" if system.role is msgspec.UNSET else b'"role":' + _PLAIN_ENCODE(system.role) + b","
                self._source_prefix = b"".join(
                    (b'{"systemInstruction":{', role, b'"parts":', parts, b'},"contents":')
                )
                self._plain_prefix_of = system_keys
        if len(contents) == 2:  # the common case, one question and its answer, without lists
            user, model = contents
            user_parts = user.parts
            model_parts = model.parts
            if (
                user.role == "user"
                and model.role == "model"
                and len(user_parts) == 1
                and len(model_parts) == 1
            ):
                prompt_text = user_parts[0].text
                answer_text = model_parts[0].text
                if prompt_text.isspace() or answer_text.isspace():
                    return None
                key, prompt_key, answer_key, joined_bytes = _text_keys(
                    ("user" + _SEPARATOR + prompt_text).encode(),
                    ("model" + _SEPARATOR + answer_text).encode(),
                    True,
                    True,
                    system_keys,
                )
                body = _PLAIN_ENCODE(contents)
                line_bytes = len(prefix) + len(body) + _PLAIN_SUFFIX_BYTES
                return key, prompt_key, answer_key, joined_bytes, 2, answer_text, line_bytes, prefix, body
        pieces: list[str] = []
        previous = "model"
        answer_at = 0
        for turn in contents:
            role = turn.role
            if role == previous:
                return None
            previous = role
            answer_at = len(pieces)
            pieces.append(role)
            for part in turn.parts:
                text = part.text
                if text.isspace():
                    return None
                pieces.append(text)
        if previous != "model":
            return None
        key, prompt_key, answer_key, joined_bytes = _turn_keys(pieces, answer_at, system_keys)
        body = _PLAIN_ENCODE(contents)
        line_bytes = len(prefix) + len(body) + _PLAIN_SUFFIX_BYTES
        return key, prompt_key, answer_key, joined_bytes, len(contents), pieces[-1], line_bytes, prefix, body

    def plain_line(self, prefix: bytes, body: bytes, record: PlainRecord, line: bytes) -> bytes:
        """The written line of a plain record (``orjson.dumps(Example.record)`` + newline) read
        from ``line``; ``prefix`` and ``body`` are the ones :meth:`plain` gave.

        The structs encode each turn as {"role", "parts"}, and the general path keeps the line's
        own order; the two agree when every object of the line that has a "role" key starts with
        it. Counting '{"role":' finds exactly those objects: in a JSON string a '"' is escaped, so
        '{"' cannot occur inside one (nor can a string that ends in '{' be followed by 'role"'),
        and the decoder allows "role" in turns and the system instruction only. A key given twice
        keeps its last value, but the first one's roles still count, so a line that gives
        "contents" or "systemInstruction" twice is written by the general path too (neither
        '"contents":' nor '"systemInstruction":' can occur inside a string, where '"' is escaped,
        and the decoder allows those keys at the top only). A line in another order (or spacing)
        is written as the general path writes it. The length does not depend on the order, so
        :meth:`plain` gives it whatever the order.

        A compact line in that order already (no space, the same escapes, any role of the system
        instruction first) needs none of these counts: comparing it with what the structs encode
        to is one pass where the counts are three, and it shows every key in its place, once.
        """
        source = self._source_prefix if prefix is self._plain_prefix else prefix
        start = len(source)
        if (
            len(line) == start + len(body) + 1
            and line.startswith(source)
            and line.startswith(body, start)
            and line.endswith(b"}")
        ):
            return b"".join((prefix, body, _PLAIN_SUFFIX))
        system = record.system
        roles = len(record.contents) + (system is not None and system.role is not msgspec.UNSET)
        if (
            line.count(b'{"role":') != roles
            or line.count(b'"contents":') != 1
            or line.count(b'"systemInstruction":') > 1
        ):
            return orjson.dumps(self(orjson.loads(line)).record, option=orjson.OPT_APPEND_NEWLINE)
        return b"".join((prefix, body, _PLAIN_SUFFIX))


def _turn_keys(
    pieces: list[str], answer_at: int, system_keys: _SystemKeys | None
) -> tuple[bytes, bytes, bytes, int]:
    """:func:`_text_keys` of text turns given as their roles and texts, the answer's from ``answer_at``."""
    return _text_keys(
        _SEPARATOR.join(pieces[:answer_at]).encode(),
        _SEPARATOR.join(pieces[answer_at:]).encode(),
        answer_at == 2,
        len(pieces) - answer_at == 2,
        system_keys,
    )


def _text_keys(
    prompt: bytes,
    answer: bytes,
    one_prompt_text: bool,
    one_answer_text: bool,
    system_keys: _SystemKeys | None,
) -> tuple[bytes, bytes, bytes, int]:
    """As :func:`_keys` for plain turns: ``prompt`` and ``answer`` are the UTF-8 pieces joined, the
    system instruction's share is taken from :class:`GeminiConverter`'s memory; ``one_*_text``:
    that side is one turn of one text. The first turn is the user's and the last the model's, so
    there is a prompt."""
    prompt_bare = prompt.translate(None, ASCII_WHITESPACE)
    answer_bare = answer.translate(None, ASCII_WHITESPACE)
    # near_normalise, for the common case inline: one text after its role, whose separator
    # follows the role name (never punctuation), so only the end has punctuation to strip.
    if one_prompt_text and prompt_bare.isascii():
        prompt_key = prompt_bare.lower().rstrip(_ASCII_TRAILING_PUNCTUATION)
    else:
        prompt_key = near_normalise(prompt_bare)
    if one_answer_text and answer_bare.isascii():
        answer_key = answer_bare.lower().rstrip(_ASCII_TRAILING_PUNCTUATION)
    else:
        answer_key = near_normalise(answer_bare)
    joined_bytes = len(prompt) + 1 + len(answer)
    if system_keys is None:
        return b"".join((prompt_bare, _SEPARATOR_BYTE, answer_bare)), prompt_key, answer_key, joined_bytes
    _, _, system_bare, system_near, system_bytes = system_keys
    return (
        b"".join((system_bare, prompt_bare, _SEPARATOR_BYTE, answer_bare)),
        system_near + prompt_key,
        answer_key,
        joined_bytes + system_bytes + 1,
    )


def _system_keys(system: Any, value: Any = None) -> _SystemKeys:
    """The memory of one system instruction: ``system`` as read, then what ``value`` (the same
    instruction as JSON values, when ``system`` is decoded otherwise) converts to."""
    parts = _system_instruction(system if value is None else value)
    joined = _SEPARATOR.join(["system", *(part["text"] for part in parts)]).encode()
    bare = joined.translate(None, ASCII_WHITESPACE) + _SEPARATOR_BYTE
    return system, parts, bare, near_normalise(bare), len(joined)


# --- the plain Gemini line, decoded by type ----------------------------------------------------
#
# Most lines of a Gemini file are text turns and at most a system instruction of text parts. The
# decoder below reads exactly that shape into structs in one C pass (types, keys, roles, blank
# texts checked as it parses), faster than orjson builds the dicts the general path then checks
# in Python. A line it cannot read (any other key, type or value, or invalid JSON) raises
# msgspec.DecodeError and takes the general path, orjson and GeminiConverter.__call__, which
# also finds the precise error; so does a record ``GeminiConverter.plain`` declines. Both paths
# give the same keys, counts and written bytes (tests/unit/datasets/test_datasets_plain.py).

#: Not empty: checked as it parses. Whether a text is only whitespace is checked by
#: GeminiConverter.plain (a regex here costs more than the whole conversion).
_PlainText = Annotated[str, msgspec.Meta(min_length=1)]


class PlainPart(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    text: _PlainText


class PlainTurn(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    # Field order is the written order: {"role": ..., "parts": [...]}.
    role: Literal["user", "model"]
    parts: Annotated[list[PlainPart], msgspec.Meta(min_length=1)]


class PlainSystem(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    parts: Annotated[list[PlainPart], msgspec.Meta(min_length=1)]
    #: Ignored, as the general path ignores it ("role": "system" in Vertex's own examples); a
    #: string only, so that '{"role":' counts stay exact (GeminiConverter.plain).
    role: str | msgspec.UnsetType = msgspec.UNSET


class PlainRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    contents: Annotated[list[PlainTurn], msgspec.Meta(min_length=1)]
    system: PlainSystem | None = msgspec.field(default=None, name="systemInstruction")


#: Decodes one line into a PlainRecord (``Decoder.decode``), or raises msgspec.DecodeError.
PLAIN_DECODER = msgspec.json.Decoder(PlainRecord)
#: msgspec escapes strings as orjson does (checked over every code point), so a line written
#: from the structs has the bytes orjson.dumps gives for the record's dicts.
_PLAIN_ENCODE = msgspec.json.Encoder().encode
_PLAIN_PREFIX = b'{"contents":'
_PLAIN_SUFFIX = b"}\n"
_PLAIN_SUFFIX_BYTES = len(_PLAIN_SUFFIX)

#: ``GeminiConverter.plain``'s result: the Example fields the pass reads (key, prompt_key,
#: answer_key, text_bytes, turns, answer), the bytes of the written line, and its beginning and
#: its turns encoded (for ``GeminiConverter.plain_line``).
PlainExample = tuple[bytes, bytes, bytes, int, int, str, int, bytes, bytes]


def plain_prompt_text(record: PlainRecord) -> str:
    """``shared.datasets.task.prompt_text`` of a plain record's Example.record."""
    pieces = [] if record.system is None else ["".join(p.text for p in record.system.parts)]
    pieces.extend("".join(p.text for p in turn.parts) for turn in record.contents[:-1])
    return "\n\n".join(piece for piece in pieces if piece)


def _convert_gemini_general(record: dict[str, Any]) -> Example:
    contents = record.get("contents")
    if type(contents) is not list or not contents:
        raise _fail("missing_contents_list", "contents", "contents must be a non-empty list of {role, parts}")
    notes: tuple[Note, ...] = ()
    if len(record) > 1 and not _GEMINI_KEYS.issuperset(record):
        for key in ("toolConfig", "tool_config"):
            if record.get(key) is not None:
                raise _fail(
                    "unsupported_tool_calls",
                    key,
                    f"{key} (the function-calling mode) is not part of Vertex AI tuning data; remove it",
                )
        if "completions" in record:
            # One file, one shape: a preference record after supervised ones is not read as one.
            raise _fail(
                "unsupported_preference_pairs",
                "completions",
                "scored completions (Vertex AI preference data) in a file of supervised examples: "
                "one file must use one shape",
            )
        notes = _dropped(record, _GEMINI_KEYS | _GENERATION_CONFIG_KEYS | {"tools"})
    generation_config, config_notes = _media_resolution_config(record)
    notes += config_notes
    tools = gemini_tools(record["tools"]) if record.get("tools") is not None else None
    system = record.get("systemInstruction", record.get("system_instruction"))
    system_parts = None if system is None else _system_instruction(system)
    out: list[dict[str, Any]] = []
    previous = ""
    for i, item in enumerate(contents):
        if type(item) is not dict:
            raise _fail("invalid_content_item", f"contents[{i}]", "each item of contents must be an object")
        role = item.get("role")
        parts = item.get("parts")
        if role is None or parts is None:
            missing = "role" if role is None else "parts"
            raise _fail(
                "content_item_missing_key", f"contents[{i}].{missing}", f"contents[{i}] has no {missing}"
            )
        if role not in ("user", "model"):
            raise _fail("unrecognized_role", f"contents[{i}].role", f"role {role!r} is not 'user' or 'model'")
        if role == previous:
            raise _fail(
                "consecutive_turns", f"contents[{i}].role", f"two {role} turns in a row; roles must alternate"
            )
        previous = role
        if type(parts) is not list or not parts:
            raise _fail("missing_or_invalid_parts", f"contents[{i}].parts", "parts must be a non-empty list")
        checked = [
            _gemini_part(part, f"contents[{i}].parts[{j}]", role, tools) for j, part in enumerate(parts)
        ]
        if len(item) > 2:
            notes += tuple(note for note in _dropped(item, _CONTENT_KEYS, "contents[].") if note not in notes)
        out.append(item if len(item) == 2 and checked == parts else {"role": role, "parts": checked})
    if out[0]["role"] != "user":
        raise _fail("first_turn_not_user", "contents[0].role", "the conversation must start with a user turn")
    if out[-1]["role"] != "model":
        last = len(out) - 1
        raise _fail(
            "last_turn_not_model", f"contents[{last}].role", "the last turn must be the model's (the target)"
        )
    if tools is None and any("text" not in p and "fileData" not in p for c in out for p in c["parts"]):
        tools = Tools()  # calls or results without declarations: check_pairing names what is wrong
    if tools is None:
        return _example(system_parts, out, notes, generation_config=generation_config)
    check_pairing([(c["role"], c["parts"], f"contents[{i}]") for i, c in enumerate(out)])
    notes += tuple(note for note in dict.fromkeys(tools.notes) if note not in notes)
    return _example(system_parts, out, notes, tools.record_value(), generation_config=generation_config)


_GENERATION_CONFIG_KEYS = frozenset({"generationConfig", "generation_config"})
_MEDIA_RESOLUTION_KEYS = frozenset({"mediaResolution", "media_resolution"})
#: The values Vertex AI accepts (google-genai's ``MediaResolution``, less UNSPECIFIED).
MEDIA_RESOLUTIONS = ("MEDIA_RESOLUTION_LOW", "MEDIA_RESOLUTION_MEDIUM", "MEDIA_RESOLUTION_HIGH")


def _media_resolution_config(record: dict[str, Any]) -> tuple[dict[str, Any] | None, tuple[Note, ...]]:
    """The ``generationConfig`` a written record keeps: its ``mediaResolution`` only (how Vertex
    samples the example's images and video frames; shared.datasets.media checks that it is one
    value for the dataset). Any other key is dropped, and named."""
    for name in _GENERATION_CONFIG_KEYS:
        config = record.get(name)
        if config is None:
            continue
        if type(config) is not dict:
            return None, ((UNKNOWN_KEYS, name),)  # not an object: nothing in it can be kept
        notes = _dropped(config, _MEDIA_RESOLUTION_KEYS, f"{name}.")
        value = config.get("mediaResolution", config.get("media_resolution"))
        if value is None:
            return None, notes
        if value not in MEDIA_RESOLUTIONS:
            raise _fail(
                "invalid_media_resolution",
                f"{name}.mediaResolution",
                f"mediaResolution {value!r} is not one of {', '.join(MEDIA_RESOLUTIONS)}",
            )
        return {"mediaResolution": value}, notes
    return None, ()


def _system_instruction(system: Any) -> list[dict[str, Any]]:
    if type(system) is str and not _is_blank(system):
        return [{"text": system}]
    parts = system.get("parts") if type(system) is dict else None
    if type(parts) is not list or not parts:
        raise _fail(
            "invalid_system_instruction",
            "systemInstruction",
            'systemInstruction must be {"parts": [{"text": ...}]}',
        )
    checked = []
    for j, part in enumerate(parts):
        text = part.get("text") if type(part) is dict else None
        if type(text) is not str:
            raise _fail(
                "invalid_system_instruction",
                f"systemInstruction.parts[{j}]",
                "system parts must be text parts",
            )
        if _is_blank(text):
            raise _fail(
                "missing_text", f"systemInstruction.parts[{j}].text", "text is empty or only whitespace"
            )
        checked.append({"text": text})
    return checked


# --- chat messages (OpenAI, Gemini 1.0) ------------------------------------------------------

_MESSAGE_KEYS = frozenset({"role", "content", "name", "weight"})
_MESSAGES_RECORD_KEYS = frozenset({"messages", "tools", "functions"})


def _content_parts(content: Any, path: str) -> list[dict[str, Any]]:
    if type(content) is str:
        if _is_blank(content):
            raise _fail("missing_content", path, "content is empty or only whitespace")
        return [{"text": content}]
    if type(content) is not list or not content:
        raise _fail("missing_content", path, "content must be a non-empty string or list of parts")
    parts = []
    for j, part in enumerate(content):
        part_path = f"{path}[{j}]"
        kind = part.get("type") if type(part) is dict else None
        if kind == "text":
            text = part.get("text")
            if type(text) is not str or _is_blank(text):
                raise _fail("missing_content", f"{part_path}.text", "text is empty or not a string")
            parts.append({"text": text})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if type(image) is dict else image
            parts.append(_image_url_part(url, f"{part_path}.image_url"))
        elif kind in ("input_audio", "file", "input_file"):
            raise _fail(
                "unsupported_inline_data",
                part_path,
                f"{kind} parts carry inline data; use a gs:// or https:// URI",
            )
        else:
            raise _fail("invalid_part", part_path, f"unsupported content part type {kind!r}")
    return parts


def _image_url_part(url: Any, path: str) -> dict[str, Any]:
    if type(url) is not str or not url:
        raise _fail("invalid_file_data", path, "image_url needs a url")
    if url.startswith("data:"):
        raise _fail(
            "unsupported_inline_data",
            path,
            "inline (data:) images cannot be used; upload the image and give its URI",
        )
    if not (url.startswith("gs://") or url.startswith("https://")):
        raise _fail("invalid_file_uri", path, f"image URL {url[:80]!r} must start with gs:// or https://")
    extension = url.split("?", 1)[0].rsplit(".", 1)[-1].lower()
    mime = _EXTENSION_MIME.get(extension)
    if mime is None:
        raise _fail(
            "unsupported_mime_type", path, f"cannot tell the image type of {url[:80]!r} from its extension"
        )
    return {"fileData": {"mimeType": mime, "fileUri": url}}


#: The placeholder of LLaVA-style datasets: where the next file of ``images`` goes in the text.
IMAGE_PLACEHOLDER = "<image>"
#: The folder ``images`` paths resolve against when there is no bucket (``sftpipe validate`` on a
#: local file): the URIs are shapes only, and the report says their objects were not checked.
UNRESOLVED_MEDIA_BASE = "gs://UPLOAD_BUCKET/UPLOAD_FOLDER/"


def _placeholder_file(path: Any, field: str, base: str) -> dict[str, Any]:
    """The fileData part of one relative ``images`` path, its MIME type from the extension."""
    if type(path) is not str or not path.strip():
        raise _fail("invalid_media_path", field, f"an images entry must be a relative path, not {path!r}")
    segments = path.replace("\\", "/").split("/")
    if "://" in path or path.startswith(("/", "\\")) or ":" in segments[0] or ".." in segments:
        raise _fail(
            "invalid_media_path",
            field,
            f"image path {path[:200]!r} must be relative to the upload's folder: no absolute path, URL or '..'",
        )
    mime = mimetypes.guess_type(path, strict=False)[0]
    if mime is None or mime.lower() not in ALLOWED_FILE_MIME_TYPES:
        raise _fail(
            "unsupported_mime_type",
            field,
            f"the type of {path[:200]!r} from its extension ({mime or 'unknown'}) is not accepted for tuning",
        )
    name = "/".join(s for s in segments if s not in ("", "."))
    return {"fileData": {"mimeType": mime.lower(), "fileUri": f"{base}{name}"}}


def convert_messages(record: dict[str, Any]) -> Example:
    messages = record.get("messages")
    if type(messages) is not list or not messages:
        raise _fail("missing_messages_list", "messages", "messages must be a non-empty list")
    dropped: dict[Note, None] = {}  # ordered, each note once per record
    tools = Tools()
    if len(record) > 1:
        tools = openai_tools(record)
        if not _MESSAGES_RECORD_KEYS.issuperset(record):
            dropped.update(dict.fromkeys(_dropped(record, _MESSAGES_RECORD_KEYS)))
    uses_tools = bool(tools.declarations)
    # The calls of the last assistant turn that no tool message has answered yet: (id, name).
    pending: list[tuple[Any, str]] = []
    system_parts: list[dict[str, Any]] = []
    turns: list[tuple[str, list[dict[str, Any]], str]] = []
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        if type(message) is not dict:
            raise _fail("message_missing_key", path, "each message must be an object with role and content")
        role = message.get("role")
        if role in ("tool", "function"):
            uses_tools = True
            part = _tool_result(message, path, pending)
            if turns and turns[-1][0] == "user" and "functionResponse" in turns[-1][1][-1]:
                turns[-1][1].append(part)  # parallel calls: their results are one user turn
            else:
                turns.append(("user", [part], f"{path}.role"))
            continue
        if message.get("tool_calls") or message.get("function_call"):
            uses_tools = True
            parts, pending = _tool_calls(message, path, tools)
            turns.append(("model", parts, f"{path}.role"))
            continue
        if role is None or "content" not in message:
            missing = "role" if role is None else "content"
            raise _fail("message_missing_key", f"{path}.{missing}", f"message has no {missing}")
        if not _MESSAGE_KEYS.issuperset(message):
            # An empty tool_calls ([]), as some exports write on every message, calls nothing.
            unknown = sorted(k for k in message if k not in _MESSAGE_KEYS and message[k] != [])
            if all(message.get(k) is None for k in unknown):
                pass  # null keys carry nothing to drop
            else:
                raise _fail(
                    "message_unrecognized_key",
                    f"{path}.{unknown[0]}",
                    f"unrecognised message key(s) {unknown}",
                )
        if message.get("name") not in (None, ""):
            dropped[(UNKNOWN_KEYS, "messages[].name")] = None
        gemini_role = _MESSAGE_ROLES.get(role) if type(role) is str else None
        if gemini_role is None:
            raise _fail(
                "unrecognized_role", f"{path}.role", f"role {role!r} is not system, user, assistant or model"
            )
        weight = message.get("weight")
        if weight is not None and weight != 1:
            raise _fail(
                "unsupported_weight",
                f"{path}.weight",
                "per-message weights cannot be expressed: every model turn is trained on",
            )
        parts = _content_parts(message["content"], f"{path}.content")
        if gemini_role == "system":
            if turns:
                raise _fail(
                    "misplaced_system_message",
                    path,
                    "a system message after the first turn cannot be expressed in Gemini",
                )
            if any("text" not in p for p in parts):
                raise _fail(
                    "invalid_system_instruction", f"{path}.content", "a system message must be text only"
                )
            system_parts.extend(parts)
            continue
        if (
            gemini_role == "user"
            and turns
            and turns[-1][0] == "user"
            and "functionResponse" in turns[-1][1][-1]
        ):
            turns[-1][1].extend(parts)  # a user message after tool results: one user turn in Gemini
            continue
        turns.append((gemini_role, parts, f"{path}.role"))
    return _finish(system_parts or None, turns, "messages", tuple(dropped), tools if uses_tools else None)


def _tool_calls(
    message: dict[str, Any], path: str, tools: Tools
) -> tuple[list[dict[str, Any]], list[tuple[Any, str]]]:
    """An assistant message's ``tool_calls`` (or legacy ``function_call``) as functionCall parts
    after its text, if any; and the calls as (id, name) for the tool messages to answer."""
    if message.get("role") not in ("assistant", "model"):
        raise _fail("invalid_part", f"{path}.role", "only an assistant message may call tools")
    content = message.get("content")
    parts = [] if content in (None, "") else _content_parts(content, f"{path}.content")
    calls: list[tuple[Any, str]] = []
    tool_calls = message.get("tool_calls")
    if tool_calls:
        if type(tool_calls) is not list:
            raise _fail("invalid_function_call", f"{path}.tool_calls", "tool_calls must be a list")
        for k, call in enumerate(tool_calls):
            call_path = f"{path}.tool_calls[{k}]"
            kind = call.get("type", "function") if type(call) is dict else "function"
            if kind != "function":
                raise _fail(
                    "unsupported_tool_calls",
                    f"{call_path}.type",
                    f"a {kind!r} tool call cannot be tuned: Vertex AI tunes function calls only",
                )
            if type(call) is not dict or type(call.get("function")) is not dict:
                raise _fail(
                    "invalid_function_call",
                    call_path,
                    'a tool call must be {"type": "function", "function": {name, arguments}}',
                )
            function = call["function"]
            part = tools.call(
                function.get("name"), function.get("arguments"), f"{call_path}.function", "arguments"
            )
            parts.append(part)
            calls.append((call.get("id"), part["functionCall"]["name"]))
    else:
        function = message["function_call"]
        if type(function) is not dict:
            raise _fail(
                "invalid_function_call", f"{path}.function_call", "function_call must be {name, arguments}"
            )
        part = tools.call(
            function.get("name"), function.get("arguments"), f"{path}.function_call", "arguments"
        )
        parts.append(part)
        calls.append((None, part["functionCall"]["name"]))
    return parts, calls


def _tool_result(message: dict[str, Any], path: str, pending: list[tuple[Any, str]]) -> dict[str, Any]:
    """A ``tool`` (or legacy ``function``) message as the functionResponse of the call it answers:
    by ``tool_call_id``, else by name (``function``), else the first call not yet answered."""
    call_id = message.get("tool_call_id")
    name = message.get("name")
    if call_id is not None:
        match = next((call for call in pending if call[0] == call_id), None)
        where = f"{path}.tool_call_id"
    elif message.get("role") == "function" and name is not None:
        match = next((call for call in pending if call[1] == name), None)
        where = f"{path}.name"
    else:
        match = pending[0] if pending else None
        where = f"{path}.role"
    if match is None:
        said = f"tool_call_id {call_id!r}" if call_id is not None else f"{message.get('role')} message"
        raise _fail(
            "unpaired_tool_response",
            where,
            f"the {said} answers no call of the assistant turn before it",
        )
    pending.remove(match)
    content = message.get("content")
    if type(content) is list:  # OpenAI's text parts
        content = "".join(p["text"] for p in content if type(p) is dict and type(p.get("text")) is str)
    return response_part(match[1], "" if content is None else content)


# --- ShareGPT ---------------------------------------------------------------------------------


def _declares_tools(value: Any) -> bool:
    if isinstance(value, str):
        stripped = value.strip()
        return stripped not in ("", "[]", "{}", "null")
    return bool(value)


_SHAREGPT_RECORD_KEYS = frozenset({"conversations", "conversation", "system", "tools"})
_SHAREGPT_TURN_KEYS = frozenset({"from", "value", "role", "content"})


def convert_sharegpt(record: dict[str, Any]) -> Example:
    list_key = "conversations" if "conversations" in record else "conversation"
    conversation = record.get(list_key)
    if type(conversation) is not list or not conversation:
        raise _fail(
            "missing_messages_list", list_key, f"{list_key} must be a non-empty list of {{from, value}}"
        )
    system_parts: list[dict[str, Any]] = []
    system = record.get("system")
    if type(system) is str and not _is_blank(system):
        system_parts.append({"text": system})
    turns: list[tuple[str, list[dict[str, Any]], str]] = []
    dropped: dict[Note, None] = dict.fromkeys(_dropped(record, _SHAREGPT_RECORD_KEYS))
    tools = sharegpt_tools(record.get("tools")) if _declares_tools(record.get("tools")) else Tools()
    uses_tools = bool(tools.declarations)
    pending: list[str] = []  # names of the last function_call turn's calls not yet answered
    for i, message in enumerate(conversation):
        path = f"{list_key}[{i}]"
        if type(message) is not dict:
            raise _fail("message_missing_key", path, "each turn must be an object with from and value")
        if len(message) > 2:
            dropped.update(dict.fromkeys(_dropped(message, _SHAREGPT_TURN_KEYS, f"{list_key}[].")))
        speaker = message.get("from", message.get("role"))
        value = message.get("value", message.get("content"))
        if type(speaker) is str and speaker in _OTHER_TOOL_SPEAKERS:
            raise _fail(
                "unsupported_tool_calls",
                f"{path}.from",
                f"'{speaker}' turns are not LLaMA-Factory's function_call / observation turns: "
                "write calls as function_call turns and their results as observation turns",
            )
        if speaker is None or value is None:
            missing = "from" if speaker is None else "value"
            raise _fail("message_missing_key", f"{path}.{missing}", f"turn has no {missing}")
        role = _SHAREGPT_ROLES.get(speaker) if type(speaker) is str else None
        if role is None:
            raise _fail(
                "unrecognized_role", f"{path}.from", f"speaker {speaker!r} is not human, gpt or system"
            )
        if speaker == "function_call":
            uses_tools = True
            parts = _sharegpt_calls(value, f"{path}.value", tools)
            pending = [p["functionCall"]["name"] for p in parts]
            turns.append(("model", parts, f"{path}.from"))
            continue
        if speaker == "observation":
            uses_tools = True
            parts = _sharegpt_results(value, path, pending)
            if turns and turns[-1][0] == "user" and "functionResponse" in turns[-1][1][-1]:
                turns[-1][1].extend(parts)
            else:
                turns.append(("user", parts, f"{path}.from"))
            continue
        if type(value) is not str or _is_blank(value):
            raise _fail("missing_content", f"{path}.value", "value is empty or not a string")
        if role == "system":
            if turns:
                raise _fail(
                    "misplaced_system_message", path, "a system turn after the first turn cannot be expressed"
                )
            system_parts.append({"text": value})
            continue
        turns.append((role, [{"text": value}], f"{path}.from"))
    return _finish(system_parts or None, turns, list_key, tuple(dropped), tools if uses_tools else None)


def _sharegpt_calls(value: Any, path: str, tools: Tools) -> list[dict[str, Any]]:
    """A function_call turn's value: JSON of ``{name, arguments}``, or a list of them (parallel calls)."""
    calls = value
    if type(value) is str:
        try:
            calls = json.loads(value)
        except json.JSONDecodeError as error:
            raise _fail(
                "invalid_function_call",
                path,
                f'the call is not valid JSON ({error.msg}); expected {{"name", "arguments"}}',
            ) from None
    if type(calls) is dict:
        calls = [calls]
    if type(calls) is not list or not calls or not all(type(c) is dict for c in calls):
        raise _fail(
            "invalid_function_call",
            path,
            'a function_call value must be {"name", "arguments"} or a list of them',
        )
    return [
        tools.call(
            call.get("name"),
            call.get("arguments", call.get("args")),
            path if len(calls) == 1 else f"{path}[{k}]",
            "arguments",
        )
        for k, call in enumerate(calls)
    ]


def _sharegpt_results(value: Any, path: str, pending: list[str]) -> list[dict[str, Any]]:
    """An observation turn's value as functionResponse parts: one result for the next unanswered
    call, or, after parallel calls, a JSON list with one result for each call still unanswered."""
    if not pending:
        raise _fail("unpaired_tool_response", f"{path}.from", "the observation answers no function_call turn")
    results = [value]
    if len(pending) > 1 and type(value) is str:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if type(parsed) is list and len(parsed) == len(pending):
            results = parsed
    parts = [response_part(name, result) for name, result in zip(pending, results, strict=False)]
    del pending[: len(parts)]
    return parts


# --- flat shapes --------------------------------------------------------------------------------


def _text_field(record: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = record.get(key)
    if value is None:
        if required:
            raise _fail("missing_field", key, f"'{key}' is missing")
        return ""
    if type(value) in (int, float, bool):
        value = str(value)
    if type(value) is not str:
        raise _fail("missing_field", key, f"'{key}' must be a string, not {type(value).__name__}")
    if required and _is_blank(value):
        raise _fail("missing_text", key, f"'{key}' is empty or only whitespace")
    return value


def _join(*texts: str) -> str:
    return "\n\n".join(t for t in texts if t and not t.isspace())


def _single_turn(
    prompt: str, completion: str, prompt_field: str, completion_field: str, notes: tuple[Note, ...] = ()
) -> Example:
    if _is_blank(prompt):
        raise _fail("missing_text", prompt_field, f"'{prompt_field}' is empty or only whitespace")
    turns = [("user", [{"text": prompt}], prompt_field), ("model", [{"text": completion}], completion_field)]
    return _finish(None, turns, prompt_field, notes)


def convert_prompt_completion(record: dict[str, Any]) -> Example:
    prompt = _text_field(record, "prompt")
    completion = _text_field(record, "completion")
    notes = _dropped(record, _PROMPT_COMPLETION_KEYS) if len(record) > 2 else ()
    return _single_turn(prompt, completion, "prompt", "completion", notes)


_PROMPT_COMPLETION_KEYS = frozenset({"prompt", "completion"})
_ALPACA_KEYS = frozenset({"instruction", "input", "output", "system", "history"})
_DOLLY_KEYS = frozenset({"instruction", "context", "response"})


def convert_alpaca(record: dict[str, Any]) -> Example:
    instruction = _text_field(record, "instruction", required=False)
    user_input = _text_field(record, "input", required=False)
    output = _text_field(record, "output")
    system = _text_field(record, "system", required=False)
    prompt = _join(instruction, user_input)
    if not prompt:
        raise _fail("missing_text", "instruction", "both 'instruction' and 'input' are empty")
    history = record.get("history") or []
    if type(history) is not list:
        raise _fail("missing_field", "history", "history must be a list of [instruction, response] pairs")
    turns: list[tuple[str, list[dict[str, Any]], str]] = []
    for i, pair in enumerate(history):
        if (
            type(pair) not in (list, tuple)
            or len(pair) != 2
            or not all(type(x) is str and not _is_blank(x) for x in pair)
        ):
            raise _fail(
                "missing_field",
                f"history[{i}]",
                "each history item must be [instruction, response], both non-empty",
            )
        turns.append(("user", [{"text": pair[0]}], f"history[{i}][0]"))
        turns.append(("model", [{"text": pair[1]}], f"history[{i}][1]"))
    turns.append(("user", [{"text": prompt}], "instruction"))
    turns.append(("model", [{"text": output}], "output"))
    system_parts = [{"text": system}] if system and not system.isspace() else None
    return _finish(system_parts, turns, "instruction", _dropped(record, _ALPACA_KEYS))


def convert_dolly(record: dict[str, Any]) -> Example:
    instruction = _text_field(record, "instruction")
    context = _text_field(record, "context", required=False)
    response = _text_field(record, "response")
    notes = _dropped(record, _DOLLY_KEYS) if len(record) > 3 else ()
    return _single_turn(_join(instruction, context), response, "instruction", "response", notes)


# --- columns (CSV/TSV rows, flat JSON) -----------------------------------------------------------

_INPUT_COLUMNS = (
    "input",
    "prompt",
    "question",
    "instruction",
    "text",
    "query",
    "source",
    "sentence",
    "document",
    "article",
)
_OUTPUT_COLUMNS = (
    "output",
    "response",
    "completion",
    "answer",
    "answer_text",
    "answers",
    "target",
    "label",
    "summary",
    "highlights",
)
_SYSTEM_COLUMNS = ("system", "system_prompt", "system_instruction")
_CONTEXT_COLUMNS = ("context", "passage")
#: Output column -> task it suggests (used when the task is not given).
COLUMN_TASK_HINTS = {"label": "classification", "summary": "summarization", "highlights": "summarization"}


def auto_column_mapping(columns: list[str] | tuple[str, ...]) -> ColumnMapping | None:
    """The mapping that common column names imply, or None. Matching ignores case and spaces."""
    by_name = {c.strip().lower(): c for c in columns}

    def first(names: tuple[str, ...]) -> str | None:
        return next((by_name[n] for n in names if n in by_name), None)

    output = first(_OUTPUT_COLUMNS)
    system = first(_SYSTEM_COLUMNS)
    context = first(_CONTEXT_COLUMNS)
    if output is None:
        return None
    if "question" in by_name and context is not None:
        return ColumnMapping(
            input=by_name["question"], output=output, context=context, system=system, style="qa"
        )
    if "instruction" in by_name and "input" in by_name:
        return ColumnMapping(
            input=by_name["instruction"], output=output, context=by_name["input"], system=system
        )
    user = first(_INPUT_COLUMNS)
    if user is None and context is not None:
        user, context = context, None
    if user is None:
        return None
    return ColumnMapping(input=user, output=output, context=context, system=system)


def convert_columns(record: dict[str, Any], mapping: ColumnMapping) -> Example:
    user_input = _text_field(record, mapping.input)
    output = _text_field(record, mapping.output)
    context = _text_field(record, mapping.context, required=False) if mapping.context else ""
    system = _text_field(record, mapping.system, required=False) if mapping.system else ""
    if mapping.style == "qa" and context and not context.isspace():
        prompt = f"Context: {context}\n\nQuestion: {user_input}"
    else:
        prompt = _join(user_input, context)
    system_parts = [{"text": system}] if system and not system.isspace() else None
    turns = [("user", [{"text": prompt}], mapping.input), ("model", [{"text": output}], mapping.output)]
    notes = _dropped(record, mapping.columns) if len(record) > len(mapping.columns) else ()
    return _finish(system_parts, turns, mapping.input, notes)


# --- preference data --------------------------------------------------------------------------
#
# Each converter below builds the example from the prompt and the *preferred* answer only; the
# rejected answer is checked (a malformed pair is an error naming its field) and then left out,
# counted in ``Example.rejected_answers``. FileConverter calls them only with preference_mode:
# chosen; otherwise a pair is an ``unsupported_preference_pairs`` error.

_MESSAGE_INDEX = re.compile(r"^messages\[(\d+)\]")


def _pair_error(field: str, message: str) -> RecordIssueError:
    return _fail("invalid_preference_pair", field, message)


def _relocated(bad: RecordIssueError, where: Callable[[str], str]) -> RecordIssueError:
    """The same error with its field named as the source record has it."""
    return RecordIssueError(bad.code, where(bad.field), bad.message)


def _sharegpt_answer(answer: Any, key: str) -> dict[str, Any]:
    """A ShareGPT preference answer: one turn ``{"from": "gpt", "value": ...}`` of the model."""
    if answer is None:
        raise _pair_error(key, f"'{key}' is missing: a preference pair needs both chosen and rejected")
    if type(answer) is not dict:
        raise _pair_error(
            key, f'\'{key}\' must be one turn {{"from": "gpt", "value": ...}}, not {type(answer).__name__}'
        )
    speaker = answer.get("from", answer.get("role", "gpt"))
    value = answer.get("value", answer.get("content"))
    # A function_call turn is the model's too, but a preference answer is read as text only.
    if type(speaker) is not str or _SHAREGPT_ROLES.get(speaker) != "model" or speaker == "function_call":
        raise _pair_error(f"{key}.from", f"'{key}' must be the model's turn (gpt), not {speaker!r}")
    if type(value) is not str or _is_blank(value):
        raise _pair_error(f"{key}.value", f"'{key}'.value is missing, empty or not a string")
    return {"from": "gpt", "value": value}


def convert_sharegpt_preference(record: dict[str, Any]) -> Example:
    """``conversations`` (the prompt, ending with the user's turn) + ``chosen`` + ``rejected``."""
    list_key = "conversations" if "conversations" in record else "conversation"
    chosen = _sharegpt_answer(record.get("chosen"), "chosen")
    _sharegpt_answer(record.get("rejected"), "rejected")
    prompt = record.get(list_key)
    if type(prompt) is not list or not prompt:
        raise _fail(
            "missing_messages_list", list_key, f"{list_key} must be a non-empty list of {{from, value}}"
        )
    supervised = {key: value for key, value in record.items() if key not in ("chosen", "rejected")}
    supervised[list_key] = [*prompt, chosen]
    answer_at = f"{list_key}[{len(prompt)}]"
    try:
        example = convert_sharegpt(supervised)
    except RecordIssueError as bad:
        raise _relocated(bad, lambda path: path.replace(answer_at, "chosen", 1)) from bad
    example.rejected_answers = 1
    return example


def _message_list(value: Any, key: str) -> list[Any]:
    if value is None:
        raise _pair_error(key, f"'{key}' is missing: a preference pair needs both")
    if type(value) is not list or not value:
        raise _pair_error(key, f"'{key}' must be a non-empty list of messages, not {type(value).__name__}")
    for i, message in enumerate(value):
        if type(message) is not dict:
            raise _pair_error(f"{key}[{i}]", "each message must be an object with role and content")
    return value


def convert_openai_preference(record: dict[str, Any]) -> Example:
    """``input.messages`` (the prompt) + ``preferred_output`` (the answer) + ``non_preferred_output``."""
    given = record.get("input")
    if type(given) is not dict:
        raise _pair_error("input", "'input' must be an object {\"messages\": [...]}")
    prompt = _message_list(given.get("messages"), "input.messages")
    preferred = _message_list(record.get("preferred_output"), "preferred_output")
    _message_list(record.get("non_preferred_output"), "non_preferred_output")
    for key in ("preferred_output", "non_preferred_output"):
        for i, message in enumerate(record[key]):
            if message.get("role") != "assistant":
                raise _pair_error(
                    f"{key}[{i}].role", f"{key} holds the assistant's answer, not {message.get('role')!r}"
                )
    # input's own keys (tools, parallel_tool_calls) are read as a chat record's.
    supervised = {key: value for key, value in given.items() if key != "messages"}
    supervised["messages"] = [*prompt, *preferred]

    def where(path: str) -> str:
        found = _MESSAGE_INDEX.match(path)
        if found is None:
            return f"input.{path}" if path else "input"
        i = int(found.group(1))
        inside = path[found.end() :]
        return (
            f"input.messages[{i}]{inside}"
            if i < len(prompt)
            else f"preferred_output[{i - len(prompt)}]{inside}"
        )

    try:
        example = convert_messages(supervised)
    except RecordIssueError as bad:
        raise _relocated(bad, where) from bad
    notes = tuple(
        (code, name if name.startswith("messages[]") else f"input.{name}") for code, name in example.notes
    )
    example.notes = notes + _dropped(record, _OPENAI_PREFERENCE_KEYS)
    example.rejected_answers = 1
    return example


_OPENAI_PREFERENCE_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
_CHOSEN_REJECTED_KEYS = frozenset({"chosen_messages", "rejected_messages"})


def convert_chosen_rejected_messages(record: dict[str, Any]) -> Example:
    """``chosen_messages`` / ``rejected_messages``: two whole conversations (OpenAI-style role and
    content) sharing a prompt; the chosen one is the example."""
    chosen = _message_list(record.get("chosen_messages"), "chosen_messages")
    _message_list(record.get("rejected_messages"), "rejected_messages")
    try:
        example = convert_messages({"messages": chosen})
    except RecordIssueError as bad:
        raise _relocated(bad, lambda path: path.replace("messages", "chosen_messages", 1)) from bad
    example.notes = tuple((code, f"chosen_{name}") for code, name in example.notes) + _dropped(
        record, _CHOSEN_REJECTED_KEYS
    )
    example.rejected_answers = 1
    return example


_VERTEX_PREFERENCE_KEYS = frozenset({"contents", "completions", "systemInstruction", "system_instruction"})


def convert_vertex_preference(record: dict[str, Any]) -> Example:
    """Vertex AI preference data: ``contents`` ending with the user's turn, and ``completions``
    ``[{"score": 1, "completion": {"role": "model", "parts": [...]}}, {"score": 0, ...}]``. The
    completion of the highest score is the answer; a tie for it names no preferred answer."""
    completions = record.get("completions")
    if type(completions) is not list or len(completions) < 2:
        raise _pair_error("completions", "completions must be a list of at least two {score, completion}")
    best = -1
    best_score: float | None = None
    tied = False
    for i, item in enumerate(completions):
        if type(item) is not dict:
            raise _pair_error(f"completions[{i}]", "each completion must be an object {score, completion}")
        score = item.get("score")
        if type(score) not in (int, float):
            raise _pair_error(f"completions[{i}].score", "score must be a number")
        if type(item.get("completion")) is not dict:
            raise _pair_error(f"completions[{i}].completion", "completion must be a content {role, parts}")
        if best_score is None or score > best_score:
            best, best_score, tied = i, score, False
        elif score == best_score:
            tied = True
    if tied:
        raise _pair_error(
            "completions", f"two completions share the highest score ({best_score}): none is preferred"
        )
    contents = record.get("contents")
    if type(contents) is not list or not contents:
        raise _fail("missing_contents_list", "contents", "contents must be a non-empty list of {role, parts}")
    supervised: dict[str, Any] = {"contents": [*contents, completions[best]["completion"]]}
    system = record.get("systemInstruction", record.get("system_instruction"))
    if system is not None:
        supervised["systemInstruction"] = system
    answer_at = f"contents[{len(contents)}]"
    try:
        example = _convert_gemini_general(supervised)
    except RecordIssueError as bad:
        raise _relocated(
            bad, lambda path: path.replace(answer_at, f"completions[{best}].completion", 1)
        ) from bad
    example.notes += _dropped(record, _VERTEX_PREFERENCE_KEYS)
    example.rejected_answers = len(completions) - 1
    return example


_TRL_KEYS = frozenset({"prompt", "chosen", "rejected"})


def _trl_side(value: Any, key: str) -> str | list[Any]:
    """One answer of a TRL pair: a text, or a list of messages (the answer's, or the whole
    conversation with the prompt in it)."""
    if value is None:
        raise _pair_error(key, f"'{key}' is missing: a preference pair needs both chosen and rejected")
    if type(value) is str:
        if _is_blank(value):
            raise _pair_error(key, f"'{key}' is empty")
        return value
    return _message_list(value, key)


def convert_trl_preference(record: dict[str, Any]) -> Example:
    """TRL's preference format: ``prompt`` + ``chosen`` + ``rejected``. Standard (all three text),
    conversational (``prompt`` a list of messages, each answer a list of the assistant's messages)
    or with the prompt inside each answer (an answer list that starts with a user or system
    message is the whole conversation, as in UltraFeedback-binarized; ``prompt`` is then only
    its copy). A text answer without a ``prompt`` (Anthropic HH's "Human: ... Assistant: ..."
    transcripts) names no turns, and is an error."""
    chosen = _trl_side(record.get("chosen"), "chosen")
    _trl_side(record.get("rejected"), "rejected")
    prompt = record.get("prompt")
    whole = type(chosen) is list and type(chosen[0]) is dict and chosen[0].get("role") in ("user", "system")
    if whole:
        prompt_messages: list[Any] = []
    elif type(prompt) is str and not _is_blank(prompt):
        prompt_messages = [{"role": "user", "content": prompt}]
    elif type(prompt) is list and prompt:
        prompt_messages = _message_list(prompt, "prompt")
    else:
        raise _pair_error(
            "prompt",
            "'prompt' is missing or empty: a TRL pair needs the prompt as text or messages, or answers "
            "that are whole conversations (a transcript in one text, Human: ... Assistant: ..., is not read)",
        )
    answer = [{"role": "assistant", "content": chosen}] if type(chosen) is str else chosen
    supervised = {"messages": [*prompt_messages, *answer]}

    def where(path: str) -> str:
        found = _MESSAGE_INDEX.match(path)
        if found is None:
            return "chosen" if not path or path == "messages" else path
        i = int(found.group(1))
        inside = path[found.end() :]
        if i < len(prompt_messages):
            return "prompt" if type(prompt) is str else f"prompt[{i}]{inside}"
        return "chosen" if type(chosen) is str else f"chosen[{i - len(prompt_messages)}]{inside}"

    try:
        example = convert_messages(supervised)
    except RecordIssueError as bad:
        raise _relocated(bad, where) from bad
    example.notes += _dropped(record, _TRL_KEYS)
    example.rejected_answers = 1
    return example


PAIR_CONVERTERS: dict[str, Callable[[dict[str, Any]], Example]] = {
    SHAREGPT_PREFERENCE: convert_sharegpt_preference,
    OPENAI_PREFERENCE: convert_openai_preference,
    CHOSEN_REJECTED_MESSAGES: convert_chosen_rejected_messages,
    VERTEX_PREFERENCE: convert_vertex_preference,
    TRL_PREFERENCE: convert_trl_preference,
}


#: The field a pair's default rejection names: where its rejected answer is.
_REJECTED_FIELD = {
    SHAREGPT_PREFERENCE: "rejected",
    OPENAI_PREFERENCE: "non_preferred_output",
    CHOSEN_REJECTED_MESSAGES: "rejected_messages",
    VERTEX_PREFERENCE: "completions",
    TRL_PREFERENCE: "rejected",
}


def _pair_not_supported(shape: str) -> RecordIssueError:
    return _fail(
        "unsupported_preference_pairs",
        _REJECTED_FIELD[shape],
        f"the file is {PAIR_SHAPES[shape]}: preference data, not supervised tuning data, and a rejected "
        "answer must never be a training target. Upload it with preference_mode: chosen to tune on the "
        "preferred answers only (the rejected ones are dropped and counted), or convert it to plain chat",
    )


class UndesirableExampleError(Exception):
    """A KTO example labelled false, dropped (preference_mode: chosen or skip_invalid): not an error,
    a warning that counts it."""


# --- dispatch -----------------------------------------------------------------------------------


def detect_shape(record: dict[str, Any]) -> str:
    """The shape of one JSON object; raises RecordIssueError when it has none we can convert."""
    if "contents" in record:
        return VERTEX_PREFERENCE if "completions" in record else GEMINI
    if "messages" in record:
        if type(record.get("label")) is bool:
            return OPENAI_CHAT_KTO
        if _holds_answers(record):
            raise _other_pairs(record)
        messages = record["messages"]
        if type(messages) is list and any(type(m) is dict and m.get("role") == "model" for m in messages):
            return GEMINI_MESSAGES
        return OPENAI_CHAT
    if "conversations" in record or "conversation" in record:
        if _holds_answers(record):
            return SHAREGPT_PREFERENCE
        if type(record.get("label")) is bool:
            return SHAREGPT_KTO
        return SHAREGPT
    if "chosen_messages" in record or "rejected_messages" in record:
        return CHOSEN_REJECTED_MESSAGES
    if "preferred_output" in record or "non_preferred_output" in record:
        return OPENAI_PREFERENCE
    if "chosen" in record or "rejected" in record:
        if _holds_answers(record):
            return TRL_PREFERENCE
        raise _other_pairs(record)
    if "prompt" in record and "completion" in record:
        return PROMPT_COMPLETION
    if "instruction" in record and "output" in record:
        return ALPACA
    if "instruction" in record and "response" in record:
        return DOLLY
    if auto_column_mapping(list(record)) is not None:
        return COLUMNS
    keys = ", ".join(sorted(record)[:8])
    raise _fail(
        "unknown_shape",
        "",
        f"no supported shape has the keys {{{keys}}}; expected contents, messages, conversations, "
        "prompt/completion, instruction/output, instruction/response or input/output-like columns",
    )


def _holds_answers(record: dict[str, Any]) -> bool:
    """Whether ``chosen`` / ``rejected`` beside a conversation hold answers (a turn, a text, a list),
    not a flag (``"rejected": false`` of a moderation pass) that says nothing about a pair."""
    return any(type(record.get(key)) in (dict, str, list) for key in ("chosen", "rejected"))


def _other_pairs(record: dict[str, Any]) -> RecordIssueError:
    """chosen / rejected in a form none of the preference shapes reads (beside chat messages, or
    holding no answer)."""
    return _fail(
        "unsupported_preference_pairs",
        "chosen" if "chosen" in record else "rejected",
        "preference pairs (chosen/rejected) are for preference tuning, not supervised tuning, and this "
        "form of them is not read even with preference_mode: chosen; convert the file to plain chat "
        "(the prompt and the chosen answer), or to prompt + chosen + rejected (TRL) or ShareGPT "
        "conversations + chosen + rejected",
    )


CONVERTERS = {
    GEMINI: convert_gemini,
    GEMINI_MESSAGES: convert_messages,
    OPENAI_CHAT: convert_messages,
    SHAREGPT: convert_sharegpt,
    PROMPT_COMPLETION: convert_prompt_completion,
    ALPACA: convert_alpaca,
    DOLLY: convert_dolly,
}


#: The supervised shape a KTO shape's records are, once their label is read.
_KTO_OF = {OPENAI_CHAT: OPENAI_CHAT_KTO, GEMINI_MESSAGES: OPENAI_CHAT_KTO, SHAREGPT: SHAREGPT_KTO}


class ColumnsError(Exception):
    """The columns of a CSV/TSV file (or a flat JSON file) cannot be converted: no row can be."""

    code = "missing_column"


class MissingColumnsError(ColumnsError):
    """The mapping names columns the file does not have."""


class UnmappedColumnsError(ColumnsError):
    """No mapping is given and the header's names say nothing: often a file without a header."""

    code = "unmapped_columns"


#: A header cell longer than this, of more words, ending like a sentence or that is a number
#: reads as data: the file likely has no header row (column names are short labels).
HEADER_NAME_MAX_CHARS = 40
HEADER_NAME_MAX_WORDS = 4


def _looks_like_data(cell: str) -> bool:
    text = cell.strip()
    if not text:
        return False  # an unnamed column (pandas' index) is still a header
    try:
        float(text)
        return True
    except ValueError:
        pass
    return len(text) > HEADER_NAME_MAX_CHARS or len(text.split()) > HEADER_NAME_MAX_WORDS or text[-1] in ".?!"


def _quote_cell(cell: str) -> str:
    return f"`{cell[:40]}{'...' if len(cell) > 40 else ''}`"


def unmapped_columns_message(columns: list[str]) -> str:
    """What to do about a header without recognisable input/output columns."""
    named = ", ".join(_quote_cell(c) for c in columns[:6]) + (", ..." if len(columns) > 6 else "")
    recognised = "input/output, prompt/response, question/answer (+ context), instruction/output, text/label"
    if any(_looks_like_data(c) for c in columns):
        return (
            f"the first row looks like data, not a header ({named}): a CSV/TSV file needs a header row "
            f"naming its columns. Add one, for example `input,output` (recognised: {recognised}); or, if "
            "this row is the header, say which columns are which with --map input=COLUMN,output=COLUMN "
            "(sftpipe validate) or the column_mapping upload setting"
        )
    example = f"input={columns[0]},output={columns[1]}" if len(columns) > 1 else "input=COLUMN,output=COLUMN"
    return (
        f"no input and output columns are recognised among the header's columns {named}: say which are "
        f"which with --map {example} (sftpipe validate) or the column_mapping upload setting, or rename "
        f"them (recognised: {recognised})"
    )


class FileConverter:
    """Converts the records of one file. The first record decides the file's shape (and, for
    columns, the mapping); a later record of another shape is a ``mixed_shapes`` error."""

    def __init__(
        self,
        mapping: ColumnMapping | None = None,
        *,
        delimited: bool = False,
        preference_mode: str = "reject",
        skip_invalid: bool = False,
    ) -> None:
        self.mapping = mapping
        #: Preference pairs become prompt + preferred answer (else each is an error).
        self.preferred_only = preference_mode == "chosen"
        #: KTO ``label: false`` examples are dropped (UndesirableExampleError), not errors.
        self.drop_undesirable = self.preferred_only or skip_invalid
        #: CSV/TSV: every row has the header's columns, so the first row decides for all of them.
        self.delimited = delimited
        self.gemini = GeminiConverter()
        self.shape: str | None = None
        self.shape_line = 0
        #: The task that the column names suggest (label -> classification ...), if any.
        self.task_hint: str | None = None
        #: Where a placeholder dataset's ``images`` paths resolve: gs://bucket/<folder of the upload>/.
        self.media_base = UNRESOLVED_MEDIA_BASE

    def convert(self, value: Any, line: int) -> Example:
        if type(value) is not dict:
            raise _fail("data_type", "", f"the record is a {type(value).__name__}, not a JSON object")
        if "images" in value and ("conversations" in value or "messages" in value):
            return self._with_images(value, line)
        if self.shape == GEMINI and "contents" in value:
            return self.gemini(value)  # the hot path skips shape detection
        try:
            shape = COLUMNS if self.mapping is not None else detect_shape(value)
        except RecordIssueError as bad:
            if self.shape is None and self.delimited and bad.code == "unknown_shape":
                raise UnmappedColumnsError(unmapped_columns_message(list(value))) from bad
            raise
        if self.shape is None:
            if shape == COLUMNS:
                self._start_columns(value)
            self.shape, self.shape_line = shape, line
        elif shape in KTO_SHAPES and _KTO_OF.get(self.shape) == shape:
            return self._kto(value, shape)  # a chat file's record with a label: false is dropped too
        elif self.shape in KTO_SHAPES and _KTO_OF.get(shape) == self.shape:
            shape = self.shape  # a KTO file's record without a boolean label: an error on its label
        elif shape != self.shape:
            raise _fail(
                "mixed_shapes",
                "",
                f"this record is {shape} but the file's first record (line {self.shape_line}) is {self.shape}; "
                "one file must use one shape",
            )
        if shape == COLUMNS:
            assert self.mapping is not None
            return convert_columns(value, self.mapping)
        if shape == GEMINI:
            return self.gemini(value)
        if shape in KTO_SHAPES:
            return self._kto(value, shape)
        if shape in PAIR_SHAPES:
            if not self.preferred_only:
                raise _pair_not_supported(shape)
            return PAIR_CONVERTERS[shape](value)
        return CONVERTERS[shape](value)

    def _with_images(self, value: dict[str, Any], line: int) -> Example:
        """A LLaVA-style record: ``<image>`` placeholders in the text and an ``images`` list of paths
        relative to the upload's folder. Each placeholder becomes a fileData part where it stood."""
        images = value["images"]
        if type(images) is not list:
            raise _fail("invalid_image_placeholders", "images", "images must be a list of relative paths")
        parts = [_placeholder_file(path, f"images[{i}]", self.media_base) for i, path in enumerate(images)]
        example = self.convert({k: v for k, v in value.items() if k != "images"}, line)
        record = example.record
        pending = iter(parts)
        placed = 0
        contents = []
        for content in record["contents"]:
            new_parts: list[dict[str, Any]] = []
            for part in content["parts"]:
                text = part.get("text")
                if text is None or IMAGE_PLACEHOLDER not in text:
                    new_parts.append(part)
                    continue
                pieces = text.split(IMAGE_PLACEHOLDER)
                for n, piece_text in enumerate(pieces):
                    if n:
                        placed += 1
                        file_part = next(pending, None)
                        if file_part is not None:
                            new_parts.append(file_part)
                    if piece_text.strip():
                        new_parts.append({"text": piece_text})
            contents.append({"role": content["role"], "parts": new_parts})
        if placed != len(parts):
            raise _fail(
                "invalid_image_placeholders",
                "images",
                f"the record has {placed} {IMAGE_PLACEHOLDER} placeholders and {len(parts)} images; "
                "each placeholder names the next image of the list, so the counts must be equal",
            )
        for i, content in enumerate(contents):
            if not content["parts"]:
                raise _fail(
                    "missing_text", f"contents[{i}]", "the turn is empty once its placeholders are resolved"
                )
        system = record.get("systemInstruction")
        return _example(system["parts"] if system else None, contents, example.notes, record.get("tools"))

    def _kto(self, value: dict[str, Any], shape: str) -> Example:
        label = value.get("label")
        if type(label) is not bool:
            raise _fail(
                "invalid_preference_pair",
                "label",
                f"label must be true or false in {KTO_SHAPES[shape]}, not {label!r}",
            )
        if not label:
            if self.drop_undesirable:
                raise UndesirableExampleError()
            raise _fail(
                "kto_labels_present",
                "label",
                f"label is false: the file is {KTO_SHAPES[shape]}, and this answer is marked undesirable; "
                "it must never be a training target. Upload with preference_mode: chosen (or skip_invalid) "
                "to drop the label: false examples and tune on the label: true ones, or remove them",
            )
        chat = {key: item for key, item in value.items() if key != "label"}
        return convert_messages(chat) if shape == OPENAI_CHAT_KTO else convert_sharegpt(chat)

    def _start_columns(self, first: dict[str, Any]) -> None:
        if self.mapping is None:
            self.mapping = auto_column_mapping(list(first))
            assert self.mapping is not None  # detect_shape said COLUMNS because a mapping exists
            self.task_hint = (
                "extractive_qa"
                if self.mapping.style == "qa"
                else COLUMN_TASK_HINTS.get(self.mapping.output.strip().lower())
            )
        wanted = (self.mapping.input, self.mapping.output, self.mapping.context, self.mapping.system)
        missing = [column for column in wanted if column and column not in first]
        if missing:
            raise MissingColumnsError(f"column(s) {missing} of the mapping are not among {sorted(first)}")

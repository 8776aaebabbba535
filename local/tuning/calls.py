"""Function calling on a text model: how the local service writes Gemini ``functionCall`` and
``functionResponse`` parts and ``tools`` declarations into a chat model's text, and reads the
calls of a generated answer back as ``functionCall`` parts.

The local models have no tool-calling chat template, so the service uses the Hermes convention
(the one Qwen's and NousResearch's templates use): the declarations go into the system turn inside
``<tools>...</tools>``, each call is ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
and each result ``<tool_response>{"name": ..., "response": {...}}</tool_response>``. Training and
generation render alike, so a tuned model answers with the tags, and ``generateContent`` turns every
well-formed ``<tool_call>`` of its answer into a ``functionCall`` part (google-genai's
``response.function_calls`` reads those). A malformed or unterminated call stays text: the model
did not make a call, and the evaluation scores it so.

Limits: calls are rendered, not executed; ``toolConfig`` (forced or forbidden calling) is not
honoured; declarations are rendered as given (JSON), whatever their schema dialect.
"""

from __future__ import annotations

import json
import re
from typing import Any

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
TOOLS_OPEN, TOOLS_CLOSE = "<tools>", "</tools>"
#: Short on purpose: the tiny model's context is 256 tokens.
TOOLS_INSTRUCTION = f'Functions you may call as {CALL_OPEN}{{"name":...,"arguments":{{...}}}}{CALL_CLOSE}:'

_CALL_PATTERN = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.DOTALL)


class PartError(ValueError):
    """A part the local service cannot render as text; ``code`` names the reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _canonical(value: Any) -> Any:
    """A declaration as data, whoever serialised it: keys sorted (by the dump), nulls left out.
    The training file and google-genai's re-serialised request order fields differently."""
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def part_text(part: dict[str, Any]) -> str:
    """One part as the model reads it: text as is, a call or a result as its tagged JSON."""
    if "text" in part:
        if not isinstance(part["text"], str):
            raise PartError("missing_text", "'text' must be a string")
        return part["text"]
    call = part.get("functionCall")
    if isinstance(call, dict):
        if not isinstance(call.get("name"), str) or not call["name"]:
            raise PartError("invalid_function_call", "a functionCall needs a 'name'")
        return f"{CALL_OPEN}{_json({'name': call['name'], 'arguments': call.get('args') or {}})}{CALL_CLOSE}"
    response = part.get("functionResponse")
    if isinstance(response, dict):
        if not isinstance(response.get("name"), str) or not response["name"]:
            raise PartError("invalid_function_response", "a functionResponse needs a 'name'")
        body = {"name": response["name"], "response": response.get("response") or {}}
        return f"{RESPONSE_OPEN}{_json(body)}{RESPONSE_CLOSE}"
    if "fileData" in part or "inlineData" in part:
        raise PartError(
            "multimodal_not_supported",
            "a fileData/inlineData part: the local tuning service trains and serves text models only; "
            "tune and evaluate multimodal datasets on Vertex AI",
        )
    raise PartError("missing_text", "part has no 'text', 'functionCall' or 'functionResponse'")


def parts_text(parts: list[dict[str, Any]]) -> str:
    return "".join(part_text(part) for part in parts)


def declarations(tools: Any) -> list[dict[str, Any]]:
    """The function declarations of a record's or a request's ``tools`` (both spellings)."""
    if not isinstance(tools, list):
        return []
    return [
        declaration
        for tool in tools
        if isinstance(tool, dict)
        for declaration in tool.get("functionDeclarations") or tool.get("function_declarations") or []
        if isinstance(declaration, dict)
    ]


def declared_names(tools: Any) -> set[str]:
    return {d["name"] for d in declarations(tools) if isinstance(d.get("name"), str)}


def tools_text(tools: Any) -> str | None:
    """The declarations for the system turn (None when there are none)."""
    declared = declarations(tools)
    if not declared:
        return None
    text = json.dumps(_canonical(declared), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return f"{TOOLS_INSTRUCTION}\n{TOOLS_OPEN}{text}{TOOLS_CLOSE}"


def with_tools(system: str | None, tools: Any) -> str | None:
    """The system turn's text with the declarations after it."""
    declared = tools_text(tools)
    if declared is None:
        return system
    return f"{system}\n\n{declared}" if system else declared


def answer_parts(text: str, declared: set[str]) -> list[dict[str, Any]]:
    """A generated answer as Gemini parts: text between calls as text parts, each well-formed
    ``<tool_call>`` (a JSON object whose string ``name`` is one of ``declared`` and whose
    ``arguments`` are an object) as a ``functionCall`` part: Gemini only calls what the request
    declares. An answer without calls is one text part, even when empty."""
    parts: list[dict[str, Any]] = []
    position = 0
    for match in _CALL_PATTERN.finditer(text):
        found = _parse_calls(match.group(1))
        if not found or any(call["name"] not in declared for call in found):
            continue
        before = text[position : match.start()]
        if before.strip():
            parts.append({"text": before})
        parts.extend({"functionCall": call} for call in found)
        position = match.end()
    rest = text[position:]
    if rest.strip() or not parts:
        parts.append({"text": rest})
    return parts


def _parse_calls(body: str) -> list[dict[str, Any]]:
    """The calls of one ``<tool_call>`` body: one object, or a list of them (SmolLM2's own
    format); empty when any of them is malformed."""
    try:
        value = json.loads(body)
    except ValueError:
        return []
    calls = [_call(item) for item in (value if isinstance(value, list) else [value])]
    return [call for call in calls if call is not None] if calls and None not in calls else []


def _call(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    arguments = value.get("arguments", value.get("args", {}))
    if isinstance(arguments, str):  # OpenAI-style: the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {"name": value["name"], "args": arguments}

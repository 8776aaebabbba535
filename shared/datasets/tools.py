"""Function calling: tool declarations, calls and their results in Vertex AI's tuning format.

Vertex AI tunes function calling ("Tune function calling"): an example carries its declarations
once, at the top (``tools: [{"functionDeclarations": [...]}]``); a model turn whose target is a
call holds ``{"functionCall": {"name", "args"}}`` parts (several for parallel calls), and the next
user turn brings each result back as ``{"functionResponse": {"name", "response"}}``.

This module reads the declarations of each source shape (OpenAI ``tools`` / ``functions``,
LLaMA-Factory's ShareGPT ``tools`` JSON string, Gemini ``tools``), converts their JSON-Schema
``parameters`` to Vertex's schema (upper-case types; keywords Vertex does not take are dropped
and named in a ``schema_keywords_dropped`` warning), builds call and response parts, and checks
that every call names a declared function and every response answers a call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from shared.datasets.issues import RecordIssueError

#: Vertex's limit on a function name: a letter or underscore, then letters, digits, ``_ . -``.
MAX_FUNCTION_NAME_CHARS = 64
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
#: How deep parameter schemas may nest: deeper is almost surely a cycle or generated junk, and
#: the recursion that converts them must stop somewhere.
MAX_SCHEMA_DEPTH = 16

#: JSON-Schema types and Vertex's names for them (Vertex's own upper-case names pass as they are).
SCHEMA_TYPES: dict[str, str] = {
    "object": "OBJECT",
    "string": "STRING",
    "integer": "INTEGER",
    "number": "NUMBER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
}
_VERTEX_TYPES = frozenset(SCHEMA_TYPES.values())
#: Schema keywords Vertex's ``Schema`` takes and that are copied as they are. ``type``,
#: ``properties``, ``items``, ``required`` and ``enum`` are converted and checked; any other
#: keyword (``additionalProperties``, ``$schema``, ``default``, ``anyOf`` ...) is dropped.
KEPT_SCHEMA_KEYWORDS = frozenset(
    {
        "description",
        "format",
        "nullable",
        "title",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "pattern",
        "minProperties",
        "maxProperties",
    }
)
SCHEMA_KEYWORDS_DROPPED = "schema_keywords_dropped"

_CALL = "functionCall"
_RESPONSE = "functionResponse"


def _fail(code: str, path: str, message: str) -> RecordIssueError:
    return RecordIssueError(code, path, message)


@dataclass(slots=True)
class Tools:
    """The functions one example declares, as Vertex takes them."""

    declarations: list[dict[str, Any]] = field(default_factory=list)
    #: Warnings: (code, field), e.g. a schema keyword dropped.
    notes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def names(self) -> set[str]:
        return {d["name"] for d in self.declarations}

    def record_value(self) -> list[dict[str, Any]] | None:
        """The example's top-level ``tools``, or None when it declares nothing."""
        return [{"functionDeclarations": self.declarations}] if self.declarations else None

    def add(self, function: Any, path: str) -> None:
        if type(function) is not dict:
            raise _fail(
                "invalid_function_declaration", path, "a function declaration must be an object with a name"
            )
        name = function.get("name")
        _check_name(name, f"{path}.name")
        if name in self.names:
            raise _fail(
                "duplicate_function_declaration",
                f"{path}.name",
                f"function {name!r} is declared twice; declare each function once per example",
            )
        declaration: dict[str, Any] = {"name": name}
        description = function.get("description")
        if description not in (None, ""):
            if type(description) is not str:
                raise _fail(
                    "invalid_function_declaration", f"{path}.description", "description must be a string"
                )
            declaration["description"] = description
        parameters = function.get("parameters")
        if parameters not in (None, {}):
            schema = convert_schema(parameters, f"{path}.parameters", self.notes)
            # Vertex refuses an OBJECT without properties: a function without parameters omits them.
            if schema != {"type": "OBJECT"}:
                declaration["parameters"] = schema
        self.declarations.append(declaration)

    def call(self, name: Any, args: Any, path: str, args_field: str = "args") -> dict[str, Any]:
        """A ``functionCall`` part; ``name`` must be declared, ``args`` a JSON object (or its text)."""
        _check_name(name, f"{path}.name")
        if name not in self.names:
            declared = ", ".join(sorted(self.names)) or "none"
            raise _fail(
                "undeclared_function",
                f"{path}.name",
                f"the call names {name!r}, which the example does not declare (declared: {declared})",
            )
        return {_CALL: {"name": name, "args": parse_arguments(args, f"{path}.{args_field}")}}


def _check_name(name: Any, path: str) -> None:
    if type(name) is not str or not name:
        raise _fail("invalid_function_declaration", path, "a function needs a non-empty string name")
    if len(name) > MAX_FUNCTION_NAME_CHARS or not _FUNCTION_NAME.fullmatch(name):
        raise _fail(
            "invalid_function_name",
            path,
            f"function name {name[:80]!r} must start with a letter or underscore, hold only letters, "
            f"digits, '_', '.', '-', and be at most {MAX_FUNCTION_NAME_CHARS} characters",
        )


def parse_arguments(args: Any, path: str) -> dict[str, Any]:
    """Call arguments as a JSON object: OpenAI and ShareGPT give them as JSON text, Gemini as an
    object. Absent or empty arguments are an empty object."""
    if args is None or args == "":
        return {}
    if type(args) is str:
        try:
            args = json.loads(args)
        except json.JSONDecodeError as error:
            raise _fail(
                "invalid_function_arguments", path, f"the arguments are not valid JSON: {error.msg}"
            ) from None
    if type(args) is not dict:
        raise _fail(
            "invalid_function_arguments",
            path,
            f"the arguments must be a JSON object, not {type(args).__name__}",
        )
    return args


def response_part(name: str, result: Any) -> dict[str, Any]:
    """A ``functionResponse`` part. Vertex takes an object: a result that is JSON text of an object
    is that object; any other result (plain text, a list, a number) is wrapped as ``content``."""
    if type(result) is str:
        try:
            parsed = json.loads(result)
        except json.JSONDecodeError:
            parsed = result
        result = parsed
    if type(result) is not dict:
        result = {"content": result}
    return {_RESPONSE: {"name": name, "response": result}}


def convert_schema(schema: Any, path: str, notes: list[tuple[str, str]], depth: int = 0) -> dict[str, Any]:
    """A JSON-Schema (or Vertex) schema in Vertex's form: types upper case, ``["string", "null"]``
    as ``STRING`` + ``nullable``, ``properties`` / ``items`` converted, keywords Vertex does not
    take dropped (each named in ``notes``)."""
    if type(schema) is not dict:
        raise _fail("invalid_function_parameters", path, "a schema must be an object")
    if depth > MAX_SCHEMA_DEPTH:
        raise _fail(
            "invalid_function_parameters", path, f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels"
        )
    out: dict[str, Any] = {}
    kind = schema.get("type")
    nullable = False
    if type(kind) is list:
        others = [k for k in kind if k != "null"]
        nullable = len(others) < len(kind)
        kind = others[0] if len(others) == 1 else kind
    if kind is None and "properties" in schema:
        kind = "object"
    vertex_type = SCHEMA_TYPES.get(kind) if type(kind) is str else None
    if vertex_type is None and type(kind) is str and kind in _VERTEX_TYPES:
        vertex_type = kind
    if vertex_type is None:
        raise _fail(
            "invalid_function_parameters",
            f"{path}.type",
            f"type {kind!r} is not one of {', '.join(SCHEMA_TYPES)} (or one of them and 'null')",
        )
    out["type"] = vertex_type
    if nullable:
        out["nullable"] = True
    for keyword, value in schema.items():
        if keyword == "type":
            continue
        if keyword in KEPT_SCHEMA_KEYWORDS:
            out[keyword] = value
        elif keyword == "properties" and vertex_type == "OBJECT":
            if type(value) is not dict:
                raise _fail(
                    "invalid_function_parameters", f"{path}.properties", "properties must be an object"
                )
            if value:
                out["properties"] = {
                    name: convert_schema(sub, f"{path}.properties.{name}", notes, depth + 1)
                    for name, sub in value.items()
                }
        elif keyword == "items" and vertex_type == "ARRAY":
            out["items"] = convert_schema(value, f"{path}.items", notes, depth + 1)
        elif keyword == "required" and vertex_type == "OBJECT":
            if type(value) is not list or not all(type(v) is str for v in value):
                raise _fail(
                    "invalid_function_parameters",
                    f"{path}.required",
                    "required must be a list of property names",
                )
            unknown = [v for v in value if v not in (schema.get("properties") or {})]
            if unknown:
                raise _fail(
                    "invalid_function_parameters",
                    f"{path}.required",
                    f"required names {unknown[:5]}, which are not in properties",
                )
            if value:
                out["required"] = value
        elif keyword == "enum" and type(value) is list and value and all(type(v) is str for v in value):
            out["enum"] = value
        else:
            # Vertex rejects a schema with keywords it does not know (and takes only string enums):
            # dropping them keeps the example, and the warning names what was lost.
            notes.append((SCHEMA_KEYWORDS_DROPPED, f"{path}.{keyword}"))
    if vertex_type == "ARRAY" and "items" not in out:
        raise _fail("invalid_function_parameters", f"{path}.items", "an array schema needs items")
    return out


# --- each shape's declarations --------------------------------------------------------------------


def openai_tools(record: dict[str, Any]) -> Tools:
    """OpenAI chat ``tools`` (``[{"type": "function", "function": {...}}]``) and the legacy
    ``functions`` (``[{name, description, parameters}]``)."""
    tools = Tools()
    declared = [key for key in ("tools", "functions") if record.get(key)]
    if len(declared) > 1:
        raise _fail(
            "duplicate_function_declaration",
            "functions",
            "the record declares both tools and functions; declare the functions once, in tools",
        )
    value = record.get("tools")
    if value:
        if type(value) is not list:
            raise _fail("invalid_function_declaration", "tools", "tools must be a list")
        for i, tool in enumerate(value):
            kind = tool.get("type", "function") if type(tool) is dict else None
            if kind != "function":
                raise _fail(
                    "unsupported_tool_calls",
                    f"tools[{i}].type",
                    f"tool type {kind!r} cannot be tuned: Vertex AI tunes function declarations only",
                )
            tools.add(tool.get("function"), f"tools[{i}].function")
    value = record.get("functions")
    if value:
        if type(value) is not list:
            raise _fail("invalid_function_declaration", "functions", "functions must be a list")
        for i, function in enumerate(value):
            tools.add(function, f"functions[{i}]")
    return tools


def sharegpt_tools(value: Any) -> Tools:
    """LLaMA-Factory's ShareGPT ``tools``: a JSON string (or list) of ``{name, description,
    parameters}`` (OpenAI's ``{"type": "function", "function": ...}`` items are read too)."""
    tools = Tools()
    if type(value) is str:
        if not value.strip():
            return tools
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise _fail(
                "invalid_function_declaration", "tools", f"tools is not valid JSON: {error.msg}"
            ) from None
    if value in (None, [], {}):
        return tools
    if type(value) is dict:
        value = [value]
    if type(value) is not list:
        raise _fail("invalid_function_declaration", "tools", "tools must be a list of function declarations")
    for i, function in enumerate(value):
        if type(function) is dict and function.get("type") == "function" and "function" in function:
            tools.add(function["function"], f"tools[{i}].function")
        else:
            tools.add(function, f"tools[{i}]")
    return tools


def gemini_tools(value: Any) -> Tools:
    """Gemini ``tools``: ``[{"functionDeclarations": [...]}]`` (snake case read too)."""
    tools = Tools()
    if type(value) is not list:
        raise _fail(
            "invalid_function_declaration", "tools", 'tools must be a list of {"functionDeclarations": [...]}'
        )
    for i, tool in enumerate(value):
        if type(tool) is not dict:
            raise _fail("invalid_function_declaration", f"tools[{i}]", "each tool must be an object")
        for key in tool:
            if key not in ("functionDeclarations", "function_declarations"):
                raise _fail(
                    "unsupported_tool_calls",
                    f"tools[{i}].{key}",
                    f"built-in tool {key!r} cannot be tuned: Vertex AI tunes function declarations only",
                )
        declarations = tool.get("functionDeclarations", tool.get("function_declarations"))
        key = "functionDeclarations" if "functionDeclarations" in tool else "function_declarations"
        if type(declarations) is not list:
            raise _fail("invalid_function_declaration", f"tools[{i}].{key}", f"{key} must be a list")
        for j, function in enumerate(declarations):
            tools.add(function, f"tools[{i}].{key}[{j}]")
    return tools


# --- pairing ----------------------------------------------------------------------------------------


def check_pairing(turns: list[tuple[str, list[dict[str, Any]], str]]) -> None:
    """Every ``functionResponse`` answers a call of the model turn before it, and a model turn's
    calls (unless it is the target) are all answered in the next turn: Vertex refuses a
    conversation whose calls and results do not pair. Each turn is (role, parts, source path)."""
    pending: list[str] = []
    for role, parts, path in turns:
        responses = [p[_RESPONSE]["name"] for p in parts if _RESPONSE in p]
        for name in responses:
            if name not in pending:
                raise _fail(
                    "unpaired_tool_response",
                    path,
                    f"a result for {name!r} answers no call of the model turn before it",
                )
            pending.remove(name)
        if pending:
            raise _fail(
                "unanswered_function_call",
                path,
                f"the call(s) {pending} of the model turn before get no functionResponse in this turn",
            )
        pending = [p[_CALL]["name"] for p in parts if _CALL in p] if role == "model" else []


def call_text(call: dict[str, Any]) -> str:
    """A call as the evaluation writes it into an answer's text: ``name({"arg":value})``, the
    arguments as compact JSON with sorted keys (``shared.evaluation.runner.call_text``)."""
    args = json.dumps(call.get("args") or {}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"{call.get('name', '')}({args})"


def piece(part: dict[str, Any]) -> str | None:
    """A call or response part as text for the duplicate keys and the token estimate (None for
    other parts): canonical JSON, so equal calls give equal keys."""
    for key in (_CALL, _RESPONSE):
        if key in part:
            return f"{key}:{json.dumps(part[key], sort_keys=True, ensure_ascii=False)}"
    return None

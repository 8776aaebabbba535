"""The two JSON dialects of the Vertex AI API, as the local service accepts and answers them.

google-genai sends camelCase field names and enum names; Google's GAPIC REST clients
(google-cloud-aiplatform) send ``?$alt=json;enum-encoding=int``: enums as integers
(``adapterSize: 2`` is ADAPTER_SIZE_FOUR, not size 2) and expect integers back. Vertex also
accepts snake_case field names. So:

- :func:`create_body` reads a tuning job create request in any of these: snake_case keys become
  camelCase (``labels`` keys are the user's and stay as given), an integer ``adapterSize`` becomes
  its name;
- :func:`encode_response` turns the enum names of a response into integers when the request asked
  for ``enum-encoding=int``. User data (content parts, function arguments, labels, schema
  properties, the ``localTuning`` extension) is never rewritten.

The enum numbers come from google-cloud-aiplatform's own ``aiplatform_v1`` types, so they cannot
drift from the API's.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from local.tuning.errors import ApiError

#: Keys whose values are the user's data (or this service's extension): never rewritten.
_OPAQUE_KEYS = frozenset(
    {"labels", "parts", "args", "response", "parameters", "properties", "metadata", "localTuning", "tools"}
)
_SNAKE = re.compile(r"_([a-z0-9])")


@functools.cache
def _enums() -> dict[str, Any]:
    from google.cloud import aiplatform_v1

    return {
        "state": aiplatform_v1.JobState,
        "adapterSize": aiplatform_v1.SupervisedHyperParameters.AdapterSize,
        "finishReason": aiplatform_v1.Candidate.FinishReason,
        "valueType": aiplatform_v1.TensorboardTimeSeries.ValueType,
    }


def wants_int_enums(alt: str | None) -> bool:
    """Whether a request's ``$alt`` parameter asks for integer enums (``json;enum-encoding=int``)."""
    return bool(alt) and "enum-encoding=int" in alt.replace(" ", "")


def camel(name: str) -> str:
    return _SNAKE.sub(lambda match: match.group(1).upper(), name)


def _camel_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            camel(key): (item if camel(key) in _OPAQUE_KEYS else _camel_keys(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_camel_keys(item) for item in value]
    return value


def create_body(body: dict[str, Any]) -> dict[str, Any]:
    """A tuning job create request in camelCase with enum names, whichever dialect it came in."""
    normalised = _camel_keys(body)
    spec = normalised.get("supervisedTuningSpec")
    hyper = spec.get("hyperParameters") if isinstance(spec, dict) else None
    if (
        isinstance(hyper, dict)
        and isinstance(hyper.get("adapterSize"), int)
        and not isinstance(hyper["adapterSize"], bool)
    ):
        sizes = _enums()["adapterSize"]
        try:
            hyper["adapterSize"] = sizes(hyper["adapterSize"]).name
        except ValueError:
            raise ApiError.invalid_argument(
                f"adapterSize {hyper['adapterSize']} is not an AdapterSize value "
                f"({', '.join(f'{member.value} = {member.name}' for member in sizes)})"
            ) from None
    return normalised


def encode_response(value: Any) -> Any:
    """``value`` with every known enum name as its integer (unknown names are left as they are)."""
    if isinstance(value, dict):
        enums = _enums()
        encoded = {}
        for key, item in value.items():
            if key in _OPAQUE_KEYS:
                encoded[key] = item
            elif key in enums and isinstance(item, str) and item in enums[key].__members__:
                encoded[key] = int(enums[key][item])
            else:
                encoded[key] = encode_response(item)
        return encoded
    if isinstance(value, list):
        return [encode_response(item) for item in value]
    return value

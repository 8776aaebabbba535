"""Limits of Gemini supervised tuning, one row per base model, and the hyperparameter guidance.

Sources: the Vertex AI supervised-tuning docs (limits) and the best-practices guide
(hyperparameters), summarised in shared/design/vertex-and-genai.md. The rows are data:
``models.yaml`` next to this module (package data), extended or corrected by the operator's own
file named by SFTPIPE_MODEL_LIMITS (a path or ``gs://bucket/object``, read on first use and
cached). A new base model is one row in either; a row whose values are assumed from a sibling
says so (``assumed_from``), and so does every report on that model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError

from shared.errors import ConfigurationError

MIB = 1024**2

#: Vertex AI refuses a training file above 1 GB, and its GB is decimal: 10^9 bytes, not 2^30.
#: Applied to what ingest writes to prepared/<dataset_id>/train.jsonl, which can be larger than
#: the upload (CSV becomes JSON with the field names on every line).
MAX_TRAINING_FILE_BYTES = 10**9
#: Uploads above this are refused before being read: they bound one ingest invocation's work,
#: and a larger upload would rarely prepare into a training file Vertex accepts.
MAX_FILE_BYTES = MAX_TRAINING_FILE_BYTES
#: One JSONL line (one example) is read whole; longer lines are rejected without being held.
#: 131,072 tokens of text is at most a few MiB of JSON even with \\uXXXX escapes.
MAX_LINE_BYTES = 16 * MIB
#: glibc's mmap threshold where ingest runs (the ``MALLOC_MMAP_THRESHOLD_`` environment variable:
#: deploy/functions.tf, the local stack, benchmarks/ingest_throughput.py). Left to itself, glibc
#: raises the threshold when a large mapped block is freed, so after the validating pass the
#: duplicate sets' tables of the writing pass land in a fragmented heap, which then grows past
#: the first pass's peak (1 GB of short lines: 259-279 MB against 233 MB). A fixed threshold
#: keeps such tables mapped and hands them back when freed (235 MB).
MALLOC_MMAP_THRESHOLD_BYTES = 4 * MIB
#: Below this many training examples the report warns (the older docs required 16).
RECOMMENDED_MIN_EXAMPLES = 100
#: Estimated tokens for one image fileData part; the estimate counts media by modality: see
#: shared/datasets/media.py (TOKENS_PER_FILE).
TOKENS_PER_FILE_PART = 258

ALLOWED_FILE_MIME_TYPES: frozenset[str] = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/heic",
        "image/heif",
        "application/pdf",
        "text/plain",
        "audio/aac",
        "audio/flac",
        "audio/mp3",
        "audio/m4a",
        "audio/mpeg",
        "audio/mpga",
        "audio/mp4",
        "audio/opus",
        "audio/pcm",
        "audio/wav",
        "audio/webm",
        "video/x-flv",
        "video/quicktime",
        "video/mpeg",
        "video/mpegps",
        "video/mpg",
        "video/mp4",
        "video/webm",
        "video/wmv",
        "video/3gpp",
    }
)

RecommendationFamily = Literal["pro", "flash"]
#: How a model thinks: "none" (it does not, and a thinking config is an error), "optional" (it
#: thinks unless told a thinking budget of 0), "always" (thinking cannot be turned off).
ThinkingMode = Literal["none", "optional", "always"]


@dataclass(frozen=True, slots=True)
class Thinking:
    """How a base model (and so a model tuned from it) thinks, and what that costs in output tokens.

    On Gemini 2.5 the thinking tokens count against ``maxOutputTokens``: a model that thinks needs
    room for its thinking budget on top of the answer, or it ends MAX_TOKENS before any text.
    """

    mode: ThinkingMode = "none"
    #: Smallest thinking budget accepted while thinking (2.5 Pro: 128; 0 turns "optional" off).
    min_budget: int = 0
    #: Largest thinking budget accepted; None: unknown (nothing is clamped).
    max_budget: int | None = None
    #: Largest ``maxOutputTokens`` the model accepts (thinking tokens included on 2.5).
    max_output_tokens: int = 8_192
    #: Empty when the values are documented; else what they were assumed from (said in the report).
    assumed: str = ""


NO_THINKING = Thinking()


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """What Vertex AI accepts when tuning one base model."""

    name: str
    max_tokens_per_example: int
    max_training_examples: int
    max_validation_examples: int
    adapter_sizes: tuple[int, ...]
    #: How many fileData parts one example may carry.
    max_files_per_example: int = 30
    max_file_bytes: int = MAX_FILE_BYTES
    #: Bytes of the prepared training split (Gemini JSONL), counted before anything is written.
    max_training_file_bytes: int = MAX_TRAINING_FILE_BYTES
    #: Name that google.genai.local_tokenizer.LocalTokenizer accepts, None when it has no tokenizer.
    tokenizer_model: str | None = None
    #: Epochs assumed for the cost estimate when neither the user nor the guidance sets one.
    #: Vertex picks its own default server-side; this is our stated assumption, not its value.
    assumed_default_epochs: int = 10
    recommendation_family: RecommendationFamily = "flash"
    thinking: Thinking = NO_THINKING
    #: The row whose values this one copies (its limits are not documented); None: documented.
    assumed_from: str | None = None
    #: Why the values are assumed, in the table's words.
    assumption: str = ""
    #: Other spellings users write for the same base model.
    aliases: tuple[str, ...] = ()

    @property
    def max_test_examples(self) -> int:
        """The held-out test split is capped like validation, so that evaluation cost is bounded."""
        return self.max_validation_examples

    @property
    def assumed_note(self) -> str:
        """The warning every report on this model repeats; empty when the row is documented."""
        if self.assumed_from is None:
            return ""
        why = f": {self.assumption}" if self.assumption else ""
        return (
            f"the limits of {self.name} are assumed from {self.assumed_from}, not documented{why}. "
            f"Correct them with a row in the file named by {MODEL_LIMITS_SETTING}"
        )


# --- The table: shipped as package data, extended or corrected by the operator ------------------

#: The setting that names the operator's table file (a path, or gs://bucket/object).
MODEL_LIMITS_SETTING = "SFTPIPE_MODEL_LIMITS"
#: The table shipped in the package (listed as package data in pyproject.toml).
SHIPPED_TABLE = "models.yaml"

AdapterSize = Literal[1, 2, 4, 8, 16]  # the sizes Vertex AI's AdapterSize enum has


class _ThinkingRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: ThinkingMode = "none"
    min_budget: NonNegativeInt = 0
    max_budget: NonNegativeInt | None = None
    max_output_tokens: PositiveInt = 8_192


class _ModelRow(BaseModel):
    """One row as a table file writes it: a field left out comes from the row it builds on (the
    ``assumed_from`` row, or for an operator's row of a shipped model, the shipped row)."""

    model_config = ConfigDict(extra="forbid")

    assumed_from: str | None = None
    assumption: str = ""
    aliases: list[str] = Field(default_factory=list)
    max_tokens_per_example: PositiveInt | None = None
    max_training_examples: PositiveInt | None = None
    max_validation_examples: NonNegativeInt | None = None
    adapter_sizes: Annotated[list[AdapterSize], Field(min_length=1)] | None = None
    max_files_per_example: NonNegativeInt | None = None
    max_file_bytes: PositiveInt | None = None
    max_training_file_bytes: PositiveInt | None = None
    tokenizer_model: str | None = None
    assumed_default_epochs: Annotated[int, Field(ge=1, le=100)] | None = None
    recommendation_family: RecommendationFamily | None = None
    thinking: _ThinkingRow | None = None


_REQUIRED = ("max_tokens_per_example", "max_training_examples", "max_validation_examples", "adapter_sizes")


@dataclass(frozen=True, slots=True)
class ModelTable:
    """Rows by canonical name, and the aliases that lead to them."""

    rows: dict[str, ModelLimits]
    aliases: dict[str, str]


def _table_error(source: str, row: str, field: str, message: str) -> ConfigurationError:
    where = f"row {row!r}, field {field!r}" if field else f"row {row!r}" if row else "top level"
    return ConfigurationError(
        f"model limits file {source}: {where}: {message}",
        code="invalid_model_limits",
        field=".".join(part for part in ("models", row, field) if part),
    )


def _row_values(row: ModelLimits) -> dict[str, Any]:
    values = {f.name: getattr(row, f.name) for f in fields(row)}
    thinking = values.pop("thinking")
    values["thinking"] = {f.name: getattr(thinking, f.name) for f in fields(thinking) if f.name != "assumed"}
    return values


def parse_model_table(data: bytes, source: str, base: ModelTable | None = None) -> ModelTable:
    """The rows of one table file (YAML, or JSON by its ``.json`` suffix), resolved against ``base``.

    A row of a model ``base`` has replaces the fields it gives and keeps the others; a new model
    gives every limit, or ``assumed_from`` a row (here or in ``base``) to copy them from. Raises
    ConfigurationError (code ``invalid_model_limits``) naming ``source``, the row and the field.
    """
    try:
        body = orjson.loads(data) if source.lower().endswith(".json") else yaml.safe_load(data)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise _table_error(
            source, "", "", f"not valid {'JSON' if source.endswith('.json') else 'YAML'}: {exc}"
        ) from exc
    if not isinstance(body, dict) or set(body) != {"models"} or not isinstance(body["models"], dict):
        raise _table_error(
            source, "", "", "the file must be one mapping, {models: {<model name>: {<field>: value}}}"
        )
    base_rows = base.rows if base is not None else {}
    base_aliases = base.aliases if base is not None else {}
    parsed: dict[str, _ModelRow] = {}
    for name, raw in body["models"].items():
        if not isinstance(name, str) or not name.strip():
            raise _table_error(source, str(name), "", "a model name must be a non-empty string")
        if not isinstance(raw, dict):
            raise _table_error(source, name, "", "a row must be a mapping of fields")
        try:
            row = _ModelRow.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise _table_error(source, name, field, first["msg"]) from exc
        # A row under another spelling of a known model ("gemini-1.5-pro") corrects that model.
        parsed[base_aliases.get(name, name)] = row
    resolved: dict[str, ModelLimits] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> ModelLimits:
        if name in resolved:
            return resolved[name]
        row = parsed[name]
        given = row.model_dump(exclude_unset=True)
        values: dict[str, Any] = {}
        sibling = given.get("assumed_from")
        if sibling is not None:
            sibling = base_aliases.get(sibling, sibling)
            if sibling in chain:
                raise _table_error(
                    source,
                    name,
                    "assumed_from",
                    f"rows assume from each other: {' -> '.join((*chain, sibling))}",
                )
            if sibling in parsed:
                values = _row_values(resolve(sibling, (*chain, sibling)))
            elif sibling in base_rows:
                values = _row_values(base_rows[sibling])
            else:
                known = ", ".join(sorted({*base_rows, *parsed}))
                raise _table_error(
                    source, name, "assumed_from", f"no row {sibling!r} to assume from; rows: {known}"
                )
            values.update(aliases=(), assumption="")  # a sibling's spellings and reasons are its own
            given["assumed_from"] = sibling
        elif name in base_rows:
            values = _row_values(base_rows[name])
        thinking = {**values.get("thinking", {}), **given.pop("thinking", {})}
        values.update(given)
        missing = [field for field in _REQUIRED if values.get(field) is None]
        if missing:
            raise _table_error(
                source,
                name,
                missing[0],
                "required for a new model (or assumed_from naming a row to copy it from)",
            )
        values["adapter_sizes"] = tuple(sorted(set(values["adapter_sizes"])))
        values["aliases"] = tuple(values.get("aliases", ()))
        assumed = ""
        if values.get("assumed_from"):
            why = values.get("assumption", "")
            assumed = f"assumed from {values['assumed_from']}" + (f": {why}" if why else "")
        values["thinking"] = Thinking(**thinking, assumed=assumed)
        values["name"] = name
        resolved[name] = ModelLimits(**values)
        return resolved[name]

    aliases: dict[str, str] = {}
    for name in parsed:
        for alias in resolve(name, (name,)).aliases:
            if alias in parsed or alias in base_rows or aliases.get(alias, name) != name:
                raise _table_error(source, name, "aliases", f"{alias!r} already names another row")
            aliases[alias] = name
    return ModelTable(rows={name: resolved[name] for name in parsed}, aliases=aliases)


def _shipped_table() -> ModelTable:
    data = resources.files(__package__).joinpath(SHIPPED_TABLE).read_bytes()
    return parse_model_table(data, f"shared/datasets/{SHIPPED_TABLE} (shipped)")


_SHIPPED = _shipped_table()
#: The shipped rows by canonical name. The operator's rows (:func:`operator_model_table`) come first.
MODEL_LIMITS: dict[str, ModelLimits] = _SHIPPED.rows
#: Other spellings users write for the same base model (the shipped rows' ``aliases``).
MODEL_ALIASES: dict[str, str] = _SHIPPED.aliases


def _read_gcs(bucket: str, name: str) -> bytes:
    from google.cloud import storage

    from shared.config import get_settings

    return storage.Client(project=get_settings().project).bucket(bucket).blob(name).download_as_bytes()


def _read_table_file(location: str) -> bytes:
    """The bytes of the operator's table; a file that is not there is a ConfigurationError, a
    storage outage is not (it raises as it is, and the event is retried)."""
    if location.startswith("gs://"):
        from google.api_core import exceptions as api

        bucket, _, name = location.removeprefix("gs://").partition("/")
        if not bucket or not name:
            raise ConfigurationError(
                f"{MODEL_LIMITS_SETTING}={location!r} is not gs://BUCKET/OBJECT", code="invalid_model_limits"
            )
        try:
            return _read_gcs(bucket, name)
        except (api.NotFound, api.Forbidden) as exc:
            raise ConfigurationError(
                f"{MODEL_LIMITS_SETTING}: cannot read {location}: {exc}", code="invalid_model_limits"
            ) from exc
    try:
        return Path(location).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"{MODEL_LIMITS_SETTING}: cannot read {location}: {exc.strerror or exc}",
            code="invalid_model_limits",
        ) from exc


@lru_cache(maxsize=4)
def _operator_table(location: str) -> ModelTable:
    # Resolved against the shipped rows as they were loaded, not as a test may have patched them.
    return parse_model_table(_read_table_file(location), location, _SHIPPED)


def operator_model_table() -> ModelTable:
    """The rows of the file named by SFTPIPE_MODEL_LIMITS, read on first use and cached (per
    location); an empty table when the setting is empty."""
    from shared.config import get_settings

    location = get_settings().model_limits.strip()
    return _operator_table(location) if location else ModelTable(rows={}, aliases={})


def canonical_model_name(base_model: str) -> str:
    name = base_model.strip()
    for prefix in ("publishers/google/models/", "models/"):
        name = name.removeprefix(prefix)
    return operator_model_table().aliases.get(name) or MODEL_ALIASES.get(name, name)


def _row(base_model: str) -> ModelLimits | None:
    name = canonical_model_name(base_model)
    return operator_model_table().rows.get(name) or MODEL_LIMITS.get(name)


def known_models() -> list[str]:
    """Every base model with a row, shipped or the operator's."""
    return sorted({*MODEL_LIMITS, *operator_model_table().rows})


def model_limits(base_model: str) -> ModelLimits:
    """The limits row of ``base_model``; raises ConfigurationError naming the known models."""
    row = _row(base_model)
    if row is None:
        raise ConfigurationError(
            f"unknown base model {base_model!r}; supported base models: {', '.join(known_models())}. "
            f"To tune another model, add its row to a YAML or JSON file named by {MODEL_LIMITS_SETTING} "
            "(a path or gs://bucket/object; README, 'Base models and their limits')",
            code="unknown_base_model",
            field="base_model",
        )
    return row


def model_thinking(base_model: str) -> Thinking:
    """How ``base_model`` thinks: its row's :class:`Thinking`, else a rule on the name, marked as
    assumed (a tuned model's resource name, or a model without a row yet).

    The rule for names without a row: Gemini 3 and later, and every other "-pro" model, are taken
    to think always, with 2.5 Pro's smallest budget (Gemini 3 documents thinking *levels* whose
    lowest does not promise no thinking at all, and 3 Pro cannot turn it off); other Gemini 2.5
    models are taken to be like 2.5 Flash; anything else does not think.
    """
    row = _row(base_model.rsplit("/", 1)[-1])
    if row is not None:
        return row.thinking
    name = canonical_model_name(base_model.rsplit("/", 1)[-1])
    pro, flash = _SHIPPED.rows["gemini-2.5-pro"].thinking, _SHIPPED.rows["gemini-2.5-flash"].thinking
    generation = re.match(r"gemini-(\d+)", name)
    if (generation and int(generation[1]) >= 3) or (name.startswith("gemini-2.5") and "-pro" in name):
        return Thinking(
            "always",
            min_budget=pro.min_budget,
            max_output_tokens=pro.max_output_tokens,
            assumed=f"{name} has no row in the model table: taken to think always, like gemini-2.5-pro",
        )
    if name.startswith("gemini-2.5"):
        return Thinking(
            "optional",
            max_output_tokens=flash.max_output_tokens,
            assumed=f"{name} has no row in the model table: taken to think unless told 0, like gemini-2.5-flash",
        )
    return NO_THINKING


#: Every adapter size some base model accepts (the shape of Hyperparameters.adapter_size).
ADAPTER_SIZES: tuple[int, ...] = tuple(
    sorted({size for row in MODEL_LIMITS.values() for size in row.adapter_sizes})
)


def adapter_size_problem(base_model: str, adapter_size: int | None) -> str | None:
    """Why ``adapter_size`` cannot tune ``base_model`` (naming the allowed sizes), or None.

    Vertex AI refuses the job otherwise, after the dataset was accepted. A model we do not know
    is reported by :func:`model_limits`; here it only must be a size some model accepts.
    """
    if adapter_size is None:
        return None
    row = _row(base_model)
    allowed = row.adapter_sizes if row is not None else ADAPTER_SIZES
    if adapter_size in allowed:
        return None
    sizes = ", ".join(str(size) for size in allowed)
    model = f"{row.name} accepts" if row is not None else "base models accept"
    return f"adapter size {adapter_size} cannot be used: {model} adapter sizes {sizes}"


@dataclass(frozen=True, slots=True)
class Recommendation:
    """Hyperparameters from the best-practices guide; None means "leave Vertex's default"."""

    epochs: int | None
    learning_rate_multiplier: float | None
    adapter_size: int | None
    basis: str


def recommend_hyperparameters(limits: ModelLimits, examples: int, mean_tokens: float) -> Recommendation:
    """Best-practices table: small data (< 1000 examples, mean context < 500 tokens) wants more signal.

    The guide states rules for Gemini 1.5 Pro and Flash; for 2.x models we apply the rule of the
    same family (pro / flash) and say so in ``basis``.
    """
    small = examples < 1000 and mean_tokens < 500
    size = (
        "fewer than 1000 examples with mean context under 500 tokens"
        if small
        else ("1000 or more examples or mean context of 500 tokens or more")
    )
    family = limits.recommendation_family
    if family == "pro":
        rec = (20, 10.0, 4) if small else (10, 5.0, 4)
    else:
        rec = (None, 10.0, 4) if small else (None, None, 8)
    adapter = (
        rec[2] if rec[2] in limits.adapter_sizes else max(a for a in limits.adapter_sizes if a <= rec[2])
    )
    source = "Gemini 1.5 Pro" if family == "pro" else "Gemini 1.5 Flash"
    extrapolated = (
        ""
        if limits.name.startswith("gemini-1.5")
        else f" (guidance written for {source}, applied to {limits.name})"
    )
    basis = f"best-practices guide, text tuning, {size}{extrapolated}"
    return Recommendation(epochs=rec[0], learning_rate_multiplier=rec[1], adapter_size=adapter, basis=basis)

"""Per-upload settings and the options of one :func:`~shared.datasets.prepare.prepare` call.

An upload's settings come from one of two places:

- the object's custom metadata (``gsutil -h x-goog-meta-base-model:gemini-2.5-flash``), parsed by
  :func:`parse_object_metadata`. Keys are case-insensitive, ``-`` and ``_`` are the same, an
  optional ``sftpipe-`` prefix is allowed, and keys we do not know are ignored (other tools set
  metadata too) unless they carry our prefix;
- a manifest ``*.tuning.json`` / ``*.tuning.yaml`` that names several files, parsed by
  :func:`load_manifest` into :class:`TuningManifest`.

Both raise :class:`UploadSettingsError` naming the offending key.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from shared.config import Settings
from shared.errors import PermanentError
from shared.messages import (
    Hyperparameters,
    JobOptionFields,
    JobOptions,
    Task,
    VertexEvaluationMetric,
)

SplitName = Literal["train", "validation", "test"]
TokenCounting = Literal["auto", "exact", "estimate"]
#: Which duplicates are dropped: "near" (equal after NFKC, case folding, whitespace and trailing
#: punctuation; the default) or "exact" (equal but for whitespace: near duplicates are kept).
Dedupe = Literal["near", "exact"]
#: What a preference file (DPO pairs, KTO labels) becomes: "reject" (the default: preference data
#: is not supervised data) or "chosen" (tune on the preferred answers only; rejected and
#: ``label: false`` answers are dropped and counted, never trained on).
PreferenceMode = Literal["reject", "chosen"]
Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$")]
#: Most training examples a few-shot baseline puts in each prompt (they multiply its prompt tokens).
MAX_FEW_SHOT = 16


class UploadSettingsError(PermanentError):
    """An upload's metadata or manifest has a key whose value cannot work."""

    code = "invalid_upload_setting"


class ColumnMapping(BaseModel):
    """Which columns (or keys of a flat JSON object) make the prompt and the target.

    The user turn is ``input`` followed by ``context`` (a blank line between), or
    ``Context: ...  Question: ...`` when ``style`` is ``qa``; ``system`` becomes the system
    instruction.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str = Field(min_length=1)
    output: str = Field(min_length=1)
    context: str | None = None
    system: str | None = None
    style: Literal["plain", "qa"] = "plain"

    @cached_property
    def columns(self) -> frozenset[str]:
        """The columns this mapping reads; the others are dropped (and the report says so)."""
        return frozenset(c for c in (self.input, self.output, self.context, self.system) if c)

    @classmethod
    def parse(cls, text: str) -> ColumnMapping:
        """``input=question,output=answer[,context=ctx][,system=sys]`` or the same as a JSON object."""
        text = text.strip()
        if text.startswith("{"):
            return cls.model_validate(json.loads(text))
        pairs: dict[str, str] = {}
        for item in text.split(","):
            name, sep, column = item.partition("=")
            if not sep:
                raise ValueError(f"expected ROLE=COLUMN, got {item!r}")
            pairs[name.strip()] = column.strip()
        return cls.model_validate(pairs)


class UploadSettings(JobOptionFields):
    """What an uploader may choose per upload; None means the deployment's default (the tuning
    job's own options, description to pre_tuned_model_checkpoint_id, come from JobOptionFields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str | None = None
    epochs: int | None = Field(None, ge=1, le=100)
    learning_rate_multiplier: float | None = Field(None, gt=0, le=100)
    adapter_size: Literal[1, 2, 4, 8, 16] | None = None
    task: Task | None = None
    column_mapping: ColumnMapping | None = None
    skip_invalid: bool | None = None
    dedupe: Dedupe | None = None
    preference_mode: PreferenceMode | None = None
    notify_emails: list[Email] = Field(default_factory=list)
    #: Which earlier tuned models this one is compared with (champion and challenger); None: the
    #: uploaded file's name.
    lineage: str | None = Field(None, min_length=1, max_length=63)
    #: Training examples put in the baseline's prompts (0 or None: zero-shot).
    few_shot: int | None = Field(None, ge=0, le=MAX_FEW_SHOT)
    #: Metrics of Vertex AI's own evaluation of the job (comma-separated in metadata).
    vertex_evaluation_metrics: list[VertexEvaluationMetric] | None = Field(None, min_length=1, max_length=6)
    #: Export (and score) only the final checkpoint instead of one per epoch.
    export_last_checkpoint_only: bool | None = None
    #: ``METRIC>=VALUE``: no tuning job when the base model already meets it on the test split.
    baseline_gate: str | None = None

    @property
    def job_options(self) -> JobOptions:
        return JobOptions.of(self)

    @field_validator("baseline_gate")
    @classmethod
    def _gate_parses(cls, value: str | None) -> str | None:
        from shared.evaluation.gate import BaselineGate

        return None if value is None or not value.strip() else str(BaselineGate.parse(value))

    @field_validator("dedupe", "preference_mode", mode="before")
    @classmethod
    def _choice_from_text(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("column_mapping", mode="before")
    @classmethod
    def _mapping_from_text(cls, value: object) -> object:
        return ColumnMapping.parse(value) if isinstance(value, str) else value

    @field_validator("adapter_size", mode="before")
    @classmethod
    def _adapter_size_from_text(cls, value: object) -> object:
        # metadata values are strings, and a Literal of ints does not coerce them
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("vertex_evaluation_metrics", mode="before")
    @classmethod
    def _split_metrics(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()] or None
        return value

    @field_validator("notify_emails", mode="before")
    @classmethod
    def _split_emails(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def hyperparameters(self) -> Hyperparameters:
        return Hyperparameters(
            epochs=self.epochs,
            learning_rate_multiplier=self.learning_rate_multiplier,
            adapter_size=self.adapter_size,
        )


_METADATA_PREFIXES = ("x-goog-meta-", "sftpipe-")

#: Code of a manifest file name that cannot name one plain object ('..', a leading '/', empty...):
#: the same code ingest gives a name outside the uploads prefixes (shared.ingest.manifest).
FILE_NOT_ALLOWED = "manifest_file_not_allowed"


def _settings_error(exc: ValidationError, key_names: dict[str, str]) -> UploadSettingsError:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    key = key_names.get(field, field)
    detail = ".".join(str(p) for p in first["loc"][1:])
    where = f"{key}.{detail}" if detail else key
    code = FILE_NOT_ALLOWED if first["type"] == FILE_NOT_ALLOWED else None
    return UploadSettingsError(f"upload setting {where!r}: {first['msg']}", field=where, code=code)


def _not_a_file(message: str) -> PydanticCustomError:
    # The message goes in the context, not the template: a name with braces is not a format string.
    return PydanticCustomError(FILE_NOT_ALLOWED, "{detail}", {"detail": message})


def parse_object_metadata(metadata: dict[str, str]) -> UploadSettings:
    """Upload settings from a Cloud Storage object's custom metadata (all values are strings)."""
    values: dict[str, Any] = {}
    key_names: dict[str, str] = {}
    for key, value in metadata.items():
        name = key.strip().lower()
        ours = False
        for prefix in _METADATA_PREFIXES:
            if name.startswith(prefix):
                name = name.removeprefix(prefix)
                ours = ours or prefix == "sftpipe-"
        name = name.replace("-", "_")
        if name not in UploadSettings.model_fields:
            if ours:
                known = ", ".join(sorted(UploadSettings.model_fields))
                raise UploadSettingsError(f"unknown upload setting {key!r}; known: {known}", field=key)
            continue
        values[name] = value.strip() if isinstance(value, str) else value
        key_names[name] = key
    try:
        return UploadSettings.model_validate(values)
    except ValidationError as exc:
        raise _settings_error(exc, key_names) from exc
    except ValueError as exc:  # a column mapping that does not parse
        raise UploadSettingsError(f"upload setting 'column_mapping': {exc}", field="column_mapping") from exc


class TuningManifest(UploadSettings):
    """``*.tuning.json`` / ``*.tuning.yaml``: several files and their settings.

    Each of ``train`` / ``validation`` / ``test`` is either an object name in the manifest's own
    bucket (``datasets/reviews/train.jsonl``, never relative to the manifest's folder) or a
    ``gs://bucket/object`` URI. The named files must live outside the upload prefix
    (``incoming/``), or each of them would start a run of its own; ingest rejects a manifest that
    names an object there, and one that names an object outside the uploads prefixes or the
    allowed buckets (``shared.ingest.manifest.ReadPolicy``). With only ``train``, the train file
    is split into train/validation/test; given ``validation`` / ``test`` files are used as they are.
    """

    train: str
    validation: str | None = None
    test: str | None = None

    @field_validator("train", "validation", "test")
    @classmethod
    def _object_name_or_gs_uri(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        name = value.strip()
        if not name:
            if info.field_name == "train":
                raise _not_a_file("the train file is an empty name: give an object name or a gs:// URI")
            return None  # an empty validation / test reads as "none given"
        if name.startswith("gs://"):
            bucket, _, obj = name.removeprefix("gs://").partition("/")
            if not bucket or not obj:
                raise _not_a_file(f"{name!r} is not gs://BUCKET/OBJECT")
            name = obj
        elif "://" in name:
            raise _not_a_file(f"{name!r}: give an object name in the bucket or a gs:// URI")
        # "./x" or "../x" would read as relative to the manifest, which names are not
        if name.startswith("/") or name.endswith("/") or {".", ".."} & set(name.split("/")):
            raise _not_a_file(
                f"{value!r} is not an object name (no leading or trailing '/', no '.' or '..' parts): "
                "names are object names in the bucket, or gs:// URIs"
            )
        return value.strip()

    def files(self) -> dict[SplitName, str]:
        named: dict[SplitName, str | None] = {
            "train": self.train,
            "validation": self.validation,
            "test": self.test,
        }
        return {split: name for split, name in named.items() if name}


MANIFEST_SUFFIXES = (".tuning.json", ".tuning.yaml", ".tuning.yml")


def is_manifest(filename: str) -> bool:
    return filename.lower().endswith(MANIFEST_SUFFIXES)


def load_manifest(data: bytes, filename: str) -> TuningManifest:
    """Parse a manifest; raises UploadSettingsError naming the key at fault."""
    try:
        if filename.lower().endswith(".json"):
            body = orjson.loads(data)
        else:
            import yaml

            body = yaml.safe_load(data)
    except Exception as exc:
        raise UploadSettingsError(f"manifest {filename} is not valid JSON/YAML: {exc}", field="") from exc
    if not isinstance(body, dict):
        raise UploadSettingsError(f"manifest {filename} must be a mapping of settings", field="")
    try:
        return TuningManifest.model_validate(body)
    except ValidationError as exc:
        raise _settings_error(exc, {}) from exc
    except ValueError as exc:
        raise UploadSettingsError(f"manifest 'column_mapping': {exc}", field="column_mapping") from exc


class PrepareOptions(BaseModel):
    """Everything one prepare() call needs besides the bytes. Build it with :meth:`from_settings`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str = "gemini-2.5-flash"
    task: Task | None = None
    column_mapping: ColumnMapping | None = None
    skip_invalid: bool = False
    dedupe: Dedupe = "near"
    preference_mode: PreferenceMode = "reject"
    #: "auto" splits one file three ways; a split name puts every example of this file there.
    split: Literal["auto", "train", "validation", "test"] = "auto"
    split_seed: int = 42
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    token_counting: TokenCounting = "auto"
    #: Dollars per million billable training tokens for base_model; None: no cost estimate.
    price_per_m_tokens: float | None = None
    #: The report lists at most this many errors; error_counts always counts all of them.
    max_errors_listed: int = Field(1000, ge=0)

    @classmethod
    def from_settings(
        cls, settings: Settings, upload: UploadSettings | None = None, **overrides: Any
    ) -> PrepareOptions:
        """Deployment defaults, then the upload's own settings, then explicit overrides.

        Raises UploadSettingsError (field ``adapter_size``) when the adapter size, the upload's or
        the deployment's default (SFTPIPE_ADAPTER_SIZE), is not one the base model accepts.
        """
        from shared.datasets.limits import adapter_size_problem, canonical_model_name

        upload = upload or UploadSettings()
        base_model = upload.base_model or settings.base_model
        given = upload.adapter_size is not None
        adapter_size = upload.adapter_size if given else settings.adapter_size
        problem = adapter_size_problem(overrides.get("base_model", base_model), adapter_size)
        if problem is not None:
            where = (
                "upload setting 'adapter_size'"
                if given
                else "the deployment's default adapter size (SFTPIPE_ADAPTER_SIZE)"
            )
            fix = "" if given else "; give adapter_size in the upload, or change SFTPIPE_ADAPTER_SIZE"
            raise UploadSettingsError(f"{where}: {problem}{fix}", field="adapter_size")
        kms_key = upload.kms_key_name or settings.tuning_kms_key_name
        if kms_key and kms_key.split("/")[3] != settings.location:
            where = "upload setting 'kms_key_name'" if upload.kms_key_name else "SFTPIPE_TUNING_KMS_KEY_NAME"
            raise UploadSettingsError(
                f"{where}: the key {kms_key} is in {kms_key.split('/')[3]}, but tuning jobs run in "
                f"{settings.location} (SFTPIPE_LOCATION); Vertex AI needs a key in the job's region",
                field="kms_key_name",
            )
        hyper = Hyperparameters(
            epochs=upload.epochs if upload.epochs is not None else settings.epochs,
            learning_rate_multiplier=(
                upload.learning_rate_multiplier
                if upload.learning_rate_multiplier is not None
                else settings.learning_rate_multiplier
            ),
            adapter_size=adapter_size,
        )
        values: dict[str, Any] = {
            "base_model": base_model,
            "task": upload.task,
            "column_mapping": upload.column_mapping,
            "skip_invalid": upload.skip_invalid if upload.skip_invalid is not None else settings.skip_invalid,
            "dedupe": upload.dedupe or "near",
            "preference_mode": upload.preference_mode or "reject",
            "split_seed": settings.split_seed,
            "validation_fraction": settings.validation_fraction,
            "test_fraction": settings.test_fraction,
            "hyperparameters": hyper,
        }
        values.update(overrides)
        prices = settings.training_price_per_m_tokens
        model = values["base_model"]
        if "price_per_m_tokens" not in overrides:
            values["price_per_m_tokens"] = prices.get(model, prices.get(canonical_model_name(model)))
        return cls.model_validate(values)

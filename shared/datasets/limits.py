"""Limits of Gemini supervised tuning, one row per base model, and the hyperparameter guidance.

Sources: the Vertex AI supervised-tuning docs (limits) and the best-practices guide
(hyperparameters), summarised in shared/design/vertex-and-genai.md. A new base model is one row in
:data:`MODEL_LIMITS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
#: Below this many training examples the report warns (the older docs required 16).
RECOMMENDED_MIN_EXAMPLES = 100
#: Estimated tokens for one fileData part (an image is 258 tokens on Gemini; other media vary).
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

    @property
    def max_test_examples(self) -> int:
        """The held-out test split is capped like validation, so that evaluation cost is bounded."""
        return self.max_validation_examples


_GEMINI_2 = {
    "max_tokens_per_example": 131_072,
    "max_training_examples": 1_000_000,
    "max_validation_examples": 5_000,
}
#: Gemini API / Vertex model pages: 2.5 Pro thinks always (budget 128-32,768), 2.5 Flash unless
#: told 0 (0-24,576), 2.5 Flash-Lite only when given a budget (512-24,576); all three accept up
#: to 65,535 output tokens, thinking included.
_PRO_25_THINKING = Thinking("always", min_budget=128, max_budget=32_768, max_output_tokens=65_535)
_FLASH_25_THINKING = Thinking("optional", max_budget=24_576, max_output_tokens=65_535)
_FLASH_LITE_25_THINKING = Thinking("optional", min_budget=512, max_budget=24_576, max_output_tokens=65_535)
_GEMINI_15 = {
    "max_tokens_per_example": 32_000,
    "max_training_examples": 1_000_000,
    "max_validation_examples": 256,
}

MODEL_LIMITS: dict[str, ModelLimits] = {
    row.name: row
    for row in (
        ModelLimits(
            "gemini-2.5-pro",
            **_GEMINI_2,
            adapter_sizes=(1, 2, 4, 8),
            tokenizer_model="gemini-2.5-pro",
            recommendation_family="pro",
            thinking=_PRO_25_THINKING,
        ),
        ModelLimits(
            "gemini-2.5-flash",
            **_GEMINI_2,
            adapter_sizes=(1, 2, 4, 8, 16),
            tokenizer_model="gemini-2.5-flash",
            thinking=_FLASH_25_THINKING,
        ),
        ModelLimits(
            "gemini-2.5-flash-lite",
            **_GEMINI_2,
            adapter_sizes=(1, 2, 4, 8, 16),
            tokenizer_model="gemini-2.5-flash-lite",
            thinking=_FLASH_LITE_25_THINKING,
        ),
        ModelLimits(
            "gemini-2.0-flash-001",
            **_GEMINI_2,
            adapter_sizes=(1, 2, 4, 8),
            tokenizer_model="gemini-2.0-flash-001",
        ),
        ModelLimits(
            "gemini-2.0-flash-lite-001",
            **_GEMINI_2,
            adapter_sizes=(1, 2, 4, 8),
            tokenizer_model="gemini-2.0-flash-lite-001",
        ),
        ModelLimits("gemini-1.5-pro-002", **_GEMINI_15, adapter_sizes=(1, 4), recommendation_family="pro"),
        ModelLimits("gemini-1.5-flash-002", **_GEMINI_15, adapter_sizes=(1, 4, 8, 16)),
    )
}

#: Other spellings users write for the same base model.
MODEL_ALIASES: dict[str, str] = {
    "gemini-2.0-flash": "gemini-2.0-flash-001",
    "gemini-2.0-flash-lite": "gemini-2.0-flash-lite-001",
    "gemini-1.5-pro": "gemini-1.5-pro-002",
    "gemini-1.5-flash": "gemini-1.5-flash-002",
}


def canonical_model_name(base_model: str) -> str:
    name = base_model.strip()
    for prefix in ("publishers/google/models/", "models/"):
        name = name.removeprefix(prefix)
    return MODEL_ALIASES.get(name, name)


def model_limits(base_model: str) -> ModelLimits:
    """The limits row of ``base_model``; raises ConfigurationError naming the known models."""
    row = MODEL_LIMITS.get(canonical_model_name(base_model))
    if row is None:
        known = ", ".join(sorted(MODEL_LIMITS))
        raise ConfigurationError(
            f"unknown base model {base_model!r}; supported base models: {known}",
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
    name = canonical_model_name(base_model.rsplit("/", 1)[-1])
    row = MODEL_LIMITS.get(name)
    if row is not None:
        return row.thinking
    if name.startswith("gemini-3") or (name.startswith("gemini-2.5") and "-pro" in name):
        return Thinking(
            "always",
            min_budget=_PRO_25_THINKING.min_budget,
            max_output_tokens=_PRO_25_THINKING.max_output_tokens,
            assumed=f"{name} has no row in the model table: taken to think always, like gemini-2.5-pro",
        )
    if name.startswith("gemini-2.5"):
        return Thinking(
            "optional",
            max_output_tokens=_FLASH_25_THINKING.max_output_tokens,
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
    row = MODEL_LIMITS.get(canonical_model_name(base_model))
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

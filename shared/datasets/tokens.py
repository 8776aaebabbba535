"""Tokens per example: exact with the Gemini local tokenizer when it is available, else an estimate.

``google.genai.local_tokenizer.LocalTokenizer`` needs the ``sentencepiece`` package and downloads
the Gemma tokenizer model on first use (cached under ``$TMPDIR/vertexai_tokenizer_model/``); with
no network and no cache it fails at once, and we fall back to the estimate. The report always says
which method ran and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from shared.datasets.convert import Example
from shared.datasets.limits import ModelLimits
from shared.datasets.media import MEDIA_TOKENS_DESCRIPTION, media_tokens
from shared.errors import ConfigurationError

TokenMethod = Literal["exact", "estimate"]
#: Tokens for the role markup of one turn, added by the estimate.
TOKENS_PER_TURN = 3

ESTIMATE_DESCRIPTION = (
    "estimate: ceil(UTF-8 bytes of the example's texts and role names / 4) "
    f"+ {TOKENS_PER_TURN} per turn + the file parts by modality ({MEDIA_TOKENS_DESCRIPTION}). Google documents a Gemini "
    "token as about 4 characters of English text; counting UTF-8 bytes instead of characters keeps "
    "scripts that need 2-4 bytes a character (and about a token each) from being badly under-counted. "
    "It was not calibrated against the Gemini tokenizer (unavailable offline): treat it as a rough guide."
)


class TokenCounter(Protocol):
    method: TokenMethod
    description: str

    def count(self, example: Example) -> int: ...


class EstimateCounter:
    method: TokenMethod = "estimate"
    description = ESTIMATE_DESCRIPTION

    def count(self, example: Example) -> int:
        return (
            (example.text_bytes + 3) // 4
            + TOKENS_PER_TURN * example.turns
            + (media_tokens(example.record) if example.files else 0)
        )

    @staticmethod
    def count_text(text_bytes: int, turns: int) -> int:
        """``count`` of an example without file parts."""
        return (text_bytes + 3) // 4 + TOKENS_PER_TURN * turns


class ExactCounter:
    """Counts text exactly with a LocalTokenizer; file parts are added at the per-file estimate."""

    method: TokenMethod = "exact"

    def __init__(self, tokenizer: Any, model: str) -> None:
        self._tokenizer = tokenizer
        self.description = (
            f"exact: google-genai LocalTokenizer for {model} on every text, function call and result part"
            " and the function declarations"
            f" (+ file parts, which it cannot count, at the estimate: {MEDIA_TOKENS_DESCRIPTION})"
        )

    def count(self, example: Example) -> int:
        record = example.record
        contents = [
            {"role": c["role"], "parts": [p for p in c["parts"] if "fileData" not in p]}
            for c in record["contents"]
        ]
        contents = [c for c in contents if c["parts"]]
        config: dict[str, Any] = {}
        system = record.get("systemInstruction")
        if system is not None:
            config["system_instruction"] = {"parts": system["parts"]}
        if record.get("tools"):
            config["tools"] = record["tools"]  # declarations are prompt tokens too
        result = self._tokenizer.count_tokens(contents, config=config or None)
        return int(result.total_tokens or 0) + (media_tokens(example.record) if example.files else 0)


TokenizerFactory = Callable[[str], Any]


def _local_tokenizer(model: str) -> Any:
    from google.genai.local_tokenizer import LocalTokenizer

    return LocalTokenizer(model_name=model)


@dataclass(frozen=True, slots=True)
class CounterChoice:
    counter: TokenCounter
    #: Why the estimate runs instead of the exact count (None when exact).
    fallback_reason: str | None


_CACHE: dict[str, CounterChoice] = {}


def choose_token_counter(
    limits: ModelLimits,
    mode: Literal["auto", "exact", "estimate"],
    tokenizer_factory: TokenizerFactory | None = None,
) -> CounterChoice:
    """Exact when the local tokenizer works for this model, else the estimate (``auto``).

    ``exact`` raises ConfigurationError when the tokenizer cannot be used; ``estimate`` never
    tries it. A working or failing default tokenizer is remembered for the life of the process.
    """
    if mode == "estimate":
        return CounterChoice(EstimateCounter(), "estimate requested")
    model = limits.tokenizer_model
    if model is None:
        if mode == "exact":
            raise ConfigurationError(f"no local tokenizer exists for {limits.name}", field="token_counting")
        return CounterChoice(EstimateCounter(), f"google-genai has no local tokenizer for {limits.name}")
    cache_key = model if tokenizer_factory is None else ""
    if cache_key and cache_key in _CACHE:
        choice = _CACHE[cache_key]
    else:
        try:
            tokenizer = (tokenizer_factory or _local_tokenizer)(model)
            tokenizer.count_tokens("probe")
            choice = CounterChoice(ExactCounter(tokenizer, model), None)
        except Exception as exc:  # ImportError, a failed download, anything: the estimate still works
            reason = f"local tokenizer unavailable ({type(exc).__name__}: {str(exc)[:160]})"
            choice = CounterChoice(EstimateCounter(), reason)
        if cache_key:
            _CACHE[cache_key] = choice
    if mode == "exact" and choice.fallback_reason is not None:
        raise ConfigurationError(
            f"exact token counting was asked for but {choice.fallback_reason}", field="token_counting"
        )
    return choice

"""``generateContent`` and ``countTokens`` against the local base model or a tuned adapter.

One base model is kept per tokenizer (smollm2: one; tiny: one per job, since each job trains its
own tokenizer, plus the byte-level base), wrapped by peft with every adapter loaded so far as a
named adapter; requests on the same base take turns on its lock. ``countTokens`` counts the prompt
exactly as ``generateContent`` feeds it to the model (chat template included), so ``totalTokens``
equals ``usageMetadata.promptTokenCount``.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from local.tuning import calls, models
from local.tuning.errors import ApiError
from local.tuning.jobs import now_rfc3339

DEFAULT_MAX_OUTPUT_TOKENS = 256
MAX_OUTPUT_TOKENS_LIMIT = 2048
#: Job-specific tiny bases kept in memory at once (each is a few MB).
MAX_LOADED_BASES = 8


@dataclass
class LoadedBase:
    model: PreTrainedModel | PeftModel
    tokenizer: PreTrainedTokenizerBase
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: set[str] = field(default_factory=set)


def chat_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """Gemini ``contents``, ``systemInstruction`` and ``tools`` as chat messages, function calls
    and results as :mod:`local.tuning.calls` renders them; 400 for what we cannot serve."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise ApiError.invalid_argument("contents must be a non-empty list")
    messages: list[dict[str, str]] = []
    system = body.get("systemInstruction")
    system_text = _text(system["parts"]) if isinstance(system, dict) and system.get("parts") else None
    system_text = calls.with_tools(system_text, body.get("tools"))
    if system_text is not None:
        messages.append({"role": "system", "content": system_text})
    for content in contents:
        if not isinstance(content, dict):
            raise ApiError.invalid_argument("each content must be an object")
        role = {"user": "user", "model": "assistant", "function": "user", None: "user"}.get(
            content.get("role")
        )
        if role is None:
            raise ApiError.invalid_argument(f"unsupported role {content.get('role')!r}")
        messages.append({"role": role, "content": _text(content.get("parts"))})
    return messages


def _text(parts: Any) -> str:
    if not isinstance(parts, list) or not all(isinstance(part, dict) for part in parts):
        raise ApiError.invalid_argument("parts must be a list of objects")
    try:
        return calls.parts_text(parts)
    except calls.PartError as exc:
        raise ApiError.invalid_argument(
            f"{exc.code}: the local tuning service cannot serve this part: {exc}"
        ) from None


class Generator:
    def __init__(self, local_model: str) -> None:
        self.local_model = local_model
        self.device = models.torch_device()
        self._lock = threading.Lock()
        self._bases: OrderedDict[str, LoadedBase] = OrderedDict()

    def _base(self, base_dir: Path | None) -> LoadedBase:
        key = str(base_dir) if base_dir is not None else self.local_model
        with self._lock:
            if key in self._bases:
                self._bases.move_to_end(key)
                return self._bases[key]
            model, tokenizer = models.load_base(self.local_model, base_dir)
            loaded = LoadedBase(model.to(self.device), tokenizer)
            self._bases[key] = loaded
            if len(self._bases) > MAX_LOADED_BASES:
                self._bases.popitem(last=False)
            return loaded

    def tokenizer(self, base_dir: Path | None) -> PreTrainedTokenizerBase:
        return self._base(base_dir).tokenizer

    def prompt_ids(self, tokenizer: PreTrainedTokenizerBase, body: dict[str, Any]) -> list[int]:
        rendered = tokenizer.apply_chat_template(
            chat_messages(body), tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])

    def count_tokens(self, body: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
        return {"totalTokens": len(self.prompt_ids(self.tokenizer(base_dir), body))}

    def generate(
        self, body: dict[str, Any], model_version: str, base_dir: Path | None, adapter_dir: Path | None
    ) -> dict[str, Any]:
        config = body.get("generationConfig") or {}
        max_new = int(config.get("maxOutputTokens") or DEFAULT_MAX_OUTPUT_TOKENS)
        if not 1 <= max_new <= MAX_OUTPUT_TOKENS_LIMIT:
            raise ApiError.invalid_argument(
                f"maxOutputTokens must be between 1 and {MAX_OUTPUT_TOKENS_LIMIT}"
            )
        temperature = float(config.get("temperature", 1.0))
        base = self._base(base_dir)
        tokenizer = base.tokenizer
        prompt = self.prompt_ids(tokenizer, body)
        end_of_turn = tokenizer.convert_tokens_to_ids(models.IM_END)
        sampling: dict[str, Any] = {"do_sample": temperature > 0}
        if temperature > 0:
            sampling["temperature"] = temperature
            sampling["top_p"] = float(config.get("topP", 1.0))
            sampling["top_k"] = int(config.get("topK", 0)) or None
        # The tiny model has only a few hundred positions: asking for more than the context holds
        # would index past the position table, so answer as Vertex does at its limit.
        context = _context_length(base.model)
        if len(prompt) >= context:
            raise ApiError.invalid_argument(
                f"the prompt has {len(prompt)} tokens; the local model's context holds {context}"
            )
        max_new = min(max_new, context - len(prompt))
        with base.lock, torch.no_grad():
            if "seed" in config:
                torch.manual_seed(int(config["seed"]))
            model = self._select_adapter(base, adapter_dir)
            input_ids = torch.tensor([prompt], device=self.device)
            generate_kwargs: dict[str, Any] = {
                "input_ids": input_ids,
                "attention_mask": torch.ones_like(input_ids),
                "max_new_tokens": max_new,
                "eos_token_id": end_of_turn,
                "pad_token_id": tokenizer.pad_token_id,
                **sampling,
            }
            if adapter_dir is None and isinstance(model, PeftModel):
                with model.disable_adapter():
                    output = model.generate(**generate_kwargs)
            else:
                output = model.generate(**generate_kwargs)
        new_tokens = output[0, len(prompt) :].tolist()
        stopped = bool(new_tokens) and new_tokens[-1] == end_of_turn
        text = tokenizer.decode(new_tokens, skip_special_tokens=True)
        return {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": calls.answer_parts(text, calls.declared_names(body.get("tools"))),
                    },
                    "finishReason": "STOP" if stopped else "MAX_TOKENS",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": len(prompt),
                "candidatesTokenCount": len(new_tokens),
                "totalTokenCount": len(prompt) + len(new_tokens),
            },
            "modelVersion": model_version,
            "createTime": now_rfc3339(),
            "responseId": uuid.uuid4().hex,
        }

    def _select_adapter(self, base: LoadedBase, adapter_dir: Path | None) -> PreTrainedModel | PeftModel:
        """Makes ``adapter_dir`` the active adapter (loading it once); called under the base's lock."""
        if adapter_dir is None:
            return base.model
        name = "a" + uuid.uuid5(uuid.NAMESPACE_URL, str(adapter_dir)).hex
        if name not in base.adapters:
            if isinstance(base.model, PeftModel):
                base.model.load_adapter(adapter_dir, adapter_name=name)
            else:
                base.model = PeftModel.from_pretrained(base.model, adapter_dir, adapter_name=name)
            base.model.to(self.device).eval()
            base.adapters.add(name)
        assert isinstance(base.model, PeftModel)
        base.model.set_adapter(name)
        return base.model


def _context_length(model: Any) -> int:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30

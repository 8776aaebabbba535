"""One tuning job's LoRA training, run as its own process: ``python -m local.tuning.trainer JOB_DIR``.

Why a process per job rather than a thread in the service: the memory of a finished job (model,
optimizer, allocator caches) goes back to the system when the process exits; cancel is a signal
that the loop honours between steps, with SIGKILL as a backstop that cannot corrupt the
service; a crash (even an OOM kill) becomes a FAILED job instead of a dead service. The cost is
the process start (importing torch, loading the base model: about 2 s for smollm2 once its
safetensors cache exists), paid once per job, not per step.

Protocol: the service writes ``spec.json`` and the normalised datasets into JOB_DIR; this process
writes adapters under JOB_DIR/checkpoints/ (and, for ``tiny``, its base under JOB_DIR/base/) and
reports progress as JSON lines on stdout, which the service turns into job state and metrics.
When the service dies, the next write fails with a broken pipe and training stops.

Hyperparameter mapping (Vertex -> here):
- ``epochCount``: passes over the training set; one checkpoint per epoch (10 evenly spaced
  epochs when there are more than 10).
- ``learningRateMultiplier``: AdamW learning rate = the model's base rate (2e-4 for smollm2, 1e-2
  for tiny) x multiplier, constant; ``learningRate``, where given, is used as is.
- ``adapterSize``: LoRA rank r, with alpha = 2r (a constant scale of 2) and dropout 0, on the
  attention projections (q/k/v/o for smollm2; attention and MLP for tiny).
- ``batchSize``: examples per step (default 8).
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from local.tuning import data, models

DEFAULT_EPOCHS = 3
DEFAULT_ADAPTER_SIZE = 4
DEFAULT_SEED = 42
MAX_CHECKPOINTS = 10
LORA_ALPHA_PER_RANK = 2
STEP_EVENT_INTERVAL_S = 0.5


@dataclass(frozen=True)
class TrainingSpec:
    """Everything a run needs, resolved by the service from the Vertex request."""

    local_model: str
    epochs: int
    learning_rate: float
    lora_rank: int
    batch_size: int
    seed: int
    has_validation: bool
    #: Continuing from a model this service tuned: its adapter (a checkpoint directory), and for
    #: tiny its base (weights and the tokenizer trained on its data); None: a new adapter.
    start_adapter: str | None = None
    start_base: str | None = None

    @property
    def lora_alpha(self) -> int:
        return LORA_ALPHA_PER_RANK * self.lora_rank

    def save(self, job_dir: Path) -> None:
        (job_dir / "spec.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, job_dir: Path) -> TrainingSpec:
        return cls(**json.loads((job_dir / "spec.json").read_text()))


def checkpoint_epochs(epochs: int) -> list[int]:
    if epochs <= MAX_CHECKPOINTS:
        return list(range(1, epochs + 1))
    return sorted({round(k * epochs / MAX_CHECKPOINTS) for k in range(1, MAX_CHECKPOINTS + 1)})


def peak_rss_bytes() -> int:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def lora_model(base: PreTrainedModel, spec: TrainingSpec) -> PeftModel:
    config = LoraConfig(
        r=spec.lora_rank,
        lora_alpha=spec.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(models.LOCAL_MODELS[spec.local_model].lora_target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, config)


def prepare(
    spec: TrainingSpec, job_dir: Path, device: torch.device
) -> tuple[PeftModel, PreTrainedTokenizerBase, data.PreparedDataset, data.PreparedDataset]:
    """The LoRA model on ``device`` and the tokenised datasets, fitted into the model's context
    (long prompts cut from the left, examples whose answer does not fit dropped: both counted)."""
    training = data.examples_from_jsonl((job_dir / "training.jsonl").read_text())
    validation = (
        data.examples_from_jsonl((job_dir / "validation.jsonl").read_text()) if spec.has_validation else []
    )
    if spec.local_model == "tiny" and spec.start_base:
        # The earlier job's tokenizer and base: its adapter was trained on exactly these.
        base, tokenizer = models.load_base("tiny", Path(spec.start_base))
        base.save_pretrained(job_dir / "base")
        tokenizer.save_pretrained(job_dir / "base")
    elif spec.local_model == "tiny":
        tokenizer = models.train_tiny_tokenizer(
            message["content"] for example in training for message in example.messages
        )
        base = models.new_tiny_model(len(tokenizer))
        base.save_pretrained(job_dir / "base")
        tokenizer.save_pretrained(job_dir / "base")
    else:
        base, tokenizer = models.load_base(spec.local_model)
    max_tokens = models.LOCAL_MODELS[spec.local_model].max_sequence_tokens
    training_set = data.prepare_dataset(tokenizer, training, max_tokens)
    validation_set = data.prepare_dataset(tokenizer, validation, max_tokens)
    if not training_set.examples:
        raise NoTrainableExamplesError(
            f"all {training_set.example_count:,} training examples were dropped: the model turn of each "
            f"is longer than the local model's context of {max_tokens:,} tokens "
            f"(first: {training_set.dropped[0].reason})"
        )
    torch.manual_seed(spec.seed)
    if spec.start_adapter:
        model = PeftModel.from_pretrained(base, spec.start_adapter, is_trainable=True).to(device)
    else:
        model = lora_model(base, spec).to(device)
    return model, tokenizer, training_set, validation_set


class NoTrainableExamplesError(ValueError):
    """Every training example was dropped: nothing is left to train on."""


@dataclass
class TokenStats:
    """Sums over batches: the loss weighted by labelled tokens, and next-token accuracy over the
    answers' content tokens (``content_*``) and over every labelled token (``all_*``).

    A batch without labelled tokens adds nothing (its loss is NaN: a mean over no token), and a
    value with nothing under it is omitted from :meth:`values`, never NaN.
    """

    loss_sum: float = 0.0
    loss_tokens: int = 0
    content_correct: int = 0
    content_predictions: int = 0
    all_correct: int = 0
    all_predictions: int = 0
    skipped_batches: int = 0

    def add(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], loss: float) -> None:
        all_correct, all_predictions = next_token_stats(logits, batch["labels"])
        content_correct, content_predictions = next_token_stats(logits, batch["content_labels"])
        self.all_correct += all_correct
        self.all_predictions += all_predictions
        self.content_correct += content_correct
        self.content_predictions += content_predictions
        if all_predictions and math.isfinite(loss):
            self.loss_sum += loss * all_predictions
            self.loss_tokens += all_predictions
        else:
            self.skipped_batches += 1

    def values(self) -> dict[str, float | int]:
        """The event fields: ``loss``, ``accuracy`` (content tokens), ``predictions`` (content
        tokens), ``accuracyAllTokens``, ``predictionsAllTokens``; a ratio over nothing is left out."""
        out: dict[str, float | int] = {
            "predictions": self.content_predictions,
            "predictionsAllTokens": self.all_predictions,
        }
        if self.loss_tokens:
            out["loss"] = self.loss_sum / self.loss_tokens
        if self.content_predictions:
            out["accuracy"] = self.content_correct / self.content_predictions
        if self.all_predictions:
            out["accuracyAllTokens"] = self.all_correct / self.all_predictions
        if self.skipped_batches:
            out["skippedBatches"] = self.skipped_batches
        return out


def next_token_stats(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(correct next-token predictions, predictions) over the label tokens of a batch."""
    predicted = logits[:, :-1].argmax(dim=-1)
    targets = labels[:, 1:]
    mask = targets != data.IGNORE_INDEX
    return int((predicted[mask] == targets[mask]).sum()), int(mask.sum())


@torch.no_grad()
def evaluate(
    model: PeftModel,
    examples: list[data.TokenizedExample],
    batch_size: int,
    pad_id: int,
    device: torch.device,
) -> dict[str, float | int]:
    """Token-weighted loss and next-token accuracy over ``examples`` (see :class:`TokenStats`)."""
    model.eval()
    stats = TokenStats()
    for start in range(0, len(examples), batch_size):
        batch = {
            key: value.to(device)
            for key, value in data.collate(examples[start : start + batch_size], pad_id).items()
        }
        output = model(**data.model_inputs(batch))
        stats.add(output.logits, batch, float(output.loss))
    model.train()
    return stats.values()


class Trainer:
    def __init__(self, job_dir: Path, events: IO[str]) -> None:
        self.job_dir = job_dir
        self.events = events
        self.cancel_requested = False
        self.step = 0
        self.cancel_signalled_at_step: int | None = None
        self._pending: list[str] = []
        self._last_flush = time.monotonic()

    def emit(self, event: str, **fields: Any) -> None:
        """Step events are sent in bunches (at most every STEP_EVENT_INTERVAL_S): waking the
        service for every step of a fast model steals CPU from torch's threads and slowed tiny
        training tenfold on 2 cores. Every other event goes out at once."""
        # allow_nan=False: a NaN or infinity is an error here, never a non-standard JSON literal.
        self._pending.append(json.dumps({"event": event, **fields}, allow_nan=False) + "\n")
        if event != "step" or time.monotonic() - self._last_flush >= STEP_EVENT_INTERVAL_S:
            self.events.write("".join(self._pending))
            self.events.flush()
            self._pending.clear()
            self._last_flush = time.monotonic()

    def request_cancel(self, *_: object) -> None:
        self.cancel_requested = True
        self.cancel_signalled_at_step = self.step

    def run(self) -> int:
        spec = TrainingSpec.load(self.job_dir)
        device = models.torch_device()
        started = time.perf_counter()
        model, tokenizer, training_set, validation_set = prepare(spec, self.job_dir, device)
        training, validation = training_set.examples, validation_set.examples
        pad_id = int(tokenizer.pad_token_id)
        per_epoch = data.steps_per_epoch(len(training), spec.batch_size)
        self.emit(
            "started",
            device=str(device),
            setupSeconds=time.perf_counter() - started,
            trainingExamples=training_set.example_count,
            validationExamples=validation_set.example_count,
            truncatedExamples=len(training_set.truncated_indices),
            trainingDataStats=training_set.stats(),
            validationDataStats=validation_set.stats() if spec.has_validation else None,
            datasetTokens=sum(len(example.input_ids) for example in training),
            stepsPerEpoch=per_epoch,
            totalSteps=per_epoch * spec.epochs,
            trainableParameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        )
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=spec.learning_rate, weight_decay=0.0
        )
        save_at = set(checkpoint_epochs(spec.epochs))
        model.train()
        step = 0
        for epoch in range(1, spec.epochs + 1):
            for cpu_batch in data.epoch_batches(training, spec.batch_size, spec.seed, epoch, pad_id):
                if self.cancel_requested:
                    self.emit(
                        "cancelled", step=step, epoch=epoch, signalledAtStep=self.cancel_signalled_at_step
                    )
                    return 0
                step_started = time.perf_counter()
                batch = {key: value.to(device) for key, value in cpu_batch.items()}
                output = model(**data.model_inputs(batch))
                loss = float(output.loss.detach())
                # A batch with no labelled token has a NaN loss (a mean over nothing): stepping on
                # it would write NaN into every adapter weight. It is skipped, and said so.
                trainable = math.isfinite(loss) and bool((batch["labels"][:, 1:] != data.IGNORE_INDEX).any())
                if trainable:
                    output.loss.backward()
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                stats = TokenStats()
                stats.add(output.logits.detach(), batch, loss)
                step += 1
                self.step = step
                self.emit(
                    "step",
                    step=step,
                    epoch=epoch,
                    **stats.values(),
                    tokens=int(batch["attention_mask"].sum()),
                    seconds=time.perf_counter() - step_started,
                )
            if validation:
                self.emit(
                    "eval",
                    step=step,
                    epoch=epoch,
                    **evaluate(model, validation, spec.batch_size, pad_id, device),
                )
            if epoch in save_at:
                path = self.job_dir / "checkpoints" / str(epoch)
                model.save_pretrained(path)
                self.emit("checkpoint", step=step, epoch=epoch, path=str(path))
        self.emit(
            "finished", step=step, trainSeconds=time.perf_counter() - started, peakRssBytes=peak_rss_bytes()
        )
        return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m local.tuning.trainer JOB_DIR", file=sys.stderr)
        return 2
    # Progress goes to the original stdout only; anything a library prints goes to stderr (the
    # job's log), so it cannot corrupt the protocol.
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    transformers_logging.disable_progress_bar()
    job_dir = Path(argv[0])
    models.configure_torch_threads(TrainingSpec.load(job_dir).local_model)
    trainer = Trainer(job_dir, events)
    signal.signal(signal.SIGTERM, trainer.request_cancel)
    try:
        return trainer.run()
    except BrokenPipeError:
        return 1  # the service is gone: nobody is left to report to.
    except Exception as exc:
        trainer.emit("failed", message=f"{type(exc).__name__}: {exc}")
        raise


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Training speed of the local tuning service against a bare transformers + peft loop (issue 5).

    .venv/bin/python benchmarks/local_training.py                       # both models
    .venv/bin/python benchmarks/local_training.py --models tiny --tiny-examples 400

For each model, in the same run and on the same batches:

- ``service``: a job submitted through the real google-genai client to ``python -m local.tuning``
  (the trainer process, per-step progress events, metrics, one checkpoint per epoch); its
  seconds per step, tokens per second and peak RSS are the ones the service records.
- ``bare``: a plain loop in its own process: the same base weights (for tiny: the job's saved,
  seeded base), ``get_peft_model`` with the same LoRA settings, the same tokenised batches in the
  same order (local.tuning.data), forward / backward / AdamW step, nothing else.

Seconds per step leave out the first step (allocations); the overhead is service / bare - 1 on
seconds per step, and also on the whole training wall time (model load, steps, checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from local.services import free_port, http_answers  # noqa: E402
from local.tuning import sample  # noqa: E402


def service_run(model: str, examples: int, workdir: Path) -> tuple[dict[str, Any], Path]:
    """Runs one job through the service; returns its timings and the job directory."""
    import google.oauth2.credentials
    from google import genai
    from google.genai import types

    workdir.mkdir(parents=True)
    dataset = workdir / f"{model}-train.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in sample.sentiment_records(examples, seed=3)))
    port = free_port()
    state_dir = workdir / f"{model}-state"
    argv = [
        sys.executable,
        "-m",
        "local.tuning",
        "--port",
        str(port),
        "--model",
        model,
        "--state-dir",
        str(state_dir),
    ]
    service = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not http_answers(f"http://127.0.0.1:{port}/healthz"):
            if time.monotonic() > deadline or service.poll() is not None:
                raise RuntimeError("the tuning service did not start")
            time.sleep(0.2)
        client = genai.Client(
            vertexai=True,
            project="bench",
            location="us-central1",
            credentials=google.oauth2.credentials.Credentials(token="local"),
            http_options=types.HttpOptions(base_url=f"http://127.0.0.1:{port}/", api_version="v1"),
        )
        submitted = time.perf_counter()
        job = client.tunings.tune(
            base_model="gemini-2.5-flash",
            training_dataset=types.TuningDataset(gcs_uri=str(dataset)),
            config=types.CreateTuningJobConfig(
                epoch_count=1, adapter_size=types.AdapterSize.ADAPTER_SIZE_EIGHT
            ),
        )
        assert job.name is not None
        while not job.has_ended:
            time.sleep(1.0)
            job = client.tunings.get(name=job.name)
        wall = time.perf_counter() - submitted
        if job.state != types.JobState.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"benchmark job ended {job.state}: {job.error}")
        # The raw job carries the service's timings in its localTuning extension.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/{job.name}", timeout=10) as response:
            timings = json.loads(response.read())["localTuning"]["timings"]
        timings["submitToEndSeconds"] = wall
        return timings, state_dir / "jobs" / job.name.rsplit("/", 1)[-1]
    finally:
        service.terminate()
        service.wait(timeout=30)


def bare_loop(job_dir: Path) -> dict[str, Any]:
    """The baseline: nothing but transformers + peft on the job's own batches."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from local.tuning import data, models
    from local.tuning.trainer import TrainingSpec

    spec = TrainingSpec.load(job_dir)
    models.configure_torch_threads(spec.local_model)
    started = time.perf_counter()
    weights = job_dir / "base" if spec.local_model == "tiny" else models.smollm2_dir()
    base = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(weights)
    device = models.torch_device()
    lora = LoraConfig(
        r=spec.lora_rank,
        lora_alpha=spec.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(models.LOCAL_MODELS[spec.local_model].lora_target_modules),
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(spec.seed)
    model = get_peft_model(base, lora).to(device)
    max_tokens = models.LOCAL_MODELS[spec.local_model].max_sequence_tokens
    examples = data.prepare_dataset(
        tokenizer, data.examples_from_jsonl((job_dir / "training.jsonl").read_text()), max_tokens
    ).examples
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.learning_rate)
    model.train()
    seconds, tokens = [], []
    for epoch in range(1, spec.epochs + 1):
        for batch in data.epoch_batches(examples, spec.batch_size, spec.seed, epoch, tokenizer.pad_token_id):
            step_started = time.perf_counter()
            on_device = {key: value.to(device) for key, value in data.model_inputs(batch).items()}
            loss = model(**on_device).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            float(loss.detach())
            seconds.append(time.perf_counter() - step_started)
            tokens.append(int(batch["attention_mask"].sum()))
    steady_seconds, steady_tokens = seconds[1:] or seconds, tokens[1:] or tokens
    return {
        "trainSeconds": time.perf_counter() - started,
        "steps": len(seconds),
        "secondsPerStep": sum(steady_seconds) / len(steady_seconds),
        "medianSecondsPerStep": statistics.median(steady_seconds),
        "tokensPerSecond": sum(steady_tokens) / sum(steady_seconds),
        "peakRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def bare_run(job_dir: Path) -> dict[str, Any]:
    """The bare loop in its own process, so that its peak RSS is its own."""
    output = subprocess.run(
        [sys.executable, __file__, "--bare", str(job_dir)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def report(model: str, runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Best of the repeats (least disturbed by other processes) and each repeat's figures."""
    print(
        f"\n{model}: {runs[0][0]['steps']} steps of batch 8, {len(runs)} repeat(s), service then bare each time"
    )
    print(
        f"  {'':8} {'median s/step':>13} {'mean s/step':>12} {'tokens/s':>9} {'peak RSS':>10} {'train wall s':>13}"
    )
    for index, (service, bare) in enumerate(runs, start=1):
        for name, row in (("service", service), ("bare", bare)):
            print(
                f"  {name:8} {row['medianSecondsPerStep']:13.4f} {row['secondsPerStep']:12.4f} "
                f"{row['tokensPerSecond']:9.0f} {row['peakRssBytes'] / 2**20:7.0f} MB {row['trainSeconds']:13.2f}"
                + (
                    f"   (repeat {index}; submit -> SUCCEEDED {service['submitToEndSeconds']:.1f} s)"
                    if name == "service"
                    else ""
                )
            )
    best_service = min(service["medianSecondsPerStep"] for service, _ in runs)
    best_bare = min(bare["medianSecondsPerStep"] for _, bare in runs)
    wall = min(s["trainSeconds"] for s, _ in runs) / min(b["trainSeconds"] for _, b in runs) - 1
    print(
        f"  best median s/step: service {best_service:.4f}, bare {best_bare:.4f}; "
        f"service overhead {best_service / best_bare - 1:+.1%} per step, {wall:+.1%} on training wall time"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2"], choices=["tiny", "smollm2"])
    parser.add_argument("--tiny-examples", type=int, default=400, help="training examples for tiny (1 epoch)")
    parser.add_argument(
        "--smollm2-examples", type=int, default=96, help="training examples for smollm2 (1 epoch)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="service + bare runs per model (best is kept)")
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        print(json.dumps(bare_loop(args.bare)))
        return 0
    print(
        f"cores: {os.cpu_count()}, SFTPIPE_TORCH_THREADS: {os.environ.get('SFTPIPE_TORCH_THREADS', 'unset (tiny: 1 thread, smollm2: one per core)')}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="sftpipe-bench-"))
    try:
        for model in args.models:
            examples = args.tiny_examples if model == "tiny" else args.smollm2_examples
            runs = []
            for repeat in range(args.repeats):
                service, job_dir = service_run(model, examples, workdir / f"{model}-{repeat}")
                runs.append((service, bare_run(job_dir)))
            report(model, runs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

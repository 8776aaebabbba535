"""Throughput and memory of dataset ingest (issues 4 and 17), on Gemini-format JSONL.

    .venv/bin/python benchmarks/ingest_throughput.py                  # 200 MB per shape, a few minutes
    .venv/bin/python benchmarks/ingest_throughput.py --mb 1000 --repeat 1 --stages validate,write
                                                                      # the 1 GB (10^9 bytes) upload limit

Generates three deterministic files of Gemini tuning records (``--keep DIR`` keeps and reuses them):

- ``classification``: short lines (a one-sentence system instruction, a review of 30-120 words,
  a one-word label), about 0.6 KB each: the per-record cost dominates;
- ``summarization``: long lines (an article of 300-1,200 words, a summary of 30-100 of its
  words), about 5 KB each: the per-byte cost dominates;
- ``qa``: the file issue 17 measured (records of 50-400 words each; about 1.4 KB here, 1.1 KB there): a question
  and its answer, between the two.

One record in :data:`DUPLICATE_EVERY` repeats an earlier one, so duplicate detection has work.
Then, for each shape, every stage in its own process (so that peak RSS is that stage's own), the
stages interleaved ``--repeat`` times (a burst of load elsewhere hits every stage), best time kept:

- ``json``: ``json.loads`` of every line, nothing else (the baseline the targets are relative to);
- ``orjson``: ``orjson.loads`` of every line (the parser ingest uses: the floor);
- ``validate``: ``prepare()`` with no sink, estimated tokens (the validate-only pass);
- ``write``: ``prepare()`` with a sink that discards the converted lines (the writing pass, given
  the configured split plan, which costs the same to apply as any other plan);
- ``exact``: the validate-only pass with exact token counting (google-genai's LocalTokenizer),
  on the first ``--exact-mb`` MB, next to the estimate on the same bytes, so that the cost of
  counting is reported on its own. The tokenizer needs the ``sentencepiece`` package (not in the
  project's requirements: ``.venv/bin/pip install sentencepiece``) and the Gemma model file,
  downloaded on first use; where the download fails (no network) and ``sentencepiece`` is
  installed, the stage counts with a stand-in model (:data:`STAND_IN_DESCRIPTION`) and says so,
  else it prints "not available (reason)".

Every stage runs with glibc's mmap threshold that the functions are deployed with
(``MALLOC_MMAP_THRESHOLD_``, ``shared.datasets.limits.MALLOC_MMAP_THRESHOLD_BYTES``);
``--glibc-default`` runs them with glibc's own, dynamic one.

MB are 10^6 bytes (the upload limit is 10^9 bytes). Targets (issue 17): validate >= 150 MB/s and
at most 1.5x the ``json`` pass, write >= 100 MB/s, peak RSS <= 256 MB for a 1 GB file.

Both generated shapes are plain Gemini text records, so ``validate`` and ``write`` measure the
typed fast path (``shared.datasets.convert.PLAIN_DECODER``); ``validate`` also includes the task
decision over the reservoir sample (a fixed cost of about 0.2 s on the summarization shape,
whatever the file's size). Where the time goes on long lines: deleting whitespace for the
duplicate keys (``bytes.translate``, about 350-600 MB/s) costs about as much as a ``json.loads``
pass by itself, so the 1.5x ratio is out of reach there for a pass that must hash every byte.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MB = 10**6
SHAPES = ("classification", "qa", "summarization")
STAGES = ("json", "orjson", "validate", "write", "exact")
#: One record in this many repeats an earlier one (a duplicate the pass must drop).
DUPLICATE_EVERY = 200
#: Targets of issue 17.
TARGET_VALIDATE_MB_S = 150.0
TARGET_VALIDATE_RATIO = 1.5
TARGET_WRITE_MB_S = 100.0
TARGET_PEAK_RSS_MB = 256.0
_VOCABULARY = (
    "the of and to in is that for it as with was on be by this are at from or an have not which but "
    "can all were more when one there their has been out would who so what up about into some than "
    "them could only other time new model data tuning example answer question because through "
    "between during without price service delivery quality staff product battery screen order"
)
_WORDS = tuple(_VOCABULARY.split())
_LABELS = ("positive", "negative", "neutral", "mixed")
_CLASSIFY = "Classify the sentiment of the customer review as positive, negative, neutral or mixed."
_ANSWER = "Answer the customer's question about the product in a few sentences."
_SUMMARIZE = "You write short, faithful summaries of news articles."


def _sentences(words: list[str]) -> str:
    for i in range(12, len(words), 17):
        words[i] += "."
    return " ".join(words)


def _record(shape: str, rng: random.Random) -> dict[str, Any]:
    if shape == "classification":
        system = _CLASSIFY
        prompt = _sentences(rng.choices(_WORDS, k=rng.randint(30, 120)))
        answer = rng.choice(_LABELS)
    elif shape == "qa":  # the file issue 17 measured: records of 50-400 words each
        system = _ANSWER
        words = rng.randint(50, 400)
        asked = rng.randint(words // 5, words * 3 // 5)
        prompt = _sentences(rng.choices(_WORDS, k=asked)) + "?"
        answer = _sentences(rng.choices(_WORDS, k=words - asked))
    else:
        system = _SUMMARIZE
        article = rng.choices(_WORDS, k=rng.randint(300, 1200))
        answer = _sentences(rng.sample(article, rng.randint(30, 100)))
        prompt = "Summarize the article below in a few sentences.\n\n" + _sentences(article)
    return {
        "systemInstruction": {"parts": [{"text": system}]},
        "contents": [
            {"role": "user", "parts": [{"text": prompt}]},
            {"role": "model", "parts": [{"text": answer}]},
        ],
    }


def generate(path: Path, shape: str, megabytes: float, seed: int = 7) -> None:
    import orjson

    rng = random.Random(seed)
    target = int(megabytes * MB)
    written = 0
    recent: list[bytes] = []
    with path.open("wb") as out:
        for n in itertools.count(1):
            if n % DUPLICATE_EVERY == 0 and recent:
                line = rng.choice(recent)
            else:
                line = orjson.dumps(_record(shape, rng)) + b"\n"
                recent = [*recent[-99:], line]
            if written + len(line) > target:  # stay within the size asked for (10^9 is the upload limit)
                break
            out.write(line)
            written += len(line)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def _measure(stage: str, path: str, limit_mb: float) -> dict[str, Any]:
    """One stage in this process; prints one JSON object."""
    sys.path.insert(0, str(ROOT))
    if stage in ("json", "orjson"):
        import orjson

        loads = json.loads if stage == "json" else orjson.loads
        start = time.perf_counter()
        cpu = time.process_time()
        with open(path, "rb") as f:
            for line in f:
                loads(line)
        return {
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu,
            "bytes": Path(path).stat().st_size,
        }

    import io

    from shared.datasets import PrepareOptions, prepare
    from shared.errors import ConfigurationError

    data: bytes | None = None
    if stage == "exact":
        with open(path, "rb") as f:
            data = f.read(int(limit_mb * MB))
        data = data[: data.rfind(b"\n") + 1]
    written = 0

    def sink(split: str, line: bytes) -> None:
        nonlocal written
        written += len(line)

    def one(counting: str, write: bool, tokenizer_factory: Any = None) -> dict[str, Any]:
        options = PrepareOptions(token_counting=counting)  # type: ignore[arg-type]
        plan = None
        if write:  # the plan of the validate-only pass, as prepare_and_write gives it (not timed)
            with open(path, "rb") as f:
                plan = prepare(f, filename=Path(path).name, options=options).split.plan()
        start = time.perf_counter()  # imports are not part of the pass
        cpu = time.process_time()
        with open(path, "rb") if data is None else io.BytesIO(data) as f:
            result = prepare(
                f,
                filename=Path(path).name,
                options=options,
                sink=sink if write else None,
                split_plan=plan,
                tokenizer_factory=tokenizer_factory,
            )
        seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu,
            "bytes": result.bytes_read,
            "examples": result.valid_examples,
            "duplicates": result.duplicates,
            "errors": sum(result.error_counts.values()),
            "tokens": result.tokens.total,
            "written_bytes": written,
        }

    if stage != "exact":
        return one("estimate", write=stage == "write")
    stand_in = None
    try:
        exact = one("exact", write=False)
    except ConfigurationError as exc:
        assert data is not None
        factory = _stand_in_tokenizer(data)
        if factory is None:
            return {"unavailable": str(exc)}
        stand_in = f"{exc}; measured with a stand-in model instead ({STAND_IN_DESCRIPTION})"
        exact = one("exact", write=False, tokenizer_factory=factory)
    return {**exact, "estimate_seconds": one("estimate", write=False)["seconds"], "stand_in": stand_in}


#: The stand-in for the Gemma tokenizer model when it cannot be downloaded (no network).
STAND_IN_VOCABULARY = 8_000
#: Lines of the file whose texts train the stand-in.
STAND_IN_TRAINING_LINES = 20_000
STAND_IN_DESCRIPTION = (
    f"a SentencePiece BPE model of at most {STAND_IN_VOCABULARY:,} pieces trained here on the file's first "
    "texts, in google-genai's LocalTokenizer: the SDK's own counting path, whose token counts differ from "
    "Gemini's but whose cost per text is of the same kind"
)


def _stand_in_tokenizer(data: bytes) -> Any:
    """A factory of LocalTokenizers that count with a SentencePiece model trained on ``data``'s
    texts, or None without the ``sentencepiece`` package (``.venv/bin/pip install sentencepiece``).

    LocalTokenizer loads its model by name only (a download checked against a hash), so the
    stand-in is put where the SDK keeps its processor; ``count_tokens`` uses nothing else.
    """
    try:
        import sentencepiece as spm
    except ImportError:
        return None
    import io

    import orjson
    from google.genai.local_tokenizer import LocalTokenizer

    texts = []
    for line in itertools.islice(io.BytesIO(data), STAND_IN_TRAINING_LINES):
        record = orjson.loads(line)
        system = record.get("systemInstruction") or {"parts": []}
        for content in [system, *record["contents"]]:
            texts += [part["text"] for part in content["parts"] if "text" in part]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=STAND_IN_VOCABULARY,
        hard_vocab_limit=False,  # a small vocabulary has fewer pieces to learn
        model_type="bpe",
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())

    def factory(model_name: str) -> Any:
        tokenizer = object.__new__(LocalTokenizer)
        tokenizer._tokenizer_name = model_name
        tokenizer._model_proto = None
        tokenizer._tokenizer = processor
        return tokenizer

    return factory


def _row(name: str, runs: list[dict[str, Any]], baseline: float | None) -> tuple[str, float, float]:
    times = sorted(r["seconds"] for r in runs)
    best, median = times[0], times[len(times) // 2]
    cpu = min(r["cpu_seconds"] for r in runs)
    size = runs[0]["bytes"] / MB
    peak = max(r["peak_rss_mb"] for r in runs)
    ratio = f"{best / baseline:5.2f}x" if baseline else "     -"
    last = runs[-1]
    extra = ""
    if "examples" in last:
        extra = f"  examples {last['examples']:,}, duplicates {last['duplicates']:,}, errors {last['errors']}"
    print(
        f"  {name:<8} {size / best:7.1f} MB/s ({best:6.2f} s)  median {size / median:7.1f} MB/s  "
        f"cpu {size / cpu:7.1f} MB/s  {ratio} json  peak RSS {peak:5.0f} MB{extra}"
    )
    return name, size / best, peak


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=200, help="size of each generated file, MB (10^6 bytes)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated: " + ",".join(SHAPES))
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated: " + ",".join(STAGES))
    parser.add_argument("--repeat", type=int, default=3, help="runs per stage; the best time counts")
    parser.add_argument("--exact-mb", type=float, default=20, help="MB the exact-token stage reads")
    parser.add_argument("--keep", metavar="DIR", help="generate the files here and keep them (reused)")
    parser.add_argument(
        "--glibc-default",
        action="store_true",
        help="run the stages with glibc's own mmap threshold instead of the deployed MALLOC_MMAP_THRESHOLD_",
    )
    parser.add_argument("--measure", nargs=3, metavar=("STAGE", "PATH", "MB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        stage, path, limit = args.measure
        started = time.perf_counter()
        out = _measure(stage, path, float(limit))
        print(json.dumps({**out, "peak_rss_mb": _peak_rss_mb(), "wall": time.perf_counter() - started}))
        return 0
    stages = [s for s in args.stages.split(",") if s]
    # The stages run as the ingest function is deployed (deploy/functions.tf), unless asked not to.
    environment = dict(os.environ)
    if args.glibc_default:
        environment.pop("MALLOC_MMAP_THRESHOLD_", None)
    else:
        sys.path.insert(0, str(ROOT))
        from shared.datasets.limits import MALLOC_MMAP_THRESHOLD_BYTES

        environment["MALLOC_MMAP_THRESHOLD_"] = str(MALLOC_MMAP_THRESHOLD_BYTES)
    print(f"glibc mmap threshold: {environment.get('MALLOC_MMAP_THRESHOLD_', 'glibc default (dynamic)')}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for shape in args.shapes.split(","):
            path = folder / f"{shape}-{args.mb:g}MB.jsonl"
            if not path.exists():
                generate(path, shape, args.mb)
            lines = sum(1 for _ in path.open("rb"))
            size = path.stat().st_size
            print(
                f"{shape}: {size / MB:.1f} MB, {lines:,} lines of {size / lines:,.0f} bytes on average ({path})"
            )
            runs: dict[str, list[dict[str, Any]]] = {}
            for _ in range(args.repeat):
                for stage in stages:
                    if stage == "exact" and runs.get("exact"):
                        continue  # once is enough: it is the slow one, and reports the cost, not a race
                    out = subprocess.run(
                        [sys.executable, __file__, "--measure", stage, str(path), str(args.exact_mb)],
                        check=True,
                        capture_output=True,
                        text=True,
                        env=environment,
                    ).stdout
                    runs.setdefault(stage, []).append(json.loads(out))
            baseline = min(r["seconds"] for r in runs["json"]) if "json" in runs else None
            figures: dict[str, tuple[str, float, float]] = {}
            for stage in stages:
                if stage == "exact":
                    _exact(runs["exact"][0])
                else:
                    figures[stage] = _row(stage, runs[stage], baseline)
            _targets(figures, baseline, runs, size)
    return 0


def _exact(run: dict[str, Any]) -> None:
    if "unavailable" in run:
        print(f"  exact tokens: not available ({run['unavailable']})")
        return
    if run.get("stand_in"):
        print(f"  exact tokens: {run['stand_in']}")
    size = run["bytes"] / MB
    cost = run["seconds"] - run["estimate_seconds"]
    print(
        f"  exact    {size / run['seconds']:7.1f} MB/s ({run['seconds']:6.2f} s) on the first {size:.0f} MB, "
        f"estimate {size / run['estimate_seconds']:.1f} MB/s on the same: counting costs {cost:.2f} s, "
        f"{cost / max(1, run['examples']) * 1e6:.0f} us per example, peak RSS {run['peak_rss_mb']:.0f} MB"
    )


def _targets(
    figures: dict[str, tuple[str, float, float]],
    baseline: float | None,
    runs: dict[str, list[dict[str, Any]]],
    size: int,
) -> None:
    checks = []
    if "validate" in figures:
        _, rate, _ = figures["validate"]
        checks.append(
            f"validate >= {TARGET_VALIDATE_MB_S:g} MB/s: {'yes' if rate >= TARGET_VALIDATE_MB_S else 'NO'}"
        )
        if baseline:
            ratio = min(r["seconds"] for r in runs["validate"]) / baseline
            ok = ratio <= TARGET_VALIDATE_RATIO
            checks.append(f"<= {TARGET_VALIDATE_RATIO:g}x json: {'yes' if ok else 'NO'} ({ratio:.2f}x)")
    if "write" in figures:
        _, rate, _ = figures["write"]
        checks.append(f"write >= {TARGET_WRITE_MB_S:g} MB/s: {'yes' if rate >= TARGET_WRITE_MB_S else 'NO'}")
    peaks = [peak for name, (_, _, peak) in figures.items() if name in ("validate", "write")]
    if peaks:
        verdict = "yes" if max(peaks) <= TARGET_PEAK_RSS_MB else "NO"
        scale = "" if size >= 0.99 * 10**9 else " (at this size; the target is for 1 GB)"
        checks.append(f"peak RSS <= {TARGET_PEAK_RSS_MB:g} MB: {verdict}{scale}")
    if checks:
        print("  targets: " + "; ".join(checks))


if __name__ == "__main__":
    sys.exit(main())

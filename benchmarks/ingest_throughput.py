"""Throughput and memory of dataset validation (issue 4), on Gemini-format JSONL in estimate mode.

    .venv/bin/python benchmarks/ingest_throughput.py --mb 200          # quick
    .venv/bin/python benchmarks/ingest_throughput.py --mb 1024         # the 1 GB streaming claim

Generates a deterministic file of Gemini tuning records (system instruction, 2-4 turns, about
1.5 KB each), then runs, each in its own process so that peak RSS is its own:

- ``json``: merely parse every line with the standard json module (the baseline);
- ``validate``: ``prepare()`` with no sink (what the validate-only pass does);
- ``write``: ``prepare()`` with a sink that discards the converted lines (the writing pass, given
  a split plan).

Prints MB/s, peak RSS and the ratio to the baseline. Targets: validate >= 50 MB/s on one core,
ratio <= 2, peak RSS < 512 MB whatever the size.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "at",
    "from",
    "or",
    "an",
    "have",
    "not",
    "which",
    "but",
    "can",
    "all",
    "were",
    "more",
    "when",
    "one",
    "there",
    "their",
    "has",
    "been",
    "out",
    "would",
    "who",
    "so",
    "what",
    "up",
    "about",
    "into",
    "some",
    "than",
    "them",
    "could",
    "only",
    "other",
    "time",
    "new",
    "model",
    "data",
    "tuning",
    "example",
    "answer",
    "question",
    "because",
    "through",
    "between",
    "during",
    "without",
]


def _paragraph(rng: random.Random, n: int) -> str:
    words = rng.choices(_WORDS, k=n)
    for i in range(12, n, 40):
        words[i] += ".\n"
    return " ".join(words)


def generate(path: Path, megabytes: int, seed: int = 7) -> int:
    import orjson

    rng = random.Random(seed)
    target = megabytes * 1024 * 1024
    written = 0
    with path.open("wb") as out:
        while written < target:
            turns = []
            for t in range(rng.choice((2, 2, 4))):
                role = "user" if t % 2 == 0 else "model"
                turns.append({"role": role, "parts": [{"text": _paragraph(rng, rng.randint(40, 200))}]})
            record = {
                "systemInstruction": {
                    "parts": [{"text": "You are a careful assistant. " + _paragraph(rng, 8)}]
                },
                "contents": turns,
            }
            line = orjson.dumps(record) + b"\n"
            if written + len(line) > target:  # stay within the size asked for (1024 MiB is the upload limit)
                break
            out.write(line)
            written += len(line)
    return written


def _measure(mode: str, path: str) -> None:
    sys.path.insert(0, str(ROOT))
    extra: dict[str, object] = {}
    if mode == "json":
        start = time.perf_counter()
        with open(path, "rb") as f:
            for line in f:
                json.loads(line)
    else:
        from shared.datasets import PrepareOptions, prepare
        from shared.datasets.split import SplitPlan

        start = time.perf_counter()  # imports are not part of the pass
        options = PrepareOptions(token_counting="estimate")
        written = 0

        def sink(split: str, line: bytes) -> None:
            nonlocal written
            written += len(line)

        # The writing pass applies the plan of the validate-only pass; the configured bands cost the
        # same to apply as any other plan, so the benchmark does not run the first pass here.
        plan = SplitPlan.configured(options.validation_fraction, options.test_fraction)
        with open(path, "rb") as f:
            result = prepare(
                f,
                filename=Path(path).name,
                options=options,
                sink=sink if mode == "write" else None,
                split_plan=plan if mode == "write" else None,
            )
        extra = {
            "ok": result.ok,
            "examples": result.valid_examples,
            "errors": sum(result.error_counts.values()),
            "written_bytes": written,
        }
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_rss_mb": peak_kib / 1024, **extra}))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=200, help="size of the generated file in MiB")
    parser.add_argument("--modes", default="json,validate,write", help="comma-separated: json,validate,write")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; the best time counts")
    parser.add_argument("--keep", metavar="PATH", help="generate here and keep the file (reused if present)")
    parser.add_argument("--measure", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _measure(*args.measure)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "bench.jsonl"
        if not path.exists():
            generate(path, args.mb)
        size_mb = path.stat().st_size / 1024 / 1024
        print(f"file: {size_mb:.0f} MiB of Gemini JSONL ({path})")
        runs: dict[str, list[dict[str, object]]] = {}
        modes = args.modes.split(",")
        for _ in range(args.repeat):  # interleaved, so that a burst of load elsewhere hits every mode
            for mode in modes:
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", mode, str(path)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                runs.setdefault(mode, []).append(json.loads(out))
        best: dict[str, float] = {}
        for mode in modes:
            times = sorted(float(r["seconds"]) for r in runs[mode])  # type: ignore[arg-type]
            best[mode] = times[0]
            peak = max(float(r["peak_rss_mb"]) for r in runs[mode])  # type: ignore[arg-type]
            last = runs[mode][-1]
            extra = f", examples {last['examples']}, errors {last['errors']}" if "examples" in last else ""
            print(
                f"{mode:>9}: best {size_mb / times[0]:7.1f} MiB/s ({times[0]:.2f} s), "
                f"median {size_mb / times[len(times) // 2]:7.1f} MiB/s, peak RSS {peak:5.0f} MiB{extra}"
            )
        if "json" in best:
            for mode in ("validate", "write"):
                if mode in best:
                    print(f"ratio {mode} / json parse (best times): {best[mode] / best['json']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

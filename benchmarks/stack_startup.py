"""Time `sftpipe stack up` / `down` and the first upload's trip to Firestore.

Usage: .venv/bin/python benchmarks/stack_startup.py [--runs N]
Prints, per run: seconds until `up` returns ready, seconds from an upload under incoming/ until
its dataset document exists, seconds for `down`; then the median of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from google.cloud import firestore, storage

    from local.stack import Stack, StackOptions

    ups, trips, downs = [], [], []
    for run in range(args.runs):
        stack = Stack(Path(tempfile.mkdtemp(prefix="sftpipe-bench-")))
        started = time.perf_counter()
        env = stack.up(StackOptions())
        ups.append(time.perf_counter() - started)
        os.environ.update(env)
        try:
            bucket = storage.Client(project=env["SFTPIPE_PROJECT"]).bucket(env["SFTPIPE_BUCKET"])
            db = firestore.Client(project=env["SFTPIPE_PROJECT"])
            started = time.perf_counter()
            bucket.blob("incoming/bench.jsonl").upload_from_string(b'{"contents": []}\n')
            while not list(db.collection("datasets").limit(1).stream()):
                time.sleep(0.05)
            trips.append(time.perf_counter() - started)
        finally:
            started = time.perf_counter()
            stack.down()
            downs.append(time.perf_counter() - started)
        print(
            f"run {run + 1}: up {ups[-1]:.2f} s, upload -> dataset document {trips[-1]:.2f} s, down {downs[-1]:.2f} s"
        )
    print(
        f"median of {args.runs}: up {statistics.median(ups):.2f} s, "
        f"upload -> dataset document {statistics.median(trips):.2f} s, down {statistics.median(downs):.2f} s"
    )


if __name__ == "__main__":
    main()

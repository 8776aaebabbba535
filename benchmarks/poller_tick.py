"""Seconds and Firestore reads per poller tick with many active jobs.

Usage: .venv/bin/python benchmarks/poller_tick.py [--jobs 1000] [--ticks 5] [--latency-ms 50]

Starts the local stack (emulators; no tuning service), writes ``--jobs`` RUNNING job documents,
and serves their ``tunings.get`` from a small Vertex-shaped HTTP server on loopback that answers
after ``--latency-ms`` (Vertex's own latency; the real google-genai client calls it over HTTP).
Then runs ``poll_tick`` ``--ticks`` times and prints, per tick: seconds, Firestore documents
read, Vertex calls made, and transitions recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeVertex(BaseHTTPRequestHandler):
    latency_s = 0.05
    calls = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with FakeVertex.lock:
            FakeVertex.calls += 1
        time.sleep(self.latency_s)
        name = self.path.split("/v1/", 1)[-1].split("?", 1)[0]
        body = json.dumps(
            {"name": name, "state": "JOB_STATE_RUNNING", "updateTime": "2026-11-22T00:00:00Z"}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()

    from local.stack import Stack, StackOptions

    FakeVertex.latency_s = args.latency_ms / 1000
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeVertex)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stack = Stack(Path(tempfile.mkdtemp(prefix="sftpipe-poller-bench-")))
    env = stack.up(StackOptions(model=None, tick_interval_s=86_400))
    os.environ.update(env)
    os.environ["SFTPIPE_TUNING_API_URL"] = f"http://127.0.0.1:{server.server_port}/"
    try:
        from shared.config import Settings
        from shared.runtime import Runtime
        from shared.tuning.poll import poll_tick

        runtime = Runtime(Settings())
        jobs = runtime.firestore.collection(runtime.settings.jobs_collection)
        now = datetime.now(UTC)
        batch = runtime.firestore.batch()
        for i in range(args.jobs):
            job_id = f"bench-{i:05d}"
            batch.set(
                jobs.document(job_id),
                {
                    "job_id": job_id,
                    "dataset_id": "bench",
                    "request": {},
                    "base_model": "gemini-2.5-flash",
                    "status": "JOB_STATE_RUNNING",
                    "sequence": 2,
                    "tuning_job_name": f"projects/p/locations/l/tuningJobs/{i}",
                    "progress_marker": "2026-11-22T00:00:00+00:00|0",
                    "created": now,
                    "queued_at": now,
                    "last_progress_at": now,
                },
            )
            if i % 400 == 399:
                batch.commit()
                batch = runtime.firestore.batch()
        batch.commit()

        seconds, reads = [], []
        for tick in range(args.ticks):
            calls_before = FakeVertex.calls
            started = time.perf_counter()
            summary = poll_tick(runtime, runtime.tuning)
            seconds.append(time.perf_counter() - started)
            reads.append(summary["firestore_reads"])
            print(
                f"tick {tick + 1}: {seconds[-1]:.2f} s, {summary['firestore_reads']} Firestore reads, "
                f"{FakeVertex.calls - calls_before} Vertex calls, {summary['transitions']} transitions"
            )
        print(
            f"{args.jobs} active jobs, poll_concurrency {runtime.settings.poll_concurrency}, "
            f"Vertex latency {args.latency_ms:.0f} ms: median {statistics.median(seconds):.2f} s per tick, "
            f"median {statistics.median(reads):.0f} Firestore reads per tick"
        )
    finally:
        stack.down()
        server.shutdown()


if __name__ == "__main__":
    main()

"""Evaluation speed: the completion's generation loop against a sequential loop, same run, same server.

    .venv/bin/python benchmarks/evaluation_speed.py [--examples 1000] [--latency-ms 200]
        [--concurrency 32] [--rpm 60000]

A small local HTTP server answers Vertex AI ``generateContent`` (base model and endpoint paths)
after sleeping ``--latency-ms``, as a remote model would. Both loops use the real google-genai
client over HTTP with the same client settings (``shared.tuning.client.make_client``):
- parallel: ``shared.evaluation.runner.generate_predictions`` (``client.aio``, a semaphore of
  ``--concurrency``, the RPM limiter), base and tuned per example, as the completion runs it;
- sequential: the notebooks' way, ``for example: client.models.generate_content(base);
  client.models.generate_content(tuned)``.
Prints both wall times and their ratio, and checks that both loops got every answer.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from local.tuning import sample
from shared.config import Settings
from shared.evaluation.runner import (
    GenerationOptions,
    TestExample,
    generate_predictions,
    parse_test_example,
    request_config,
    request_contents,
)
from shared.tuning.client import make_client

BASE_MODEL = "gemini-2.5-flash"
TUNED_ENDPOINT = "projects/bench/locations/us-central1/endpoints/1234"


class SlowGenerateContent(BaseHTTPRequestHandler):
    """POST .../{model}:generateContent -> a fixed answer after ``latency_s``."""

    latency_s = 0.2
    protocol_version = "HTTP/1.1"  # keep-alive, as Google's front ends do

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        json.loads(self.rfile.read(length) or b"{}")
        if not self.path.endswith(":generateContent"):
            self.send_error(404)
            return
        time.sleep(self.latency_s)
        body = json.dumps(
            {
                "candidates": [
                    {"content": {"role": "model", "parts": [{"text": "positive"}]}, "finishReason": "STOP"}
                ],
                "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 1, "totalTokenCount": 21},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def sequential(settings: Settings, examples: list[TestExample], options: GenerationOptions) -> int:
    """The notebooks' loop; returns how many calls got an answer."""
    client = make_client(settings)
    answered = 0
    for example in examples:
        for model in (BASE_MODEL, TUNED_ENDPOINT):
            response = client.models.generate_content(
                model=model, contents=request_contents(example), config=request_config(example, options)
            )
            answered += response.text is not None
    return answered


async def parallel(settings: Settings, examples: list[TestExample], options: GenerationOptions) -> int:
    client = make_client(settings)
    try:
        predictions = await generate_predictions(
            client, examples, base_model=BASE_MODEL, tuned_model=TUNED_ENDPOINT, options=options
        )
    finally:
        await client.aio.aclose()
    return sum(p.base_output is not None for p in predictions) + sum(
        p.tuned_output is not None for p in predictions
    )


def main() -> None:
    import asyncio

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rpm", type=int, default=60_000)
    args = parser.parse_args()

    SlowGenerateContent.latency_s = args.latency_ms / 1000
    # The default listen backlog (5) resets connections when 32 clients connect at once.
    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowGenerateContent)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = Settings(
        project="bench",
        location="us-central1",
        tuning_api_url=f"http://127.0.0.1:{server.server_address[1]}/",
        evaluation_concurrency=args.concurrency,
        evaluation_rpm=args.rpm,
    )
    options = GenerationOptions.from_settings(settings, BASE_MODEL)
    examples = [
        parse_test_example(json.dumps(record), index)
        for index, record in enumerate(sample.sentiment_records(args.examples, seed=5))
    ]
    calls = 2 * len(examples)

    started = time.perf_counter()
    parallel_answers = asyncio.run(parallel(settings, examples, options))
    parallel_s = time.perf_counter() - started

    started = time.perf_counter()
    sequential_answers = sequential(settings, examples, options)
    sequential_s = time.perf_counter() - started
    server.shutdown()

    assert parallel_answers == sequential_answers == calls, (parallel_answers, sequential_answers, calls)
    print(
        f"{len(examples):,} examples ({calls:,} generateContent calls, base + tuned), "
        f"{args.latency_ms:g} ms added latency per call"
    )
    print(f"parallel   (client.aio, concurrency {args.concurrency}, {args.rpm:,} rpm): {parallel_s:8.1f} s")
    print(f"sequential (the notebooks' loop):                      {sequential_s:8.1f} s")
    print(f"speed-up: {sequential_s / parallel_s:.1f}x")


if __name__ == "__main__":
    main()

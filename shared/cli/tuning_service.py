"""``sftpipe tuning-service`` and ``python -m local.tuning``: run the local tuning service.

It prints ``local tuning service ready on http://HOST:PORT ...`` once it accepts requests; from
then on ``GET /healthz`` answers 200. Models load lazily: the trainer process of each job loads
its own, and generation loads the base on first use (for smollm2 the one-off GGUF conversion to
the safetensors cache starts in the background at start-up, so it is usually done by then).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

#: The keys of models.LOCAL_MODELS, repeated here so that `sftpipe --help` need not import torch.
LOCAL_MODEL_NAMES = ("smollm2", "tiny")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument(
        "--model",
        choices=LOCAL_MODEL_NAMES,
        default="smollm2",
        help="local model that Gemini names map to",
    )
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="jobs, checkpoints and adapters; survive restarts"
    )
    parser.add_argument(
        "--max-concurrent-jobs", type=int, default=1, help="concurrent-job quota; over it: 429 (default 1)"
    )
    parser.add_argument(
        "--queue-over-quota",
        action="store_true",
        help="over the quota, accept a create and hold the job PENDING in TUNING_JOB_STATE_WAITING_FOR_QUOTA "
        "until a slot frees, instead of answering 429",
    )
    parser.add_argument("--project", default=None, help="serve only this project (default: any)")
    parser.add_argument("--location", default=None, help="serve only this location (default: any)")


def run(args: argparse.Namespace) -> int:
    # Heavy imports (torch, transformers) only when the service really starts.
    from transformers.utils import logging as transformers_logging
    from werkzeug.serving import make_server

    from local.tuning import models
    from local.tuning.generation import Generator
    from local.tuning.jobs import JobStore
    from local.tuning.server import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    transformers_logging.disable_progress_bar()
    models.configure_torch_threads(args.model)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(args.state_dir, args.model, args.max_concurrent_jobs, args.queue_over_quota)
    app = create_app(store, Generator(args.model), args.project, args.location)
    server = make_server(args.host, args.port, app, threaded=True)
    if args.model == "smollm2":
        threading.Thread(target=models.smollm2_dir, name="smollm2-cache", daemon=True).start()

    def stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("local.tuning").info("signal %d: stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"local tuning service ready on http://{args.host}:{server.server_port} "
        f"(model={args.model}, state-dir={args.state_dir}, max-concurrent-jobs={args.max_concurrent_jobs})",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        store.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.tuning", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

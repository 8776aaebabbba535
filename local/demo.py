"""``sftpipe demo``: the whole pipeline, locally, on the bundled sample dataset.

Starts the local stack, uploads ``local/samples/reviews.jsonl`` under ``incoming/`` as a person
would, follows what the pipeline records in Firestore, prints it, and stops the stack.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

SAMPLE = Path(__file__).parent / "samples" / "reviews.jsonl"
#: Seconds the demo waits for the pipeline to record the upload.
FOLLOW_TIMEOUT_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--file", type=Path, default=SAMPLE, help="dataset to upload (default: the bundled sample)"
    )
    parser.add_argument(
        "--run-dir", type=Path, default=Path(".sftpipe/demo"), help="where the demo stack lives"
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")


def run(args: argparse.Namespace) -> int:
    from google.cloud import firestore, storage
    from rich.console import Console

    from local.stack import Stack, StackError, StackOptions

    console = Console(stderr=True)
    stack = Stack(args.run_dir)
    try:
        with console.status("starting the local stack (emulators, fake-gcs-server, functions)"):
            env = stack.up(StackOptions(tick_interval_s=5.0), log=console.log)
    except StackError as exc:
        console.print(f"[red]the local stack did not start:[/red] {exc}")
        return 1
    os.environ.update(env)
    try:
        bucket = storage.Client(project=env["SFTPIPE_PROJECT"]).bucket(env["SFTPIPE_BUCKET"])
        blob = bucket.blob(f"incoming/{args.file.name}")
        blob.upload_from_filename(str(args.file))
        console.log(f"uploaded {args.file} to gs://{bucket.name}/{blob.name} (generation {blob.generation})")
        db = firestore.Client(project=env["SFTPIPE_PROJECT"])
        deadline = time.monotonic() + FOLLOW_TIMEOUT_S
        with console.status("waiting for the ingest function"):
            while time.monotonic() < deadline:
                docs = [d.to_dict() for d in db.collection("datasets").stream()]
                match = [d for d in docs if d.get("source_generation") == blob.generation]
                if match:
                    break
                time.sleep(0.5)
            else:
                console.print(
                    f"[red]no dataset recorded after {FOLLOW_TIMEOUT_S:.0f} s; see {stack.log_dir}[/red]"
                )
                return 1
        dataset = match[0]
        console.print(f"dataset [bold]{dataset['dataset_id']}[/bold]: status {dataset['status']}")
        console.print({k: v for k, v in dataset.items() if k not in ("created", "updated")})
        return 0
    finally:
        if not args.keep:
            stack.down()
            console.log("stack stopped")

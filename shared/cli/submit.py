"""``sftpipe submit FILE``: upload a dataset (or a manifest and its files) to start a run.

A data file goes to ``incoming/<file name>`` in the configured bucket, with the options as the
object's custom metadata (the keys :func:`shared.datasets.parse_object_metadata` reads). A
manifest (``*.tuning.json|yaml``) carries its own settings, so options are refused for it; each
file it names as an object name is uploaded from the same path under the manifest's local folder
when that file exists there (``datasets/reviews/train.jsonl`` next to the manifest), else it must
already be in the bucket; ``gs://`` names must already exist. The manifest is uploaded last, so
its event finds every file in place.

Contract: stdout has the dataset id on its first line (derived like the ingest function derives
it); with ``--wait``, a second line ``STATUS REPORT_URI`` once the dataset is READY or REJECTED.
Exit 0 on success (READY with ``--wait``), 1 when ``--wait`` sees REJECTED, 2 on usage or I/O
errors (nothing is uploaded for a usage error), 3 when ``--wait`` times out. Settings come from
the environment (``eval "$(sftpipe stack env)"`` for the local stack).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.runtime import Runtime

from shared.cli.output import EXIT_FAILED as EXIT_REJECTED
from shared.cli.output import EXIT_OK, EXIT_USAGE, emit, error, say
from shared.cli.validate import add_cleaning_options

EXIT_TIMEOUT = 3
#: Seconds between two reads of the dataset document with --wait.
WAIT_POLL_S = 1.0
SETTLED = ("READY", "REJECTED")


class SubmitError(Exception):
    """A usage or I/O error: printed, exit 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", help="dataset file (JSONL, JSON, CSV, TSV) or *.tuning.json|yaml"
    )
    parser.add_argument("--base-model", metavar="M", help="base model to tune (default: the deployment's)")
    parser.add_argument("--epochs", metavar="N", help="training epochs (default: recommended from the data)")
    parser.add_argument("--adapter-size", metavar="N", help="LoRA adapter size: 1, 2, 4, 8 or 16")
    parser.add_argument("--learning-rate-multiplier", metavar="X", help="learning-rate multiplier")
    parser.add_argument(
        "--task",
        metavar="T",
        help="evaluation task: classification, summarization, extractive_qa, generation (default: inferred)",
    )
    parser.add_argument(
        "--notify-email",
        action="append",
        default=[],
        metavar="ADDR",
        help="who is told the outcome (repeatable)",
    )
    parser.add_argument(
        "--map",
        metavar="ROLE=COLUMN,...",
        help="column mapping for CSV/TSV or flat JSON, e.g. input=q,output=a",
    )
    parser.add_argument(
        "--skip-invalid", action="store_true", help="skip invalid records instead of rejecting"
    )
    add_cleaning_options(parser)
    parser.add_argument("--wait", action="store_true", help="follow the dataset until READY or REJECTED")
    parser.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="seconds --wait waits (default: 600)"
    )


#: Custom-metadata key (as ``parse_object_metadata`` reads it) -> the option that sets it.
OPTION_OF_KEY: dict[str, str] = {
    "base-model": "--base-model",
    "epochs": "--epochs",
    "adapter-size": "--adapter-size",
    "learning-rate-multiplier": "--learning-rate-multiplier",
    "task": "--task",
    "notify-emails": "--notify-email",
    "column-mapping": "--map",
    "skip-invalid": "--skip-invalid",
    "dedupe": "--dedupe",
    "preference-mode": "--preference-mode",
}


def upload_metadata(args: argparse.Namespace) -> dict[str, str]:
    """The object's custom metadata for the options given, validated as ingest will read it."""
    from shared.datasets import UploadSettingsError, model_limits, parse_object_metadata

    values = {
        "base-model": args.base_model,
        "epochs": args.epochs,
        "adapter-size": args.adapter_size,
        "learning-rate-multiplier": args.learning_rate_multiplier,
        "task": args.task,
        "notify-emails": ",".join(args.notify_email),
        "column-mapping": args.map,
        "skip-invalid": "true" if args.skip_invalid else None,
        "dedupe": args.dedupe,
        "preference-mode": args.preference_mode,
    }
    metadata = {key: str(value) for key, value in values.items() if value}
    try:
        upload = parse_object_metadata(metadata)
    except UploadSettingsError as exc:
        key = (exc.field or "").split(".", 1)[0]
        raise SubmitError(f"{OPTION_OF_KEY.get(key, key)}: {exc.message}") from exc
    if upload.base_model:
        model_limits(upload.base_model)  # raises ConfigurationError naming the known models
    return metadata


def run(args: argparse.Namespace) -> int:
    from google.api_core.exceptions import GoogleAPIError

    from shared.datasets import UploadSettingsError, is_manifest
    from shared.errors import ConfigurationError
    from shared.runtime import Runtime

    path = Path(args.file)
    try:
        if not path.is_file():
            raise SubmitError(f"{path} is not a file")
        runtime = Runtime()
        if is_manifest(path.name):
            if upload_metadata(args):
                raise SubmitError(
                    "a manifest carries its own settings: put them in the manifest, not in options"
                )
            dataset_id = _submit_manifest(path, runtime)
        else:
            dataset_id = _upload(
                runtime, path, f"{runtime.settings.incoming_prefix}{path.name}", upload_metadata(args)
            )
    except UploadSettingsError as exc:  # the manifest's; options' errors are SubmitErrors already
        return _fail(f"{path}: {exc.message}")
    except ConfigurationError as exc:
        return _fail(f"--base-model: {exc.message}")
    except (SubmitError, OSError, GoogleAPIError) as exc:
        return _fail(str(exc))
    emit(dataset_id)
    if not args.wait:
        return EXIT_OK
    try:
        return _wait(runtime, dataset_id, args.timeout)
    except GoogleAPIError as exc:
        return _fail(str(exc))


def _submit_manifest(manifest_path: Path, runtime: Runtime) -> str:
    """Upload the files the manifest names that are next to it, check the others exist, then it."""
    from shared.datasets import load_manifest

    settings = runtime.settings
    manifest = load_manifest(manifest_path.read_bytes(), manifest_path.name)
    pending: list[tuple[Path, str]] = []
    for role, name in manifest.files().items():
        if name.startswith("gs://"):
            bucket_name, _, object_name = name.removeprefix("gs://").partition("/")
        else:
            bucket_name, object_name = settings.bucket, name
        if bucket_name == settings.bucket and object_name.startswith(settings.incoming_prefix):
            raise SubmitError(
                f"{role}: {name} is under {settings.incoming_prefix}; keep a manifest's files outside it"
            )
        local = manifest_path.parent / name
        if not name.startswith("gs://") and local.is_file():
            pending.append((local, object_name))
        elif not runtime.storage.bucket(bucket_name).blob(object_name).exists():
            raise SubmitError(
                f"{role}: {name} is neither a file at {local} nor an object in gs://{bucket_name}"
            )
    for local, object_name in pending:
        _upload(runtime, local, object_name, {})
        say(f"uploaded {local} to gs://{settings.bucket}/{object_name}")
    return _upload(runtime, manifest_path, f"{settings.incoming_prefix}{manifest_path.name}", {})


def _upload(runtime: Runtime, path: Path, object_name: str, metadata: dict[str, str]) -> str:
    """Upload one file; returns the id of the dataset this generation of the object becomes."""
    from shared.events import StorageObject

    blob = runtime.storage.bucket(runtime.settings.bucket).blob(object_name)
    blob.metadata = metadata or None
    blob.upload_from_filename(str(path))
    uploaded = StorageObject(bucket=runtime.settings.bucket, name=object_name, generation=blob.generation)
    return uploaded.dataset_id


def _wait(runtime: Runtime, dataset_id: str, timeout_s: float) -> int:
    document = runtime.firestore.collection(runtime.settings.datasets_collection).document(dataset_id)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dataset = document.get().to_dict() or {}
        status = dataset.get("status")
        if status in SETTLED:
            emit(f"{status} {dataset.get('report_uri', '')}")
            return EXIT_OK if status == "READY" else EXIT_REJECTED
        time.sleep(WAIT_POLL_S)
    say(f"sftpipe submit: {dataset_id} did not settle within {timeout_s:.0f} s")
    return EXIT_TIMEOUT


def _fail(message: str) -> int:
    error("submit", message)
    return EXIT_USAGE

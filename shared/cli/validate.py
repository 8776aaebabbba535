"""``sftpipe validate PATH``: check a dataset file and convert it to Gemini tuning JSONL.

Contract (other tools rely on it): exit 0 when the file is valid (warnings allowed), 1 when it is
invalid, 2 on usage or I/O errors. ``--json`` prints exactly one JSON object on stdout (the
PrepareResult, or ``{"ok": false, "usage_error": ...}`` for exit 2). ``--out DIR`` writes
train.jsonl, validation.jsonl, test.jsonl (only when valid) and report.json, report.md (always).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.cli.output import EXIT_FAILED as EXIT_INVALID
from shared.cli.output import EXIT_OK as EXIT_VALID
from shared.cli.output import EXIT_USAGE, console, emit_json, error

#: Files at least this large get a progress bar.
PROGRESS_MIN_BYTES = 16 * 1024 * 1024
SPLITS = ("train", "validation", "test")


def add_cleaning_options(parser: argparse.ArgumentParser) -> None:
    """The options of what is kept from a file, the same for ``validate`` and ``submit``."""
    parser.add_argument(
        "--dedupe",
        choices=["near", "exact"],
        help="drop near duplicates too (near, the default) or exact duplicates only (exact)",
    )
    parser.add_argument(
        "--preference-mode",
        choices=["reject", "chosen"],
        help="preference or KTO data: reject the file (reject, the default) or tune on the preferred "
        "answers only, dropping rejected and label-false ones (chosen)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="JSONL, JSON, CSV or TSV file to validate")
    parser.add_argument("--base-model", metavar="M", help="base model whose limits apply (default: settings)")
    parser.add_argument(
        "--adapter-size",
        type=int,
        metavar="N",
        help="LoRA adapter size, checked against the base model's sizes (default: settings, else recommended)",
    )
    parser.add_argument(
        "--task",
        metavar="T",
        choices=["classification", "summarization", "extractive_qa", "generation"],
        help="evaluation task (default: inferred from the data)",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="write train/validation/test.jsonl and report.json/.md here"
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    parser.add_argument(
        "--skip-invalid", action="store_true", help="skip invalid records instead of rejecting"
    )
    parser.add_argument(
        "--map",
        metavar="ROLE=COLUMN,...",
        help="explicit column mapping for CSV/TSV or flat JSON, e.g. input=question,output=answer,context=passage",
    )
    add_cleaning_options(parser)
    parser.add_argument("--split-seed", type=int, metavar="N", help="seed of the train/validation/test split")
    parser.add_argument(
        "--tokens",
        choices=["auto", "exact", "estimate"],
        help="token counting method (default: settings, auto)",
    )


def _usage_error(args: argparse.Namespace, message: str) -> int:
    if args.json:
        emit_json({"ok": False, "usage_error": message})
    error("validate", message)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    import orjson

    from shared.config import Settings
    from shared.datasets import PrepareOptions, UploadSettings, model_limits, prepare_and_write, render_report
    from shared.datasets.options import ColumnMapping
    from shared.errors import PipelineError

    path = Path(args.path)
    try:
        settings = Settings()
        mapping = ColumnMapping.parse(args.map) if args.map else None
        upload = UploadSettings(
            base_model=args.base_model,
            adapter_size=args.adapter_size,
            task=args.task,
            column_mapping=mapping,
            skip_invalid=True if args.skip_invalid else None,
            dedupe=args.dedupe,
            preference_mode=args.preference_mode,
        )
        overrides: dict[str, object] = {}
        if args.split_seed is not None:
            overrides["split_seed"] = args.split_seed
        if args.tokens:
            overrides["token_counting"] = args.tokens
        options = PrepareOptions.from_settings(settings, upload, **overrides)
        model_limits(options.base_model)
        size = path.stat().st_size
        if not path.is_file():
            return _usage_error(args, f"{path} is not a file")
    except (PipelineError, ValueError) as exc:
        return _usage_error(args, str(exc))
    except OSError as exc:
        return _usage_error(args, f"cannot read {path}: {exc.strerror or exc}")

    out_dir = Path(args.out) if args.out else None
    writers: dict[str, object] = {}

    def sink(split: str, line: bytes) -> None:
        writers[split].write(line)  # type: ignore[attr-defined]

    def open_outputs() -> None:
        assert out_dir is not None
        for split in SPLITS:
            writers[split] = (out_dir / f"{split}.jsonl").open("wb")

    progress_bar = None
    progress_cb = None
    if not args.json and size >= PROGRESS_MIN_BYTES and sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        progress_bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        task_id = progress_bar.add_task(f"validating {path.name}", total=size)

        def progress_cb(done: int) -> None:
            progress_bar.update(task_id, completed=done)

    try:
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        opened = 0

        def open_stream():
            nonlocal opened
            opened += 1
            if opened == 2 and out_dir is not None:
                open_outputs()
            return path.open("rb")

        if progress_bar is not None:
            progress_bar.start()
        try:
            result = prepare_and_write(
                open_stream,
                filename=path.name,
                size=size,
                options=options,
                sink=sink if out_dir is not None else (lambda split, line: None),
                progress=progress_cb,
            )
        finally:
            if progress_bar is not None:
                progress_bar.stop()
            for writer in writers.values():
                writer.close()  # type: ignore[attr-defined]
        report_json = orjson.dumps(result.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
        if out_dir is not None:
            (out_dir / "report.json").write_bytes(report_json + b"\n")
            (out_dir / "report.md").write_text(render_report(result), encoding="utf-8")
    except OSError as exc:
        return _usage_error(args, f"I/O error: {exc}")
    except PipelineError as exc:
        return _usage_error(args, exc.message)

    if args.json:
        emit_json(result.model_dump(mode="json"))
    else:
        from rich.markdown import Markdown

        out_console = console()
        out_console.print(Markdown(render_report(result)))
        if out_dir is not None and result.ok:
            out_console.print(
                f"Wrote {', '.join(f'{s}.jsonl' for s in SPLITS)} and report.json/.md to {out_dir}"
            )
    return EXIT_VALID if result.ok else EXIT_INVALID

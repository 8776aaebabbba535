"""``sftpipe``: the command-line tool (validate, the local stack, operator commands).

Each command lives in the module that owns its logic; this file only wires argparse to them, and
imports only the module of the command being run (the tuning service's pulls in torch), so that
``sftpipe --help`` and ``sftpipe stack up`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

# command name -> (target, help). A target "module" defines `add_arguments(parser)` and
# `run(args) -> int`; "module:name" defines `add_name_arguments(parser)` and `run_name(args)`.
COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("local.stack_cli", "start, stop and inspect the local stack of real services"),
    "validate": ("shared.datasets.cli", "validate a dataset file and convert it to Gemini tuning JSONL"),
    "submit": ("shared.submit_cli", "upload a dataset file (or a manifest and its files) to start a run"),
    "tuning-service": (
        "local.tuning.cli",
        "run the local Vertex-compatible tuning service (LoRA on a small model)",
    ),
    "status": ("shared.tuning.ops_cli:status", "show tuning jobs: state, base model, dataset, age, endpoint"),
    "cancel": ("shared.tuning.ops_cli:cancel", "cancel a tuning job"),
    "report": ("shared.tuning.ops_cli:report", "show a job's evaluation: metric table, report path"),
    "logs": ("local.stack_cli:logs", "print the local functions' logs"),
    "demo": ("local.demo", "run the whole pipeline locally on the bundled sample dataset"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the full arguments of ``command`` (all commands when None)."""
    parser = argparse.ArgumentParser(
        prog="sftpipe",
        description="Fine-tune Gemini models from a dataset dropped in a bucket.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (target, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_target=target)
        if command is None or name == command:
            _entry(target, "add_arguments")(sub)
    return parser


def _entry(target: str, kind: str) -> Callable[..., Any]:
    module_name, _, name = target.partition(":")
    module = importlib.import_module(module_name)
    if not name:
        return getattr(module, kind)
    return getattr(module, f"add_{name}_arguments" if kind == "add_arguments" else f"run_{name}")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in arguments if not a.startswith("-")), "")
    parser = build_parser(command if command in COMMANDS else "")
    args = parser.parse_args(arguments)
    return int(_entry(args._target, "run")(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

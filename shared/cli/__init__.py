"""``sftpipe``: the command-line tool. Every command lives in this package, one module per group:

- ``validate``: check and convert a dataset file (``shared.cli.validate``);
- ``submit``: upload a dataset or manifest to start a run (``shared.cli.submit``);
- ``status``, ``cancel``, ``report``: operator commands on jobs (``shared.cli.jobs``);
- ``stack``, ``logs``: the local stack of real services (``shared.cli.stack``);
- ``demo``: the whole pipeline locally on the bundled sample (``shared.cli.demo``);
- ``tuning-service``: the local Vertex-compatible tuning service (``shared.cli.tuning_service``).

What they print and where (data on stdout, messages on stderr) is ``shared.cli.output``. The
commands hold no pipeline logic: they parse arguments and call ``shared`` (or ``local`` for the
local stack). This file only wires argparse to them, and imports only the module of the command
being run (the tuning service's pulls in torch), so that ``sftpipe --help`` stays fast.
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
    "stack": ("shared.cli.stack", "start, stop and inspect the local stack of real services"),
    "validate": ("shared.cli.validate", "validate a dataset file and convert it to Gemini tuning JSONL"),
    "submit": ("shared.cli.submit", "upload a dataset file (or a manifest and its files) to start a run"),
    "tuning-service": (
        "shared.cli.tuning_service",
        "run the local Vertex-compatible tuning service (LoRA on a small model)",
    ),
    "status": ("shared.cli.jobs:status", "show tuning jobs: state, base model, dataset, age, endpoint"),
    "cancel": ("shared.cli.jobs:cancel", "cancel a tuning job"),
    "report": ("shared.cli.jobs:report", "show a job's evaluation: metric table, report path"),
    "logs": ("shared.cli.stack:logs", "print the local functions' logs"),
    "demo": ("shared.cli.demo", "run the whole pipeline locally on the bundled sample dataset"),
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

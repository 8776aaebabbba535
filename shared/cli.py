"""``sftpipe``: the command-line tool (validate, the local stack, operator commands).

Each command lives in the module that owns its logic; this file only wires argparse to them, and
imports each module lazily so that ``sftpipe --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command name -> (module, help). The module defines `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("local.stack_cli", "start, stop and inspect the local stack of real services"),
    "validate": ("shared.datasets.cli", "validate a dataset file and convert it to Gemini tuning JSONL"),
    "tuning-service": ("local.tuning.cli", "run the local Vertex-compatible tuning service (LoRA on a small model)"),
    "demo": ("local.demo", "run the whole pipeline locally on the bundled sample dataset"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sftpipe",
        description="Fine-tune Gemini models from a dataset dropped in a bucket.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

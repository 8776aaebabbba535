"""What every ``sftpipe`` command prints, and where.

The rule the commands share: stdout carries data that other tools read (a dataset id, one JSON
object, export lines), stderr carries messages for the person at the terminal. Errors read
``sftpipe COMMAND: error: MESSAGE``. rich is imported only when a command renders something, so
that ``sftpipe --help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

#: Exit codes every command uses for the same things (commands add their own above 2).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def say(text: str) -> None:
    """A message for the person (stderr), so that stdout stays data."""
    print(text, file=sys.stderr, flush=True)


def error(command: str, message: str) -> None:
    """``sftpipe COMMAND: error: MESSAGE`` on stderr."""
    say(f"sftpipe {command}: error: {message}")


def emit(line: str) -> None:
    """One line of data on stdout, flushed (a caller may be reading it while we wait)."""
    print(line, flush=True)


def emit_json(value: Any) -> None:
    """Exactly one JSON object on one line of stdout."""
    import orjson

    sys.stdout.buffer.write(orjson.dumps(value) + b"\n")
    sys.stdout.flush()


def console(*, stderr: bool = False) -> Console:
    """A rich console (stdout by default; ``stderr=True`` for live progress next to data)."""
    from rich.console import Console

    return Console(stderr=stderr)


def metric_table(summary: dict[str, Any]) -> Table:
    """The metric table of a summary.json, base versus tuned (``*`` marks the primary metric, ``✱``
    a delta whose interval excludes zero); the verdict and its reason are the title and caption."""
    from rich.table import Table

    verdict = str(summary["verdict"]).replace("_", " ")
    title = f"{summary['task']}: base {summary['base_model']} vs tuned ({verdict})"
    caption = summary.get("verdict_reason") or ""
    if summary.get("served_locally_by"):
        # No local figure may pass for a Gemini one.
        caption = f"{caption}\nserved locally by {summary['served_locally_by']}, not Gemini".strip()
    # The title on one line, not wrapped; the reason (intervals, examples needed) below the table.
    table = Table(title=title, caption=caption or None, min_width=len(title) + 4)
    for column in ("metric", "base", "tuned", "delta", "delta 95% CI"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric in summary["metrics"]:
        name = metric["name"] + (" *" if metric.get("primary") else "")
        interval = metric.get("delta_ci")
        shown = f"[{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""
        table.add_row(
            name,
            f"{metric['base']:.3f}",
            f"{metric['tuned']:.3f}",
            f"{metric['delta']:+.3f}",
            shown + (" ✱" if metric.get("significant") else ""),
        )
    return table

"""``sftpipe stack up | down | status | env`` and ``sftpipe logs``: the local stack of real services.

The stack itself is ``local.stack``, imported only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path

from shared.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, emit, emit_json, say

DEFAULT_RUN_DIR = ".sftpipe/stack"


def default_run_dir() -> Path:
    return Path(os.environ.get("SFTPIPE_RUN_DIR") or DEFAULT_RUN_DIR)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help=f"where the stack keeps its state and logs (default: $SFTPIPE_RUN_DIR or {DEFAULT_RUN_DIR})",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser(
        "up", parents=[common], help="start the emulators, fake-gcs-server, the functions and the ticker"
    )
    up.add_argument("--project", default="local-project", help="project id used by every service")
    up.add_argument("--bucket", default="sftpipe-local", help="bucket that receives uploads")
    up.add_argument("--tick-interval", type=float, default=10.0, help="seconds between poll ticks")
    up.add_argument(
        "--model",
        choices=["tiny", "smollm2", "none"],
        default="tiny",
        help="model of the local tuning service: tiny (fast, learns nothing useful), smollm2 (real), none",
    )
    up.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra SFTPIPE_* setting for the functions, e.g. --set SFTPIPE_MAX_CONCURRENT_JOBS=2",
    )
    actions.add_parser("down", parents=[common], help="stop exactly what `up` started")
    status = actions.add_parser("status", parents=[common], help="show the stack's processes")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    env = actions.add_parser("env", parents=[common], help="print the stack's environment as export lines")
    env.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from local.services import ServiceUnavailableError
    from local.stack import Stack, StackError, StackOptions

    stack = Stack(args.run_dir or default_run_dir())
    try:
        if args.action == "up":
            function_env = dict(_parse_setting(item) for item in args.set)
            options = StackOptions(
                project=args.project,
                bucket=args.bucket,
                tick_interval_s=args.tick_interval,
                model=None if args.model == "none" else args.model,
                function_env=function_env,
            )
            env = stack.up(options, log=say)
            say(f'run `eval "$(sftpipe stack env --run-dir {shlex.quote(str(stack.run_dir))})"` to use it')
            return EXIT_OK if env else EXIT_FAILED
        if args.action == "down":
            stopped = stack.down()
            say(f"stopped {len(stopped)} processes" if stopped else "nothing was running")
            return EXIT_OK
        if args.action == "status":
            status = stack.status()
            if args.json:
                emit_json(status)
            else:
                say(f"stack in {status['run_dir']}: {'running' if status['running'] else 'not running'}")
                for name, process in status["processes"].items():
                    state = "alive" if process["alive"] else "dead"
                    emit(f"{name:12} pid {process['pid']:>7}  {state:5}  {process['log']}")
            return EXIT_OK if status["running"] else 3
        if args.action == "env":
            env = stack.env()
            summary = _env_summary(env)
            if args.json:
                emit_json(summary)
            else:
                for key, value in env.items():
                    emit(f"export {key}={shlex.quote(value)}")
            return EXIT_OK
    except (StackError, ServiceUnavailableError) as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    return EXIT_USAGE


def _parse_setting(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name.startswith("SFTPIPE_"):
        raise SystemExit(f"--set expects SFTPIPE_NAME=VALUE, got {item!r}")
    return name, value


def _env_summary(env: dict[str, str]) -> dict[str, str]:
    """The stable JSON contract of `stack env --json` (other tools rely on these keys)."""
    return {
        "project": env["SFTPIPE_PROJECT"],
        "bucket": env["SFTPIPE_BUCKET"],
        "pubsub_emulator_host": env["PUBSUB_EMULATOR_HOST"],
        "firestore_emulator_host": env["FIRESTORE_EMULATOR_HOST"],
        "storage_emulator_host": env["STORAGE_EMULATOR_HOST"],
        "tuning_api_url": env.get("SFTPIPE_TUNING_API_URL", ""),
        "run_dir": env["SFTPIPE_RUN_DIR"],
        "mail_dir": env["SFTPIPE_MAIL_DIR"],
        "slack_dir": env["SFTPIPE_SLACK_DIR"],
        "env": env,
    }


#: Lines of each log `sftpipe logs` prints by default.
LOG_LINES = 20


def add_logs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names", nargs="*", help="processes (default: the four functions), e.g. ingest tuning"
    )
    parser.add_argument("--run-dir", type=Path, default=None, help="the stack's run dir")
    parser.add_argument("-n", "--lines", type=int, default=LOG_LINES, help="last lines of each log")
    parser.add_argument("--raw", action="store_true", help="print the JSON lines as they are")


def run_logs(args: argparse.Namespace) -> int:
    log_dir = (args.run_dir or default_run_dir()) / "logs"
    names = args.names or ["ingest", "tuner", "poller", "completion"]
    status = EXIT_OK
    for name in names:
        path = log_dir / f"{name}.log"
        if not path.exists():
            say(f"error: no log {path}")
            status = EXIT_FAILED
            continue
        lines = path.read_text(errors="replace").splitlines()[-args.lines :]
        emit(f"== {name} ({path})")
        for line in lines:
            emit(line if args.raw else _pretty(line))
    return status


def _pretty(line: str) -> str:
    """One JSON log line as `time severity message ids`; other lines as they are."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict) or "message" not in entry:
        return line
    ids = " ".join(f"{key}={entry[key]}" for key in ("dataset_id", "job_id", "event_id") if key in entry)
    return f"{entry.get('time', '')[11:19]} {entry.get('severity', ''):7} {entry['message']} {ids}".rstrip()

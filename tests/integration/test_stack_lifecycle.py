"""`sftpipe stack up` / `down` leave nothing behind, and `up` recovers from a killed `up`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local.services import listening_ports, port_open
from local.stack import Stack, StackOptions, _marked_processes, _start_ticks

SFTPIPE = [sys.executable, "-m", "shared.cli"]
REPO = Path(__file__).resolve().parents[2]


def _alive_pids(state: dict) -> list[int]:
    return [p["pid"] for p in state["processes"] if _start_ticks(p["pid"]) == p["start_ticks"]]


def _leftovers(state: dict, run_dir: Path) -> tuple[list[int], dict[str, int]]:
    """Live processes of the stack (recorded, or carrying its mark) and its listening ports."""
    listening = listening_ports()
    ports = {name: port for name, port in state["ports"].items() if port in listening}
    pids = sorted({*_alive_pids(state), *_marked_processes(str(run_dir.resolve()))})
    return pids, ports


def _stack(action: str, run_dir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`sftpipe stack ACTION --run-dir RUN_DIR`, as a person runs it."""
    argv = [*SFTPIPE, "stack", action, "--run-dir", str(run_dir), *options]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow(30)
def test_up_then_down_leaves_no_process_and_no_listening_port(tmp_path: Path) -> None:
    run_dir = tmp_path / "stack"
    up = _stack("up", run_dir)
    assert up.returncode == 0, up.stderr
    state = json.loads((run_dir / "state.json").read_text())
    env = json.loads(_stack("env", run_dir, "--json").stdout)
    assert {
        "project",
        "bucket",
        "pubsub_emulator_host",
        "firestore_emulator_host",
        "storage_emulator_host",
        "tuning_api_url",
        "run_dir",
        "mail_dir",
        "slack_dir",
    } <= set(env)
    names = {p["name"] for p in state["processes"]}
    assert names == {
        *("pubsub", "firestore", "gcs", "ingest", "tuner", "poller", "completion", "ticker"),
        *("tuning", "mailsink", "slacksink"),
    }
    assert len(_alive_pids(state)) == len(names)

    down = _stack("down", run_dir)

    assert down.returncode == 0, down.stderr
    assert _leftovers(state, run_dir) == ([], {})
    assert not (run_dir / "state.json").exists()


@pytest.mark.slow(30)
def test_up_after_a_killed_up_starts_a_clean_stack(tmp_path: Path) -> None:
    run_dir = tmp_path / "stack"
    crashed = subprocess.Popen(
        [*SFTPIPE, "stack", "up", "--run-dir", str(run_dir)], cwd=REPO, stderr=subprocess.DEVNULL
    )
    state_path = run_dir / "state.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # kill it half-way: after the emulators were spawned
        if state_path.exists() and len(json.loads(state_path.read_text()).get("processes", [])) >= 3:
            break
        time.sleep(0.05)
    os.kill(crashed.pid, signal.SIGKILL)
    crashed.wait()
    orphaned = json.loads(state_path.read_text())
    assert not orphaned["ready"]

    stack = Stack(run_dir)
    env = stack.up(StackOptions())
    try:
        assert _alive_pids(orphaned) == []  # what the killed `up` left was stopped first
        assert stack.status()["running"]
        assert port_open(int(env["PUBSUB_EMULATOR_HOST"].rsplit(":", 1)[1]))
    finally:
        state = stack.read_state()
        stack.down()
    assert _leftovers(state, run_dir) == ([], {})


@pytest.mark.slow(27)
def test_up_on_a_healthy_stack_is_a_no_op(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack")
    first = stack.up(StackOptions())
    try:
        pids = _alive_pids(stack.read_state())
        again = stack.up(StackOptions())
        assert again == first
        assert _alive_pids(stack.read_state()) == pids
    finally:
        stack.down()

"""`sftpipe validate`: the command-line contract other tools rely on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REALWORLD, check_accepted_cli_output, gemini, jsonl, requires_realworld

from shared.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["validate", *argv])
    return code, capsys.readouterr().out


# The three tests on the public samples are mirrored on our own fixtures in
# test_datasets_shapes_in_repo.py (the test_cli_* tests there), which a lone clone runs.
@requires_realworld
def test_valid_file_exits_0_and_writes_gemini_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, stdout = run_cli(
        capsys, str(REALWORLD / "sambanova_example_generative_tuning_data.jsonl"), "--json", "--out", str(out)
    )
    check_accepted_cli_output(code, stdout, out, examples=100)


@requires_realworld
def test_invalid_file_exits_1_and_writes_no_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, stdout = run_cli(
        capsys, str(REALWORLD / "openai_cookbook_toy_chat_fine_tuning.jsonl"), "--json", "--out", str(out)
    )
    assert code == 1
    body = json.loads(stdout)
    assert body["ok"] is False
    assert body["errors"] == [
        {
            "line": 4,
            "field": "messages",
            "code": "example_missing_user_message",
            "message": "the example has no user turn",
        }
    ]
    assert not (out / "train.jsonl").exists()
    assert (out / "report.md").exists()


@requires_realworld
def test_skip_invalid_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout = run_cli(
        capsys, str(REALWORLD / "openai_cookbook_toy_chat_fine_tuning.jsonl"), "--json", "--skip-invalid"
    )
    assert code == 0
    assert json.loads(stdout)["rejected"] == 1


def test_usage_and_io_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout = run_cli(capsys, str(tmp_path / "missing.jsonl"), "--json")
    assert code == 2
    assert json.loads(stdout)["ok"] is False
    data = tmp_path / "d.jsonl"
    data.write_bytes(jsonl(gemini("a", "b")))
    code, _ = run_cli(capsys, str(data), "--base-model", "gemini-9")
    assert code == 2
    with pytest.raises(SystemExit) as caught:
        main(["validate", str(data), "--task", "dancing"])
    assert caught.value.code == 2


def test_readable_summary_and_explicit_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.csv"
    data.write_text("q,a\nwhat?,that\n")
    code, stdout = run_cli(capsys, str(data), "--map", "input=q,output=a", "--task", "generation")
    assert code == 0
    assert "ACCEPTED" in stdout
    assert "Tokens per example" in stdout


def test_adapter_size_is_checked_against_the_base_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_bytes(jsonl(*(gemini(f"q{i}", f"a{i}") for i in range(20))))
    code, stdout = run_cli(
        capsys, str(data), "--base-model", "gemini-2.5-pro", "--adapter-size", "16", "--json"
    )
    assert code == 2
    message = json.loads(stdout)["usage_error"]
    assert "adapter_size" in message
    assert "1, 2, 4, 8" in message
    code, stdout = run_cli(
        capsys, str(data), "--base-model", "gemini-2.5-pro", "--adapter-size", "8", "--json"
    )
    assert code == 0
    assert json.loads(stdout)["hyperparameters"]["adapter_size"] == 8
    # The deployment's default is held to the same rule.
    monkeypatch.setenv("SFTPIPE_ADAPTER_SIZE", "16")
    code, stdout = run_cli(capsys, str(data), "--base-model", "gemini-2.5-pro", "--json")
    assert code == 2
    assert "SFTPIPE_ADAPTER_SIZE" in json.loads(stdout)["usage_error"]

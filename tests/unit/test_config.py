from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _env_name(name: str) -> str:
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, str):
        return alias
    return f"SFTPIPE_{name.upper()}"


def test_every_setting_is_documented_in_the_readme_table() -> None:
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", README.read_text(), flags=re.MULTILINE))
    expected = {_env_name(name) for name in Settings.model_fields}

    assert expected - documented == set(), "settings missing from README's table"
    assert documented - expected - {"GOOGLE_CLOUD_PROJECT", "SFTPIPE_RUN_DIR"} == set(), (
        "README documents unknown settings"
    )


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "prod-project")
    monkeypatch.setenv("SFTPIPE_MAX_CONCURRENT_JOBS", "3")
    monkeypatch.setenv("SFTPIPE_MAIL_TO", "a@example.com, b@example.com")
    monkeypatch.setenv("SFTPIPE_INCOMING_PREFIX", "uploads")
    monkeypatch.setenv("SFTPIPE_TRAINING_PRICE_PER_M_TOKENS", '{"gemini-2.5-flash": 4.5}')
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085")

    settings = Settings()

    assert settings.project == "prod-project"
    assert settings.max_concurrent_jobs == 3
    assert settings.mail_to == ["a@example.com", "b@example.com"]
    assert settings.incoming_prefix == "uploads/"
    assert settings.training_price_per_m_tokens == {"gemini-2.5-flash": 4.5}
    assert settings.pubsub_emulator_host == "127.0.0.1:8085"
    assert settings.uses_emulators


def test_invalid_settings_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFTPIPE_MAX_CONCURRENT_JOBS", "0")

    with pytest.raises(ValueError, match="max_concurrent_jobs"):
        Settings()

"""Unit tests see the code's defaults, not the environment of a stack another test started.

The integration tests' session stack exports SFTPIPE_* and the emulator hosts into this process
for as long as it runs; unit tests that read settings must not depend on the order tests ran in.
"""

from __future__ import annotations

import os

import pytest

from shared.config import Settings

_ALIASES = {f.validation_alias for f in Settings.model_fields.values() if isinstance(f.validation_alias, str)}


@pytest.fixture(autouse=True)
def _settings_from_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SFTPIPE_") or name in _ALIASES or name == "GOOGLE_CLOUD_PROJECT":
            monkeypatch.delenv(name)

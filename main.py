"""Entry points for Cloud Functions, which deploys the repository root as source.

Each target is a thin adapter in functions/; all logic lives in shared/. Every deployed function
loads this file, so each target is imported only when functions-framework asks for it: the
ingest function's cold start does not pay for the tuner's or completion's imports.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["completion", "ingest", "poller", "tuner"]  # noqa: F822 - provided by __getattr__


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'main' has no attribute {name!r}")
    function = getattr(importlib.import_module(f"functions.{name}"), name)
    globals()[name] = function
    return function

"""The google-genai client, configured once for Vertex AI or for the local tuning service.

- Vertex mode always (``vertexai=True``): project and location from settings.
- ``SFTPIPE_TUNING_API_URL`` set: the same client talks to a Vertex-compatible server (the local
  tuning service) with a static bearer token (google-genai rejects anonymous credentials).
- Retries: the SDK retries nothing unless asked; we ask for 408, 5xx and, except where a 429
  must be seen at once (a submission over quota is queued, not retried), 429. A create opts out
  per request: it is never retried blindly (``shared.tuning.submit``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.budgets import (
    READ_RETRY_ATTEMPTS,
    RETRY_INITIAL_DELAY_S,
    RETRY_MAX_DELAY_S,
)
from shared.config import Settings

if TYPE_CHECKING:
    from google import genai
    from google.genai import types

#: Retryable HTTP statuses of tuning reads; the create opts out of every retry per request
#: (``shared.tuning.submit``). The numbers live in ``shared.budgets``.
RETRYABLE = (408, 500, 502, 503, 504)


def make_client(
    settings: Settings, *, retry_quota_errors: bool = True, timeout_s: float | None = None
) -> genai.Client:
    """``timeout_s``: per HTTP attempt (None: the SDK's, unbounded); the tuner and poller pass
    ``TUNING_CALL_TIMEOUT_S``, evaluation sets its own per request."""
    from google import genai
    from google.genai import types

    codes = [*RETRYABLE, 429] if retry_quota_errors else list(RETRYABLE)
    http_options = types.HttpOptions(
        api_version="v1",
        timeout=int(timeout_s * 1000) if timeout_s is not None else None,
        retry_options=types.HttpRetryOptions(
            attempts=READ_RETRY_ATTEMPTS,
            initial_delay=RETRY_INITIAL_DELAY_S,
            max_delay=RETRY_MAX_DELAY_S,
            http_status_codes=codes,
        ),
    )
    if not settings.tuning_api_url:
        return genai.Client(
            vertexai=True, project=settings.project, location=settings.location, http_options=http_options
        )
    import google.oauth2.credentials

    http_options.base_url = settings.tuning_api_url
    return genai.Client(
        vertexai=True,
        project=settings.project,
        location=settings.location,
        credentials=google.oauth2.credentials.Credentials(token=settings.tuning_api_token),
        http_options=http_options,
    )


def generation_config(
    *,
    system_instruction: types.Content | None,
    temperature: float,
    max_output_tokens: int,
    thinking_budget: int | None,
) -> types.GenerateContentConfig:
    """Generation settings for evaluation; ``thinking_budget`` 0 for tuned thinking models."""
    from google.genai import types

    return types.GenerateContentConfig(
        system_instruction=system_instruction,
        temperature=temperature,
        max_output_tokens=max_output_tokens,
        thinking_config=types.ThinkingConfig(thinking_budget=thinking_budget)
        if thinking_budget is not None
        else None,
    )

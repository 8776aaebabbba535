"""The google-genai client, configured once for Vertex AI or for the local tuning service.

- Vertex mode always (``vertexai=True``): project and location from settings.
- ``SFTPIPE_TUNING_API_URL`` set: the same client talks to a Vertex-compatible server (the local
  tuning service) with a static bearer token (google-genai rejects anonymous credentials).
- Retries: the SDK retries nothing unless asked; we ask for 408, 5xx and, except where a 429
  must be seen at once (a submission over quota is queued, not retried), 429.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.config import Settings

if TYPE_CHECKING:
    from google import genai
    from google.genai import types

#: Attempts (first call included) for retryable HTTP statuses, with the SDK's exponential backoff.
RETRY_ATTEMPTS = 5
RETRYABLE = (408, 500, 502, 503, 504)
#: Backoff between attempts: the SDK's exponential delays 1, 2, 4, 8 s (each with up to 1 s of
#: jitter), set here so that the bound below does not move with the SDK's defaults.
RETRY_INITIAL_DELAY_S = 1.0
RETRY_MAX_DELAY_S = 8.0
#: Seconds one tuning call (create, get, list, cancel) may take. With the retries, a submission
#: ends inside its claim's lease (``shared.state.store.SUBMIT_LEASE_S``): a call still
#: hanging when the lease expires would let another tuner claim the job and submit it twice.
TUNING_CALL_TIMEOUT_S = 20.0


def worst_case_call_s() -> float:
    """Longest a tuning call can take with every retry: attempts, timeouts and backoff."""
    backoff = sum(
        min(RETRY_INITIAL_DELAY_S * 2**attempt, RETRY_MAX_DELAY_S) + 1.0
        for attempt in range(RETRY_ATTEMPTS - 1)
    )
    return RETRY_ATTEMPTS * TUNING_CALL_TIMEOUT_S + backoff


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
            attempts=RETRY_ATTEMPTS,
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

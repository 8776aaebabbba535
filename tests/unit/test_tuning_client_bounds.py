"""A submission must end inside its claim's lease, or a second tuner could submit the job again."""

from __future__ import annotations

from shared.budgets import TUNING_CALL_TIMEOUT_S
from shared.config import Settings
from shared.runtime import Runtime


def test_the_runtimes_tuning_client_has_the_bounded_timeout() -> None:
    client = Runtime(Settings(tuning_api_url="http://127.0.0.1:9")).tuning
    options = client._api_client._http_options  # the SDK keeps no public accessor
    assert options.timeout == int(TUNING_CALL_TIMEOUT_S * 1000)
    assert options.retry_options is not None
    assert options.retry_options.max_delay is not None

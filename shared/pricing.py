"""Published Vertex AI inference prices, for the estimates of what evaluation calls cost.

Dollars per million input and output tokens of the models completion asks (baseline, judge,
champion and test-split calls all bill as inference of their model). A model without a row has
its calls and tokens estimated, not priced; the operator's training prices are a setting
(``SFTPIPE_TRAINING_PRICE_PER_M_TOKENS``), these are not, because they only inform an estimate.
"""

from __future__ import annotations

INFERENCE_PRICES_PER_M_TOKENS: dict[str, tuple[float, float]] = {
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.0-flash-001": (0.15, 0.60),
}


def inference_usd(model: str, input_tokens: int, output_tokens: int) -> float | None:
    """The dollars of ``input_tokens`` in and ``output_tokens`` out on ``model``; None: no price."""
    price = INFERENCE_PRICES_PER_M_TOKENS.get(model.rsplit("/", 1)[-1])
    if price is None:
        return None
    return round((input_tokens * price[0] + output_tokens * price[1]) / 1_000_000, 2)

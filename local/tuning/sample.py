"""A made-up, deterministic two-label classification task in Gemini tuning JSONL: restaurant
reviews whose sentiment has clear lexical cues. Used by the tests and the benchmark to show that
tuning a small model really improves it on held-out examples."""

from __future__ import annotations

import random
from typing import Any

SYSTEM_INSTRUCTION = (
    "Classify the sentiment of the restaurant review. Answer with one word: positive or negative."
)
LABELS = ("positive", "negative")
_SUBJECTS = (
    "The soup",
    "The pasta",
    "Our waiter",
    "The dessert",
    "The pizza",
    "The curry",
    "The coffee",
    "The steak",
    "The salad",
    "The bread",
    "The service",
    "The terrace",
)
_CUES = {
    "positive": (
        "delicious",
        "wonderful",
        "superb",
        "lovely",
        "excellent",
        "fantastic",
        "delightful",
        "perfect",
    ),
    "negative": (
        "disgusting",
        "awful",
        "terrible",
        "horrible",
        "dreadful",
        "inedible",
        "appalling",
        "revolting",
    ),
}
_ENDINGS = {
    "positive": ("We will come back.", "Highly recommended.", "A great evening.", "Worth every penny."),
    "negative": ("Never again.", "Avoid this place.", "A wasted evening.", "We asked for a refund."),
}


def review(rng: random.Random, label: str) -> str:
    return f"{rng.choice(_SUBJECTS)} was {rng.choice(_CUES[label])}. {rng.choice(_ENDINGS[label])}"


def record(text: str, label: str) -> dict[str, Any]:
    return {
        "systemInstruction": {"role": "system", "parts": [{"text": SYSTEM_INSTRUCTION}]},
        "contents": [
            {"role": "user", "parts": [{"text": text}]},
            {"role": "model", "parts": [{"text": label}]},
        ],
    }


def sentiment_records(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` records with alternating labels, so that every split is balanced."""
    rng = random.Random(seed)
    return [record(review(rng, LABELS[index % 2]), LABELS[index % 2]) for index in range(count)]

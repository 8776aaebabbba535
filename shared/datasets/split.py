"""The deterministic train / validation / test split of one streamed file.

The 64-bit hash of an example's normalised key (seeded with ``split_seed``) decides both whether it
is a duplicate and which split it lands in, so a duplicate never lands in two splits and no count
is needed up front. ``u = hash / 2**64`` puts an example in test when ``u < test_fraction``, in
validation when ``u < test_fraction + validation_fraction``, else in train, with two guards:

- a held-out split never exceeds its fraction of the examples seen so far (so a file of a few
  examples keeps them all in train instead of losing half of them to a lucky hash);
- validation and test are capped at the model's validation limit; examples over a cap go to train.
"""

from __future__ import annotations

from typing import Literal

SplitMode = Literal["auto", "train", "validation", "test"]
_TWO_64 = float(2**64)


class SplitAllocator:
    def __init__(
        self,
        mode: SplitMode,
        *,
        validation_fraction: float,
        test_fraction: float,
        max_validation: int,
        max_test: int,
    ) -> None:
        self.mode = mode
        self.validation_fraction = validation_fraction
        self.test_fraction = test_fraction
        self.max_validation = max_validation
        self.max_test = max_test
        self.counts = {"train": 0, "validation": 0, "test": 0}
        self.capped = 0
        self._seen = 0

    def assign(self, digest: int) -> str:
        if self.mode != "auto":
            self.counts[self.mode] += 1
            return self.mode
        self._seen += 1
        u = digest / _TWO_64
        name = "train"
        if u < self.test_fraction:
            name = self._held_out("test", self.test_fraction, self.max_test)
        elif u < self.test_fraction + self.validation_fraction:
            name = self._held_out("validation", self.validation_fraction, self.max_validation)
        self.counts[name] += 1
        return name

    def _held_out(self, name: str, fraction: float, cap: int) -> str:
        if self.counts[name] + 1 > fraction * self._seen:
            return "train"
        if self.counts[name] >= cap:
            self.capped += 1
            return "train"
        return name

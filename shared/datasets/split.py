"""The deterministic train / validation / test split of one file: by the hash of the prompt only.

The rule
--------
The split key is the example's *prompt* (``Example.prompt_key``: the system instruction and every
turn but the last, normalised as for near duplicates: NFKC, case folded, whitespace deleted,
trailing punctuation stripped; see :mod:`shared.datasets.convert`). Its 64-bit hash, seeded with
``split_seed``, is cut to its top 14 bits, the example's *bucket* ``b`` in ``[0, 16384)`` (``u = b / 16384`` is
the hash mapped to ``[0, 1)``). Then:

- test when ``b < test_end``;
- validation when ``validation_start <= b < validation_end``;
- train otherwise.

By default ``test_end = validation_start = round(test_fraction * 16384)`` and
``validation_end = round((test_fraction + validation_fraction) * 16384)``: the configured fractions,
to 1/16384. The decision for one example reads nothing but its own prompt's hash and these three
numbers, so:

- every example of one prompt lands in the same split (several answers to one question, labels
  that disagree): a test prompt is never also a training prompt;
- shuffling a file moves no example between splits, and neither does prepending or appending rows
  while the bands stay the configured ones (below).

The bands move only where a count demands it, and the counts come from the validate-only pass
(:func:`~shared.datasets.prepare.prepare_and_write` reads the file twice: the first pass fills a
:class:`SplitHistogram`, :func:`plan_split` turns it into a :class:`SplitPlan`, the writing pass
applies it). A count does not depend on the order of the file, so the plan does not either:

- **minimum test size** (:data:`MIN_TEST_EXAMPLES` distinct prompts): when the configured
  fraction would hold out fewer and the dataset has at least
  ``MIN_TEST_EXAMPLES / MAX_RAISED_TEST_FRACTION`` distinct prompts (80), ``test_end`` is raised
  to the smallest bucket below which that many prompts lie, and the validation band moves up with
  it, keeping its width (train gives up the difference). A smaller dataset keeps what the hash
  gives and the report says loudly that its test split is too small to trust;
- **the model's validation limit** (``ModelLimits.max_validation_examples``, also the test
  maximum): a band holding more examples than that is cut at the largest bucket that keeps it
  within the limit; the examples past the cut go to train;
- **train never empty**: if the bands would hold out every example (a file of one or two
  examples), everything goes to train.

These three depend on the dataset's counts, never on positions, so they too are the same for a
shuffled file. Adding rows can move existing examples only while one of them applies: as prompts
are added a raised test band falls back toward the configured fraction (examples leave test for
validation, and validation for train), growing past 80 prompts raises it (examples enter test), a
limit cut moves down (held-out examples go to train). A dataset whose configured bands already
hold 20 test prompts and stay within the limits keeps every example where it was.

Memory is fixed: four counters per bucket (examples, new prompts, tokens, bytes of the training
line), 512 KiB in all, whatever the size of the file.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

SplitMode = Literal["auto", "train", "validation", "test"]
SPLITS = ("train", "validation", "test")

BUCKET_BITS = 14
#: Buckets of the hash range: a fraction is honoured to 1/16384 (and each counter array stays
#: under the allocator's mmap threshold, which keeps a small file cheap).
BUCKETS = 1 << BUCKET_BITS
#: A 64-bit prompt hash shifted right by this is its bucket.
BUCKET_SHIFT = 64 - BUCKET_BITS

#: The smallest test split, in distinct prompts, held out from a dataset large enough to give it
#: (see MAX_RAISED_TEST_FRACTION). With 20, one example moves an accuracy by 5 points.
MIN_TEST_EXAMPLES = 20
#: The minimum is held out only when it is at most this share of the dataset's distinct prompts
#: (so from 80 prompts up); a smaller dataset keeps the hash split and gets a warning.
MAX_RAISED_TEST_FRACTION = 0.25


def bucket_of(digest: int) -> int:
    """The bucket of a 64-bit prompt hash: its top 14 bits."""
    return digest >> BUCKET_SHIFT


@dataclass(frozen=True, slots=True)
class SplitPlan:
    """Bucket bands: test is ``[0, test_end)``, validation ``[validation_start, validation_end)``."""

    test_end: int
    validation_start: int
    validation_end: int

    def __post_init__(self) -> None:
        if not 0 <= self.test_end <= self.validation_start <= self.validation_end <= BUCKETS:
            raise ValueError(f"bands out of order: {self}")

    @classmethod
    def configured(cls, validation_fraction: float, test_fraction: float) -> SplitPlan:
        """The bands of the configured fractions, before any count is known."""
        test_end = min(BUCKETS, round(test_fraction * BUCKETS))
        validation_end = min(BUCKETS, round((test_fraction + validation_fraction) * BUCKETS))
        return cls(test_end, test_end, validation_end)

    @classmethod
    def whole(cls, split: str) -> SplitPlan:
        """Every example in ``split`` (a file given as that split, or a dataset kept for training)."""
        if split == "test":
            return cls(BUCKETS, BUCKETS, BUCKETS)
        if split == "validation":
            return cls(0, 0, BUCKETS)
        return cls(0, 0, 0)

    @classmethod
    def from_fractions(cls, test_below: float, validation_from: float, validation_below: float) -> SplitPlan:
        """The plan a report shows (``SplitCounts.test_hash_below`` ...), back as buckets."""
        return cls(
            round(test_below * BUCKETS), round(validation_from * BUCKETS), round(validation_below * BUCKETS)
        )

    def split_of(self, bucket: int) -> str:
        if bucket < self.test_end:
            return "test"
        if self.validation_start <= bucket < self.validation_end:
            return "validation"
        return "train"

    def splits(self) -> list[str]:
        """The split of every bucket (``split_of``), by bucket: the bands are in order."""
        return (
            ["test"] * self.test_end
            + ["train"] * (self.validation_start - self.test_end)
            + ["validation"] * (self.validation_end - self.validation_start)
            + ["train"] * (BUCKETS - self.validation_end)
        )

    def fractions(self) -> tuple[float, float, float]:
        """(test below, validation from, validation below) as fractions of the hash range (exact)."""
        return (
            self.test_end / BUCKETS,
            self.validation_start / BUCKETS,
            self.validation_end / BUCKETS,
        )


class SplitHistogram:
    """Per bucket: examples, distinct prompts, tokens and bytes of the prepared line.

    Filled as the file streams; every total of a split under any plan is a sum over its buckets,
    so the validate-only pass knows exactly what the writing pass will write.
    """

    def __init__(self) -> None:
        zeros = array("Q", [0]) * BUCKETS
        self.examples = zeros
        self.prompts = array("Q", zeros)
        self.tokens = array("Q", zeros)
        self.line_bytes = array("Q", zeros)
        self._totals: dict[str, int] | None = None
        #: Buckets that hold an example: a small file sums over these instead of 16,384 buckets.
        self.used: set[int] = set()
        self._sorted: list[int] | None = None

    def add(self, digest: int, new_prompt: bool, tokens: int, line_bytes: int) -> None:
        """Count one kept example whose prompt hashes to ``digest``."""
        bucket = digest >> BUCKET_SHIFT
        self.examples[bucket] += 1
        if new_prompt:
            self.prompts[bucket] += 1
            self.used.add(bucket)
            self._sorted = None
        self.tokens[bucket] += tokens
        self.line_bytes[bucket] += line_bytes
        self._totals = None

    def total(self, name: str) -> int:
        """The sum of counter ``name`` over every bucket."""
        if self._totals is None:
            self._totals = {
                n: self.band(n, 0, BUCKETS) for n in ("examples", "prompts", "tokens", "line_bytes")
            }
        return self._totals[name]

    def _buckets(self, start: int, end: int = BUCKETS) -> Iterable[int]:
        """The buckets of ``[start, end)`` that may hold something, in order."""
        if len(self.used) * 8 >= end - start:
            return range(start, end)
        if self._sorted is None:
            self._sorted = sorted(self.used)
        found = self._sorted
        return found[bisect_left(found, start) : bisect_left(found, end)]

    def band(self, name: str, start: int, end: int) -> int:
        """The sum of counter ``name`` over buckets ``[start, end)``."""
        if end <= start:
            return 0
        counts = getattr(self, name)
        if len(self.used) * 8 >= end - start:
            return sum(counts[start:end])
        return sum(counts[i] for i in self._buckets(start, end))

    def per_split(self, name: str, plan: SplitPlan) -> dict[str, int]:
        test = self.band(name, 0, plan.test_end)
        validation = self.band(name, plan.validation_start, plan.validation_end)
        return {"train": self.total(name) - test - validation, "validation": validation, "test": test}

    def reaching(self, name: str, start: int, target: int) -> int:
        """The smallest ``end`` with ``band(name, start, end) >= target`` (BUCKETS if none)."""
        counts = getattr(self, name)
        total = 0
        for i in self._buckets(start):
            total += counts[i]
            if total >= target:
                return i + 1
        return BUCKETS

    def within(self, name: str, start: int, limit: int) -> int:
        """The largest ``end`` (up to the first bucket that would overflow) with ``band <= limit``."""
        counts = getattr(self, name)
        total = 0
        for i in self._buckets(start):
            total += counts[i]
            if total > limit:
                return i
        return BUCKETS


@dataclass(frozen=True, slots=True)
class SplitDecision:
    """The plan, and why it differs from the configured bands (for the report)."""

    plan: SplitPlan
    configured: SplitPlan
    #: Distinct test prompts the configured bands would have held out, when the minimum raised them.
    raised_from: int | None = None
    #: The dataset is too small to hold out MIN_TEST_EXAMPLES prompts (the hash split was kept).
    too_small: bool = False
    #: Examples the validation limit moved from test / validation to train.
    capped_test: int = 0
    capped_validation: int = 0
    #: Every example went to train because the bands would have held out all of them.
    all_train: bool = False


def plan_split(
    hist: SplitHistogram,
    *,
    validation_fraction: float,
    test_fraction: float,
    max_validation: int,
    max_test: int,
    min_test: int = MIN_TEST_EXAMPLES,
) -> SplitDecision:
    """The bands for one dataset in ``auto`` mode, from its counts (see the module docstring)."""
    configured = SplitPlan.configured(validation_fraction, test_fraction)
    width = configured.validation_end - configured.validation_start
    test_end = configured.test_end
    raised_from = None
    too_small = False
    test_prompts = hist.band("prompts", 0, test_end)
    if test_fraction > 0 and test_prompts < min_test:
        if hist.total("prompts") * MAX_RAISED_TEST_FRACTION >= min_test:
            raised_from = test_prompts
            test_end = hist.reaching("prompts", 0, min_test)
        else:
            too_small = True
    validation_start = max(configured.validation_start, test_end)
    validation_end = min(BUCKETS, validation_start + width)
    capped_test = capped_validation = 0
    test_examples = hist.band("examples", 0, test_end)
    if test_examples > max_test:
        cut = hist.within("examples", 0, max_test)
        capped_test = test_examples - hist.band("examples", 0, cut)
        test_end = cut
    validation_examples = hist.band("examples", validation_start, validation_end)
    if validation_examples > max_validation:
        cut = hist.within("examples", validation_start, max_validation)
        capped_validation = validation_examples - hist.band("examples", validation_start, cut)
        validation_end = cut
    plan = SplitPlan(test_end, validation_start, validation_end)
    if hist.total("examples") and hist.per_split("examples", plan)["train"] == 0:
        return SplitDecision(SplitPlan.whole("train"), configured, too_small=too_small, all_train=True)
    return SplitDecision(
        plan,
        configured,
        raised_from=raised_from,
        too_small=too_small,
        capped_test=capped_test,
        capped_validation=capped_validation,
    )


class SplitAllocator:
    """Which split each example of one file goes to, and the totals of every split.

    ``mode`` ``train`` / ``validation`` / ``test`` puts every example there. ``auto`` with a
    ``plan`` (from the validate-only pass) applies it; ``auto`` without one cannot decide while
    streaming (:attr:`splits` is None) and plans at :meth:`finish` from the counts, which is what
    the validate-only pass does. Per example (the caller's loop runs once per record, so these are
    an index and one call): ``splits[digest >> BUCKET_SHIFT]`` is the split of an example whose
    prompt hashes to ``digest``, and ``histogram.add`` counts a kept example (``line_bytes``: its
    prepared line, needed for train only).
    """

    def __init__(
        self,
        mode: SplitMode,
        *,
        validation_fraction: float,
        test_fraction: float,
        max_validation: int,
        max_test: int,
        plan: SplitPlan | None = None,
    ) -> None:
        self.mode = mode
        self.validation_fraction = validation_fraction
        self.test_fraction = test_fraction
        self.max_validation = max_validation
        self.max_test = max_test
        self.plan = plan if mode == "auto" else SplitPlan.whole(mode)
        #: The split of each bucket; None until planned.
        self.splits = None if self.plan is None else self.plan.splits()
        self.histogram = SplitHistogram()

    def finish(self) -> SplitTotals:
        hist = self.histogram
        if self.mode != "auto":
            assert self.plan is not None
            decision = SplitDecision(self.plan, self.plan)
        else:
            decision = plan_split(
                hist,
                validation_fraction=self.validation_fraction,
                test_fraction=self.test_fraction,
                max_validation=self.max_validation,
                max_test=self.max_test,
            )
            if self.plan is not None:
                # The writing pass: the plan came from the validate-only pass over the same bytes;
                # its own counts plan the same bands, and the totals are those of the given plan.
                decision = SplitDecision(
                    self.plan,
                    decision.configured,
                    raised_from=decision.raised_from,
                    too_small=decision.too_small,
                    capped_test=decision.capped_test,
                    capped_validation=decision.capped_validation,
                    all_train=decision.all_train,
                )
        plan = decision.plan
        return SplitTotals(
            decision=decision,
            examples=hist.per_split("examples", plan),
            prompts=hist.per_split("prompts", plan),
            tokens=hist.per_split("tokens", plan),
            line_bytes=hist.per_split("line_bytes", plan),
        )


@dataclass(frozen=True, slots=True)
class SplitTotals:
    decision: SplitDecision
    examples: dict[str, int]
    #: Distinct prompts per split (one prompt is in one split only).
    prompts: dict[str, int]
    tokens: dict[str, int]
    line_bytes: dict[str, int]

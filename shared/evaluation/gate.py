"""The baseline gate: ``baseline_gate: METRIC>=VALUE`` stops a run whose base model is already good
enough, before any tuning job is paid for.

The metric is one the task reports (:data:`shared.evaluation.metrics.GATE_METRICS`), on the 0-1
scale every score uses; ``>=`` and ``>`` are accepted (every gateable metric is higher-is-better).
The gate is checked against the baseline's score on the test split: met, no job is created and the
user is told why; not met, or not applicable (the task does not report the metric), the job is
queued as usual and the baseline notice says which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from shared.evaluation.metrics import GATE_METRICS, METRICS_BY_TASK

_GATE = re.compile(r"^\s*(?P<metric>[A-Za-z][A-Za-z0-9_]*)\s*(?P<op>>=|>)\s*(?P<value>[0-9]*\.?[0-9]+)\s*$")


@dataclass(frozen=True, slots=True)
class BaselineGate:
    metric: str
    operator: Literal[">=", ">"]
    value: float

    @classmethod
    def parse(cls, text: str) -> BaselineGate:
        """``macro_f1>=0.8``; ValueError naming what is wrong (the caller locates it)."""
        match = _GATE.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not METRIC>=VALUE (or METRIC>VALUE), e.g. macro_f1>=0.8")
        metric, value = match["metric"], float(match["value"])
        if metric not in GATE_METRICS:
            raise ValueError(
                f"{metric!r} is not a metric the evaluation reports; one of {sorted(GATE_METRICS)}"
            )
        if not 0 <= value <= 1:
            raise ValueError(f"{value:g} is outside 0..1, the scale of every score")
        return cls(metric=metric, operator=match["op"], value=value)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.metric}{self.operator}{self.value:g}"

    def applies_to(self, task: str) -> bool:
        return self.metric in METRICS_BY_TASK.get(task, frozenset())

    def met_by(self, score: float) -> bool:
        return score >= self.value if self.operator == ">=" else score > self.value


def gate_problem(text: str, task: str | None) -> str | None:
    """Why ``text`` cannot gate a run of ``task`` (None: it can); ``task`` None: not decided yet."""
    try:
        gate = BaselineGate.parse(text)
    except ValueError as exc:
        return str(exc)
    if task is not None and not gate.applies_to(task):
        reported = ", ".join(sorted(METRICS_BY_TASK.get(task, ())))
        return f"{gate.metric!r} is not reported for the {task} task (it reports {reported})"
    return None

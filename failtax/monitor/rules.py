"""The temporal alarm rule: an alarm fires after k consecutive UNSAFE decisions.

A single UNSAFE is noise more often than not (a model's verdict flips, a classifier
flickers); the paper's monitor waits for 3 in a row. The rule is online: it sees one
verdict at a time and never looks ahead, so the same code runs in the evaluation
and in the control loop.

Example:
    >>> first_alarm([False, True, True, False, True, True, True], k=3)
    6
    >>> rule = AlarmRule(k=2); [rule.update(u) for u in (True, False, True, True)]
    [False, False, False, True]
"""

from __future__ import annotations

from collections.abc import Iterable


class AlarmRule:
    """Counts consecutive UNSAFE verdicts; `update` says whether the alarm is on now."""

    def __init__(self, k: int = 3) -> None:
        if k < 1:
            raise ValueError(f"k_consecutive must be >= 1, got {k}")
        self.k = k
        self.run = 0

    def reset(self) -> None:
        self.run = 0

    def update(self, unsafe: bool) -> bool:
        """Feed one verdict; True while the last k verdicts were all UNSAFE."""
        self.run = self.run + 1 if unsafe else 0
        return self.run >= self.k


def first_alarm(unsafe: Iterable[bool], k: int = 3) -> int | None:
    """Index of the decision at which the alarm first fires, or None."""
    rule = AlarmRule(k)
    for i, u in enumerate(unsafe):
        if rule.update(bool(u)):
            return i
    return None

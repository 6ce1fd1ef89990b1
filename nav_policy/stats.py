"""Failure-rate statistics: Wilson score intervals and outcome summaries."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

# Two-sided 95% normal quantile.
Z_95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Args:
        successes: number of events (e.g. failures).
        trials: number of trials; 0 gives the uninformative (0, 1).
        z: normal quantile (1.96 for 95%).

    Returns:
        (low, high), both within [0, 1].

    Example:
        >>> [round(v, 4) for v in wilson_interval(23, 50)]
        [0.3297, 0.596]
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    denom = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denom
    # Clamp tiny floating-point excursions at the boundaries.
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize_outcomes(outcomes: Iterable[str], causes: Iterable[str | None]) -> dict:
    """Failure rate with its 95% interval, success/timeout rates and causes.

    Args:
        outcomes: "collision" | "success" | "timeout" per rollout.
        causes: the ground-truth cause class per rollout (None unless a collision).

    Returns:
        A JSON-ready dict with namespaced keys (`eval/failure_rate`, ...).
    """
    outcomes = list(outcomes)
    causes = list(causes)
    n = len(outcomes)
    counts = Counter(outcomes)
    failures = counts.get("collision", 0)
    lo, hi = wilson_interval(failures, n)
    by_cause = Counter(c or "unknown" for o, c in zip(outcomes, causes) if o == "collision")
    return {
        "eval/num_rollouts": n,
        "eval/failures": failures,
        "eval/failure_rate": failures / n if n else 0.0,
        "eval/failure_rate_ci95": [lo, hi],
        "eval/success_rate": counts.get("success", 0) / n if n else 0.0,
        "eval/timeout_rate": counts.get("timeout", 0) / n if n else 0.0,
        "eval/failures_by_cause": dict(sorted(by_cause.items(), key=lambda kv: (-kv[1], kv[0]))),
    }

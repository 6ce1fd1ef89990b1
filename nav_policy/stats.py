"""Failure-rate statistics: Wilson and paired intervals, replicate means, outcome summaries."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

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


def paired_difference(a: Sequence[bool], b: Sequence[bool], z: float = Z_95) -> dict:
    """Failure rate of `a` minus that of `b` on the same episodes, with a paired test.

    Two policies run on one fixed evaluation set fail on many of the same episodes; the
    pairs carry far more information than two separate intervals. The interval is the
    Agresti-Min adjusted Wald interval for paired proportions (half a count added to
    each of the four cells); the p-value is McNemar's exact two-sided test on the
    discordant pairs.

    Args:
        a, b: failed (True) or not, per episode, in the same episode order.
        z: normal quantile (1.96 for 95%).

    Returns:
        {"difference", "ci95": [lo, hi], "only_a_failed", "only_b_failed", "episodes",
         "mcnemar_p"}.

    Example:
        >>> r = paired_difference([True] * 10 + [False] * 90, [True] * 25 + [False] * 75)
        >>> round(r["difference"], 2), [round(v, 3) for v in r["ci95"]], r["mcnemar_p"] < 1e-4
        (-0.15, [-0.218, -0.076], True)
    """
    if len(a) != len(b):
        raise ValueError(f"need the same episodes: {len(a)} != {len(b)} outcomes")
    n = len(a)
    if n == 0:
        raise ValueError("no episodes to compare")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    diff = (only_a - only_b) / n
    # Agresti-Min: add 0.5 to each cell of the 2x2 table.
    na, nb, m = only_a + 0.5, only_b + 0.5, n + 2.0
    d = (na - nb) / m
    se = math.sqrt(max((na + nb) - (na - nb) ** 2 / m, 0.0)) / m
    k = min(only_a, only_b)
    t = only_a + only_b
    p = min(1.0, 2.0 * sum(math.comb(t, i) for i in range(k + 1)) / 2.0 ** t) if t else 1.0
    return {"difference": diff, "ci95": [max(-1.0, d - z * se), min(1.0, d + z * se)],
            "only_a_failed": only_a, "only_b_failed": only_b, "episodes": n, "mcnemar_p": p}


def replicate_mean(values: Sequence[float], level: float = 0.95,
                   bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict:
    """Mean of a quantity over independent replicates, with a Student-t interval.

    Each replicate repeats the random parts of an experiment (data collection and
    training seeds); the spread between replicates holds that noise, which a
    binomial interval over one replicate's rollouts does not.

    Args:
        values: one value per replicate (e.g. a failure rate or a paired difference).
        level: confidence level of the interval.
        bounds: the interval is clipped to these (a rate: (0, 1); a difference: (-1, 1)).

    Returns:
        {"mean", "sd" (sample standard deviation, None for one value), "ci95" (t interval
         of the mean, None for one value), "replicates"}.

    Example:
        >>> r = replicate_mean([0.30, 0.34, 0.38])
        >>> round(r["mean"], 2), round(r["sd"], 2), [round(v, 3) for v in r["ci95"]]
        (0.34, 0.04, [0.241, 0.439])
    """
    from scipy.stats import t as student_t

    n = len(values)
    if n == 0:
        raise ValueError("no replicates")
    mean = sum(values) / n
    if n == 1:
        return {"mean": mean, "sd": None, "ci95": None, "replicates": 1}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "replicates": n,
            "ci95": [max(bounds[0], mean - half), min(bounds[1], mean + half)]}


def paired_t_test(differences: Sequence[float]) -> dict:
    """Two-sided one-sample t test that paired differences (one per replicate) average 0.

    The replicate's two arms share the collection seed and the evaluation episodes, so
    their difference is one paired observation; with R replicates the test has R - 1
    degrees of freedom.

    Returns:
        {"t", "df", "p"} (t and p None for fewer than 2 values; p 1.0 when every
        difference is 0, p 0.0 when they are equal and non-zero).

    Example:
        >>> r = paired_t_test([1.0, 2.0, 3.0])  # mean 2, sd 1, t = 2 * sqrt(3), df 2
        >>> round(r["t"], 4), r["df"], round(r["p"], 4)
        (3.4641, 2, 0.0742)
    """
    from scipy.stats import t as student_t

    n = len(differences)
    if n < 2:
        return {"t": None, "df": max(n - 1, 0), "p": None}
    mean = sum(differences) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in differences) / (n - 1))
    if sd == 0:
        return {"t": None if mean == 0 else math.copysign(math.inf, mean), "df": n - 1,
                "p": 1.0 if mean == 0 else 0.0}
    t = mean / (sd / math.sqrt(n))
    return {"t": t, "df": n - 1, "p": float(2 * student_t.sf(abs(t), n - 1))}


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

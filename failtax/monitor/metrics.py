"""Metrics of a runtime monitor over episodes with known outcomes (pure functions).

Each episode is one trial: a failure episode whose monitor raised an alarm before
the collision is a true positive (its lead time is the collision time minus the
alarm time), a failure without an alarm a false negative, a success episode with an
alarm a false positive, one without a true negative. Rates come with 95 % Wilson
score intervals (scipy), F1 with a percentile bootstrap over episodes.

Example:
    >>> r = monitor_metrics([EpisodeOutcome("a", True, 3.0, 1.5), EpisodeOutcome("b", False, None, None)])
    >>> r["tpr"]["value"], r["tnr"]["value"], r["lead_time_s"]["mean"]
    (1.0, 1.0, 1.5)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class EpisodeOutcome:
    """What a monitor did on one episode."""

    episode_id: str
    failure: bool  # the episode ends in a failure (collision)
    failure_t_s: float | None  # time of the failure (None for successes)
    alarm_t_s: float | None  # time of the first alarm (None: never)
    cause: str | None = None  # ground-truth cause of a failure, for per-mode rates
    predicted_mode: str | None = None  # the mode the monitor named at its alarm

    @property
    def alarmed(self) -> bool:
        return self.alarm_t_s is not None

    @property
    def lead_time_s(self) -> float | None:
        """Seconds from the alarm to the failure (true alarms only)."""
        if not self.failure or self.alarm_t_s is None or self.failure_t_s is None:
            return None
        return self.failure_t_s - self.alarm_t_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lead_time_s": self.lead_time_s}


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials ((0, 1) when n == 0)."""
    if n == 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def rate(k: int, n: int) -> dict[str, Any]:
    """{"value", "k", "n", "ci95"}; value None when n == 0."""
    lo, hi = wilson_interval(k, n)
    return {"value": k / n if n else None, "k": k, "n": n, "ci95": [lo, hi]}


def f1_score(tp: int, fp: int, fn: int) -> float:
    """F1 of the failure class (0 when there is no true positive)."""
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1_bootstrap(outcomes: list[EpisodeOutcome], *, n_boot: int = 2000, seed: int = 0
                 ) -> list[float]:
    """95 % percentile bootstrap interval of F1, resampling episodes."""
    if not outcomes:
        return [0.0, 0.0]
    rng = np.random.default_rng(seed)
    fail = np.array([o.failure for o in outcomes])
    alarm = np.array([o.alarmed for o in outcomes])
    idx = rng.integers(0, len(outcomes), size=(n_boot, len(outcomes)))
    f, a = fail[idx], alarm[idx]
    tp = (f & a).sum(1)
    fp = (~f & a).sum(1)
    fn = (f & ~a).sum(1)
    denom = 2 * tp + fp + fn
    f1 = np.where(tp > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return [float(np.percentile(f1, 2.5)), float(np.percentile(f1, 97.5))]


def monitor_metrics(outcomes: list[EpisodeOutcome], *, seed: int = 0) -> dict[str, Any]:
    """TPR, TNR, FPR, FNR (Wilson intervals), precision, F1 (bootstrap interval),
    lead times of true alarms and the detection rate per failure cause."""
    tp = sum(o.failure and o.alarmed for o in outcomes)
    fn = sum(o.failure and not o.alarmed for o in outcomes)
    fp = sum((not o.failure) and o.alarmed for o in outcomes)
    tn = sum((not o.failure) and not o.alarmed for o in outcomes)
    leads = [o.lead_time_s for o in outcomes if o.lead_time_s is not None]
    per_cause: dict[str, list[bool]] = defaultdict(list)
    for o in outcomes:
        if o.failure:
            per_cause[o.cause or "unknown"].append(o.alarmed)
    return {
        "episodes": len(outcomes),
        "failures": tp + fn,
        "successes": fp + tn,
        "confusion": {"tp": tp, "fn": fn, "fp": fp, "tn": tn},
        "tpr": rate(tp, tp + fn),
        "fnr": rate(fn, tp + fn),
        "tnr": rate(tn, tn + fp),
        "fpr": rate(fp, tn + fp),
        "precision": rate(tp, tp + fp),
        "f1": {"value": f1_score(tp, fp, fn), "ci95": f1_bootstrap(outcomes, seed=seed)},
        "lead_time_s": {
            "n": len(leads),
            "mean": float(np.mean(leads)) if leads else None,
            "median": float(np.median(leads)) if leads else None,
        },
        "detection_by_cause": {
            cause: rate(sum(hits), len(hits)) for cause, hits in sorted(per_cause.items())
        },
    }


def alarm_score(probabilities: list[float | None], k: int) -> float | None:
    """The highest UNSAFE threshold at which the k-consecutive rule would still raise
    an alarm on these per-decision probabilities (None where no model decided counts as
    0); None when there are fewer than k decisions with a probability.

    Example:
        >>> alarm_score([0.2, 0.9, 0.8, 0.7, 0.1], k=3)
        0.7
    """
    ps = [0.0 if p is None else float(p) for p in probabilities]
    if sum(p is not None for p in probabilities) < k or len(ps) < k:
        return None
    return max(min(ps[i:i + k]) for i in range(len(ps) - k + 1))


def episode_auroc(scored: list[tuple[bool, float | None]]) -> dict[str, Any]:
    """Threshold-free discrimination of failure from success episodes: the AUROC of
    each episode's alarm score (the probability that a failure episode scores above a
    success one; 0.5 is chance). Episodes without a score are left out and counted."""
    pairs = [(f, s) for f, s in scored if s is not None]
    fails = [s for f, s in pairs if f]
    oks = [s for f, s in pairs if not f]
    if not fails or not oks:
        return {"value": None, "n": len(pairs), "unscored": len(scored) - len(pairs)}
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(fails, oks).statistic
    return {"value": float(u / (len(fails) * len(oks))), "n": len(pairs),
            "unscored": len(scored) - len(pairs)}

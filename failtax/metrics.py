"""Metrics of a run against labels, and of one taxonomy against another: pure functions.

Everything here takes plain lists and arrays (and, for text similarity, a text
embedder) and returns dicts of numbers rounded to 4 digits, so each number can
be recomputed by hand in a test. `failtax.evaluation` gathers them for a run
folder; `failtax.compare` scores two reasoners' taxonomies with the same
`alignment_scores`.

Taxonomy alignment. A similarity matrix S (K predicted modes × M reference
modes, values in [0, 1]) comes from an LLM judge (`failtax.judge`) or from
embeddings (cosine of the modes' texts, clipped at 0). The paper states CP, TC
and SAS in words only; we read them as: **cluster precision** CP = share of
predicted modes whose best reference match reaches the threshold; **taxonomy
coverage** TC = share of reference modes matched by some predicted mode at that
threshold; **SAS** = harmonic mean of CP and TC. Soft versions (mean row /
column maxima), the sharpness of each row (max / sum) and the mean similarity
of a one-to-one (Hungarian) matching are reported beside them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

from failtax.embedding import TextEmbedder
from failtax.types import OUTLIER, Assignment

ALIGNMENT_KEYS = ("cp", "tc", "sas", "cp_soft", "tc_soft", "sas_soft", "sharpness", "hungarian_mean")


def harmonic(a: float, b: float) -> float:
    """Harmonic mean of two non-negative scores (0 when both are 0)."""
    return 0.0 if a + b <= 0 else 2 * a * b / (a + b)


# --------------------------------------------------------------------------- assignments


def primary_modes(assignments: list[Assignment]) -> dict[str, str]:
    """Episode id → its first mode (the cluster it counts in)."""
    return {a.episode_id: (a.modes[0] if a.modes else OUTLIER) for a in assignments}


def cluster_metrics(true: list[str], pred: list[str]) -> dict[str, Any]:
    """NMI, ARI, purity and weighted F1 (majority and Hungarian mappings).

    Args:
        true: expert label per episode.
        pred: predicted mode per episode ("outlier" allowed; it maps to no label).
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score

    if not true:
        return {"n": 0}
    modes = sorted(set(pred))
    labels = sorted(set(true))
    table = np.zeros((len(modes), len(labels)), dtype=int)
    mi = {m: i for i, m in enumerate(modes)}
    li = {lab: j for j, lab in enumerate(labels)}
    for t, p in zip(true, pred):
        table[mi[p], li[t]] += 1
    majority = {m: labels[int(np.argmax(table[i]))] for i, m in enumerate(modes) if m != OUTLIER}
    rows, cols = linear_sum_assignment(-table)
    hungarian = {modes[r]: labels[c] for r, c in zip(rows, cols) if modes[r] != OUTLIER}
    pred_major = [majority.get(p, OUTLIER) for p in pred]
    pred_hung = [hungarian.get(p, "unmatched") for p in pred]
    kept = [i for i, m in enumerate(modes) if m != OUTLIER]
    purity = float(table[kept].max(axis=1).sum() / len(true)) if kept else 0.0
    return {
        "n": len(true),
        "nmi": round(float(normalized_mutual_info_score(true, pred)), 4),
        "ari": round(float(adjusted_rand_score(true, pred)), 4),
        "purity": round(purity, 4),
        "weighted_f1_majority": round(float(f1_score(true, pred_major, labels=labels, average="weighted",
                                                     zero_division=0)), 4),
        "weighted_f1_hungarian": round(float(f1_score(true, pred_hung, labels=labels, average="weighted",
                                                      zero_division=0)), 4),
        "outlier_share": round(pred.count(OUTLIER) / len(pred), 4),
        "mapping_majority": majority,
        "mapping_hungarian": hungarian,
        "contingency": {"modes": modes, "labels": labels, "counts": table.tolist()},
    }


def label_alignment(true: list[str], pred: list[str]) -> dict[str, float]:
    """CP/TC/SAS from the assignments themselves (no judge): CP = mean share of
    a mode's episodes carrying its majority label; TC = share of labels that
    are the majority of at least one mode."""
    by_mode: dict[str, Counter] = {}
    for t, p in zip(true, pred):
        if p != OUTLIER:
            by_mode.setdefault(p, Counter())[t] += 1
    if not by_mode or not true:
        return {"cp": 0.0, "tc": 0.0, "sas": 0.0}
    cp = float(np.mean([c.most_common(1)[0][1] / sum(c.values()) for c in by_mode.values()]))
    covered = {c.most_common(1)[0][0] for c in by_mode.values()}
    tc = len(covered & set(true)) / len(set(true))
    return {"cp": round(cp, 4), "tc": round(tc, 4), "sas": round(harmonic(cp, tc), 4)}


def stability_ari(runs: list[dict[str, str]]) -> dict[str, Any]:
    """Pairwise ARI between runs' episode → mode maps, over shared episodes."""
    from sklearn.metrics import adjusted_rand_score

    pairs = []
    for (i, a), (j, b) in combinations(enumerate(runs), 2):
        common = sorted(set(a) & set(b))
        if len(common) < 2:
            continue
        pairs.append({"runs": [i, j], "n": len(common),
                      "ari": round(float(adjusted_rand_score([a[e] for e in common], [b[e] for e in common])), 4)})
    aris = [p["ari"] for p in pairs]
    return {
        "pairs": pairs,
        "mean_ari": round(float(np.mean(aris)), 4) if aris else None,
        "std_ari": round(float(np.std(aris)), 4) if aris else None,
    }


# --------------------------------------------------------------------------- taxonomy alignment


def alignment_scores(sim: np.ndarray, *, threshold: float) -> dict[str, Any]:
    """CP, TC and SAS of a K×M similarity matrix, hard and soft (see the module docstring).

    Rows are the predicted (or first reasoner's) modes, columns the reference
    (or second reasoner's) modes. Values are clipped to [0, 1]; NaN (a failed
    judge call) scores 0. With the roles swapped, CP and TC exchange.

    Args:
        sim: K×M similarities.
        threshold: a row and a column "match" at this similarity or above.

    Returns:
        cp, tc, sas (share of rows / columns whose best match reaches
        `threshold`, and their harmonic mean); cp_soft, tc_soft, sas_soft (mean
        row / column maxima, and theirs); sharpness (mean of row max / row sum);
        hungarian_mean (mean similarity of the one-to-one matching, modes left
        without a partner counting 0, so a size mismatch costs); threshold.
        Every score is None for an empty matrix (nothing to align).

    Example:
        >>> alignment_scores(np.array([[1.0, 0.0], [0.8, 0.1]]), threshold=0.75)["tc"]
        0.5
    """
    from scipy.optimize import linear_sum_assignment

    sim = np.clip(np.nan_to_num(np.asarray(sim, dtype=float), nan=0.0), 0.0, 1.0)
    if sim.size == 0:
        return {**dict.fromkeys(ALIGNMENT_KEYS), "threshold": threshold}
    row_max, col_max = sim.max(axis=1), sim.max(axis=0)
    cp = float((row_max >= threshold).mean())
    tc = float((col_max >= threshold).mean())
    cp_soft, tc_soft = float(row_max.mean()), float(col_max.mean())
    sums = sim.sum(axis=1)
    sharp = float(np.mean(np.where(sums > 0, row_max / np.maximum(sums, 1e-12), 0.0)))
    rows, cols = linear_sum_assignment(sim, maximize=True)
    hungarian_mean = float(sim[rows, cols].sum() / max(sim.shape))
    return {
        "cp": round(cp, 4), "tc": round(tc, 4), "sas": round(harmonic(cp, tc), 4),
        "cp_soft": round(cp_soft, 4), "tc_soft": round(tc_soft, 4),
        "sas_soft": round(harmonic(cp_soft, tc_soft), 4),
        "sharpness": round(sharp, 4), "hungarian_mean": round(hungarian_mean, 4),
        "threshold": threshold,
    }


def embedding_similarity_matrix(
    mode_texts: Sequence[str], reference_texts: Sequence[str], embedder: TextEmbedder
) -> np.ndarray:
    """K×M cosine similarities (clipped at 0) of mode texts and reference texts."""
    if not mode_texts or not reference_texts:
        return np.zeros((len(mode_texts), len(reference_texts)))
    a = embedder.embed(list(mode_texts))
    b = embedder.embed(list(reference_texts))
    return np.clip(a @ b.T, 0.0, 1.0)


# --------------------------------------------------------------------------- explanations


def explanation_quality(predicted: list[str], references: list[str], embedder: TextEmbedder) -> dict[str, Any]:
    """Mean cosine similarity (embedder) and ROUGE-L F1 of explanation/reference pairs."""
    from rouge_score import rouge_scorer

    if not predicted:
        return {"n": 0}
    a, b = embedder.embed(predicted), embedder.embed(references)
    cos = (a * b).sum(axis=1)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predicted, references)]
    return {
        "n": len(predicted),
        "cosine_similarity": round(float(cos.mean()), 4),
        "rouge_l": round(float(np.mean(rouge)), 4),
        "embedder": embedder.name,
    }

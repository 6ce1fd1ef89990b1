"""How two reasoners' runs differ: explanations, taxonomies, assignments, cost.

Pure functions over loaded runs (`RunView`) and a text embedder, so every
number of a comparison can be recomputed from the run folders alone and unit
tested on hand-made runs. Texts are compared by cosine similarity of their
embeddings (the pipeline's local MiniLM in a real comparison).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common import read_jsonl
from failtax.metrics import alignment_scores
from failtax.types import OUTLIER, Assignment, Explanation, Taxonomy

# texts -> (n, d) array of L2-normalised embeddings
EmbedFn = Callable[[Sequence[str]], np.ndarray]


@dataclass
class RunView:
    """The outputs of one reasoner's sub-run that a comparison reads."""

    name: str
    explanations: dict[str, Explanation]  # episode_id -> explanation
    taxonomy: Taxonomy | None
    assignments: dict[str, Assignment]  # episode_id -> assignment
    errors: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, name: str, run_dir: str | Path) -> RunView:
        """Read a run folder's explanations, taxonomy, assignments and errors.

        Missing files read as empty (a run stopped before that stage); the
        comparison then says which parts it could not compare.
        """
        import json

        run_dir = Path(run_dir)
        explanations = {
            e.episode_id: e
            for e in (Explanation.from_dict(r) for r in read_jsonl(run_dir / "explanations.jsonl"))
        }
        assignments = {
            a.episode_id: a
            for a in (Assignment.from_dict(r) for r in read_jsonl(run_dir / "assignments.jsonl"))
        }
        taxonomy_path = run_dir / "taxonomy.json"
        taxonomy = (
            Taxonomy.from_dict(json.loads(taxonomy_path.read_text()))
            if taxonomy_path.exists()
            else None
        )
        return cls(name, explanations, taxonomy, assignments, read_jsonl(run_dir / "errors.jsonl"))


# ----------------------------------------------------------------------------- explanations


def explanation_agreement(
    a: RunView, b: RunView, embed: EmbedFn, *, least_agreeing: int = 5
) -> dict[str, Any]:
    """Per-episode cosine similarity of two reasoners' failure reasons.

    Only episodes both reasoners explained are compared; the `least_agreeing`
    episodes are listed with both texts, lowest similarity first.
    """
    common = sorted(set(a.explanations) & set(b.explanations))
    out: dict[str, Any] = {
        "episodes_compared": len(common),
        "only_in_a": len(set(a.explanations) - set(b.explanations)),
        "only_in_b": len(set(b.explanations) - set(a.explanations)),
    }
    if not common:
        out.update(
            mean=None,
            median=None,
            min=None,
            identical_share=None,
            least_agreeing=[],
            per_episode={},
        )
        return out
    texts_a = [a.explanations[e].failure_reason for e in common]
    texts_b = [b.explanations[e].failure_reason for e in common]
    sims = np.sum(embed(texts_a) * embed(texts_b), axis=1).clip(-1.0, 1.0)
    order = np.argsort(sims, kind="stable")
    out.update(
        mean=float(sims.mean()),
        median=float(np.median(sims)),
        min=float(sims.min()),
        # the same words (up to case/space) from both: the reasoners agree verbatim
        identical_share=float(np.mean([_norm(x) == _norm(y) for x, y in zip(texts_a, texts_b)])),
        per_episode={e: round(float(s), 4) for e, s in zip(common, sims)},
        least_agreeing=[
            {
                "episode_id": common[i],
                "similarity": float(sims[i]),
                "a": texts_a[i],
                "b": texts_b[i],
            }
            for i in order[:least_agreeing]
        ],
    )
    return out


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


# ----------------------------------------------------------------------------- taxonomies


def mode_text(name: str, description: str, keywords: Sequence[str]) -> str:
    """What a mode is embedded as: name, description and keywords."""
    kw = ", ".join(k for k in keywords if k)
    return f"{name}: {description}" + (f" (keywords: {kw})" if kw else "")


def taxonomy_similarity(ta: Taxonomy, tb: Taxonomy, embed: EmbedFn) -> np.ndarray:
    """(len(ta.modes), len(tb.modes)) cosine similarities of the modes' texts."""
    if not ta.modes or not tb.modes:
        return np.zeros((len(ta.modes), len(tb.modes)))
    ea = embed([mode_text(m.name, m.description, m.keywords) for m in ta.modes])
    eb = embed([mode_text(m.name, m.description, m.keywords) for m in tb.modes])
    return np.clip(ea @ eb.T, -1.0, 1.0)


def match_modes(
    sim: np.ndarray, names_a: Sequence[str], names_b: Sequence[str], *, threshold: float
) -> dict[str, Any]:
    """One-to-one matching of two taxonomies' modes (Hungarian, maximum total similarity).

    A Hungarian pair below `threshold` is not a match: both of its modes count
    as missed by the other reasoner, as does every mode left without a partner
    when the taxonomies differ in size.

    Args:
        sim: similarity matrix, rows = modes of A, columns = modes of B.
        names_a, names_b: the modes' names, in the matrix's order.
        threshold: cosine similarity a pair needs to count as the same mode.

    Returns:
        pairs (every Hungarian pair with its similarity and whether it matched),
        matched (name_a -> name_b), missed_by_b (modes of A that B has no match
        for), missed_by_a, and `failtax.metrics.alignment_scores` of the matrix
        (rows A, columns B: cp is the share of A's modes that B has a match for,
        tc the share of B's modes that A covers; the soft versions average the
        best similarities).
    """
    from scipy.optimize import linear_sum_assignment

    sim = np.asarray(sim, dtype=float)
    if sim.shape != (len(names_a), len(names_b)):
        raise ValueError(
            f"similarity matrix is {sim.shape}, expected ({len(names_a)}, {len(names_b)})"
        )
    pairs: list[dict[str, Any]] = []
    matched: dict[str, str] = {}
    if sim.size:
        rows, cols = linear_sum_assignment(sim, maximize=True)
        for r, c in zip(rows, cols):
            ok = bool(sim[r, c] >= threshold)
            pairs.append(
                {"a": names_a[r], "b": names_b[c], "similarity": float(sim[r, c]), "matched": ok}
            )
            if ok:
                matched[names_a[r]] = names_b[c]
    matched_b = set(matched.values())
    missed_by_b = [
        {
            "mode": n,
            "closest": names_b[int(sim[i].argmax())] if sim.shape[1] else None,
            "similarity": float(sim[i].max()) if sim.shape[1] else None,
        }
        for i, n in enumerate(names_a)
        if n not in matched
    ]
    missed_by_a = [
        {
            "mode": n,
            "closest": names_a[int(sim[:, j].argmax())] if sim.shape[0] else None,
            "similarity": float(sim[:, j].max()) if sim.shape[0] else None,
        }
        for j, n in enumerate(names_b)
        if n not in matched_b
    ]
    return {
        "threshold": threshold,
        "pairs": sorted(pairs, key=lambda p: -p["similarity"]),
        "matched": matched,
        "missed_by_b": missed_by_b,
        "missed_by_a": missed_by_a,
        **alignment_scores(sim, threshold=threshold),
    }


# ----------------------------------------------------------------------------- assignments


def primary_mode(assignment: Assignment | None) -> str:
    """The first (most likely) mode of an episode; outlier when none."""
    if assignment is None or not assignment.modes:
        return OUTLIER
    return assignment.modes[0]


def assignment_agreement(a: RunView, b: RunView, matched: dict[str, str]) -> dict[str, Any]:
    """How far two reasoners put the same episodes together.

    ARI and NMI need no matching (they compare partitions, whatever the
    names); the confusion matrix and `matched_agreement` go through the mode
    matching: an episode agrees when B's mode is the match of A's mode (or
    both call it an outlier). Multi-mode assignments count by their first mode
    for ARI/NMI and by any overlap for `matched_agreement`.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    common = sorted(set(a.assignments) & set(b.assignments))
    out: dict[str, Any] = {"episodes_compared": len(common)}
    if not common:
        out.update(
            ari=None,
            nmi=None,
            matched_agreement=None,
            confusion={"rows": [], "cols": [], "counts": []},
            per_mode=[],
        )
        return out
    la = [primary_mode(a.assignments[e]) for e in common]
    lb = [primary_mode(b.assignments[e]) for e in common]
    agree = 0
    for e in common:
        modes_a = set(a.assignments[e].modes or [OUTLIER])
        modes_b = set(b.assignments[e].modes or [OUTLIER])
        mapped = {matched.get(m, f"\0{m}") if m != OUTLIER else OUTLIER for m in modes_a}
        agree += bool(mapped & modes_b)

    # rows: A's modes, matched ones first in B's column order, so agreement is the diagonal
    names_a = a.taxonomy.names if a.taxonomy else []
    names_b = b.taxonomy.names if b.taxonomy else []
    rows = [m for m in names_a if m in matched] + [m for m in names_a if m not in matched]
    cols = [matched[m] for m in rows if m in matched] + [
        m for m in names_b if m not in matched.values()
    ]
    rows = _with_extra(rows, la)
    cols = _with_extra(cols, lb)
    ri = {m: i for i, m in enumerate(rows)}
    ci = {m: j for j, m in enumerate(cols)}
    counts = np.zeros((len(rows), len(cols)), dtype=int)
    for x, y in zip(la, lb):
        counts[ri[x], ci[y]] += 1

    per_mode = []
    for m in rows:
        n_a = int(counts[ri[m]].sum())
        partner = OUTLIER if m == OUTLIER else matched.get(m)
        same = int(counts[ri[m], ci[partner]]) if partner in ci else 0
        per_mode.append(
            {
                "mode": m,
                "match": partner,
                "episodes_a": n_a,
                "episodes_b": int(counts[:, ci[partner]].sum()) if partner in ci else 0,
                "both": same,
                "recall_in_b": same / n_a if n_a else None,
            }
        )
    out.update(
        ari=float(adjusted_rand_score(la, lb)),
        nmi=float(normalized_mutual_info_score(la, lb)),
        matched_agreement=agree / len(common),
        outlier_share_a=la.count(OUTLIER) / len(common),
        outlier_share_b=lb.count(OUTLIER) / len(common),
        confusion={"rows": rows, "cols": cols, "counts": counts.tolist()},
        per_mode=per_mode,
    )
    return out


def _with_extra(order: list[str], labels: list[str]) -> list[str]:
    """`order` plus labels it lacks (modes missing from the taxonomy), outlier last."""
    extra = sorted({x for x in labels if x not in order and x != OUTLIER})
    out = [m for m in order if m != OUTLIER] + extra
    return out + [OUTLIER]


# ----------------------------------------------------------------------------- cost


@dataclass
class CostRecord:
    """Model usage of one reasoner's run, summed over its calls."""

    calls: int = 0  # model calls the run needed (cached answers included)
    fresh_calls: int = 0  # calls that ran a model in this invocation (0 on a full rerun)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_time_s: float = 0.0  # summed call latency as first measured (cached calls keep theirs)
    wall_time_s: float = 0.0  # wall clock of this invocation's reason+discover+assign
    parse_failures: int = 0  # calls whose output did not validate (after the re-ask)
    episodes: int = 0  # episodes the reasoner explained

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def cost_summary(
    cost: CostRecord,
    *,
    prompt_usd_per_mtok: float | None,
    completion_usd_per_mtok: float | None,
) -> dict[str, Any]:
    """Token counts and money, in total and per 1,000 episodes.

    Money = prompt tokens × prompt price + completion tokens × completion
    price, prices in US dollars per million tokens (0 for self-hosted models,
    whose cost is the hardware's time: see `model_time_s`). An unknown price
    (None) makes the money unknown (None), never zero.
    """
    usd = None
    if prompt_usd_per_mtok is not None and completion_usd_per_mtok is not None:
        usd = (
            cost.prompt_tokens * prompt_usd_per_mtok
            + cost.completion_tokens * completion_usd_per_mtok
        ) / 1e6
    per_k = 1000.0 / cost.episodes if cost.episodes else None
    return {
        **cost.to_dict(),
        "usd": usd,
        "usd_per_1k_episodes": usd * per_k if per_k is not None and usd is not None else None,
        "calls_per_episode": cost.calls / cost.episodes if cost.episodes else None,
        "tokens_per_episode": (cost.prompt_tokens + cost.completion_tokens) / cost.episodes
        if cost.episodes
        else None,
        "model_time_s_per_1k_episodes": cost.model_time_s * per_k if per_k is not None else None,
        "prompt_usd_per_mtok": prompt_usd_per_mtok,
        "completion_usd_per_mtok": completion_usd_per_mtok,
    }

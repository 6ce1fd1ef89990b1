"""results.json, report.md and a self-contained report.html of a closed-loop folder.

Only this module reads ground truth (the sim's cause class of each evaluation
failure, from the evaluations' rollouts/summary files) — for the
before/after breakdown. Discovery and region mapping never do.

results.json (schema_version 1)::

    {"schema_version": 1, "preset", "budget_samples", "arms", "cycles",
     "policies": {policy: {set: {"failure_rate", "ci95": [lo, hi], "failures",
                                 "rollouts", "success_rate", "timeout_rate",
                                 "failures_by_cause": {cause: n}}}},
     "relative_reduction": {policy: {set: (base - policy) / base}},
     "paired": {"<policy> vs <other>": {set: {"difference", "ci95", "only_a_failed",
                                               "only_b_failed", "episodes", "mcnemar_p"}}},
     "replicates": {} or {"count", "arms": {arm: {set: {"policies", "failure_rates",
                          "mean": {"mean", "sd", "ci95", "replicates"},
                          "pooled": {"failure_rate", "ci95", "failures", "rollouts",
                                     "relative_reduction"}}}},
                    "paired": {"<arm> vs uniform|base": {set: {"differences", "mean",
                                                               "pooled": paired}}}},
     "causes": {set: {cause: {policy: n}}},
     "taxonomies": [{"cycle", "policy", "mining": {...}, "modes": [...], "outliers"}],
     "stage_seconds": {stage: s}, "seconds_by_kind": {kind: s}, "total_seconds": s,
     "stage_cpu_seconds": {stage: s}, "total_cpu_seconds": s}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from common import atomic_write_json, atomic_write_text, read_jsonl
from common.html import png_data_uri, render_page
from common.stages import stage_cpu_seconds, stage_seconds
from loop.config import LoopConfig
from nav_policy.stats import paired_difference, paired_t_test, replicate_mean, wilson_interval

SCHEMA_VERSION = 1
SET_LABELS = {"in_distribution": "in-distribution", "ood": "held-out (OOD)"}


def _read_json(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _policies(out: Path) -> list[str]:
    root = out / "evals"
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []
    first = [n for n in ("base", "camera_blind") if n in names]
    return first + [n for n in names if n not in first]


def _set_result(summary: dict) -> dict:
    n = int(summary["eval/num_rollouts"])
    k = int(summary["eval/failures"])
    lo, hi = wilson_interval(k, n)
    return {"failure_rate": k / n if n else 0.0, "ci95": [lo, hi], "failures": k, "rollouts": n,
            "success_rate": summary.get("eval/success_rate"),
            "timeout_rate": summary.get("eval/timeout_rate"),
            "failures_by_cause": summary.get("eval/failures_by_cause", {})}


def _failed_by_episode(path: Path) -> dict[int, bool]:
    """Episode index → collided, from an evaluation's rollouts.jsonl."""
    return {int(r["index"]): r.get("outcome") == "collision" for r in read_jsonl(path)
            if "index" in r}


def split_policy_name(name: str) -> tuple[str, int, str]:
    """`targeted_semantic@r2@cycle1` → ("targeted_semantic", 2, "@cycle1")."""
    arm, *tags = name.split("@")
    rep = next((int(t[1:]) for t in tags if t[:1] == "r" and t[1:].isdigit()), 0)
    cycle = "".join(f"@{t}" for t in tags if t.startswith("cycle"))
    return arm, rep, cycle


# Each arm is compared with these arms of the same replicate and cycle (same budget, same
# collection seed) and with base. Against collision-only and shuffled the difference says
# what the taxonomy's text added (docs/LOOP.md, "Ablations").
REFERENCES: dict[str, tuple[str, ...]] = {
    "targeted_semantic": ("uniform", "targeted_collision", "targeted_shuffled"),
    "targeted_shuffled": ("uniform", "targeted_collision"),
    "targeted_collision": ("uniform",),
    "uniform": (),
    "site_semantic": ("site_uniform",),
    "site_uniform": (),
    "camera_blind": (),
}
# What each arm takes from the taxonomy (the report's "which arm needed the taxonomy").
TAXONOMY_USE: dict[str, str] = {
    "targeted_semantic": "the model's mode text, matched to kinds of map objects (plus the "
                         "collision sites)",
    "targeted_collision": "no mode text: the logged collision sites (the clusters only split "
                          "the budget)",
    "targeted_shuffled": "the modes and budgets but not their text: each mode's kinds moved to "
                         "another mode (control)",
    "uniform": "nothing",
    "site_semantic": "the model's mode text only: no failure was logged in the new site",
    "site_uniform": "nothing (the new site, anywhere)",
}


def _same_replicate(pol: str, arm: str) -> str:
    """The policy of `arm` in the same replicate and cycle as `pol`."""
    _, _, rest = pol.partition("@")
    return arm + (f"@{rest}" if rest else "")


def _uniform_of(pol: str) -> str:
    """The uniform policy of the same replicate and cycle as `pol`."""
    return _same_replicate(pol, "uniform")


def _paired_pairs(out: Path, pol: str, other: str, which: str) -> list[tuple[bool, bool]]:
    """(pol failed, other failed) per evaluation episode both ran."""
    a = _failed_by_episode(out / "evals" / pol / which / "rollouts.jsonl")
    b = _failed_by_episode(out / "evals" / other / which / "rollouts.jsonl")
    return [(a[i], b[i]) for i in sorted(set(a) & set(b))]


def _difference_of(pairs: list[tuple[bool, bool]]) -> dict:
    """paired_difference of (policy failed, other failed) pairs."""
    return paired_difference([x for x, _ in pairs], [y for _, y in pairs])


def _comparisons(policies: list[str]) -> list[tuple[str, str, str]]:
    """(policy, other, kind): each fine-tuned policy against the arms of its replicate and
    cycle that `REFERENCES` names (same budget and seeds) and against base."""
    out = []
    if "base" in policies and "camera_blind" in policies:
        out.append(("base", "camera_blind", "camera_blind"))
    for pol in policies:
        if pol in ("base", "camera_blind"):
            continue
        arm = split_policy_name(pol)[0]
        for kind in (*REFERENCES.get(arm, ("uniform",)), "base"):
            other = "base" if kind == "base" else _same_replicate(pol, kind)
            if pol != other and other in policies:
                out.append((pol, other, kind))
    return out


def paired_comparisons(out: Path, policies: list[str]) -> dict[str, dict]:
    """Each fine-tuned arm against uniform (same budget) and against base, episode by episode."""
    res: dict[str, dict] = {}
    for pol, other, kind in _comparisons(policies):
        for which in ("in_distribution", "ood"):
            pairs = _paired_pairs(out, pol, other, which)
            if pairs:
                res.setdefault(f"{pol} vs {kind}", {})[which] = _difference_of(pairs)
    return res


def pooled_replicates(out: Path, policies: dict[str, dict]) -> dict[str, Any]:
    """Every arm over its replicates: per-replicate values, their mean with a t interval
    (training and collection noise included), and all rollouts pooled (evaluation noise
    only: a Wilson interval, and a paired comparison over every (replicate, episode) pair).
    Empty when no arm has more than one replicate."""
    groups: dict[str, list[str]] = {}
    for pol in policies:
        if pol in ("base", "camera_blind"):
            continue
        arm, _, cycle = split_policy_name(pol)
        groups.setdefault(arm + cycle, []).append(pol)
    if all(len(v) < 2 for v in groups.values()):
        return {}
    base = policies.get("base", {})
    arms: dict[str, dict] = {}
    for key, pols in groups.items():
        for which in ("in_distribution", "ood"):
            rs = [policies[p][which] for p in pols if which in policies[p]]
            if not rs:
                continue
            k, n = sum(r["failures"] for r in rs), sum(r["rollouts"] for r in rs)
            b = base.get(which, {}).get("failure_rate")
            arms.setdefault(key, {})[which] = {
                "policies": [p for p in pols if which in policies[p]],
                "failure_rates": [r["failure_rate"] for r in rs],
                "mean": replicate_mean([r["failure_rate"] for r in rs], bounds=(0.0, 1.0)),
                "pooled": {"failure_rate": k / n, "ci95": list(wilson_interval(k, n)),
                           "failures": k, "rollouts": n,
                           "relative_reduction": (b - k / n) / b if b else None}}
    paired: dict[str, dict] = {}
    by_kind: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for pol, other, kind in _comparisons(list(policies)):
        arm, _, cycle = split_policy_name(pol)
        by_kind.setdefault((arm + cycle, kind), []).append((pol, other))
    for (key, kind), pairs_of in by_kind.items():
        for which in ("in_distribution", "ood"):
            per_rep, pooled = [], []
            for pol, other in pairs_of:
                pairs = _paired_pairs(out, pol, other, which)
                if pairs:
                    per_rep.append(_difference_of(pairs)["difference"])
                    pooled += pairs
            if pooled:
                paired.setdefault(f"{key} vs {kind}", {})[which] = {
                    "differences": per_rep, "mean": replicate_mean(per_rep, bounds=(-1.0, 1.0)),
                    "t_test": paired_t_test(per_rep), "pooled": _difference_of(pooled)}
    return {"count": max(len(v) for v in groups.values()), "arms": arms, "paired": paired}


def ablation(results: dict) -> dict[str, dict]:
    """Each arm's difference to the arms REFERENCES names, per set: over replicates (mean,
    t interval, paired t test: seed noise included) when there are ≥ 2, else the one
    replicate's paired episodes (Agresti-Min interval, McNemar p: evaluation noise only).

    Returns:
        {"<arm> vs <ref>": {set: {"difference", "ci95", "p", "method", "verdict"}}},
        verdict "lower" / "higher" (the interval excludes 0) or "not distinguishable".
    """
    reps = (results.get("replicates") or {}).get("paired", {})
    single = results.get("paired", {})
    out: dict[str, dict] = {}
    # does the camera matter: the base policy against the follower it corrects, which never looks
    for which, r in single.get("base vs camera_blind", {}).items():
        ci = r["ci95"]
        out.setdefault("base vs camera_blind", {})[which] = {
            "difference": r["difference"], "ci95": list(ci), "p": r["mcnemar_p"],
            "method": "paired episodes, evaluation noise only",
            "verdict": "lower" if ci[1] < 0 else "higher" if ci[0] > 0 else "not distinguishable"}
    for arm in results.get("arms", []):
        for ref in REFERENCES.get(arm, ()):
            name = f"{arm} vs {ref}"
            for which in ("in_distribution", "ood"):
                r = reps.get(name, {}).get(which)
                if r and r["mean"]["ci95"] is not None:
                    d, ci = r["mean"]["mean"], r["mean"]["ci95"]
                    p = r["t_test"]["p"]
                    method = f"mean over {len(r['differences'])} replicates, t interval, paired t test"
                elif single.get(name, {}).get(which):
                    r = single[name][which]
                    d, ci, p = r["difference"], r["ci95"], r["mcnemar_p"]
                    method = "1 replicate: paired episodes, evaluation noise only"
                else:
                    continue
                verdict = ("lower" if ci[1] < 0 else "higher" if ci[0] > 0
                           else "not distinguishable")
                out.setdefault(name, {})[which] = {"difference": d, "ci95": list(ci), "p": p,
                                                   "method": method, "verdict": verdict}
    return out


def scope_sentence(cfg: LoopConfig, results: dict) -> str:
    """One sentence: what a run of this size can and cannot conclude."""
    base = results.get("policies", {}).get("base", {}).get("in_distribution", {})
    rate = base.get("failure_rate", 0.5) or 0.5
    n_id, n_ood = cfg.eval.in_distribution_rollouts, cfg.eval.ood_rollouts
    half = 100 * 1.96 * (rate * (1 - rate) / n_id) ** 0.5
    size = (f"{cfg.replicates} replicate(s) and {n_id} in-distribution / {n_ood} held-out "
            f"rollouts per policy")
    if cfg.replicates < 3:
        return (f"With {size}, this run shows that the loop works end to end and which way "
                f"large effects point, but it cannot rank the arms or say whether the taxonomy "
                f"helped: a single rate is uncertain by about ±{half:.0f} points from "
                "evaluation alone and an arm moves by several points between seeds, which "
                "only an interval over ≥ 3 replicates holds; run `failtax close-loop full` "
                "(3 replicates, 400 / 200 rollouts) for that.")
    return (f"With {size}, the t intervals over replicates hold collection, training and "
            f"evaluation noise: a difference whose interval excludes 0 is established at this "
            f"size, one whose interval spans 0 is not (a single rate is still uncertain by "
            f"about ±{half:.0f} points from evaluation alone).")


def skipped_arms(out: Path) -> dict[str, str]:
    """Arms whose regions file has no region (e.g. no mode matched a kind of the new site)."""
    skipped = {}
    for f in sorted(out.glob("cycle*/*/regions_*.json")):
        doc = _read_json(f) or {}
        if not doc.get("regions"):
            skipped[f"{f.parent.parent.name}/{doc.get('arm', f.stem)}"] = doc.get(
                "why", "no regions")
    return skipped


def collect_results(cfg: LoopConfig, out: Path) -> dict[str, Any]:
    """Gather every number of the loop folder into the results.json dict."""
    policies: dict[str, dict] = {}
    for pol in _policies(out):
        for which in ("in_distribution", "ood"):
            s = _read_json(out / "evals" / pol / which / "summary.json")
            if s is not None:
                policies.setdefault(pol, {})[which] = _set_result(s)
    reduction: dict[str, dict] = {}
    base = policies.get("base", {})
    for pol, sets in policies.items():
        if pol in ("base", "camera_blind"):
            continue
        for which, r in sets.items():
            b = base.get(which, {}).get("failure_rate")
            if b:
                reduction.setdefault(pol, {})[which] = (b - r["failure_rate"]) / b
    causes: dict[str, dict] = {}
    for pol, sets in policies.items():
        for which, r in sets.items():
            for cause, n in r["failures_by_cause"].items():
                causes.setdefault(which, {}).setdefault(cause, {})[pol] = int(n)
    taxonomies = []
    for rfile in sorted(out.glob("cycle*/*/regions.json")):
        doc = _read_json(rfile) or {}
        mining = _read_json(rfile.parent / "mine" / "summary.json") or {}
        tax = _read_json(rfile.parent / "discover" / "taxonomy.json") or {}
        taxonomies.append({
            "cycle": int(rfile.parent.parent.name.removeprefix("cycle")),
            "policy": rfile.parent.name,
            "strategy": tax.get("strategy"), "notes": tax.get("notes", {}),
            "mining": {"rollouts": mining.get("eval/num_rollouts"),
                       "failures": mining.get("eval/failures"),
                       "failure_rate": mining.get("eval/failure_rate")},
            "outliers": doc.get("outlier_episodes"),
            "embedder": doc.get("embedder"),
            "modes": [{
                "name": m["name"], "description": m["description"], "keywords": m["keywords"],
                "frequency": m["frequency"], "count": m["count"],
                "budget_samples": m.get("budget_samples", 0),
                "collision_sites": len(m["collision_sites"]),
                "semantic_matches": [f"{s['object_class']}/{s['material']} ({s['similarity']:.2f})"
                                     for s in m["semantic_matches"]],
                "best_kind": _best(m.get("semantic_best")),
                "shuffled_matches": [f"{s['object_class']}/{s['material']}"
                                     for s in m.get("shuffled_matches", [])],
                "site_matches": [f"{s['object_class']}/{s['material']} ({s['similarity']:.2f})"
                                 for s in m.get("site_matches", [])],
                "site_best_kind": _best(m.get("site_best")),
            } for m in doc.get("modes", [])],
            "regions": {arm: len(recs) for arm, recs in doc.get("regions", {}).items()},
            "shuffle": doc.get("shuffle"), "site": (doc.get("site") or {}).get("family"),
            "matching": {k: (doc.get("config") or {}).get(k) for k in (
                "semantic_source", "kind_text", "semantic_score", "semantic_min_similarity")},
        })
    secs = stage_seconds(out)
    cpu = stage_cpu_seconds(out)
    by_kind: dict[str, float] = {}
    for name, s in secs.items():
        kind = name.split("/")[-1] if not name.startswith("evaluate/") else "evaluate"
        by_kind[kind] = by_kind.get(kind, 0.0) + s
    results = {
        "schema_version": SCHEMA_VERSION, "preset": cfg.preset,
        "budget_samples": cfg.budget_samples, "base_budget_samples": cfg.base.budget_samples,
        "arms": list(cfg.arms), "cycles": cfg.cycles, "split": cfg.split,
        "eval": cfg.eval.model_dump(mode="json"), "policies": policies,
        "relative_reduction": reduction,
        "paired": paired_comparisons(out, list(policies)),
        "replicates": pooled_replicates(out, policies),
        "causes": causes, "taxonomies": taxonomies,
        "stage_seconds": secs, "seconds_by_kind": by_kind,
        "total_seconds": sum(secs.values()),
        "stage_cpu_seconds": cpu, "total_cpu_seconds": sum(cpu.values()),
        "replicate_count": cfg.replicates, "skipped_arms": skipped_arms(out),
        "taxonomy_use": {a: TAXONOMY_USE.get(a, "") for a in cfg.arms},
    }
    results["ablation"] = ablation(results)
    results["scope"] = scope_sentence(cfg, results)
    return results


def _best(best: dict | None) -> str | None:
    return None if not best else (f"{best['object_class']}/{best['material']} "
                                  f"({best['similarity']:.2f})")


# ---------------------------------------------------------------------- plots
def _png(fig) -> str:
    """PNG data URI of a figure, which is closed."""
    import matplotlib.pyplot as plt

    uri = png_data_uri(fig)
    plt.close(fig)
    return uri


def plot_failure_rates(results: dict) -> str | None:
    """Bar chart: failure rate per policy and set with Wilson 95% error bars (PNG data URI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pols = list(results["policies"])
    if not pols:
        return None
    sets = [s for s in ("in_distribution", "ood")
            if any(s in results["policies"][p] for p in pols)]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(pols), 3.4))
    width = 0.8 / max(len(sets), 1)
    for j, which in enumerate(sets):
        xs, ys, lo, hi = [], [], [], []
        for i, p in enumerate(pols):
            r = results["policies"][p].get(which)
            if r is None:
                continue
            xs.append(i + (j - (len(sets) - 1) / 2) * width)
            ys.append(r["failure_rate"])
            lo.append(r["failure_rate"] - r["ci95"][0])
            hi.append(r["ci95"][1] - r["failure_rate"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=4, label=SET_LABELS[which])
    ax.set_xticks(np.arange(len(pols)), pols, rotation=15)
    ax.set_ylabel("failure rate")
    ax.set_ylim(0, 1.08)
    ax.legend()
    ax.set_title("Failure rate per arm (95% Wilson intervals)")
    return _png(fig)


def plot_causes(results: dict, which: str = "in_distribution") -> str | None:
    """Grouped bars: failures per ground-truth cause, per policy (PNG data URI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = results["causes"].get(which)
    if not table:
        return None
    causes = sorted(table, key=lambda c: -sum(table[c].values()))
    pols = [p for p in results["policies"] if which in results["policies"][p]]
    fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(causes), 3.4))
    width = 0.8 / max(len(pols), 1)
    for j, p in enumerate(pols):
        ax.bar(np.arange(len(causes)) + (j - (len(pols) - 1) / 2) * width,
               [table[c].get(p, 0) for c in causes], width, label=p)
    ax.set_xticks(np.arange(len(causes)), causes, rotation=20)
    ax.set_ylabel("failures")
    ax.legend(fontsize=8)
    ax.set_title(f"Failures by ground-truth cause, {SET_LABELS[which]} set")
    return _png(fig)


def region_maps(cfg: LoopConfig, out: Path, max_maps: int = 2) -> list[tuple[str, str]]:
    """Top-down maps of the buildings with most collision sites: regions + failures.

    Returns:
        (title, PNG data URI) per map.
    """
    from sim.env import load_world
    from sim.topdown import Region, render_topdown

    maps = []
    sim_cfg = cfg.nav.sim
    for rfile in sorted(out.glob("cycle*/*/regions.json")):
        doc = _read_json(rfile) or {}
        counts: dict[str, int] = {}
        for m in doc.get("modes", []):
            for s in m["collision_sites"]:
                counts[s["building_id"]] = counts.get(s["building_id"], 0) + 1
        for bid, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_maps]:
            seed = int(bid.rsplit("-", 1)[1])
            world = load_world(sim_cfg, doc.get("family", "office_a"), seed)
            sites, highlight = [], []
            for m in doc.get("modes", []):
                sites += [tuple(s["xy"]) for s in m["collision_sites"] if s["building_id"] == bid]
                for sm in m["semantic_matches"]:
                    highlight += sm["object_ids"].get(bid, [])
            uniq: dict = {}  # one circle per site, even when both arms list it
            for rec in [r for recs in doc.get("regions", {}).values() for r in recs]:
                if rec.get("building_id") == bid and rec["why"] == "collision_site":
                    for a in rec["areas"]:
                        key = (tuple(a["points"][0]), a["radius_m"])
                        uniq[key] = Region.circle(key[0], key[1], rec["mode"][:18])
            img = render_topdown(world.building, collisions=sites, regions=list(uniq.values()),
                                 highlight_object_ids=sorted(set(highlight)),
                                 title=f"{bid}: collision sites (x), regions, semantic matches")
            maps.append((f"{rfile.parent.parent.name}/{rfile.parent.name} {bid}", png_data_uri(img)))
    return maps


# ---------------------------------------------------------------------- documents
def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def report_markdown(results: dict) -> str:
    """report.md: the numbers in tables."""
    lines = [(f"# Closed loop: {results.get('preset') or 'custom'} "
              f"(B = {results['budget_samples']} samples per arm, {results['cycles']} cycle(s))"),
             "", f"**What this run can conclude.** {results.get('scope', '')}"]
    lines += _ablation_markdown(results)
    lines += _replicates_markdown(results.get("replicates") or {})
    lines += ["", "## Failure rate per policy (95% Wilson interval; evaluation noise only)", "",
              "| policy | set | failure rate | 95% CI | failures / rollouts | rel. reduction |",
              "|---|---|---|---|---|---|"]
    for pol, sets in results["policies"].items():
        for which, r in sets.items():
            red = results["relative_reduction"].get(pol, {}).get(which)
            lines.append(f"| {pol} | {SET_LABELS[which]} | {_pct(r['failure_rate'])} | "
                         f"{_ci(r['ci95'])} | {r['failures']}/"
                         f"{r['rollouts']} | {'' if red is None else _pct(red)} |")
    if results.get("paired"):
        lines += ["", "## Paired comparison on the same evaluation episodes", "",
                  "Difference of failure rates (first minus second), Agresti-Min 95% interval,",
                  "episodes only one of the two failed, McNemar exact p.", "",
                  ("| comparison | set | difference | 95% CI | only first / only second "
                   "failed | p |"), "|---|---|---|---|---|---|"]
        for name, sets in results["paired"].items():
            for which, r in sets.items():
                lines.append(f"| {name} | {SET_LABELS[which]} | {_pct(r['difference'])} | "
                             f"{_ci(r['ci95'])} | "
                             f"{r['only_a_failed']} / {r['only_b_failed']} | "
                             f"{r['mcnemar_p']:.2g} |")
    for which, table in results["causes"].items():
        pols = [p for p in results["policies"] if which in results["policies"][p]]
        lines += ["", f"## Failures by ground-truth cause ({SET_LABELS[which]})", "",
                  "| cause | " + " | ".join(pols) + " |", "|---" * (len(pols) + 1) + "|"]
        for cause in sorted(table, key=lambda c: -sum(table[c].values())):
            lines.append(f"| {cause} | " + " | ".join(str(table[cause].get(p, 0)) for p in pols)
                         + " |")
    for t in results["taxonomies"]:
        mn = t["mining"]
        lines += ["", (f"## Taxonomy, cycle {t['cycle']} ({t['policy']} policy; "
                       f"{mn['failures']} failures of {mn['rollouts']} mining rollouts, "
                       f"{t['outliers']} outliers)"), "",
                  f"Matching: {_matching(t.get('matching') or {})}.", "",
                  ("| mode | frequency | count | budget | collision sites | semantic matches | "
                   "shuffled control | new site |"), "|---|---|---|---|---|---|---|---|"]
        for m in t["modes"]:
            nomatch = f"no match (best {m.get('best_kind')})" if m.get("best_kind") else "–"
            site = (", ".join(m.get("site_matches") or []) or
                    (f"no match (best {m['site_best_kind']})" if m.get("site_best_kind")
                     else "–"))
            lines.append(f"| {m['name']} | {_pct(m['frequency'])} | {m['count']} | "
                         f"{m['budget_samples']} | {m['collision_sites']} | "
                         f"{', '.join(m['semantic_matches']) or nomatch} | "
                         f"{', '.join(m.get('shuffled_matches') or []) or '–'} | {site} |")
        sh = t.get("shuffle") or {}
        if sh:
            lines += ["", (f"Shuffled control: {sh.get('method')}"
                      f"{' (' + sh['why'] + ')' if sh.get('why') else ''}, seed {sh.get('seed')}.")]
    cpu = results.get("stage_cpu_seconds", {})
    lines += ["", "## Wall time per stage", "",
              "CPU seconds: this process and its finished children (workers, model server);",
              "on a shared machine they, not wall time, say what a stage costs on free cores.", "",
              "| stage | wall seconds | CPU seconds |", "|---|---|---|"]
    for name, s in results["stage_seconds"].items():
        c = cpu.get(name)
        lines.append(f"| {name} | {s:.1f} | {'' if c is None else f'{c:.1f}'} |")
    lines.append(f"| **total** | **{results['total_seconds']:.1f}** | "
                 f"**{results.get('total_cpu_seconds', 0.0):.1f}** |")
    return "\n".join(lines) + "\n"


def _matching(m: dict) -> str:
    return (f"mode text from `{m.get('semantic_source')}` against object kinds as "
            f"`{m.get('kind_text')}` text, {m.get('semantic_score')} MiniLM score ≥ "
            f"{m.get('semantic_min_similarity')}")


def _ablation_markdown(results: dict) -> list[str]:
    """Which arm needed the taxonomy, and each arm's difference to its controls."""
    lines = ["", "## Which arm needed the taxonomy", "",
             "| arm | takes from the taxonomy |", "|---|---|"]
    for arm, use in (results.get("taxonomy_use") or {}).items():
        skipped = [why for k, why in (results.get("skipped_arms") or {}).items()
                   if k.endswith("/" + arm)]
        lines.append(f"| {arm} | {use}{' — SKIPPED: ' + skipped[0] if skipped else ''} |")
    abl = results.get("ablation") or {}
    if abl:
        lines += ["", ("Differences of failure rates (first minus second; negative: the first "
                       "fails less), same budget and seeds:"), "",
                  "| comparison | set | difference | 95% CI | p | verdict | how |",
                  "|---|---|---|---|---|---|---|"]
        for name, sets in abl.items():
            for which, r in sets.items():
                p = "–" if r["p"] is None else f"{r['p']:.2g}"
                lines.append(f"| {name} | {SET_LABELS[which]} | {_pct(r['difference'])} | "
                             f"{_ci(r['ci95'])} | {p} | {r['verdict']} | {r['method']} |")
        lines += ["", _taxonomy_verdict(abl)]
    return lines


def _taxonomy_verdict(abl: dict) -> str:
    """One paragraph: did the taxonomy's text pay, by the controls that isolate it."""
    said = []
    for name, what in (("targeted_semantic vs targeted_shuffled", ("matching each mode's text "
                        "to its own kinds (vs shuffled)")),
                       ("targeted_semantic vs targeted_collision", ("adding the semantic "
                        "targets to the collision sites")),
                       ("site_semantic vs site_uniform", ("targeting a new site by the mode "
                        "text (vs uniform there)")),
                       ("base vs camera_blind", ("the base policy's camera (vs the camera-blind "
                        "route follower it corrects)"))):
        for which, r in abl.get(name, {}).items():
            v = {"lower": "helped", "higher": "hurt",
                 "not distinguishable": "made no difference this run could resolve"}[r["verdict"]]
            said.append(f"{what} {v} {SET_LABELS[which]} ({_pct(r['difference'])}, "
                        f"{_ci(r['ci95'])})")
    if not said:
        return "No control ran, so nothing isolates the taxonomy's (or the camera's) effect here."
    return "Measured: " + "; ".join(said) + "."


def _ci(ci: list[float] | None) -> str:
    return "–" if ci is None else f"{_pct(ci[0])} to {_pct(ci[1])}"


def _replicates_markdown(reps: dict) -> list[str]:
    """The replicate tables of report.md (nothing without replicates)."""
    if not reps:
        return []
    lines = ["", (f"## Replicates: up to {reps['count']} per arm, each with its own "
                  "collection and training seeds (the headline numbers)"), "",
             "Mean over replicates with a t interval (holds collection and training noise);",
             "pooled: all rollouts together, Wilson interval (evaluation noise only).", "",
             ("| arm | set | per replicate | mean (t 95% CI) | pooled (95% CI) | pooled rel. "
              "reduction |"), "|---|---|---|---|---|---|"]
    for key, sets in reps["arms"].items():
        for which, r in sets.items():
            pooled, red = r["pooled"], r["pooled"]["relative_reduction"]
            lines.append(f"| {key} | {SET_LABELS[which]} | "
                         f"{', '.join(_pct(v) for v in r['failure_rates'])} | "
                         f"{_pct(r['mean']['mean'])} ({_ci(r['mean']['ci95'])}) | "
                         f"{_pct(pooled['failure_rate'])} ({_ci(pooled['ci95'])}) | "
                         f"{'' if red is None else _pct(red)} |")
    lines += ["", ("Paired differences (first minus second), per replicate on the same "
                   "episodes; pooled over every (replicate, episode) pair."), "",
              ("| comparison | set | per replicate | mean (t 95% CI) | pooled (95% CI) | "
               "pooled p |"), "|---|---|---|---|---|---|"]
    for name, sets in reps["paired"].items():
        for which, r in sets.items():
            pooled = r["pooled"]
            lines.append(f"| {name} | {SET_LABELS[which]} | "
                         f"{', '.join(_pct(v) for v in r['differences'])} | "
                         f"{_pct(r['mean']['mean'])} ({_ci(r['mean']['ci95'])}) | "
                         f"{_pct(pooled['difference'])} ({_ci(pooled['ci95'])}) | "
                         f"{pooled['mcnemar_p']:.2g} |")
    return lines


def markdown_blocks(markdown: str) -> list[dict[str, Any]]:
    """report.md as blocks the HTML template renders: h1, h2, p and tables.

    A table's first row is its header; `**bold**` marks of a cell are dropped;
    lines not separated by a blank line form one paragraph.
    """
    blocks: list[dict[str, Any]] = []
    previous_blank = True
    for line in markdown.splitlines():
        if line.startswith("# "):
            blocks.append({"kind": "h1", "text": line[2:]})
        elif line.startswith("## "):
            blocks.append({"kind": "h2", "text": line[3:]})
        elif line.startswith("|---"):
            continue
        elif line.startswith("|"):
            cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
            if blocks and blocks[-1]["kind"] == "table":
                blocks[-1]["rows"].append(cells)
            else:
                blocks.append({"kind": "table", "header": cells, "rows": []})
        elif line.strip():  # consecutive lines are one paragraph, as in Markdown
            if blocks and blocks[-1]["kind"] == "p" and not previous_blank:
                blocks[-1]["text"] += " " + line.strip()
            else:
                blocks.append({"kind": "p", "text": line.strip()})
        previous_blank = not line.strip()
    return blocks


def report_html(results: dict, images: list[tuple[str, str]], markdown: str) -> str:
    """report.html: the tables of report.md plus the plots (title, PNG data URI), one file."""
    blocks = markdown_blocks(markdown)
    head = blocks[:1] if blocks and blocks[0]["kind"] == "h1" else []
    return render_page("loop", "loop_report.html", head=head, figures=images, blocks=blocks[len(head):])


def write_results(cfg: LoopConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write results.json, report.md and report.html into the loop folder."""
    out = Path(out_dir)
    results = collect_results(cfg, out)
    md = report_markdown(results)
    images: list[tuple[str, str]] = []
    for title, fn in (("Failure rate per arm", plot_failure_rates),
                      ("Failures by cause (in-distribution)", plot_causes),
                      ("Failures by cause (OOD)", lambda r: plot_causes(r, "ood"))):
        uri = fn(results)
        if uri:
            images.append((title, uri))
    try:
        images += [(f"Top-down map {t}", b) for t, b in region_maps(cfg, out)]
    except (OSError, ValueError, KeyError) as e:  # a map is a nicety; keep the numbers
        results["map_error"] = f"{type(e).__name__}: {e}"
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", report_html(results, images, md))
    return results


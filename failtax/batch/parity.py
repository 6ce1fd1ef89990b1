"""How far a batch run is from the all-live run on the same model, recipe and seed.

Two questions, answered from files only:
- per call (`call_agreement`): the batch's custom_id is the call-cache key, so two
  cache folders — one filled by an all-live run, one by batch import — hold the same
  keys for the same calls; for each key in both, is the answer text the same? A call
  whose input differs (because an earlier answer differed) has a different key and
  shows up as only in one of them.
- per run (`run_agreement`): the taxonomy (mode names and descriptions), the
  assignments (episode → modes) and the explanations of two run folders.

`benchmarks/batch_parity_bench.py` measures both with the real embedded model;
docs/SCALE.md quotes the result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from failtax.run_folder import read_assignments, read_explanations, read_taxonomy


def _cache_entries(cache_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """key → cache record of every entry under `cache_dir` (one JSON file per call)."""
    out = {}
    for path in Path(cache_dir).glob("*/*.json"):
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a torn entry is not an answer
    return out


def call_agreement(cache_a: str | os.PathLike, cache_b: str | os.PathLike, *, examples: int = 5) -> dict[str, Any]:
    """Answers of the calls both caches hold, compared by text.

    Returns: common, same, different (counts), by_method ({method: [same, different]}),
    only_a, only_b (keys in one cache only: calls whose input already differed, or that
    one run never made), and up to `examples` differing answers side by side.
    """
    a, b = _cache_entries(cache_a), _cache_entries(cache_b)
    common = sorted(set(a) & set(b))
    by_method: dict[str, list[int]] = {}
    diffs = []
    for key in common:
        method = a[key].get("request", {}).get("method", "?")
        same = a[key]["result"].get("text") == b[key]["result"].get("text")
        by_method.setdefault(method, [0, 0])[0 if same else 1] += 1
        if not same:
            diffs.append({"key": key, "method": method, "a": a[key]["result"].get("text", "")[:160],
                          "b": b[key]["result"].get("text", "")[:160]})
    different = len(diffs)
    return {"common": len(common), "same": len(common) - different, "different": different,
            "by_method": by_method, "only_a": len(set(a) - set(b)), "only_b": len(set(b) - set(a)),
            "examples": diffs[:examples]}


def run_agreement(run_a: str | os.PathLike, run_b: str | os.PathLike) -> dict[str, Any]:
    """Taxonomy, assignments and explanations of two run folders compared.

    Returns: same_taxonomy (every mode's name, description and keywords), names_a /
    names_b, same_assignments and assignments_differing (episodes whose modes differ),
    explanations_differing (episodes whose trajectory or failure reason differ).
    """
    ta, tb = read_taxonomy(run_a), read_taxonomy(run_b)
    aa, ab = _assignments(run_a), _assignments(run_b)
    ea, eb = _explanations(run_a), _explanations(run_b)
    return {
        "same_taxonomy": _modes(ta) == _modes(tb),
        "names_a": [m.name for m in ta.modes],
        "names_b": [m.name for m in tb.modes],
        "same_assignments": aa == ab,
        "assignments_differing": sum(aa.get(k) != ab.get(k) for k in set(aa) | set(ab)),
        "explanations_differing": sum(ea.get(k) != eb.get(k) for k in set(ea) | set(eb)),
        "explanations": len(set(ea) | set(eb)),
    }


def _modes(taxonomy) -> list[tuple]:
    return [(m.name, m.description, tuple(m.keywords), m.count) for m in taxonomy.modes]


def _assignments(run: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    return {x.episode_id: tuple(x.modes) for x in read_assignments(run)}


def _explanations(run: str | os.PathLike) -> dict[str, tuple[str, str]]:
    return {e.episode_id: (e.trajectory, e.failure_reason) for e in read_explanations(run)}


def summarize(calls: dict[str, Any], runs: dict[str, Any]) -> str:
    """One line: answers that differ of those compared, and whether the taxonomy agrees."""
    methods = {m: d for m, (_, d) in calls["by_method"].items()}
    return (f"{calls['different']} of {calls['common']} answers differ ({methods}); "
            f"{calls['only_a']}/{calls['only_b']} calls in one run only; taxonomy "
            f"{'identical' if runs['same_taxonomy'] else 'differs'}, "
            f"{runs['assignments_differing']} assignments and {runs['explanations_differing']} of "
            f"{runs['explanations']} explanations differ")


__all__ = ["call_agreement", "run_agreement", "summarize"]

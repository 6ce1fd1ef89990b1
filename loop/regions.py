"""Failure modes → regions where the expert should collect data (regions.json).

Inputs: a failtax run's taxonomy and assignments, the failure episodes those
assignments name (episode files, docs/EPISODE_FORMAT.md) and the building map.
For each mode the regions say *why* they were chosen:

* ``collision_site``: where the mode's episodes failed — the robot's pose at
  ``meta.failure_step`` read from ``steps.jsonl`` (through ``common.episode``,
  the format's one reader), a circle of
  ``collision_radius_m`` around it, in that episode's building. Like the
  pipeline, this reader never opens ``ground_truth.json`` (the hidden label);
  only the loop's final evaluation breakdown reads ground truth.
  Each site also keeps replay starts: the robot's logged pose
  ``replay_offsets_s`` seconds before the failure, with the episode's goal, so
  collection can put the policy back into the situation it failed in.
* ``semantic_match``: every other object whose kind matches the mode: the
  mode's "name. description. keywords" is embedded (failtax.embedding, the
  local MiniLM by default) against one text per (object class, material)
  of the family's buildings — how the class looks to the robot's sensors
  (``kind_text: sensor``, SENSOR_DESCRIPTIONS) or its name ("glass door made
  of glass"); with ``semantic_source: members`` / ``mode_and_members`` the
  failure explanations assigned to the mode stand for it instead. Kinds at or
  above ``semantic_min_similarity`` (of the centred score by default) and within
  ``semantic_margin`` of the mode's best kind match; a mode without a match
  records its best candidate (``semantic_best``).
* the shuffled-taxonomy control (``targeted_shuffled``): the semantic targets
  moved between modes (`shuffled_matches`); and a new site (``site_semantic``):
  the same mode texts matched against another family's kinds. With ``semantic_scope: family`` a match is a class/material
  selector valid in every building of the family; with ``failure_buildings``
  it lists the matching object ids of the buildings where the mode failed.

The budget B is split across modes by assigned frequency (or equally, or by
sqrt frequency; `split_budget` keeps integer sample counts that sum to B), and
within a mode between its collision sites and its semantic matches. Each arm's
collection file (`arm_regions`) is a regions file `nav_policy.regions` reads.

regions.json (schema_version 1)::

    {"schema_version": 1, "budget_samples": B, "split": "frequency",
     "modes": [{"name", "description", "keywords", "frequency", "count",
                "episodes": [ids], "buildings": [ids], "budget_samples": int,
                "collision_sites": [{"episode_id", "building_id", "xy", "yaw_rad",
                                     "failure_step", "objects": [{"object_id", "object_class",
                                     "material", "distance_m"}]}],
                "semantic_matches": [{"object_class", "material", "similarity",
                                      "object_ids": {building_id: [ids]}}],
                "semantic_best": {"object_class", "material", "similarity"},
                "shuffled_matches": [...], "site_matches": [...], "site_best": {...},
                "skipped_episodes": [{"episode_id", "why"}]}],
     "regions": {arm: [region records, see nav_policy/regions.py, each with
                       "mode", "why" and "budget_samples"]},
     "outlier_episodes": int, "embedder": name, "config": {...},
     "shuffle": {"method": "permutation" | "random_kinds" | "none", "seed", ...},
     "site": null | {"family", "catalogue"}}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.episode import EpisodeFormatError, StepRecord, read_meta, read_steps
from failtax.embedding import EmbeddingConfig, make_text_embedder
from sim.env import load_world
from sim.query import MapQuery

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
OUTLIER = "outlier"
# arms that collect at the mined failures' regions (in the family the failures came from)
TARGETED_ARMS = ("targeted_semantic", "targeted_collision", "targeted_shuffled")
# arms that collect in a new site (another family) before the robot has failed there
SITE_ARMS = ("site_semantic",)


# ---------------------------------------------------------------------- collision sites
@dataclass(frozen=True)
class CollisionSite:
    """Where an episode failed, from its own log (no ground truth)."""

    episode_id: str
    building_id: str
    family: str
    building_seed: int
    xy: tuple[float, float]
    yaw_rad: float
    failure_step: int
    starts: tuple[dict, ...] = ()  # replay starts: {"xy", "yaw_rad", "goal_xy", "before_s"}


def building_seed_of(building_id: str) -> int:
    """Seed of a generated building from its id ("office_a-000123" → 123)."""
    try:
        return int(str(building_id).rsplit("-", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f"building id {building_id!r} is not '<family>-<seed>'; region mapping "
                         "needs episodes recorded in generated buildings") from None


def read_collision_site(episode_dir: str | Path, replay_offsets_s: Sequence[float] = ()
                        ) -> tuple[CollisionSite | None, str]:
    """The robot's pose at the failure step of one episode, read from meta.json + steps.jsonl.

    Args:
        episode_dir: one episode folder (docs/EPISODE_FORMAT.md).
        replay_offsets_s: also keep the logged pose this many seconds before the failure,
            with the step's goal, as replay starts (offsets past the log's start are dropped).

    Returns:
        (site, "") or (None, why) for episodes that have no collision site
        (not a collision, no failure step, unreadable files). Never opens
        ground_truth.json.
    """
    d = Path(episode_dir)
    try:
        meta = read_meta(d)
    except EpisodeFormatError as e:
        return None, e.message
    if meta.outcome != "collision":
        return None, f"outcome {meta.outcome!r} has no collision site"
    step = meta.failure_step
    if step is None:
        return None, "meta.failure_step is null"
    try:
        steps = read_steps(d)
    except EpisodeFormatError as e:
        return None, e.message
    if not steps:
        return None, "steps.jsonl has no pose"
    # The record at the failure step; a log cut short falls back to its last record.
    at = next((i for i, rec in enumerate(steps) if rec.step == step), None)
    record, before = (steps[at], steps[:at]) if at is not None else (steps[-1], steps)
    if record.step != step:
        log.warning("%s: failure_step %d not in steps.jsonl; using step %s", d.name, step,
                    record.step)
    building_id = meta.building_id
    if not building_id:
        return None, "meta.building_id is missing"
    try:
        bseed = building_seed_of(building_id)
    except ValueError as e:
        return None, str(e)
    family = meta.building_family or building_id.rsplit("-", 1)[0]
    return CollisionSite(meta.episode_id, building_id, family, bseed,
                         (record.x_m, record.y_m), record.yaw_rad, step,
                         _replay_starts(before, record, replay_offsets_s)), ""


def _replay_starts(before: Sequence[StepRecord], failure: StepRecord,
                   offsets_s: Sequence[float]) -> tuple[dict, ...]:
    """Logged poses `offsets_s` before the failure record, each with that step's goal."""
    out = []
    for off in offsets_s:
        rec = next((r for r in reversed(before) if r.t_s <= failure.t_s - off + 1e-6), None)
        if rec is None or not rec.goal:
            continue
        out.append({"xy": [round(rec.x_m, 4), round(rec.y_m, 4)],
                    "yaw_rad": round(rec.yaw_rad, 4),
                    "goal_xy": [round(float(v), 4) for v in rec.goal],
                    "before_s": float(off)})
    return tuple(out)


def merge_sites(sites: Sequence[CollisionSite], within_m: float) -> list[list[CollisionSite]]:
    """Group sites of the same building lying within `within_m` of a group's first site."""
    groups: list[list[CollisionSite]] = []
    for s in sites:
        for g in groups:
            if g[0].building_id == s.building_id and math.dist(g[0].xy, s.xy) <= within_m:
                g.append(s)
                break
        else:
            groups.append([s])
    return groups


# ---------------------------------------------------------------------- budget split
def mode_weights(frequencies: Sequence[float], split: str, min_frequency: float = 0.0
                 ) -> list[float]:
    """Weights of modes for the budget split (sum 1; all zero if no mode qualifies)."""
    f = np.asarray(frequencies, float)
    f = np.where(f >= min_frequency, np.maximum(f, 0.0), 0.0)
    if split == "frequency":
        w = f
    elif split == "sqrt_frequency":
        w = np.sqrt(f)
    elif split == "equal":
        w = (f > 0).astype(float) if min_frequency > 0 else np.ones_like(f)
    else:
        raise ValueError(f"unknown split {split!r}; valid: frequency, equal, sqrt_frequency")
    total = w.sum()
    if total <= 0:
        return [0.0] * len(f)
    return list(w / total)


def split_budget(total: int, weights: Sequence[float]) -> list[int]:
    """Integer budgets proportional to `weights` that sum exactly to `total` (largest remainder).

    Example:
        >>> split_budget(10, [0.5, 0.3, 0.2])
        [5, 3, 2]
    """
    w = np.asarray(weights, float)
    if total < 0:
        raise ValueError("budget must be >= 0")
    if len(w) == 0:
        return []
    if w.sum() <= 0:
        raise ValueError("every weight is 0: no mode can take budget")
    exact = w / w.sum() * total
    out = np.floor(exact).astype(int)
    # Largest remainders first; ties go to the earlier (more frequent) entry.
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: total - int(out.sum())]:
        out[i] += 1
    return [int(v) for v in out]


# ---------------------------------------------------------------------- semantic match
# How each object class looks to the robot's sensors (docs/SIM.md: the realistic depth
# camera that sees through glass panes and loses thin objects beyond 2.5 m, the camera 0.6 m
# high that loses low objects on approach). A failure mode mined from robot logs speaks of
# these phenomena ("collided with something the depth sensor did not see"), not of class
# names, so `kind_text: sensor` matches its text against these. No sentence names "the
# robot": words every mode shares would pull every kind up alike.
SENSOR_DESCRIPTIONS: dict[str, str] = {
    "glass_partition": ("transparent glass wall. The depth sensor did not see it: depth reported "
                        "free space ahead at contact, it sees through the pane. Invisible to "
                        "depth, see-through in the camera."),
    "glass_door": ("open transparent glass door. The depth sensor did not see it: depth reported "
                   "free space ahead at contact, only its thin frame returns. Invisible to depth, "
                   "see-through in the camera."),
    "pole": ("thin vertical pole. A thin object that vanished from depth at range and appeared "
             "in depth only when close; one pixel wide and faint in the camera."),
    "table": ("table. A top high enough to pass under, on thin vertical legs that appeared in "
              "depth only when close."),
    "chair": ("chair. Thin legs under a seat, thin vertical objects that appeared in depth only "
              "when close, met off-centre."),
    "box": ("low box on the floor. A low obstacle below the camera's gaze: it dropped below the "
            "camera and left the camera's view on approach."),
    "bin": ("low bin on the floor. A low obstacle below the camera's gaze: it dropped below the "
            "camera and left the camera's view on approach."),
    "plain_wall": ("plain wall. Featureless, uniform colour close to the floor's tone, hard to "
                   "see in the camera; wide, hit head-on."),
    "wall": "textured wall. A wide surface hit head-on, clearly seen in depth.",
    "pillar": ("pillar or wall corner. A convex corner clipped while turning, met off-centre at "
               "the edge of the view."),
    "cabinet": "cabinet. Wide solid furniture hit head-on, clearly seen in depth.",
}


def kind_phrase(object_class: str, material: str) -> str:
    """The text an object kind is matched by, e.g. "glass door made of glass"."""
    return f"{object_class.replace('_', ' ')} made of {material.replace('_', ' ')}"


def kind_text(object_class: str, material: str, style: str = "sensor",
              descriptions: dict[str, str] | None = None) -> str:
    """What a kind is matched by: "name" (`kind_phrase`) or "sensor" (how the class looks
    to the robot's sensors: `descriptions` or SENSOR_DESCRIPTIONS; a class without one
    falls back to its name)."""
    if style == "name":
        return kind_phrase(object_class, material)
    if style != "sensor":
        raise ValueError(f"unknown kind text {style!r}; valid: name, sensor")
    text = {**SENSOR_DESCRIPTIONS, **(descriptions or {})}.get(object_class)
    return text if text else kind_phrase(object_class, material)


def mode_text(mode: dict) -> str:
    """The text a failure mode is matched by: name, description and keywords."""
    keywords = ", ".join(mode.get("keywords") or [])
    return f"{mode.get('name', '')}. {mode.get('description', '')}. Keywords: {keywords}"


def semantic_scores(modes: Sequence[dict], kinds: Sequence[tuple[str, str]], embedder,
                    source: str = "mode",
                    member_texts: Sequence[Sequence[str]] | None = None, *,
                    kind_style: str = "name", score: str = "cosine",
                    descriptions: dict[str, str] | None = None) -> np.ndarray:
    """(modes, kinds) similarities between failure modes and object kinds.

    Args:
        source: what stands for a mode: "mode" (its name, description and keywords),
            "members" (the mean similarity of its episodes' failure explanations; a mode
            without members falls back to its text) or "mode_and_members" (the average).
        member_texts: per mode, the failure explanations assigned to it.
        kind_style: "name" or "sensor" (`kind_text`).
        score: "cosine", or "centred": cosine minus the mode's mean over all kinds, so a
            vague mode text that is a little like everything matches nothing.
        descriptions: per-class sensor descriptions replacing SENSOR_DESCRIPTIONS entries.
    """
    if score not in ("cosine", "centred"):
        raise ValueError(f"unknown semantic score {score!r}; valid: cosine, centred")
    kv = embedder.embed([kind_text(c, m, kind_style, descriptions) for c, m in kinds])
    by_text = embedder.embed([mode_text(m) for m in modes]) @ kv.T
    if source == "mode":
        sims = by_text
    elif source in ("members", "mode_and_members"):
        by_members = by_text.copy()
        for i, texts in enumerate(member_texts or [[] for _ in modes]):
            if texts:
                by_members[i] = (embedder.embed(list(texts)) @ kv.T).mean(axis=0)
        sims = by_members if source == "members" else (by_text + by_members) / 2
    else:
        raise ValueError(f"unknown semantic source {source!r}; valid: mode, members, "
                         "mode_and_members")
    if score == "centred":
        sims = sims - sims.mean(axis=1, keepdims=True)
    return sims


def semantic_matches(modes: Sequence[dict], kinds: Sequence[tuple[str, str]], embedder,
                     min_similarity: float, margin: float, max_kinds: int, *,
                     source: str = "mode",
                     member_texts: Sequence[Sequence[str]] | None = None,
                     kind_style: str = "name", score: str = "cosine",
                     descriptions: dict[str, str] | None = None,
                     best: list | None = None,
                     ) -> list[list[tuple[str, str, float]]]:
    """Per mode, the (class, material, similarity) kinds that match it, best first.

    A kind matches when its score against the mode (`semantic_scores`) is >=
    min_similarity and within `margin` of the mode's best kind; at most
    `max_kinds` per mode. `best`, when given, receives each mode's best kind and
    score, matched or not (the report says why a mode matched nothing).
    """
    if not modes or not kinds:
        return [[] for _ in modes]
    sims = semantic_scores(modes, kinds, embedder, source, member_texts, kind_style=kind_style,
                           score=score, descriptions=descriptions)
    out = []
    for row in sims:
        top = float(row.max())
        order = np.argsort(-row, kind="stable")
        picked = [(kinds[k][0], kinds[k][1], float(row[k])) for k in order
                  if row[k] >= min_similarity and row[k] >= top - margin][:max_kinds]
        out.append(picked)
        if best is not None:
            k = int(order[0])
            best.append({"object_class": kinds[k][0], "material": kinds[k][1],
                         "similarity": round(top, 4)})
    return out


def shuffled_matches(matches: Sequence[Sequence[dict]], kinds: Sequence[tuple[str, str]],
                     seed: int) -> tuple[list[list[dict]], dict]:
    """The shuffled-taxonomy control: each mode's semantic targets moved to another mode.

    Modes with matches keep their number of targets and budget, but take the targets
    of another matched mode (a seeded permutation with as few fixed points as possible).
    When fewer than two modes have distinct matches a permutation changes nothing; each
    matched kind is then replaced by a seeded random kind of the catalogue that the mode
    did not match ("random_kinds"). Without any match the control equals the
    collision-only arm ("none").

    Returns:
        (per-mode shuffled match lists, {"method", "permutation" or "replaced"}).
    """
    rng = np.random.default_rng(seed)
    key = [tuple(sorted((m["object_class"], m["material"]) for m in ms)) for ms in matches]
    matched = [i for i, ms in enumerate(matches) if ms]
    out = [list(ms) for ms in matches]
    if not matched:
        return out, {"method": "none", "why": "no mode matched a kind"}
    if len({key[i] for i in matched}) >= 2:
        best_perm, best_same = None, None
        for _ in range(200):
            perm = [matched[j] for j in rng.permutation(len(matched))]
            same = sum(key[i] == key[p] for i, p in zip(matched, perm))
            if best_same is None or same < best_same:
                best_perm, best_same = perm, same
            if same == 0:
                break
        for i, p in zip(matched, best_perm):
            out[i] = [{**m, "from_mode_index": p} for m in matches[p]]
        return out, {"method": "permutation",
                     "permutation": {str(i): int(p) for i, p in zip(matched, best_perm)},
                     "unchanged_modes": int(best_same)}
    replaced = {}
    for i in matched:
        own = set(key[i])
        pool = [k for k in kinds if k not in own]
        if not pool:
            continue
        pick = rng.choice(len(pool), size=min(len(matches[i]), len(pool)), replace=False)
        out[i] = [{"object_class": pool[j][0], "material": pool[j][1], "similarity": None,
                   "object_ids": {}, "random_kind": True} for j in pick]
        replaced[str(i)] = [f"{pool[j][0]}/{pool[j][1]}" for j in pick]
    return out, {"method": "random_kinds", "replaced": replaced,
                 "why": "fewer than two modes matched distinct kinds"}


def kind_catalogue(sim_config, family: str, building_seeds: Sequence[int]
                   ) -> dict[tuple[str, str], dict[str, list[int]]]:
    """(class, material) → {building_id: [object ids]} over the given buildings of a family."""
    cat: dict[tuple[str, str], dict[str, list[int]]] = {}
    for seed in building_seeds:
        q = MapQuery(load_world(sim_config, family, int(seed)))
        for o in q.objects():
            cat.setdefault((o.object_class, o.material), {}).setdefault(
                q.building.building_id, []).append(int(o.object_id))
    return cat


# ---------------------------------------------------------------------- regions.json
def build_regions(
    taxonomy: dict,
    assignments: Sequence[dict],
    episodes_dir: str | Path,
    sim_config,
    regions_cfg,
    *,
    budget_samples: int,
    split: str = "frequency",
    min_mode_frequency: float = 0.0,
    family: str = "office_a",
    embedder=None,
    explanations: dict[str, str] | None = None,
    site_family: str | None = None,
    shuffle_seed: int = 0,
) -> dict[str, Any]:
    """The regions document (module docstring) from a taxonomy and its assignments.

    Args:
        taxonomy: taxonomy.json of a failtax run (modes with frequency/count).
        assignments: assignments.jsonl records (episode_id, modes).
        episodes_dir: the failure episodes the run analysed.
        sim_config: the sim's SimConfig (buildings, world generation).
        regions_cfg: a `RegionsConfig`.
        budget_samples: B, split across modes and regions.
        split: "frequency", "equal" or "sqrt_frequency".
        min_mode_frequency: modes below it get no budget.
        family: the building family of the failures (in-distribution).
        embedder: a failtax TextEmbedder (default: made from regions_cfg.embedder).
        explanations: episode id → failure explanation (the run's explanations.jsonl);
            needed when regions_cfg.semantic_source uses the mode's members.
        site_family: a new site (another building family, map known, no failure there
            yet): the modes are also matched against its kinds, and the `site_semantic`
            regions target those objects there.
        shuffle_seed: seed of the shuffled-taxonomy control (`shuffled_matches`).

    Raises:
        ValueError: no mode has any episode with a collision site, or no budget can be placed.
    """
    rc = regions_cfg
    if embedder is None:
        embedder = make_text_embedder(EmbeddingConfig(kind=rc.embedder))
    episodes_dir = Path(episodes_dir)
    modes = [m for m in taxonomy.get("modes", []) if m.get("name") != OUTLIER]
    by_mode: dict[str, list[str]] = {m["name"]: [] for m in modes}
    outliers = 0
    for a in assignments:
        names = [n for n in a.get("modes", []) if n in by_mode]
        if not names:
            outliers += 1
        for n in names:
            by_mode[n].append(str(a["episode_id"]))

    # Collision sites per mode (from the episodes' own logs).
    site_cache: dict[str, tuple[CollisionSite | None, str]] = {}
    worlds: dict[int, Any] = {}

    def query(seed: int) -> MapQuery:
        if seed not in worlds:
            worlds[seed] = MapQuery(load_world(sim_config, family, seed))
        return worlds[seed]

    mode_docs = []
    for m in modes:
        sites, skipped = [], []
        for eid in sorted(by_mode[m["name"]]):
            if eid not in site_cache:
                site_cache[eid] = read_collision_site(episodes_dir / eid, rc.replay_offsets_s)
            site, why = site_cache[eid]
            if site is None:
                skipped.append({"episode_id": eid, "why": why})
            elif site.family != family:
                skipped.append({"episode_id": eid, "why": f"family {site.family} != {family}"})
            else:
                sites.append(site)
        site_docs = []
        for s in sites:
            near = query(s.building_seed).objects_near(s.xy, rc.site_object_radius_m)
            site_docs.append({
                "episode_id": s.episode_id, "building_id": s.building_id,
                "building_seed": s.building_seed, "xy": [round(v, 4) for v in s.xy],
                "yaw_rad": round(s.yaw_rad, 4), "failure_step": s.failure_step,
                "objects": [{"object_id": int(o.object_id), "object_class": o.object_class,
                             "material": o.material, "distance_m": round(dist, 3)}
                            for o, dist in near],
            })
        mode_docs.append({
            "name": m["name"], "description": m.get("description", ""),
            "keywords": list(m.get("keywords") or []),
            "frequency": float(m.get("frequency") or 0.0), "count": int(m.get("count") or 0),
            "episodes": sorted(by_mode[m["name"]]),
            "buildings": sorted({s.building_id for s in sites}),
            "collision_sites": site_docs, "skipped_episodes": skipped, "_sites": sites,
        })

    # Semantic matches against the family's (class, material) kinds.
    seeds = sorted({s.building_seed for d in mode_docs for s in d["_sites"]})
    n_cat = max(rc.catalogue_buildings, len(seeds))
    extra = [s for s in range(sim_config.world.num_buildings) if s not in seeds]
    catalogue = kind_catalogue(sim_config, family, (seeds + extra)[:n_cat])
    kinds = sorted(catalogue)
    members = [[explanations[e] for e in d["episodes"] if e in (explanations or {})]
               for d in mode_docs]
    match_kw = {"source": rc.semantic_source, "member_texts": members,
                "kind_style": rc.kind_text, "score": rc.semantic_score,
                "descriptions": rc.kind_descriptions}
    best: list[dict] = []
    matches = semantic_matches(mode_docs, kinds, embedder, rc.semantic_min_similarity,
                               rc.semantic_margin, rc.semantic_max_kinds, best=best, **match_kw)
    for d, found, top in zip(mode_docs, matches, best):
        site_ids = {o["object_id"] for s in d["collision_sites"] for o in s["objects"]
                    if o["distance_m"] <= rc.site_object_radius_m}
        docs = []
        for cls, mat, sim in found:
            ids = {b: ids for b, ids in catalogue[(cls, mat)].items()}
            docs.append({"object_class": cls, "material": mat, "similarity": round(sim, 4),
                         "object_ids": ids,
                         "collision_site_object_ids": sorted(
                             i for b in d["buildings"] for i in ids.get(b, []) if i in site_ids)})
        d["semantic_matches"] = docs
        # "no match" is reported with the best candidate and its score
        d["semantic_best"] = top
    shuffled, shuffle_info = shuffled_matches([d["semantic_matches"] for d in mode_docs], kinds,
                                              shuffle_seed)
    for d, sh in zip(mode_docs, shuffled):
        d["shuffled_matches"] = [
            {**m, "object_ids": catalogue[(m["object_class"], m["material"])]} for m in sh]

    # A new site: the same mode texts against the new family's kinds.
    site = None
    if site_family is not None:
        site_cat = kind_catalogue(sim_config, site_family, range(min(
            rc.catalogue_buildings, sim_config.world.num_buildings)))
        site_kinds = sorted(site_cat)
        site_best: list[dict] = []
        site_found = semantic_matches(mode_docs, site_kinds, embedder, rc.semantic_min_similarity,
                                      rc.semantic_margin, rc.semantic_max_kinds, best=site_best,
                                      **match_kw)
        for d, found, top in zip(mode_docs, site_found, site_best):
            d["site_matches"] = [{"object_class": c, "material": m, "similarity": round(v, 4)}
                                 for c, m, v in found]
            d["site_best"] = top
        site = {"family": site_family,
                "catalogue": [{"object_class": c, "material": m,
                               "buildings": len(site_cat[(c, m)])} for c, m in site_kinds]}

    # Budget: modes with a collision site or a semantic match can take budget.
    usable = [bool(d["_sites"]) or bool(d["semantic_matches"]) for d in mode_docs]
    freqs = [d["frequency"] if ok else 0.0 for d, ok in zip(mode_docs, usable)]
    weights = mode_weights(freqs, split, min_mode_frequency)
    if not any(w > 0 for w in weights):
        raise ValueError("no failure mode has a collision site or a semantic match (or every "
                         "mode is below min_mode_frequency); nothing to target. Check that the "
                         "failure episodes are collisions with steps.jsonl, or lower "
                         "regions.semantic_min_similarity")
    budgets = split_budget(budget_samples, weights)
    for d, b in zip(mode_docs, budgets):
        d["budget_samples"] = b

    regions = {arm: _arm_records(mode_docs, arm, rc, family, budget_samples)
               for arm in TARGETED_ARMS}
    if site is not None:
        regions["site_semantic"] = _site_records(mode_docs, rc, site_family, budget_samples,
                                                 split, min_mode_frequency)
    for d in mode_docs:
        d.pop("_sites")
    return {
        "schema_version": SCHEMA_VERSION, "budget_samples": int(budget_samples), "split": split,
        "family": family, "modes": mode_docs, "regions": regions, "outlier_episodes": outliers,
        "embedder": getattr(embedder, "name", type(embedder).__name__),
        "shuffle": {**shuffle_info, "seed": int(shuffle_seed)}, "site": site,
        "catalogue": [{"object_class": c, "material": m, "phrase": kind_phrase(c, m),
                       "text": kind_text(c, m, rc.kind_text, rc.kind_descriptions),
                       "buildings": len(catalogue[(c, m)])} for c, m in kinds],
        "config": regions_cfg.model_dump(mode="json"),
    }


def _arm_records(mode_docs: list[dict], arm: str, rc, family: str, total: int) -> list[dict]:
    """Region records of one targeted arm, with integer budgets summing to `total`."""
    records: list[dict] = []
    weights: list[float] = []
    for d in mode_docs:
        if d["budget_samples"] <= 0:
            continue
        site_groups = merge_sites(d["_sites"], rc.merge_sites_within_m)
        sem = {"targeted_semantic": d["semantic_matches"],
               "targeted_shuffled": d["shuffled_matches"]}.get(arm, [])
        # Share of the mode's budget at its collision sites: all of it without semantic matches.
        if not sem:
            col_share = 1.0 if site_groups else 0.0
        elif not site_groups:
            col_share = 0.0
        else:
            col_share = rc.collision_share_in_semantic
        by_building: dict[str, list[list[CollisionSite]]] = {}
        for g in site_groups:
            by_building.setdefault(g[0].building_id, []).append(g)
        n_sites = sum(len(g) for g in site_groups)
        for bid, groups in sorted(by_building.items()):
            n = sum(len(g) for g in groups)
            records.append({
                "region_id": f"{d['name']}|collision|{bid}", "mode": d["name"],
                "why": "collision_site", "family": family,
                "building_seed": groups[0][0].building_seed, "building_id": bid,
                "areas": [{"kind": "circle", "points": [list(g[0].xy)],
                           "radius_m": rc.collision_radius_m} for g in groups],
                "starts": [st for g in groups for s in g for st in s.starts],
                "episodes": sorted(s.episode_id for g in groups for s in g),
                "radius_m": rc.pass_near_radius_m,
            })
            weights.append(d["budget_samples"] * col_share * n / n_sites)
        if sem:
            per_kind = d["budget_samples"] * (1.0 - col_share) / len(sem)
            for s in sem:
                base = {"mode": d["name"], "why": "semantic_match", "family": family,
                        "object_class": s["object_class"], "material": s["material"],
                        "similarity": s["similarity"], "radius_m": rc.pass_near_radius_m}
                if rc.semantic_scope == "family":
                    records.append({**base, "region_id": f"{d['name']}|semantic|"
                                    f"{s['object_class']}/{s['material']}",
                                    "building_seed": None, "object_classes": [s["object_class"]],
                                    "materials": [s["material"]]})
                    weights.append(per_kind)
                else:
                    blds = [b for b in d["buildings"] if s["object_ids"].get(b)]
                    for b in blds:
                        records.append({**base, "region_id": f"{d['name']}|semantic|"
                                        f"{s['object_class']}/{s['material']}|{b}",
                                        "building_seed": building_seed_of(b), "building_id": b,
                                        "object_ids": s["object_ids"][b]})
                        weights.append(per_kind / len(blds))
    keep = [i for i, w in enumerate(weights) if w > 0]
    records = [records[i] for i in keep]
    weights = [weights[i] for i in keep]
    if not records:
        return []
    budgets = split_budget(total, weights)
    for r, b in zip(records, budgets):
        r["budget_samples"] = b
        r["share"] = b / total if total else 0.0
    return [r for r in records if r["budget_samples"] > 0]


def _site_records(mode_docs: list[dict], rc, site_family: str, total: int, split: str,
                  min_frequency: float) -> list[dict]:
    """Region records of the `site_semantic` arm: every object of the new site's family whose
    kind matches a mode; modes share B by `split`, a mode's kinds share its part equally."""
    has = [bool(d.get("site_matches")) for d in mode_docs]
    weights = mode_weights([d["frequency"] if ok else 0.0 for d, ok in zip(mode_docs, has)],
                           split, min_frequency)
    records, shares = [], []
    for d, w in zip(mode_docs, weights):
        found = d.get("site_matches") or []
        for m in found:
            if w <= 0:
                continue
            records.append({
                "region_id": f"{d['name']}|site|{m['object_class']}/{m['material']}",
                "mode": d["name"], "why": "semantic_match_new_site", "family": site_family,
                "building_seed": None, "object_class": m["object_class"],
                "material": m["material"], "similarity": m["similarity"],
                "object_classes": [m["object_class"]], "materials": [m["material"]],
                "radius_m": rc.pass_near_radius_m})
            shares.append(w / len(found))
    if not records:
        return []
    for r, b in zip(records, split_budget(total, shares)):
        r["budget_samples"] = b
        r["share"] = b / total if total else 0.0
    return [r for r in records if r["budget_samples"] > 0]


def arm_regions(doc: dict, arm: str) -> dict:
    """The collection regions file of one targeted arm (read by nav_policy.regions)."""
    if arm not in doc["regions"]:
        valid = ", ".join(sorted(doc["regions"]))
        raise ValueError(f"no regions for arm {arm!r}; arms with regions here: {valid}")
    records = doc["regions"][arm]
    if not records:
        raise ValueError(f"arm {arm} has no region with budget (no collision sites or matches)")
    # Only this arm's records: a change elsewhere (e.g. semantic matches) leaves the
    # collision arm's file, and so its collected data, untouched.
    return {"schema_version": 1, "arm": arm, "regions": records}

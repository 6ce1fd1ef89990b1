"""Assignment: each explanation → one or more modes of a taxonomy, or "outlier".

Methods:

- ``auto`` (default): ``cluster`` when the taxonomy recorded its clusters'
  members (cluster-then-name), else ``embedding``.
- ``cluster``: an explanation the discovery clustered keeps its cluster's mode
  (consistent with the taxonomy, no model, no new similarity); explanations the
  discovery did not see fall back to ``embedding``.

- ``embedding`` (the paper's baseline, and the CPU default): cosine similarity
  between the explanation and each mode's vector (the discovery's cluster
  centroid when it recorded one with the same embedder, else the embedding of
  "name: description (keywords)"); below `similarity_floor` → outlier.
- ``llm``: the embedding similarity pre-filters the `top_k_candidates` modes,
  then the model picks among them plus "outlier", constrained to those names
  (a choice list, or an enum in the JSON schema for several modes). An answer
  that is not a mode name is mapped (case, close spelling, unique substring,
  list number) or becomes an outlier, and is counted; a dead server or an
  unparseable answer falls back to the embedding choice, recorded per episode.

`assign` also fills `Mode.count` / `Mode.frequency` and `Taxonomy.outlier_count`
from the assignments (keeping the discovery's `reported_frequency`) and writes
its counters to `taxonomy.notes["assignment"]`.

`run_stage` is the pipeline's assign stage (explanations.jsonl + taxonomy.json →
assignments.jsonl, frequencies back into taxonomy.json).
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator
from tqdm import tqdm

from common import StrictModel, atomic_write_json, atomic_write_text, derive_seed, stable_hash
from failtax.answers import answer_schema, mode_choice_answer
from failtax.discovery.common import (
    clip,
    explanation_text,
    fill,
    load_prompt,
    mode_text,
    normalise_name,
    strip_boilerplate_of,
)
from failtax.embedding import EmbeddingConfig, TextEmbedder, make_text_embedder
from failtax.run_folder import (
    ASSIGNMENTS_FILE,
    TAXONOMY_FILE,
    BackendProvider,
    RunFolder,
    Skipped,
    backend_stats,
)
from failtax.types import OUTLIER, Assignment, Explanation, Taxonomy
from serving.protocol import BackendError, LLMBackend

log = logging.getLogger(__name__)

METHODS = ("auto", "cluster", "embedding", "llm")
# The method recorded for an explanation whose model call failed (server unreachable).
BACKEND_ERROR_METHOD = "embedding (llm: backend_error)"


class AssignmentConfig(StrictModel):
    """How explanations are assigned to the modes of a taxonomy."""

    # "auto" (cluster when the taxonomy kept its clusters, else embedding), "cluster",
    # "embedding" (similarity to mode vectors) or "llm" (model picks among pre-filtered modes)
    method: Literal["auto", "cluster", "embedding", "llm"] = "auto"
    # llm: modes offered to the model, the most similar first (0 = all modes)
    top_k_candidates: int = Field(4, ge=0)
    # cosine similarity below which an explanation is an outlier without asking a model
    similarity_floor: float = Field(0.15, ge=-1.0, le=1.0)
    # modes one explanation may get (1 = single label)
    max_modes_per_explanation: int = Field(1, ge=1)
    # embedding, several modes: also assign modes within this similarity of the best one
    multi_label_margin: float = Field(0.03, ge=0.0)
    # "auto": use the discovery's mode vectors (cluster centroids) when made by the same embedder;
    # "text": always embed "name: description (keywords)"
    mode_vectors: Literal["auto", "text"] = "auto"
    # text embedder (must match discovery's for "auto" mode vectors to apply)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    # embed "trajectory + failure_reason" instead of the failure reason alone
    include_trajectory: bool = False
    # prompt file of the llm method (failtax/prompts/ or a path)
    prompt: str = "assign.txt"
    # characters of an explanation / a mode description shown to the model
    explanation_max_chars: int = Field(300, ge=20)
    description_max_chars: int = Field(160, ge=20)
    # completion budget for several modes (JSON list of names)
    multi_max_tokens: int = Field(96, ge=16)
    # model calls in flight at once
    concurrency: int = Field(8, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> AssignmentConfig:
        if self.method == "llm" and self.top_k_candidates == 1:
            raise ValueError(
                "assignment.top_k_candidates=1 leaves the model only 'that mode or outlier'; "
                "use method: embedding, or top_k_candidates >= 2 (0 = all modes)"
            )
        return self


def match_mode_name(answer: str, names: list[str]) -> str | None:
    """Map a model's answer to one of `names` (or "outlier"), or None.

    Tries, in order: exact match ignoring case and punctuation, a list number
    ("2" or "2."), a close spelling (difflib ratio >= 0.85), and a name that is
    uniquely contained in the answer or contains it.
    """
    norm = normalise_name(answer)
    if not norm:
        return None
    table = {normalise_name(n): n for n in [*names, OUTLIER]}
    if norm in table:
        return table[norm]
    if norm.isdigit() and 1 <= int(norm) <= len(names):
        return names[int(norm) - 1]
    close = difflib.get_close_matches(norm, list(table), n=1, cutoff=0.85)
    if close:
        return table[close[0]]
    inside = [orig for key, orig in table.items() if key and (key in norm or (len(norm) >= 4 and norm in key))]
    return inside[0] if len(inside) == 1 else None


def mode_matrix(taxonomy: Taxonomy, embedder: TextEmbedder, how: str = "auto") -> tuple[np.ndarray, str]:
    """One unit vector per mode, and which kind they are ("centroid" or "text")."""
    mv = taxonomy.notes.get("mode_vectors") or {}
    vectors = mv.get("vectors") or {}
    if how == "auto" and mv.get("embedder") == embedder.name and all(m.name in vectors for m in taxonomy.modes):
        m = np.asarray([vectors[mode.name] for mode in taxonomy.modes], dtype=np.float32)
        if m.ndim == 2 and m.shape[1] == embedder.dims:
            m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
            return m, str(mv.get("kind", "text"))
    return embedder.embed([mode_text(m) for m in taxonomy.modes]), "text"


def embedding_assign(
    explanations: list[Explanation],
    taxonomy: Taxonomy,
    embedder: TextEmbedder,
    cfg: AssignmentConfig | None = None,
) -> list[Assignment]:
    """The embedding-similarity assignment (baseline, pre-filter and fallback).

    Every explanation gets its most similar mode (plus modes within
    `multi_label_margin` when several are allowed), or "outlier" when the best
    similarity is below `similarity_floor`; `scores` hold every mode's similarity.
    """
    cfg = cfg or AssignmentConfig()
    names = taxonomy.names
    texts = [strip_boilerplate_of(explanation_text(e, cfg.include_trajectory), taxonomy.notes) for e in explanations]
    if not names:
        return [Assignment(e.episode_id, [OUTLIER], "embedding") for e in explanations]
    modes_m, _ = mode_matrix(taxonomy, embedder, cfg.mode_vectors)
    x = embedder.embed(texts)
    sims = x @ modes_m.T
    out: list[Assignment] = []
    for e, text, row in zip(explanations, texts, sims):
        scores = {n: round(float(s), 4) for n, s in zip(names, row)}
        if not text.strip():
            out.append(Assignment(e.episode_id, [OUTLIER], "empty", scores={}))
            continue
        out.append(Assignment(e.episode_id, _pick(row, names, cfg), "embedding", scores=scores))
    return out


def _pick(row: np.ndarray, names: list[str], cfg: AssignmentConfig) -> list[str]:
    best = float(row.max())
    if best < cfg.similarity_floor:
        return [OUTLIER]
    order = np.argsort(-row)
    picked = [names[i] for i in order[: cfg.max_modes_per_explanation] if row[i] >= best - cfg.multi_label_margin]
    return picked or [names[int(order[0])]]


async def assign(
    explanations: list[Explanation],
    taxonomy: Taxonomy,
    backend: LLMBackend | None,
    cfg: AssignmentConfig | None = None,
    *,
    embedder: TextEmbedder | None = None,
) -> list[Assignment]:
    """Assign every explanation to modes of `taxonomy` (see module docstring).

    Args:
        explanations: one per episode.
        taxonomy: the modes; updated in place with counts and assigned frequencies.
        backend: the model for method "llm" (None forces the embedding method).
        cfg: assignment settings.
        embedder: a text embedder to share (built from `cfg.embedding` when None).

    Returns:
        One Assignment per explanation, in input order.
    """
    cfg = cfg or AssignmentConfig()
    embedder = embedder or make_text_embedder(cfg.embedding)
    base = embedding_assign(explanations, taxonomy, embedder, cfg)
    members = cluster_members(taxonomy)
    method = cfg.method
    if method == "auto":
        method = "cluster" if members else "embedding"
    if method == "llm" and backend is None:
        method = "embedding"  # recorded below; no model to ask
    stats: Counter = Counter()
    if not taxonomy.modes:
        result, method = base, "none (empty taxonomy)"
    elif method == "cluster":
        result = [_from_cluster(a, members, stats) for a in base]
    elif method == "llm":
        result = await _llm_assign(explanations, taxonomy, backend, cfg, base, stats, members)
    else:
        result = base
        stats["embedding"] = len(base)
    update_frequencies(taxonomy, result)
    _, vec_kind = mode_matrix(taxonomy, embedder, cfg.mode_vectors) if taxonomy.modes else (None, "none")
    taxonomy.notes["assignment"] = {
        "method": method,
        "requested_method": cfg.method,
        "mode_vectors": vec_kind,
        "embedder": embedder.name,
        "counters": dict(sorted(stats.items())),
        "decided_by": {
            "llm": "model (among embedding-prefiltered modes)",
            "cluster": "discovery clusters (code); embeddings for unseen explanations",
        }.get(method, "embeddings (code)"),
    }
    return result


def cluster_members(taxonomy: Taxonomy) -> dict[str, str]:
    """Episode id → mode, from the clusters a discovery recorded ({} when none)."""
    members = taxonomy.notes.get("members") or {}
    names = set(taxonomy.names)
    return {eid: name for name, ids in members.items() if name in names for eid in ids}


def _from_cluster(a: Assignment, members: dict[str, str], stats: Counter) -> Assignment:
    mode = members.get(a.episode_id)
    if mode is None:
        stats["embedding_not_clustered"] += 1
        return Assignment(a.episode_id, a.modes, "embedding (not in discovery clusters)", a.scores)
    stats["cluster"] += 1
    return Assignment(a.episode_id, [mode], "cluster", a.scores)


async def _llm_assign(
    explanations: list[Explanation],
    taxonomy: Taxonomy,
    backend: LLMBackend,
    cfg: AssignmentConfig,
    base: list[Assignment],
    stats: Counter,
    members: dict[str, str],
) -> list[Assignment]:
    template = load_prompt(cfg.prompt)
    by_name = {m.name: m for m in taxonomy.modes}
    limiter = asyncio.Semaphore(cfg.concurrency)
    bar = tqdm(total=len(explanations), desc="assigning", unit="expl", disable=len(explanations) < 50)

    async def one(i: int, e: Explanation, emb: Assignment) -> Assignment:
        text = strip_boilerplate_of(explanation_text(e, cfg.include_trajectory), taxonomy.notes)
        if emb.modes == [OUTLIER] or not text:
            stats["outlier_below_floor" if text else "empty"] += 1
            return emb
        ranked = sorted(emb.scores, key=lambda n: -emb.scores[n])
        ranked = [n for n in ranked if emb.scores[n] >= cfg.similarity_floor]
        candidates = ranked[: cfg.top_k_candidates] if cfg.top_k_candidates else ranked
        own = members.get(e.episode_id)
        if own and own not in candidates:  # the discovery's cluster is always on offer
            candidates = [own, *candidates[: len(candidates) - 1]] if candidates else [own]
        listing = "\n".join(
            f"- {n}: {clip(by_name[n].description, cfg.description_max_chars)}" for n in candidates
        )
        prompt = fill(template, modes=listing, explanation=clip(text, cfg.explanation_max_chars))
        messages = [{"role": "user", "content": prompt}]
        choices = [*candidates, OUTLIER]
        seed = derive_seed(cfg.seed, "assign", e.episode_id) % (2**31)
        method = "llm+embedding-prefilter" if cfg.top_k_candidates else "llm"
        try:
            async with limiter:
                if cfg.max_modes_per_explanation == 1:
                    res = await backend.complete_choice(messages, choices, temperature=cfg.temperature, seed=seed)
                else:
                    schema = answer_schema(
                        mode_choice_answer(tuple(choices), max_modes=cfg.max_modes_per_explanation)
                    )
                    res = await backend.complete_json(
                        messages, schema, max_tokens=cfg.multi_max_tokens, temperature=cfg.temperature, seed=seed
                    )
        except BackendError as err:
            stats["backend_error"] += 1
            log.debug("assignment of %s fell back to embeddings: %s", e.episode_id, err)
            return Assignment(e.episode_id, emb.modes, BACKEND_ERROR_METHOD, scores=emb.scores)
        finally:
            bar.update(1)
        stats["llm_calls"] += 1
        raw = res.parsed
        if raw is None and res.text and cfg.max_modes_per_explanation == 1:
            raw = res.text  # a choice the backend could not match: map the free text below
        answers = raw.get("modes", []) if isinstance(raw, dict) else ([raw] if isinstance(raw, str) else raw or [])
        picked: list[str] = []
        unknown = 0
        for a in answers if isinstance(answers, list) else []:
            name = match_mode_name(str(a), candidates) or match_mode_name(str(a), taxonomy.names)
            if name is None:
                unknown += 1
            elif name not in picked:
                picked.append(name)
        if unknown:
            stats["unknown_name"] += unknown
        if not picked:
            if raw is None:
                stats["parse_error"] += 1
                return Assignment(e.episode_id, emb.modes, "embedding (llm: parse_error)", emb.scores, [res.call_id])
            stats["unknown_to_outlier"] += 1
            picked = [OUTLIER]
        if OUTLIER in picked and len(picked) > 1:
            picked.remove(OUTLIER)
        if picked == [OUTLIER]:
            stats["llm_outlier"] += 1
        scores = {n: emb.scores[n] for n in candidates}
        return Assignment(e.episode_id, picked[: cfg.max_modes_per_explanation], method, scores, [res.call_id])

    try:
        return list(await asyncio.gather(*(one(i, e, b) for i, (e, b) in enumerate(zip(explanations, base)))))
    finally:
        bar.close()


def update_frequencies(taxonomy: Taxonomy, assignments: list[Assignment]) -> dict[str, Any]:
    """Set each mode's `count` and `frequency` (share of explanations carrying
    it; shares can sum past 1 with several modes per explanation) and the
    taxonomy's `outlier_count`. Returns the counts by name."""
    counts: Counter = Counter()
    for a in assignments:
        for name in set(a.modes):
            counts[name] += 1
    n = max(len(assignments), 1)
    for m in taxonomy.modes:
        m.count = int(counts.get(m.name, 0))
        m.frequency = round(m.count / n, 6) if assignments else 0.0
    taxonomy.outlier_count = int(counts.get(OUTLIER, 0))
    return dict(counts)


@dataclass
class AssignResult:
    """What the assign stage did (the run summary's `stages.assign`)."""

    assigned: int  # explanations in assignments.jsonl
    outliers: int  # of which fit no mode
    retryable: int = 0  # assignments that are fallbacks from a failed model call

    def summary(self) -> dict[str, Any]:
        return {"assigned": self.assigned, "outliers": self.outliers}


def retryable_assignments(assignments: list[Assignment]) -> list[str]:
    """Episode ids whose assignment fell back to embeddings because a model call failed."""
    return [a.episode_id for a in assignments if a.method == BACKEND_ERROR_METHOD]


async def run_stage(
    run: RunFolder,
    explanations: list[Explanation],
    taxonomy: Taxonomy,
    cfg: AssignmentConfig,
    backend: BackendProvider,
    *,
    backend_model: str | None,
) -> AssignResult | Skipped:
    """The assign stage: each explanation → modes (assignments.jsonl), and the assigned
    frequencies back into taxonomy.json.

    Skipped when assignments.jsonl finished with the same inputs (explanations, modes,
    config, model) and no call failed; a rerun after failed calls redoes the stage,
    where the calls that had finished come back from the call cache.

    Args:
        run: the run folder.
        explanations: the reason stage's output.
        taxonomy: the discover stage's output.
        cfg: the stage's config (carrying the run's seed).
        backend: builds the model backend; called only by the llm method.
        backend_model: the configured model id (part of the input hash).
    """
    mode_keys = [(m.name, m.description, m.keywords) for m in taxonomy.modes]
    input_hash = stable_hash(
        [[e.to_dict() for e in explanations], mode_keys, cfg.model_dump(mode="json"), backend_model]
    )
    if run.is_done("assign", input_hash, ASSIGNMENTS_FILE):
        reason = "assignments.jsonl is up to date"
        run.log_stage("assign", "skip", reason=reason)
        return Skipped(reason)
    run.log_stage("assign", "start", explanations=len(explanations), modes=len(taxonomy.modes))
    # Only the llm method calls a model; the others must not start a server.
    model = await backend() if cfg.method == "llm" else None
    assignments = await assign(explanations, taxonomy, model, cfg)
    lines = "".join(
        json.dumps(a.to_dict(), sort_keys=True, ensure_ascii=False) + "\n"
        for a in sorted(assignments, key=lambda a: a.episode_id)
    )
    atomic_write_text(run.path(ASSIGNMENTS_FILE), lines)
    update_frequencies(taxonomy, assignments)  # the counts follow the file, whatever assign did
    atomic_write_json(run.path(TAXONOMY_FILE), taxonomy.to_dict())
    result = AssignResult(
        assigned=len(assignments),
        outliers=taxonomy.outlier_count,
        retryable=len(retryable_assignments(assignments)),
    )
    extra = {"retryable": result.retryable} if result.retryable else {}
    run.log_stage(
        "assign",
        "finish",
        **result.summary(),
        input_hash=input_hash,
        **extra,
        **backend_stats(model),
    )
    return result

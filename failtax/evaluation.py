"""Evaluation of a run against ground truth — the ONLY module that reads labels.

Labels come from the simulator's hidden `ground_truth.json` files (the
`cause_class` of each episode; docs/EPISODE_FORMAT.md) or from a user's CSV
with columns `episode_id,label[,reason]`. No pipeline stage imports this module.

What is scored (the numbers themselves are pure functions in `failtax.metrics`,
the LLM judge is `failtax.judge`):

- **Taxonomy alignment** of the run's modes against the expert labels: CP, TC
  and SAS (`failtax.metrics.alignment_scores`) on a similarity matrix from
  embeddings (cosine of "name: description" with the expert label text) and,
  optionally, from an LLM judge.
- **Assignment.** Each episode's first mode is its cluster. NMI and ARI
  against the labels; weighted F1 after mapping modes to labels by majority
  (many-to-one) and by the Hungarian method (one-to-one); purity. Outliers
  count as their own cluster and are never right.
- **Explanation quality** when reference reasons exist: cosine similarity
  (MiniLM) and ROUGE-L F1 between each explanation's failure reason and the
  reference, and optionally an LLM judge's yes/no agreement.
- **Stability.** ARI between the assignments of runs of the same data with
  different seeds (`compare_runs`).

`evaluate_run(run_dir, labels_source, cfg)` writes `evaluation.json`.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import Field

from common import StrictModel, atomic_write_json
from common.episode import EpisodeFormatError, is_incomplete, read_ground_truth, read_meta
from failtax.discovery.common import mode_text
from failtax.embedding import EmbeddingConfig, TextEmbedder, make_text_embedder
from failtax.judge import judge_explanations, judge_similarity_matrix, run_sync
from failtax.metrics import (
    alignment_scores,
    cluster_metrics,
    embedding_similarity_matrix,
    explanation_quality,
    label_alignment,
    primary_modes,
    stability_ari,
)
from failtax.run_folder import read_assignments, read_explanations, read_taxonomy
from failtax.types import Assignment, Explanation, Taxonomy
from serving import make_backend
from serving.config import BackendConfig
from serving.protocol import LLMBackend

log = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"


class EvaluationConfig(StrictModel):
    """How a run is scored against labels."""

    # text embedder for the embedding alignment variant and explanation similarity
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    # also score alignment (and explanations) with an LLM judge through the backend
    llm_judge: bool = False
    # judge prompt files (failtax/prompts/ or paths)
    judge_prompt: str = "judge_alignment.txt"
    explanation_judge_prompt: str = "judge_explanation.txt"
    # a predicted and an expert mode "match" at this judge score (0.75 = strong)
    judge_match_threshold: float = Field(0.75, ge=0.0, le=1.0)
    # ... and at this cosine similarity for the embedding variant
    embedding_match_threshold: float = Field(0.5, ge=0.0, le=1.0)
    # label → description used as the expert mode's text (else the label, humanised)
    label_descriptions: dict[str, str] = Field(default_factory=dict)
    # other run folders of the same data (different seeds) for run-to-run ARI
    compare_runs: list[str] = Field(default_factory=list)
    # judge calls in flight at once
    judge_concurrency: int = Field(8, ge=1)
    # explanations judged at most (sampled, seeded) when llm_judge is on
    judge_max_explanations: int = Field(200, ge=0)
    seed: int = 0


@dataclass
class Label:
    """One episode's expert label and, when known, the expert's reason."""

    label: str
    reason: str | None = None


# --------------------------------------------------------------------------- labels


def load_labels(source: str | os.PathLike) -> tuple[dict[str, Label], list[dict[str, Any]]]:
    """Labels from an episodes folder (ground_truth.json) or a CSV.

    Returns:
        (labels by episode id, problems): unreadable files and bad rows are
        reported in `problems` and skipped, never fatal.

    Raises:
        ValueError: the source does not exist, or a CSV lacks the required columns.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise ValueError(f"labels source {path} does not exist; pass an episodes folder or a labels CSV")
    if path.is_dir():
        return _labels_from_ground_truth(path)
    if path.suffix.lower() != ".csv":
        raise ValueError(f"{path}: labels must be a CSV (episode_id,label[,reason]) or an episodes folder")
    return _labels_from_csv(path)


def _labels_from_ground_truth(root: Path) -> tuple[dict[str, Label], list[dict[str, Any]]]:
    labels: dict[str, Label] = {}
    problems: list[dict[str, Any]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not is_incomplete(p)):
        try:
            gt = read_ground_truth(folder)
        except EpisodeFormatError as e:
            problems.append({"episode_id": folder.name, "kind": e.kind, "message": e.message})
            continue
        if gt is None or not gt.cause_class:
            continue  # successes and unexplained timeouts have no cause label
        try:
            episode_id = read_meta(folder).episode_id
        except EpisodeFormatError:
            episode_id = folder.name
        reason = None
        if gt.collision is not None:
            c = gt.collision
            material = f" ({c.material})" if c.material else ""
            reason = f"The robot collided with a {c.object_class.replace('_', ' ')}{material}."
        labels[episode_id] = Label(gt.cause_class, reason)
    return labels, problems


def _labels_from_csv(path: Path) -> tuple[dict[str, Label], list[dict[str, Any]]]:
    labels: dict[str, Label] = {}
    problems: list[dict[str, Any]] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower() for c in reader.fieldnames or []}
        if not {"episode_id", "label"} <= cols:
            raise ValueError(f"{path}: needs a header with columns episode_id,label[,reason]; found {sorted(cols)}")
        for n, row in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            if not row.get("episode_id") or not row.get("label"):
                problems.append({"line": n, "kind": "bad_label_row", "message": "empty episode_id or label"})
                continue
            labels[row["episode_id"]] = Label(row["label"], row.get("reason") or None)
    return labels, problems


# --------------------------------------------------------------------------- expert modes


def expert_texts(labels: dict[str, Label], cfg: EvaluationConfig) -> dict[str, str]:
    """Label → the text that stands for the expert mode."""
    out: dict[str, str] = {}
    reasons: dict[str, Counter] = {}
    for lab in labels.values():
        if lab.reason:
            reasons.setdefault(lab.label, Counter())[lab.reason] += 1
    for name in sorted({lab.label for lab in labels.values()}):
        if name in cfg.label_descriptions:
            out[name] = cfg.label_descriptions[name]
            continue
        text = name.replace("_", " ")
        if name in reasons:
            text += ": " + reasons[name].most_common(1)[0][0]
        out[name] = text
    return out


# --------------------------------------------------------------------------- whole evaluation


def evaluate(
    explanations: list[Explanation],
    taxonomy: Taxonomy,
    assignments: list[Assignment],
    labels: dict[str, Label],
    cfg: EvaluationConfig | None = None,
    *,
    backend: LLMBackend | None = None,
    embedder: TextEmbedder | None = None,
    other_runs: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """All metrics for in-memory records (what `evaluate_run` and the benchmark use)."""
    cfg = cfg or EvaluationConfig()
    embedder = embedder or make_text_embedder(cfg.embedding)
    pred_map = primary_modes(assignments)
    ids = [e for e in pred_map if e in labels]
    true = [labels[e].label for e in ids]
    pred = [pred_map[e] for e in ids]
    result: dict[str, Any] = {
        "labelled_episodes": len(ids),
        "unlabelled_episodes": len(pred_map) - len(ids),
        "labels": dict(sorted(Counter(true).items())),
        "assignment": cluster_metrics(true, pred),
        "alignment_from_assignments": label_alignment(true, pred),
    }
    experts = expert_texts({e: labels[e] for e in ids} or labels, cfg)
    sim = embedding_similarity_matrix([mode_text(m) for m in taxonomy.modes], list(experts.values()), embedder)
    result["alignment_embedding"] = {
        **alignment_scores(sim, threshold=cfg.embedding_match_threshold),
        "embedder": embedder.name,
        "matrix": {"modes": taxonomy.names, "experts": list(experts), "scores": np.round(sim, 4).tolist()},
    }
    by_id = {e.episode_id: e for e in explanations}
    pairs = [(by_id[e].failure_reason, labels[e].reason) for e in ids if e in by_id and labels[e].reason]
    if pairs:
        result["explanations"] = explanation_quality([p for p, _ in pairs], [r for _, r in pairs], embedder)
    if cfg.llm_judge and backend is not None:
        judged, counts = run_sync(judge_similarity_matrix(
            taxonomy.modes, experts, backend, prompt=cfg.judge_prompt, concurrency=cfg.judge_concurrency))
        result["alignment_llm_judge"] = {
            **alignment_scores(judged, threshold=cfg.judge_match_threshold),
            "judge_model": getattr(backend, "model_id", None),
            "calls": counts,
            "matrix": {"modes": taxonomy.names, "experts": list(experts),
                       "scores": np.where(np.isnan(judged), None, np.round(judged, 4)).tolist()},
        }
        if pairs:
            coro = judge_explanations(
                [p for p, _ in pairs], [r for _, r in pairs], backend, prompt=cfg.explanation_judge_prompt,
                concurrency=cfg.judge_concurrency, max_explanations=cfg.judge_max_explanations, seed=cfg.seed)
            result.setdefault("explanations", {}).update(run_sync(coro))
    if other_runs:
        result["stability"] = stability_ari([pred_map, *other_runs])
    result["modes"] = [
        {"name": m.name, "count": m.count, "frequency": m.frequency, "reported_frequency": m.reported_frequency,
         "named_by": m.named_by,
         "majority_label": result["assignment"].get("mapping_majority", {}).get(m.name)}
        for m in taxonomy.modes
    ]
    return result


def evaluate_run(
    run_dir: str | os.PathLike,
    labels_source: str | os.PathLike | None = None,
    cfg: EvaluationConfig | None = None,
    *,
    backend: LLMBackend | None = None,
) -> dict[str, Any]:
    """Score a run folder and write `<run>/evaluation.json`.

    Args:
        run_dir: a finished (discover + assign) run folder.
        labels_source: an episodes folder with ground_truth.json files or a labels CSV;
            None uses the episodes folder recorded in the run's config.yaml.
        cfg: evaluation settings.
        backend: the judge model when `cfg.llm_judge` (built from the run's backend
            config when None).

    Returns:
        The evaluation dict (also written to evaluation.json).

    Raises:
        ValueError: no labels source, or no labelled episode in the run.
    """
    cfg = cfg or EvaluationConfig()
    run = Path(run_dir)
    run_config = _run_config(run)
    if labels_source is None:
        labels_source = (run_config.get("source") or {}).get("path")
        if not labels_source:
            raise ValueError(f"{run}/config.yaml names no episodes folder; pass the labels source (folder or CSV)")
    labels, problems = load_labels(labels_source)
    taxonomy = read_taxonomy(run)
    assignments = read_assignments(run)
    if not assignments:
        raise ValueError(f"{run} has no assignments.jsonl yet; run `failtax assign` first")
    explanations = read_explanations(run)
    if not any(a.episode_id in labels for a in assignments):
        raise ValueError(f"no episode of {run} has a label in {labels_source}; check the episode ids")
    if cfg.llm_judge and backend is None:
        backend = make_backend(BackendConfig(**(run_config.get("backend") or {})))
    others = [primary_modes(read_assignments(Path(r))) for r in cfg.compare_runs]
    result = evaluate(explanations, taxonomy, assignments, labels, cfg, backend=backend, other_runs=others)
    result.update({
        "schema_version": 1,
        "run_dir": str(run),
        "labels_source": str(labels_source),
        "label_problems": problems,
        "strategy": taxonomy.strategy,
        "compare_runs": list(cfg.compare_runs),
    })
    atomic_write_json(run / EVALUATION_FILE, result)
    return result


def _run_config(run: Path) -> dict[str, Any]:
    path = run / "config.yaml"
    if not path.is_file():
        return {}
    doc = yaml.safe_load(path.read_text()) or {}
    return doc.get("config", doc) if isinstance(doc, dict) else {}

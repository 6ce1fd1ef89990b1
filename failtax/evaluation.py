"""Evaluation of a run against ground truth — the ONLY module that reads labels.

Labels come from the simulator's hidden `ground_truth.json` files (the
`cause_class` of each episode; docs/EPISODE_FORMAT.md) or from a user's CSV
with columns `episode_id,label[,reason]`. No pipeline stage imports this module.

Metrics (the paper's, plus standard clustering scores):

- **Taxonomy alignment.** A similarity matrix S (K predicted modes × M expert
  modes, values in [0, 1]) from an LLM judge (none/weak/partial/strong/same →
  0, .25, .5, .75, 1) or from embeddings (cosine of "name: description" with the
  expert label text, clipped at 0). The paper states CP, TC and SAS in words
  only; we read them as: **cluster precision** CP = share of predicted modes
  whose best expert match reaches `match_threshold`; **taxonomy coverage** TC =
  share of expert modes matched by some predicted mode at that threshold; **SAS**
  = harmonic mean of CP and TC. Soft versions (mean row / column maxima) and
  the sharpness of each row (max / sum) are reported beside them.
- **Assignment.** Each episode's first mode is its cluster. NMI and ARI
  (sklearn) against the labels; weighted F1 after mapping modes to labels by
  majority (many-to-one) and by the Hungarian method (one-to-one); purity.
  Outliers count as their own cluster and are never right.
- **Explanation quality** when reference reasons exist: cosine similarity
  (MiniLM) and ROUGE-L F1 between each explanation's failure reason and the
  reference, and optionally an LLM judge's yes/no agreement.
- **Stability.** ARI between the assignments of runs of the same data with
  different seeds (`compare_runs`).

`evaluate_run(run_dir, labels_source, cfg)` writes `evaluation.json`.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from common import StrictModel, atomic_write_json, derive_rng
from failtax.discovery.common import fill, load_prompt, mode_text
from failtax.embedding import EmbeddingConfig, TextEmbedder, make_text_embedder
from failtax.run_folder import read_assignments, read_explanations, read_taxonomy
from failtax.types import OUTLIER, Assignment, Explanation, Mode, Taxonomy
from serving import make_backend
from serving.config import BackendConfig
from serving.protocol import BackendError, LLMBackend

log = logging.getLogger(__name__)

GROUND_TRUTH_FILE = "ground_truth.json"
EVALUATION_FILE = "evaluation.json"
JUDGE_SCALE = {"none": 0.0, "weak": 0.25, "partial": 0.5, "strong": 0.75, "same": 1.0}


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
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".tmp")):
        gt_path = folder / GROUND_TRUTH_FILE
        if not gt_path.is_file():
            continue
        try:
            gt = json.loads(gt_path.read_text())
        except (OSError, ValueError) as e:
            problems.append({"episode_id": folder.name, "kind": "bad_ground_truth", "message": str(e)})
            continue
        cause = gt.get("cause_class") if isinstance(gt, dict) else None
        if not cause:
            continue  # successes and unexplained timeouts have no cause label
        episode_id = folder.name
        meta = folder / "meta.json"
        if meta.is_file():
            try:
                episode_id = str(json.loads(meta.read_text()).get("episode_id") or folder.name)
            except (OSError, ValueError):
                pass
        collision = gt.get("collision") or {}
        reason = None
        if isinstance(collision, dict) and collision.get("object_class"):
            material = f" ({collision['material']})" if collision.get("material") else ""
            reason = f"The robot collided with a {str(collision['object_class']).replace('_', ' ')}{material}."
        labels[episode_id] = Label(str(cause), reason)
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


# --------------------------------------------------------------------------- assignment metrics


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
    return {"cp": round(cp, 4), "tc": round(tc, 4), "sas": round(_harmonic(cp, tc), 4)}


def _harmonic(a: float, b: float) -> float:
    return 0.0 if a + b <= 0 else 2 * a * b / (a + b)


# --------------------------------------------------------------------------- taxonomy alignment


def alignment_scores(sim: np.ndarray, threshold: float) -> dict[str, Any]:
    """CP, TC and SAS of a K×M similarity matrix (see module docstring)."""
    sim = np.clip(np.nan_to_num(np.asarray(sim, dtype=float), nan=0.0), 0.0, 1.0)
    if sim.size == 0:
        return {"cp": 0.0, "tc": 0.0, "sas": 0.0, "cp_soft": 0.0, "tc_soft": 0.0, "sas_soft": 0.0, "sharpness": 0.0}
    row_max, col_max = sim.max(axis=1), sim.max(axis=0)
    cp = float((row_max >= threshold).mean())
    tc = float((col_max >= threshold).mean())
    cp_soft, tc_soft = float(row_max.mean()), float(col_max.mean())
    sums = sim.sum(axis=1)
    sharp = float(np.mean(np.where(sums > 0, row_max / np.maximum(sums, 1e-12), 0.0)))
    return {
        "cp": round(cp, 4), "tc": round(tc, 4), "sas": round(_harmonic(cp, tc), 4),
        "cp_soft": round(cp_soft, 4), "tc_soft": round(tc_soft, 4), "sas_soft": round(_harmonic(cp_soft, tc_soft), 4),
        "sharpness": round(sharp, 4), "threshold": threshold,
    }


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


def embedding_similarity_matrix(modes: list[Mode], experts: dict[str, str], embedder: TextEmbedder) -> np.ndarray:
    """K×M cosine similarities (clipped at 0) of mode texts and expert texts."""
    if not modes or not experts:
        return np.zeros((len(modes), len(experts)))
    a = embedder.embed([mode_text(m) for m in modes])
    b = embedder.embed(list(experts.values()))
    return np.clip(a @ b.T, 0.0, 1.0)


async def judge_similarity_matrix(
    modes: list[Mode], experts: dict[str, str], backend: LLMBackend, cfg: EvaluationConfig
) -> tuple[np.ndarray, dict[str, int]]:
    """K×M judge scores; failed calls are NaN (scored 0) and counted."""
    template = load_prompt(cfg.judge_prompt)
    limiter = asyncio.Semaphore(cfg.judge_concurrency)
    sim = np.full((len(modes), len(experts)), np.nan)
    counts: Counter = Counter()
    choices = list(JUDGE_SCALE)

    async def one(i: int, j: int, expert: str) -> None:
        prompt = fill(template, predicted=mode_text(modes[i]), expert=expert)
        try:
            async with limiter:
                res = await backend.complete_choice([{"role": "user", "content": prompt}], choices, seed=0)
        except BackendError:
            counts["backend_error"] += 1
            return
        counts["calls"] += 1
        if res.parsed in JUDGE_SCALE:
            sim[i, j] = JUDGE_SCALE[res.parsed]
        else:
            counts["unparsed"] += 1

    await asyncio.gather(*(one(i, j, t) for i in range(len(modes)) for j, t in enumerate(experts.values())))
    return sim, dict(counts)


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


async def judge_explanations(
    predicted: list[str], references: list[str], backend: LLMBackend, cfg: EvaluationConfig
) -> dict[str, Any]:
    """Share of explanations an LLM judge says name the reference's cause."""
    template = load_prompt(cfg.explanation_judge_prompt)
    idx = list(range(len(predicted)))
    if cfg.judge_max_explanations and len(idx) > cfg.judge_max_explanations:
        idx = sorted(derive_rng(cfg.seed, "judge-sample").choice(idx, cfg.judge_max_explanations, replace=False))
    limiter = asyncio.Semaphore(cfg.judge_concurrency)
    verdicts: list[bool] = []
    counts: Counter = Counter()

    async def one(i: int) -> None:
        prompt = fill(template, predicted=predicted[i], expert=references[i])
        try:
            async with limiter:
                res = await backend.complete_choice([{"role": "user", "content": prompt}], ["yes", "no"], seed=0)
        except BackendError:
            counts["backend_error"] += 1
            return
        if res.parsed in ("yes", "no"):
            verdicts.append(res.parsed == "yes")
        else:
            counts["unparsed"] += 1

    await asyncio.gather(*(one(int(i)) for i in idx))
    return {"n": len(verdicts), "llm_judge_agreement": round(float(np.mean(verdicts)), 4) if verdicts else None,
            **{f"judge_{k}": v for k, v in counts.items()}}


# --------------------------------------------------------------------------- stability


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
    sim = embedding_similarity_matrix(taxonomy.modes, experts, embedder)
    result["alignment_embedding"] = {
        **alignment_scores(sim, cfg.embedding_match_threshold),
        "embedder": embedder.name,
        "matrix": {"modes": taxonomy.names, "experts": list(experts), "scores": np.round(sim, 4).tolist()},
    }
    by_id = {e.episode_id: e for e in explanations}
    pairs = [(by_id[e].failure_reason, labels[e].reason) for e in ids if e in by_id and labels[e].reason]
    if pairs:
        result["explanations"] = explanation_quality([p for p, _ in pairs], [r for _, r in pairs], embedder)
    if cfg.llm_judge and backend is not None:
        judged, counts = _run(judge_similarity_matrix(taxonomy.modes, experts, backend, cfg))
        result["alignment_llm_judge"] = {
            **alignment_scores(judged, cfg.judge_match_threshold),
            "judge_model": getattr(backend, "model_id", None),
            "calls": counts,
            "matrix": {"modes": taxonomy.names, "experts": list(experts),
                       "scores": np.where(np.isnan(judged), None, np.round(judged, 4)).tolist()},
        }
        if pairs:
            coro = judge_explanations([p for p, _ in pairs], [r for _, r in pairs], backend, cfg)
            result.setdefault("explanations", {}).update(_run(coro))
    if other_runs:
        result["stability"] = stability_ari([pred_map, *other_runs])
    result["modes"] = [
        {"name": m.name, "count": m.count, "frequency": m.frequency, "reported_frequency": m.reported_frequency,
         "named_by": m.named_by,
         "majority_label": result["assignment"].get("mapping_majority", {}).get(m.name)}
        for m in taxonomy.modes
    ]
    return result


def _run(coro):
    """Run a coroutine from sync code, also when called inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


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
    import yaml

    path = run / "config.yaml"
    if not path.is_file():
        return {}
    doc = yaml.safe_load(path.read_text()) or {}
    return doc.get("config", doc) if isinstance(doc, dict) else {}


# --------------------------------------------------------------------------- synthetic data

# Hazard causes of the bundled simulator, each with paraphrase material:
# (objects, why the camera missed it, what the robot did).
_SYNTHETIC_CAUSES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "glass": (
        ["glass door", "glass wall", "transparent pane", "glazed partition", "window pane"],
        ["it is almost see-through", "the camera saw the room behind it", "it barely shows in the image",
         "its surface reflects the corridor", "nothing visible marked the pane"],
        ["drove straight ahead", "kept its speed", "entered the doorway", "crossed the lobby"],
    ),
    "thin_pole": (
        ["thin pole", "narrow post", "metal column", "lamp post", "slim pillar"],
        ["it is only a few pixels wide", "it vanished between image columns", "it is too thin to notice",
         "its width is tiny at that distance", "the policy ignored the narrow obstacle"],
        ["turned slightly left", "drove along the corridor", "cut the corner", "kept going forward"],
    ),
    "low_obstacle": (
        ["low box", "small crate", "low step", "cable tray on the floor", "short obstacle"],
        ["it sits below the camera's view", "it is lower than the camera looks", "it hid under the field of view",
         "the camera points over it", "it is too low to appear until too late"],
        ["moved forward", "approached the desk", "drove toward the goal", "passed the shelf"],
    ),
    "plain_wall": (
        ["plain white wall", "featureless wall", "blank wall", "uniform grey wall", "bare wall"],
        ["it has no texture to judge distance", "the uniform surface hid how close it was",
         "nothing on it showed the approach", "its flat colour gave no depth cue", "the wall looked far away"],
        ["drove toward the end of the hall", "turned into the room", "accelerated", "headed to the goal"],
    ),
    "narrow_gap": (
        ["narrow gap", "tight doorway", "small opening between desks", "narrow passage", "gap between cabinets"],
        ["it was narrower than the robot", "the robot misjudged the clearance", "its sides clipped the frame",
         "the opening was too tight to pass", "the policy aimed through a gap that did not fit"],
        ["tried to pass through", "squeezed between obstacles", "steered into the opening", "drove on"],
    ),
    "chair": (
        ["office chair", "chair", "stool", "desk chair", "swivel chair"],
        ["its legs are thin and spread out", "it stood in the walking path", "its shape changes with the angle",
         "it was moved into the aisle", "the seat hid the legs below"],
        ["crossed the office", "drove between desks", "went around a table", "moved toward the window"],
    ),
    "corner": (
        ["wall corner", "sharp corner", "corner of the corridor", "edge of a wall", "protruding corner"],
        ["it turned too early", "the corner was at the edge of the view", "the robot cut the turn",
         "the corner left the field of view while turning", "it misjudged the turning radius"],
        ["turned right", "turned left", "rounded the corner", "took the bend"],
    ),
}
_SYNTHETIC_FORMS = [
    "The robot {act} and hit the {obj} because {why}.",
    "Collision with a {obj}: {why}.",
    "It {act}, then collided with the {obj}; {why}.",
    "The robot failed to avoid the {obj} since {why}.",
    "While it {act}, the robot crashed into a {obj} as {why}.",
    "Hit a {obj}. Likely cause: {why}.",
]


def make_synthetic_explanations(n: int, seed: int = 0) -> tuple[list[Explanation], dict[str, Label]]:
    """A labelled synthetic set of failure explanations (for benchmarks and tests).

    Built from templates over the simulator's hazard causes with paraphrased
    objects, reasons, actions and sentence forms, plus 10% of explanations
    that mention a second, irrelevant object — realistic wording, but
    template-made: results on it are not results on real logs. Seeded.
    """
    rng = derive_rng(seed, "synthetic-explanations")
    causes = list(_SYNTHETIC_CAUSES)
    weights = np.linspace(2.0, 1.0, len(causes))
    weights = weights / weights.sum()
    explanations: list[Explanation] = []
    labels: dict[str, Label] = {}
    for i in range(n):
        cause = causes[int(rng.choice(len(causes), p=weights))]
        objs, whys, acts = _SYNTHETIC_CAUSES[cause]
        obj, why, act = (str(rng.choice(objs)), str(rng.choice(whys)), str(rng.choice(acts)))
        text = str(rng.choice(_SYNTHETIC_FORMS)).format(obj=obj, why=why, act=act)
        if rng.random() < 0.1:
            other = causes[int(rng.integers(len(causes)))]
            text += f" A {rng.choice(_SYNTHETIC_CAUSES[other][0])!s} was also nearby."
        eid = f"syn-{i:06d}"
        explanations.append(Explanation(eid, f"The robot {act}.", text, "given", None))
        labels[eid] = Label(cause, f"The robot collided with a {objs[0]} because {whys[0]}.")
    return explanations, labels

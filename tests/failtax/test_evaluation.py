"""Evaluation metrics against hand-computed cases, label loading, evaluate_run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic import make_synthetic_explanations

from common import append_jsonl, atomic_write_json
from failtax.embedding import EmbeddingConfig, make_text_embedder
from failtax.evaluation import EvaluationConfig, Label, evaluate, evaluate_run, load_labels
from failtax.metrics import (
    alignment_scores,
    cluster_metrics,
    explanation_quality,
    label_alignment,
    stability_ari,
)
from failtax.types import OUTLIER, Assignment, Explanation, Mode, Taxonomy

HASHING = EmbeddingConfig(kind="hashing")


def test_cluster_metrics_perfect():
    m = cluster_metrics(["a", "a", "b", "b"], ["x", "x", "y", "y"])
    assert m["nmi"] == 1.0 and m["ari"] == 1.0
    assert m["weighted_f1_majority"] == 1.0 and m["weighted_f1_hungarian"] == 1.0
    assert m["mapping_hungarian"] == {"x": "a", "y": "b"}


def test_cluster_metrics_hand_computed():
    # true a,a,b,b vs predicted x,x,x,y: contingency x→(a:2, b:1), y→(b:1)
    m = cluster_metrics(["a", "a", "b", "b"], ["x", "x", "x", "y"])
    # majority: x→a, y→b → predictions a,a,a,b: F1(a)=0.8, F1(b)=2/3, weighted = 0.7333
    assert m["weighted_f1_majority"] == pytest.approx(0.7333, abs=1e-4)
    # ARI: sum C(n_ij,2)=1, rows C(3,2)=3, cols 1+1=2, expected 3*2/6=1, max 2.5 → (1-1)/(2.5-1)=0
    assert m["ari"] == pytest.approx(0.0, abs=1e-9)
    assert m["purity"] == pytest.approx(0.75)


def test_hungarian_is_one_to_one():
    m = cluster_metrics(["a", "a", "b", "b"], ["x", "y", "z", "z"])
    assert m["weighted_f1_majority"] == 1.0  # x→a, y→a, z→b
    # one-to-one: one of x/y stays unmatched → a: P=1 R=.5 F=2/3; b: F=1 → weighted 0.8333
    assert m["weighted_f1_hungarian"] == pytest.approx(0.8333, abs=1e-4)


def test_outliers_never_count_as_right():
    m = cluster_metrics(["a", "a", "b", "b"], ["x", OUTLIER, "y", "y"])
    assert OUTLIER not in m["mapping_majority"]
    # predictions a, outlier, b, b → a: P=1 R=.5 F=2/3, b: F=1 → 0.8333
    assert m["weighted_f1_majority"] == pytest.approx(0.8333, abs=1e-4)
    assert m["outlier_share"] == 0.25


def test_alignment_scores_hand_computed():
    sim = np.array([[1.0, 0.0], [0.8, 0.1], [0.2, 0.3]])
    s = alignment_scores(sim, threshold=0.75)
    assert s["cp"] == pytest.approx(2 / 3, abs=1e-4)  # rows 0 and 1 reach 0.75
    assert s["tc"] == pytest.approx(0.5)  # expert 0 covered, expert 1 (max 0.3) not
    assert s["sas"] == pytest.approx(4 / 7, abs=1e-4)
    assert s["cp_soft"] == pytest.approx(0.7, abs=1e-4)
    assert s["tc_soft"] == pytest.approx(0.65, abs=1e-4)
    # the one-to-one matching pairs row 0 with expert 0 and row 2 with expert 1: (1.0 + 0.3) / 3
    assert s["hungarian_mean"] == pytest.approx(1.3 / 3, abs=1e-4)
    # nothing to align: no score, rather than a zero that reads as a measured failure
    assert alignment_scores(np.zeros((0, 0)), threshold=0.5)["sas"] is None


def test_label_alignment():
    s = label_alignment(["a", "a", "b", "c"], ["x", "x", "x", OUTLIER])
    assert s["cp"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["tc"] == pytest.approx(1 / 3, abs=1e-4)


def test_stability():
    run = {"1": "x", "2": "x", "3": "y", "4": "y"}
    renamed = {"1": "p", "2": "p", "3": "q", "4": "q"}
    out = stability_ari([run, renamed, {"1": "x", "2": "y", "3": "x", "4": "y"}])
    assert out["pairs"][0]["ari"] == 1.0
    assert len(out["pairs"]) == 3 and out["mean_ari"] < 1.0


def test_explanation_quality_identical_and_different():
    emb = make_text_embedder(HASHING)
    same = explanation_quality(["the robot hit a glass door"], ["the robot hit a glass door"], emb)
    assert same["cosine_similarity"] == pytest.approx(1.0, abs=1e-4) and same["rouge_l"] == pytest.approx(1.0)
    diff = explanation_quality(["zebra marmalade"], ["the robot hit a glass door"], emb)
    assert diff["rouge_l"] == 0.0 and diff["cosine_similarity"] < 0.5


def test_load_labels_from_ground_truth(tiny_episodes):
    labels, problems = load_labels(tiny_episodes)
    assert len(labels) == 6 and not problems
    assert {lab.label for lab in labels.values()} == {"glass", "thin_pole", "low_obstacle"}
    # a corrupt file is reported, not fatal
    bad = next(iter(sorted(tiny_episodes.iterdir())))
    (bad / "ground_truth.json").write_text("{not json")
    labels, problems = load_labels(tiny_episodes)
    assert len(labels) == 5 and problems[0]["kind"] == "bad_ground_truth"


def test_load_labels_csv(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("episode_id,label,reason\ne1,glass,hit glass\ne2,,\ne3,pole,\n")
    labels, problems = load_labels(p)
    assert labels == {"e1": Label("glass", "hit glass"), "e3": Label("pole", None)}
    assert problems[0]["line"] == 3
    (tmp_path / "bad.csv").write_text("id,cause\n1,a\n")
    with pytest.raises(ValueError, match="episode_id,label"):
        load_labels(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="does not exist"):
        load_labels(tmp_path / "missing.csv")


def _write_run(run, explanations, taxonomy, assignments, episodes_path=None):
    run.mkdir(parents=True, exist_ok=True)
    append_jsonl(run / "explanations.jsonl", [e.to_dict() for e in explanations])
    atomic_write_json(run / "taxonomy.json", taxonomy.to_dict())
    append_jsonl(run / "assignments.jsonl", [a.to_dict() for a in assignments])
    (run / "config.yaml").write_text(json.dumps({"config": {"source": {"path": str(episodes_path)}}}))


def test_evaluate_run_writes_evaluation_json(tmp_path, stub_backend_factory):
    explanations, labels = make_synthetic_explanations(40, seed=1)
    classes = sorted({lab.label for lab in labels.values()})
    taxonomy = Taxonomy([Mode(c.replace("_", " "), f"Collisions caused by {c}.", [c]) for c in classes], "ensemble")
    # Perfect assignments except the first two episodes, which go to outlier.
    assignments = [Assignment(e.episode_id, [labels[e.episode_id].label.replace("_", " ")] if i > 1 else [OUTLIER],
                              "test") for i, e in enumerate(explanations)]
    run = tmp_path / "run"
    _write_run(run, explanations, taxonomy, assignments)
    csv = tmp_path / "labels.csv"
    csv.write_text("episode_id,label,reason\n" + "".join(
        f"{e},{lab.label},{lab.reason}\n" for e, lab in labels.items()))
    other = tmp_path / "run2"
    _write_run(other, explanations, taxonomy, assignments)
    cfg = EvaluationConfig(embedding=HASHING, compare_runs=[str(other)], llm_judge=True)

    def judge(method, messages, attempt):
        text = messages[0]["content"]
        if "Mode A" in text:  # alignment: "same" when the class name appears in both
            a, b = text.split("Mode A: ")[1].split("\nMode B: ")
            return "same" if b.split(":")[0].split()[0] in a else "none"
        return "yes"

    result = evaluate_run(run, csv, cfg, backend=stub_backend_factory(judge))
    assert (run / "evaluation.json").is_file()
    assert result["labelled_episodes"] == 40
    assert result["assignment"]["weighted_f1_majority"] > 0.9
    assert result["stability"]["mean_ari"] == 1.0
    judged = result["alignment_llm_judge"]
    assert judged["tc"] == 1.0 and judged["cp"] == 1.0
    assert result["explanations"]["llm_judge_agreement"] == 1.0
    assert 0 <= result["explanations"]["rouge_l"] <= 1
    assert json.loads((run / "evaluation.json").read_text())["strategy"] == "ensemble"


def test_evaluate_run_needs_labels(tmp_path):
    explanations, _ = make_synthetic_explanations(5, seed=0)
    tax = Taxonomy([Mode("m", "d", [])], "ensemble")
    run = tmp_path / "run"
    _write_run(run, explanations, tax, [Assignment(e.episode_id, ["m"], "t") for e in explanations])
    csv = tmp_path / "l.csv"
    csv.write_text("episode_id,label\nnobody,glass\n")
    with pytest.raises(ValueError, match="no episode"):
        evaluate_run(run, csv, EvaluationConfig(embedding=HASHING))


def test_evaluate_in_memory_embedding_alignment():
    explanations = [Explanation(str(i), "", t, "given", None) for i, t in enumerate(["glass door hit", "pole hit"])]
    labels = {"0": Label("glass"), "1": Label("pole")}
    tax = Taxonomy([Mode("glass", "glass door", ["glass"]), Mode("pole", "thin pole", ["pole"])], "x")
    res = evaluate(explanations, tax, [Assignment("0", ["glass"], "t"), Assignment("1", ["pole"], "t")], labels,
                   EvaluationConfig(embedding=HASHING))
    assert res["assignment"]["nmi"] == 1.0
    assert res["alignment_embedding"]["matrix"]["experts"] == ["glass", "pole"]

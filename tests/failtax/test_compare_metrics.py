"""Comparison metrics on hand-made runs: matching, missed modes, ARI, cost arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from failtax.compare.config import CompareConfig, ReasonerConfig, load_reasoner, merge_config
from failtax.compare.metrics import (
    CostRecord,
    RunView,
    assignment_agreement,
    cost_summary,
    explanation_agreement,
    match_modes,
    mode_text,
    taxonomy_similarity,
)
from failtax.compare.report import render_html, render_markdown
from failtax.metrics import alignment_scores
from failtax.types import Assignment, Explanation, Mode, Taxonomy


def bag_of_words(texts):
    """A transparent embedder for the tests: normalised word counts over a hashed vocabulary."""
    out = np.zeros((len(texts), 256))
    for i, t in enumerate(texts):
        for w in (
            t.lower()
            .replace(":", " ")
            .replace(",", " ")
            .replace("(", " ")
            .replace(")", " ")
            .split()
        ):
            out[i, sum(map(ord, w)) * 31 % 256] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1, norms)


def view(name, reasons, modes, assigned):
    return RunView(
        name,
        {e: Explanation(e, "drove ahead", r, "scene_text", "m") for e, r in reasons.items()},
        Taxonomy([Mode(n, d, k) for n, d, k in modes], "cluster-then-name"),
        {e: Assignment(e, m if isinstance(m, list) else [m], "llm") for e, m in assigned.items()},
    )


MODES_A = [
    ("glass", "hit a transparent glass door", ["glass", "door"]),
    ("pole", "hit a thin pole", ["pole", "thin"]),
    ("box", "hit a low box on the floor", ["box", "low"]),
]
MODES_B = [
    ("thin pole", "hit a thin pole", ["pole"]),
    ("glass door", "hit a transparent glass door", ["glass", "door"]),
    ("dark corner", "drove into a dark corner at night", ["dark", "night"]),
    ("wall", "drove into a plain wall", ["wall"]),
]


def test_hungarian_matching_pairs_the_best_one_to_one_and_reports_both_misses():
    sim = np.array(
        [
            [0.9, 0.8, 0.0],
            [0.85, 0.1, 0.2],
        ]
    )
    # greedy would pair a0-b0 (0.9) and leave a1 with b2 (0.2); Hungarian maximises the total
    out = match_modes(sim, ["a0", "a1"], ["b0", "b1", "b2"], threshold=0.5)
    assert out["matched"] == {"a0": "b1", "a1": "b0"}
    assert [m["mode"] for m in out["missed_by_a"]] == ["b2"]
    assert out["missed_by_b"] == []
    # a pair below the threshold is not a match: both sides count as missed
    out = match_modes(sim, ["a0", "a1"], ["b0", "b1", "b2"], threshold=0.82)
    assert out["matched"] == {"a1": "b0"}
    assert [m["mode"] for m in out["missed_by_b"]] == ["a0"]
    assert {m["mode"] for m in out["missed_by_a"]} == {"b1", "b2"}
    assert out["missed_by_b"][0]["closest"] == "b0"


def test_match_modes_rejects_a_matrix_of_the_wrong_shape():
    with pytest.raises(ValueError, match="expected"):
        match_modes(np.zeros((2, 2)), ["a"], ["b", "c"], threshold=0.5)


def test_alignment_scores_arithmetic():
    sim = np.array([[1.0, 0.2], [0.3, 0.4], [0.7, 0.1]])
    s = alignment_scores(sim, threshold=0.5)
    # one alignment_scores for the comparison and the evaluation (failtax.metrics): the
    # comparison's former precision / coverage / reverse_coverage are cp_soft / tc / cp
    assert s["cp_soft"] == pytest.approx((1.0 + 0.4 + 0.7) / 3, abs=1e-4)
    assert s["tc"] == pytest.approx(0.5)  # column maxima 1.0 and 0.4
    assert s["cp"] == pytest.approx(2 / 3, abs=1e-4)  # row maxima 1.0, 0.4, 0.7
    assert s["sas"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), abs=1e-4)
    # Hungarian: a0-b0 (1.0) + a1-b1 (0.4); the third A mode has no partner and counts 0
    assert s["hungarian_mean"] == pytest.approx(1.4 / 3, abs=1e-4)
    assert alignment_scores(np.zeros((0, 3)), threshold=0.5)["sas"] is None


def test_taxonomy_matching_on_texts_finds_the_shared_modes_and_the_missed_ones():
    a = view("a", {}, MODES_A, {})
    b = view("b", {}, MODES_B, {})
    sim = taxonomy_similarity(a.taxonomy, b.taxonomy, bag_of_words)
    assert sim.shape == (3, 4)
    out = match_modes(sim, a.taxonomy.names, b.taxonomy.names, threshold=0.6)
    assert out["matched"] == {"glass": "glass door", "pole": "thin pole"}
    assert [m["mode"] for m in out["missed_by_b"]] == ["box"]
    assert {m["mode"] for m in out["missed_by_a"]} == {"dark corner", "wall"}
    assert "keywords: glass, door" in mode_text("glass", "hit a door", ["glass", "door"])


def test_assignment_agreement_ari_and_confusion_through_the_matching():
    # B names the same partition differently: ARI is 1 whatever the names
    a = view(
        "a", {}, MODES_A, {"e1": "glass", "e2": "glass", "e3": "pole", "e4": "box", "e5": "outlier"}
    )
    b = view(
        "b",
        {},
        MODES_B,
        {"e1": "glass door", "e2": "glass door", "e3": "thin pole", "e4": "wall", "e5": "outlier"},
    )
    matched = {"glass": "glass door", "pole": "thin pole"}
    out = assignment_agreement(a, b, matched)
    assert out["ari"] == pytest.approx(1.0)
    assert out["nmi"] == pytest.approx(1.0)
    # e4: box (unmatched) vs wall — same partition, but not the same mode through the matching
    assert out["matched_agreement"] == pytest.approx(4 / 5)
    conf = out["confusion"]
    assert conf["rows"][:2] == ["glass", "pole"] and conf["cols"][:2] == ["glass door", "thin pole"]
    assert conf["rows"][-1] == "outlier" and conf["cols"][-1] == "outlier"
    counts = np.array(conf["counts"])
    assert counts.sum() == 5 and np.trace(counts[:2, :2]) == 3
    per = {p["mode"]: p for p in out["per_mode"]}
    assert per["glass"]["both"] == 2 and per["glass"]["recall_in_b"] == 1.0
    assert per["box"]["match"] is None and per["box"]["both"] == 0


def test_assignment_agreement_of_unrelated_partitions_is_near_zero_and_handles_no_overlap():
    rng = np.random.default_rng(0)
    eps = [f"e{i}" for i in range(200)]
    a = view("a", {}, MODES_A, {e: str(rng.choice(["glass", "pole", "box"])) for e in eps})
    b = view(
        "b", {}, MODES_B, {e: str(rng.choice(["glass door", "thin pole", "wall"])) for e in eps}
    )
    assert abs(assignment_agreement(a, b, {})["ari"]) < 0.05
    c = view("c", {}, MODES_B, {"other": "wall"})
    out = assignment_agreement(a, c, {})
    assert out["episodes_compared"] == 0 and out["ari"] is None


def test_multi_mode_assignments_agree_on_any_overlap():
    a = view("a", {}, MODES_A, {"e1": ["pole", "glass"], "e2": ["box"]})
    b = view("b", {}, MODES_B, {"e1": ["glass door"], "e2": ["thin pole"]})
    out = assignment_agreement(a, b, {"glass": "glass door", "pole": "thin pole"})
    assert out["matched_agreement"] == pytest.approx(0.5)


def test_explanation_agreement_lists_the_least_agreeing_episodes_with_both_texts():
    a = view(
        "a", {"e1": "hit a glass door", "e2": "hit a thin pole", "e3": "hit a box"}, MODES_A, {}
    )
    b = view("b", {"e1": "Hit a  glass door", "e2": "the floor was wet", "e4": "x"}, MODES_B, {})
    out = explanation_agreement(a, b, bag_of_words, least_agreeing=1)
    assert out["episodes_compared"] == 2 and out["only_in_a"] == 1 and out["only_in_b"] == 1
    assert out["identical_share"] == pytest.approx(0.5)
    assert out["per_episode"]["e1"] == pytest.approx(1.0)
    worst = out["least_agreeing"]
    assert len(worst) == 1 and worst[0]["episode_id"] == "e2"
    assert worst[0]["a"] == "hit a thin pole" and worst[0]["b"] == "the floor was wet"
    assert out["mean"] == pytest.approx((1.0 + out["per_episode"]["e2"]) / 2, abs=1e-4)


def test_cost_arithmetic_per_thousand_episodes():
    cost = CostRecord(
        calls=30,
        fresh_calls=0,
        prompt_tokens=200_000,
        completion_tokens=50_000,
        model_time_s=12.0,
        episodes=20,
    )
    s = cost_summary(cost, prompt_usd_per_mtok=0.15, completion_usd_per_mtok=0.60)
    assert s["usd"] == pytest.approx(0.2 * 0.15 + 0.05 * 0.60)  # 0.06 $
    assert s["usd_per_1k_episodes"] == pytest.approx(0.06 * 50)
    assert s["calls_per_episode"] == pytest.approx(1.5)
    assert s["tokens_per_episode"] == pytest.approx(12_500)
    assert s["model_time_s_per_1k_episodes"] == pytest.approx(600.0)
    unknown = cost_summary(cost, prompt_usd_per_mtok=None, completion_usd_per_mtok=0.6)
    assert unknown["usd"] is None and unknown["usd_per_1k_episodes"] is None
    free = cost_summary(CostRecord(), prompt_usd_per_mtok=0.0, completion_usd_per_mtok=0.0)
    assert free["usd"] == 0.0 and free["usd_per_1k_episodes"] is None


def test_run_view_loads_a_run_folder_and_tolerates_missing_stages(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "explanations.jsonl").write_text(
        json.dumps(Explanation("e1", "t", "r", "facts", None).to_dict()) + "\n"
    )
    v = RunView.load("x", run)
    assert list(v.explanations) == ["e1"] and v.taxonomy is None and v.assignments == {}
    tax = Taxonomy([Mode("m", "d", ["k"])], "ensemble")
    (run / "taxonomy.json").write_text(json.dumps(tax.to_dict()))
    assert RunView.load("x", run).taxonomy.names == ["m"]


def test_reasoner_config_merging_and_validation(tmp_path: Path):
    p = tmp_path / "my-reasoner.yaml"
    p.write_text(
        "backend: {kind: openai, base_url: 'http://x/v1'}\nreasoning: {temperature: 0.7}\n"
    )
    r = load_reasoner(p)
    assert r.name == "my-reasoner"
    assert r.overrides() == {
        "backend": {"kind": "openai", "base_url": "http://x/v1"},
        "reasoning": {"temperature": 0.7},
    }
    merged = merge_config(
        {"reasoning": {"temperature": 0.0, "max_tokens": 400}, "seed": 1}, r.overrides()
    )
    assert merged["reasoning"] == {"temperature": 0.7, "max_tokens": 400} and merged["seed"] == 1
    p.write_text("source: {path: x}\n")
    with pytest.raises(ValueError, match="source"):
        load_reasoner(p)
    with pytest.raises(ValueError, match="folder name"):
        ReasonerConfig(name="a/b")
    with pytest.raises(ValueError, match="cosine"):
        CompareConfig(match_threshold=2.0)


def _comparison(a, b):
    """A comparison.json document of two hand-made runs."""
    sim = taxonomy_similarity(a.taxonomy, b.taxonomy, bag_of_words)
    tax = match_modes(sim, a.taxonomy.names, b.taxonomy.names, threshold=0.6)
    cost = cost_summary(
        CostRecord(calls=3, episodes=1, prompt_tokens=10),
        prompt_usd_per_mtok=1,
        completion_usd_per_mtok=2,
    )
    comparison = {
        "settings": {"embedder": "bag of words", "match_threshold": 0.6},
        "shared": {"episodes": 1, "source": "eps", "keyframe_method": "fixed-rate"},
        "reasoners": [
            {
                "name": n,
                "model": "m",
                "input_mode": "scene_text",
                "modes": [],
                "cost": cost,
                "evaluation": None,
                "outlier_share": 0.0,
            }
            for n in ("a", "b")
        ],
        "pairs": [
            {
                "a": "a",
                "b": "b",
                "explanations": explanation_agreement(a, b, bag_of_words),
                "taxonomies": {**tax, "modes_a": 3, "modes_b": 4},
                "assignments": assignment_agreement(a, b, tax["matched"]),
            }
        ],
    }
    return comparison


def test_reports_render_from_comparison_json_alone():
    a = view("a", {"e1": "hit a glass door <b>"}, MODES_A, {"e1": "glass"})
    b = view("b", {"e1": "hit a pole | twice"}, MODES_B, {"e1": "thin pole"})
    comparison = _comparison(a, b)
    md = render_markdown(comparison)
    assert "| a | m | scene_text |" in md and "hit a pole \\| twice" in md
    assert "Found by a, missed by b: `box`" in md
    page = render_html(comparison)
    assert "&lt;b&gt;" in page and "<script" not in page and "http" not in page


def test_model_written_mode_names_cannot_inject_markup():
    evil = "<script>alert(1)</script>"
    a = view("a", {"e1": "hit glass"}, [(evil, "hit a glass door", ["glass"])], {"e1": evil})
    b = view("b", {"e1": "hit a pole"}, MODES_B, {"e1": "thin pole"})
    page = render_html(_comparison(a, b))
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_reasoner_prompt_beside_its_yaml_is_found(tmp_path: Path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "mine.txt").write_text("Why? {scene}")
    p = tmp_path / "r.yaml"
    p.write_text(
        "reasoning: {scene_text_prompt: prompts/mine.txt, vision_prompt: reason_vision.txt}\n"
    )
    r = load_reasoner(p)
    assert r.reasoning["scene_text_prompt"] == str((tmp_path / "prompts" / "mine.txt").resolve())
    assert r.reasoning["vision_prompt"] == "reason_vision.txt"  # not beside it: a packaged prompt

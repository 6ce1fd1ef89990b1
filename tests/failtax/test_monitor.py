"""The model monitor's prompts, parsing and fallbacks, decision points, and the
evaluate driver (results, report, resume) — with a stub backend for control flow;
tests/failtax/test_monitor_server.py runs the real embedded model."""

from __future__ import annotations

import asyncio
import json

import pytest

from failtax.monitor import make_monitor
from failtax.monitor.cli import evaluate_all
from failtax.monitor.config import MonitorConfig
from failtax.monitor.evaluate import select_episodes
from failtax.monitor.observe import decision_points, describe_points, window_text
from failtax.sources import EpisodeFolderSource
from failtax.types import Mode, Taxonomy

MODES = ["Thin vertical object missed", "Faint wide surface ahead"]


@pytest.fixture
def taxonomy_path(tmp_path):
    tax = Taxonomy([Mode(n, f"collisions with a {n.lower()}", ["k"]) for n in MODES], "ensemble")
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps(tax.to_dict()))
    return path


@pytest.fixture
def mixed_episodes(tmp_path, episode_factory):
    root = tmp_path / "episodes"
    root.mkdir()
    for i in range(3):
        episode_factory(root, f"fail-{i}", hazard="pole", n_steps=14, seed=i)
        episode_factory(root, f"ok-{i}", hazard="plain_wall", n_steps=14, seed=10 + i,
                        outcome="success")
    return root


def _cfg(taxonomy_path, **kw):
    return MonitorConfig(taxonomy_path=str(taxonomy_path), decision_every_steps=2, **kw)


def _one(root, eid):
    return next(e for e in EpisodeFolderSource(root, []).scan() if e.episode_id == eid)


def test_decision_points_stop_before_the_collision_and_respect_the_horizon(mixed_episodes, taxonomy_path):
    ep = _one(mixed_episodes, "fail-0")  # 14 steps of 0.2 s, collision at step 13 (t=2.6 s)
    pts = decision_points(ep, _cfg(taxonomy_path))
    assert [p.step for p in pts] == [0, 2, 4, 6, 8, 10, 12]
    pts = decision_points(ep, _cfg(taxonomy_path, horizon_s=1.0))  # t >= 1.6 s
    assert [p.step for p in pts] == [8, 10, 12]
    ok = _one(mixed_episodes, "ok-0")  # success: up to the last step (13, odd: not a decision step)
    assert [p.step for p in decision_points(ok, _cfg(taxonomy_path))][-1] == 12


def test_observation_text_is_robot_observable(mixed_episodes, taxonomy_path):
    cfg = _cfg(taxonomy_path)
    ep = _one(mixed_episodes, "fail-0")
    pts = decision_points(ep, cfg)
    describe_points(ep, pts, cfg.scene)
    text = window_text(pts, len(pts) - 1, 3)
    assert text.count("[frame") == 3 and "Goal" in text and "m/s" in text
    assert "pole" not in text and "collision" not in text.lower()  # no class names, no outcome


def _answer(verdict="UNSAFE", mode=MODES[0]):
    return json.dumps({"verdict": verdict, "mode": mode, "reason": "object close ahead"})


def test_taxonomy_monitor_parses_answers_and_raises_the_alarm(mixed_episodes, taxonomy_path,
                                                              stub_backend_factory):
    backend = stub_backend_factory(lambda method, messages, attempt: _answer())
    cfg = _cfg(taxonomy_path)
    monitor = make_monitor(cfg, backend)
    ep = _one(mixed_episodes, "fail-0")
    pts = decision_points(ep, cfg)
    describe_points(ep, pts, cfg.scene)
    decisions = asyncio.run(monitor.decide_episode(ep, pts))
    assert len(decisions) == len(pts) and all(d.source == "model" for d in decisions)
    assert all(d.unsafe and d.mode == MODES[0] for d in decisions)
    prompt = backend.requests[0][1][0]["content"]
    assert all(m in prompt for m in MODES) and "Observations" in prompt


def test_baseline_prompts_carry_no_taxonomy(taxonomy_path, stub_backend_factory):
    backend = stub_backend_factory(lambda *a: _answer())
    for variant in ("nocontext", "llm_ad"):
        monitor = make_monitor(_cfg(taxonomy_path, variant=variant), backend)
        text = monitor.messages("[frame 0] Robot: stopped.", 0.5)[0]["content"]
        assert not any(m in text for m in MODES)
        assert "mode" not in monitor.schema["properties"]
    assert "Anomalous examples" in make_monitor(_cfg(taxonomy_path, variant="llm_ad"), backend
                                                ).messages("x", 0.5)[0]["content"]


def test_unusable_answers_fall_back_to_safe_and_never_alarm(mixed_episodes, taxonomy_path,
                                                            stub_backend_factory):
    backend = stub_backend_factory(lambda *a: "UNSAFE!!! not json")
    cfg = _cfg(taxonomy_path, k_consecutive=1)
    monitor = make_monitor(cfg, backend)
    ep = _one(mixed_episodes, "fail-1")
    pts = decision_points(ep, cfg)
    describe_points(ep, pts, cfg.scene)
    decisions = asyncio.run(monitor.decide_episode(ep, pts))
    assert decisions and all(d.source == "fallback:parse_failure" and not d.unsafe for d in decisions)


def test_a_mode_outside_the_taxonomy_is_a_schema_fallback(taxonomy_path, stub_backend_factory):
    backend = stub_backend_factory(lambda *a: _answer(mode="Invented mode"))
    monitor = make_monitor(_cfg(taxonomy_path), backend)
    d = asyncio.run(monitor.decide("x", 0, 0.0, 0.5))
    assert d.source.startswith("fallback:") and d.verdict == "SAFE"


def test_taxonomy_variant_needs_a_taxonomy(stub_backend_factory):
    with pytest.raises(ValueError, match="taxonomy_path"):
        make_monitor(MonitorConfig(), stub_backend_factory(lambda *a: _answer()))


def test_evaluate_writes_results_and_resumes_without_calls(tmp_path, mixed_episodes, taxonomy_path,
                                                           stub_backend_factory, monkeypatch):
    # UNSAFE only when something is within 1 m: failures and successes both approach a hazard
    def responder(method, messages, attempt):
        last = messages[0]["content"].split("Observations (oldest first):")[1].strip().splitlines()[-1]
        near = "ahead 0." in last
        return _answer("UNSAFE" if near else "SAFE", MODES[0] if near else "none")

    backend = stub_backend_factory(responder)
    import serving

    monkeypatch.setattr(serving, "make_backend", lambda cfg: backend)
    cfgs = [_cfg(taxonomy_path, k_consecutive=2)]
    out = tmp_path / "out"
    results = asyncio.run(evaluate_all(cfgs, {"id": mixed_episodes}, out, progress=False))
    m = results["monitors"]["taxonomy"]["id"]
    assert m["episodes"] == 6 and m["failures"] == 3 and m["successes"] == 3
    assert m["decisions_by_model"] == m["decisions"] > 0
    assert m["confusion"]["tp"] + m["confusion"]["fn"] == 3
    assert (out / "results.json").is_file() and (out / "summary.md").is_file()
    html = (out / "report.html").read_text()
    assert "<svg" in html and "fail-0" in html
    calls = len(backend.requests)
    again = asyncio.run(evaluate_all(cfgs, {"id": mixed_episodes}, out, progress=False))
    assert len(backend.requests) == calls  # nothing redone
    assert again["monitors"] == results["monitors"]


def test_max_episodes_keeps_both_outcomes(mixed_episodes, taxonomy_path):
    eps, _ = select_episodes(mixed_episodes, _cfg(taxonomy_path, max_episodes=2))
    assert sorted(e.meta["outcome"] for e in eps) == ["collision", "success"]


def test_backend_errors_are_redone_by_a_rerun(tmp_path, mixed_episodes, taxonomy_path,
                                              stub_backend_factory, monkeypatch):
    from serving.protocol import BackendError

    state = {"down": True}

    def responder(method, messages, attempt):
        if state["down"]:
            raise BackendError("connection refused")
        return _answer()

    backend = stub_backend_factory(responder)
    import serving

    monkeypatch.setattr(serving, "make_backend", lambda cfg: backend)
    cfgs = [_cfg(taxonomy_path, max_episodes=2)]
    first = asyncio.run(evaluate_all(cfgs, {"id": mixed_episodes}, tmp_path / "o", progress=False))
    m = first["monitors"]["taxonomy"]["id"]
    assert m["decisions_by_model"] == 0 and m["fallbacks"] == {"fallback:backend_error": m["decisions"]}
    state["down"] = False
    again = asyncio.run(evaluate_all(cfgs, {"id": mixed_episodes}, tmp_path / "o", progress=False))
    m = again["monitors"]["taxonomy"]["id"]
    assert m["decisions_by_model"] == m["decisions"] > 0 and m["fallbacks"] == {}


def test_reason_first_puts_the_reason_before_the_verdict():
    from failtax.answers import answer_schema, monitor_answer

    first = answer_schema(monitor_answer(("a",), reason_max_chars=30, reason_first=True))
    last = answer_schema(monitor_answer(("a",), reason_max_chars=30))
    assert list(first["properties"]) == ["reason", "verdict", "mode"]
    assert list(last["properties"]) == ["verdict", "mode", "reason"]


def test_an_edited_prompt_changes_the_fingerprint(tmp_path, taxonomy_path, stub_backend_factory):
    from failtax.monitor.evaluate import fingerprint

    prompt = tmp_path / "p.txt"
    prompt.write_text("Judge {observations}")
    prompts = {"taxonomy": str(prompt), "nocontext": "monitor_nocontext.txt", "llm_ad": "monitor_llm_ad.txt"}
    cfg = _cfg(taxonomy_path, prompts=prompts)
    backend = stub_backend_factory(lambda *a: _answer())
    before = fingerprint(cfg, make_monitor(cfg, backend))
    prompt.write_text("Judge carefully {observations}")
    assert fingerprint(cfg, make_monitor(cfg, backend)) != before

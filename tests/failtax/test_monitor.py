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
        near = _nearness(messages[0]["content"]) > 0.8
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
    assert m["confusion"]["tp"] + m["confusion"]["fn"] == 3 and m["confusion"]["tp"] > 0
    assert 0 < m["unsafe_share"] < 1
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


class _Scored:
    """A stub backend whose choice answers carry P(UNSAFE) = `p_of(prompt)`; mode
    questions get `mode`."""

    def __init__(self, stub_backend_factory, p_of, mode=MODES[1], probs=True):
        self.p_of, self.mode, self.probs = p_of, mode, probs
        self.inner = stub_backend_factory(self._text)
        self.model_id = self.inner.model_id
        self.requests = self.inner.requests

    def _text(self, method, messages, attempt):
        content = messages[0]["content"]
        if "Which failure mode" in content:
            return self.mode
        return "UNSAFE" if self.p_of(content) >= 0.5 else "SAFE"

    async def complete_choice(self, messages, choices, **kw):
        result = await self.inner.complete_choice(messages, choices, **kw)
        if self.probs and choices == ["SAFE", "UNSAFE"]:
            p = self.p_of(messages[0]["content"])
            result.choice_probs = {"SAFE": 1 - p, "UNSAFE": p}
        return result


def _nearness(content: str) -> float:
    """0.9 when the latest observation has something within 1 m ahead, else 0.6: a model
    that would answer UNSAFE every time, yet ranks the near cases higher."""
    block = content.split("Observations (oldest first):")[1].strip().split("\n\n")[0]
    return 0.9 if "ahead 0." in block.splitlines()[-1] else 0.6


def test_deciding_by_probability_thresholds_and_names_the_mode_at_the_alarm(
        mixed_episodes, taxonomy_path, stub_backend_factory):
    backend = _Scored(stub_backend_factory, _nearness)
    cfg = _cfg(taxonomy_path, decide="probability", unsafe_threshold=0.8, k_consecutive=2)
    monitor = make_monitor(cfg, backend)
    ep = _one(mixed_episodes, "fail-0")
    pts = decision_points(ep, cfg)
    describe_points(ep, pts, cfg.scene)
    decisions = asyncio.run(monitor.decide_episode(ep, pts))
    assert all(d.source == "model" and d.p_unsafe in (0.6, 0.9) for d in decisions)
    assert [d.unsafe for d in decisions] == [d.p_unsafe >= 0.8 for d in decisions]
    assert any(d.unsafe for d in decisions) and not all(d.unsafe for d in decisions)
    alarm = next(i for i in range(1, len(decisions))
                 if decisions[i].unsafe and decisions[i - 1].unsafe)
    assert decisions[alarm].mode == MODES[1]
    assert all(d.mode is None for i, d in enumerate(decisions) if i != alarm)
    asks = [m[0]["content"] for _, m in backend.requests]
    assert sum("Which failure mode" in a for a in asks) == 1  # only where the alarm fired
    assert all("one word: SAFE or UNSAFE" in a for a in asks if "Which failure mode" not in a)


def test_probability_without_token_probabilities_is_a_fallback(taxonomy_path, stub_backend_factory):
    backend = _Scored(stub_backend_factory, lambda c: 0.9, probs=False)
    monitor = make_monitor(_cfg(taxonomy_path, decide="probability"), backend)
    d = asyncio.run(monitor.decide("x", 0, 0.0, 0.5))
    assert d.source == "fallback:no_probabilities" and not d.unsafe and d.p_unsafe is None


def test_calibrate_threshold_maximises_episode_f1():
    from failtax.monitor.llm import calibrate_threshold

    episodes = [(True, [0.5, 0.9, 0.95]), (True, [0.7, 0.7, None]), (False, [0.8, 0.85, 0.3]),
                (False, [0.6, 0.6, 0.6])]
    record = calibrate_threshold(episodes, k=2)
    # t=0.6: alarms in all four (F1 2/3); t=0.7: both failures and the 0.8/0.85 success
    # (F1 0.8); t=0.85: the first failure only (F1 2/3); t=0.8: first failure + success (0.5)
    assert record["threshold"] == 0.7 and abs(record["f1"] - 0.8) < 1e-9
    assert record["tpr"] == 1.0 and record["tnr"] == 0.5
    with pytest.raises(ValueError, match="no decision"):
        calibrate_threshold([(True, [None, None])], k=1)


def test_alarm_score_and_episode_auroc():
    from failtax.monitor.metrics import alarm_score, episode_auroc

    assert alarm_score([0.2, 0.9, 0.8, 0.7, 0.1], k=2) == 0.8
    assert alarm_score([0.9, None, 0.9], k=2) == 0.0 and alarm_score([0.9], k=2) is None
    r = episode_auroc([(True, 0.9), (True, 0.5), (False, 0.6), (False, 0.1), (False, None)])
    assert r == {"value": 0.75, "n": 4, "unscored": 1}  # 3 of the 4 failure-success pairs
    assert episode_auroc([(True, 0.9)])["value"] is None


def test_evaluate_calibrates_on_training_episodes_then_reruns_without_calls(
        tmp_path, mixed_episodes, taxonomy_path, stub_backend_factory, monkeypatch):
    backend = _Scored(stub_backend_factory, _nearness)
    import serving

    monkeypatch.setattr(serving, "make_backend", lambda cfg: backend)
    cfgs = [_cfg(taxonomy_path, decide="probability", k_consecutive=2)]
    out = tmp_path / "out"
    results = asyncio.run(evaluate_all(cfgs, {"id": mixed_episodes}, out, progress=False,
                                       calibration=("train", mixed_episodes)))
    record = results["calibration"]["taxonomy"]
    assert record["set"] == "train" and record["threshold"] in (0.6, 0.9)
    assert results["config"]["taxonomy"]["unsafe_threshold"] == record["threshold"]
    assert (out / "train" / "taxonomy" / "calibration.json").is_file()
    m = results["monitors"]["taxonomy"]["id"]
    assert m["episode_auroc"]["n"] == 6 and m["decisions_by_model"] == m["decisions"]
    assert "set on train" in (out / "summary.md").read_text()
    calls = len(backend.requests)
    again = asyncio.run(evaluate_all(cfgs, {"id": mixed_episodes}, out, progress=False,
                                     calibration=("train", mixed_episodes)))
    assert len(backend.requests) == calls and again["monitors"] == results["monitors"]


def test_calibration_set_must_not_be_an_evaluation_set(mixed_episodes, taxonomy_path):
    from click.testing import CliRunner

    from failtax.monitor.cli import monitor as cli

    r = CliRunner().invoke(cli, ["evaluate", "--episodes", f"id={mixed_episodes}",
                                 "--calibrate", f"id={mixed_episodes}", "--out", "x",
                                 "--set", f"taxonomy_path={taxonomy_path}"])
    assert r.exit_code == 2 and "calibrate on training episodes only" in r.output

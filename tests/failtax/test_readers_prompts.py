"""Domain prompt packs (navigation, manipulation with task and plan, driving): picked by
reasoning.domain or by the source, and each run end to end with the embedded model."""

from __future__ import annotations

import asyncio
import json

import pytest
from log_fixtures import draw, write_manipulation_run, write_mp4

from failtax.config import ReasoningConfig, SceneConfig, SourceConfig, load_config
from failtax.pipeline import Run
from failtax.reasoning import PROMPTS_DIR, domain_prompt_name, load_prompt, make_reasoner
from failtax.run_folder import read_explanations
from failtax.sources import DOMAINS, make_source
from failtax.types import Keyframes

# words only one pack's prompt says
MARKERS = {"navigation": "mobile robot", "manipulation": "robot manipulator",
           "driving": "dashcam"}


def test_every_pack_exists_for_every_model_mode_and_fills():
    values = {"outcome": "failure", "scene": "S", "num_frames": 3, "frame_times": "times 1 s",
              "task": "T", "plan": "1. P", "trajectory_max_chars": 100,
              "failure_reason_max_chars": 100}
    for mode in ("reason_scene_text.txt", "reason_vision.txt"):
        for domain in DOMAINS:
            name = domain_prompt_name(mode, mode, domain)
            text = load_prompt(name).format_map(values)
            assert MARKERS[domain] in text, name
            if domain == "manipulation":
                assert "T" in text and "1. P" in text
    assert domain_prompt_name("my_prompt.txt", "reason_vision.txt", "driving") == "my_prompt.txt"
    assert (PROMPTS_DIR / "reason_vision.driving.txt").is_file()
    with pytest.raises(ValueError, match="valid: navigation, manipulation, driving"):
        domain_prompt_name("reason_vision.txt", "reason_vision.txt", "underwater")


def _runs(tmp_path):
    runs = tmp_path / "runs"
    write_manipulation_run(runs, "r1", 6, "put the red cup in the sink",
                           ["move_to(red_cup)", "pick(red_cup)", "place(sink)"])
    return runs


def test_the_source_picks_the_pack_and_config_overrides_it(tmp_path, stub_backend_factory):
    [ep] = make_source(SourceConfig(path=str(_runs(tmp_path)))).scan()
    answer = json.dumps({"reasoning": "r", "trajectory": "Moved the arm.",
                         "failure_reason": "The grasp of the red cup slipped during pick."})
    for domain, marker in (("auto", "robot manipulator"), ("driving", "dashcam"),
                           ("navigation", "mobile robot")):
        backend = stub_backend_factory(lambda *a: answer)
        cfg = ReasoningConfig(input_mode="scene_text", domain=domain)
        reasoner = make_reasoner(cfg, SceneConfig(), backend)
        kf = Keyframes(ep.episode_id, [0, 3, 5], 5, "fixed-rate")
        out = asyncio.run(reasoner.explain(ep, kf, []))
        prompt = backend.requests[0][1][0]["content"]
        assert marker in prompt and out.explanation.input_mode == "scene_text"
        if domain == "auto":
            assert "put the red cup in the sink" in prompt and "2. pick(red_cup)" in prompt


# ----------------------------------------------------------------------- embedded model


class Recorder:
    """Passes calls to the model and keeps the prompts of the reasoning calls."""

    def __init__(self, inner) -> None:
        self.inner, self.model_id = inner, inner.model_id
        self.prompts: list[str] = []

    async def complete_json(self, messages, schema, **kw):
        if "failure_reason" in schema.get("properties", {}):
            self.prompts.append(messages[0]["content"])
        return await self.inner.complete_json(messages, schema, **kw)

    async def complete(self, messages, **kw):
        return await self.inner.complete(messages, **kw)

    async def complete_choice(self, messages, choices, **kw):
        return await self.inner.complete_choice(messages, choices, **kw)


def _navigation(tmp_path, episode_factory):
    root = tmp_path / "episodes"
    root.mkdir()
    for i, hazard in enumerate(["glass_door", "pole", "box"]):
        episode_factory(root, f"ep-{i}", hazard=hazard, seed=i, n_steps=8 + i)
    return root


def _manipulation(tmp_path, episode_factory):
    runs = tmp_path / "runs"
    for i, (task, plan) in enumerate([
        ("put the red cup in the sink", ["move_to(red_cup)", "pick(red_cup)", "place(sink)"]),
        ("open the top drawer", ["move_to(handle)", "grasp(handle)", "pull(handle)"]),
        ("stack the blue block on the green block", ["pick(blue_block)", "place(green_block)"]),
    ]):
        write_manipulation_run(runs, f"run_{i}", 6 + i, task, plan, seed=i)
    return runs


def _driving(tmp_path, episode_factory):
    clips = tmp_path / "clips"
    for i in range(3):
        write_mp4(clips / f"crash_{i}.mp4", [draw(i, f, 30) for f in range(30)], 10)
    return clips


@pytest.mark.parametrize("domain, build, kind", [
    ("navigation", _navigation, "auto"),
    ("manipulation", _manipulation, "auto"),
    ("driving", _driving, "dashcam"),
])
def test_each_pack_end_to_end_with_the_embedded_model(
    tmp_path, embedded_backend, episode_factory, domain, build, kind
):
    inputs = build(tmp_path, episode_factory)
    cfg = load_config(None, {
        "source.kind": kind,
        "reasoning.input_mode": "scene_text",
        "reasoning.include_reasoning": False,
        "reasoning.trajectory_max_chars": 100,
        "reasoning.failure_reason_max_chars": 140,
        # only a parse failure falls back: the 135M model's wording is not judged here
        "reasoning.fallback_on_degenerate": [],
        "discovery.strategy": "cluster-then-name",
        "discovery.min_modes": 1,
        "discovery.max_modes": 2,
    })
    backend = Recorder(getattr(embedded_backend, "inner", embedded_backend))
    run_dir = tmp_path / "run"
    Run(cfg, run_dir, episodes=inputs, backend=backend, progress=False).run()
    explanations = read_explanations(run_dir)
    assert len(explanations) == 3
    # the model's answers were parsed and kept: no facts stood in for them
    for e in explanations:
        assert e.input_mode == "scene_text" and e.model and e.call_ids, e
        assert not any(f.startswith("fallback:") for f in e.degenerate), e
        assert e.failure_reason and e.trajectory
    assert len(backend.prompts) == 3 and all(MARKERS[domain] in p for p in backend.prompts)
    if domain == "manipulation":
        assert any("open the top drawer" in p and "3. pull(handle)" in p for p in backend.prompts)
    assert (run_dir / "report.html").stat().st_size > 0
    assert json.loads((run_dir / "taxonomy.json").read_text())["modes"]

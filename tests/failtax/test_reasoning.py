"""Reasoners: parsing at the boundary, fallbacks, degenerate output (stub backends only)."""

from __future__ import annotations

import asyncio
import json

import pytest

from failtax.config import DownsampleConfig, ReasoningConfig, SceneConfig, SourceConfig
from failtax.degenerate import detect_degenerate
from failtax.downsample import Downsampler
from failtax.reasoning import explanation_schema, load_prompt, make_reasoner
from failtax.scene import SceneDescriber
from failtax.sources import make_source
from serving.protocol import BackendError

GOOD = {
    "reasoning": "The pole got closer each frame.",
    "trajectory": "Drove straight at 0.5 m/s.",
    "failure_reason": "Hit a thin pole it did not avoid, probably too thin to notice.",
}


# The simulator's privileged channels (opt-in): the prompt checks below look for class names.
PRIVILEGED = SceneConfig(class_names=True, channels=["depth", "semantic", "instance", "rgb"])


@pytest.fixture
def inputs(tmp_path, episode_factory):
    episode_factory(tmp_path, "ep", hazard="pole", n_steps=10)
    ep = next(make_source(SourceConfig(path=str(tmp_path))).scan())
    kf = Downsampler(DownsampleConfig()).keyframes(ep)
    return ep, kf, SceneDescriber(PRIVILEGED).describe(ep, kf)


def explain(mode, backend, inputs, **cfg):
    reasoner = make_reasoner(ReasoningConfig(input_mode=mode, **cfg), PRIVILEGED, backend)
    return asyncio.run(reasoner.explain(*inputs))


def test_schema_caps_every_string():
    schema = explanation_schema(ReasoningConfig())
    assert list(schema["properties"]) == ["reasoning", "trajectory", "failure_reason"]
    assert all("maxLength" in p for p in schema["properties"].values())
    assert (
        "reasoning"
        not in explanation_schema(ReasoningConfig(include_reasoning=False))["properties"]
    )


def test_prompts_fill_their_placeholders(stub_backend_factory, inputs):
    backend = stub_backend_factory(lambda *a: json.dumps(GOOD))
    out = explain("scene_text", backend, inputs)
    prompt = backend.requests[0][1][0]["content"]
    assert "{" not in prompt.replace("{{", "")  # no unfilled placeholder
    assert "pole (object 5)" in prompt and "collision" in prompt
    assert out.explanation.input_mode == "scene_text" and out.explanation.model == "stub-model"
    assert out.explanation.failure_reason == GOOD["failure_reason"] and out.errors == []


def test_vision_mode_sends_the_kept_frames(stub_backend_factory, inputs):
    backend = stub_backend_factory(lambda *a: json.dumps(GOOD))
    out = explain("vision", backend, inputs)
    images = [p for p in backend.requests[0][1][0]["content"] if p["type"] == "image"]
    assert len(images) == len(inputs[1].indices) and images[0]["image"].startswith(b"\x89PNG")
    assert out.explanation.input_mode == "vision"


def test_malformed_json_is_reasked_then_falls_back_to_facts(stub_backend_factory, inputs):
    backend = stub_backend_factory(lambda *a: "Sure! {trajectory: drove")
    out = explain("scene_text", backend, inputs)
    assert len(backend.requests) == 2  # one re-ask
    assert out.explanation.input_mode == "facts" and out.explanation.degenerate == [
        "fallback:parse_failure"
    ]
    [err] = out.errors
    assert (
        err["kind"] == "parse_failure"
        and err["attempts"] == 2
        and "fell back to facts" in err["message"]
    )
    assert out.explanation.failure_reason.startswith("Collision with the pole")


def test_facts_standing_in_for_a_failed_answer_keep_the_answer_caps(stub_backend_factory, inputs):
    backend = stub_backend_factory(lambda *a: "not json")
    out = explain("scene_text", backend, inputs, trajectory_max_chars=40, failure_reason_max_chars=30)
    e = out.explanation
    assert e.degenerate == ["fallback:parse_failure"]
    assert len(e.failure_reason) <= 30 and len(e.trajectory) <= 40
    assert e.failure_reason.startswith("Collision with") and e.failure_reason.endswith("…")


def test_truncated_output_is_a_typed_failure(stub_backend_factory, inputs):
    backend = stub_backend_factory(lambda *a: ('{"reasoning": "the the the', "length"))
    out = explain("scene_text", backend, inputs)
    assert out.errors[0]["kind"] == "truncated" and out.explanation.input_mode == "facts"


def test_dead_server_falls_back_and_is_retryable(stub_backend_factory, inputs):
    def dead(*a):
        raise BackendError("connection refused after 3 retries")

    out = explain("scene_text", stub_backend_factory(dead), inputs)
    assert out.errors[0]["kind"] == "backend_error" and out.retryable


def test_repetitive_answer_is_flagged_and_replaced(stub_backend_factory, inputs):
    bad = dict(GOOD, failure_reason="pole pole pole pole pole pole pole pole pole pole pole")
    out = explain("scene_text", stub_backend_factory(lambda *a: json.dumps(bad)), inputs)
    assert (
        "repetition" in out.explanation.degenerate
        and "fallback:degenerate" in out.explanation.degenerate
    )
    assert out.explanation.input_mode == "facts"


def test_copied_input_is_flagged_but_kept(stub_backend_factory, inputs):
    copied = inputs[2][-1].to_text()[:200]
    answer = dict(GOOD, failure_reason=copied)
    out = explain("scene_text", stub_backend_factory(lambda *a: json.dumps(answer)), inputs)
    assert (
        "copied_input" in out.explanation.degenerate and out.explanation.input_mode == "scene_text"
    )


def test_facts_mode_needs_no_model(inputs):
    out = explain("facts", None, inputs)
    assert out.explanation.model is None and out.explanation.input_mode == "facts"


def test_unknown_mode_and_missing_backend_are_clear():
    with pytest.raises(ValueError):
        ReasoningConfig(input_mode="telepathy")
    cfg = ReasoningConfig(input_mode="scene_text")
    object.__setattr__(cfg, "input_mode", "telepathy")  # bypass validation to reach the factory
    with pytest.raises(ValueError, match="valid: vision, scene_text, facts, given"):
        make_reasoner(cfg, SceneConfig())
    with pytest.raises(ValueError, match="needs a model backend"):
        make_reasoner(ReasoningConfig(input_mode="scene_text"), SceneConfig())
    with pytest.raises(ValueError, match="max_tokens"):
        ReasoningConfig(input_mode="scene_text", max_tokens=50)
    with pytest.raises(ValueError, match="not found"):
        load_prompt("no_such_prompt.txt")


def test_degenerate_detection():
    assert detect_degenerate("") == ["empty"]
    assert detect_degenerate("it hit it hit it hit it hit it hit it hit") == ["repetition"]
    src = "the robot moved forward toward a glass door that was hard to see in the camera"
    assert detect_degenerate(
        "the robot moved forward toward a glass door that was hard", sources=[src]
    ) == ["copied_input"]
    assert detect_degenerate("A thin pole was missed by the planner.", finish_reason="length") == [
        "truncated"
    ]
    assert (
        detect_degenerate("The robot hit a thin pole that its camera barely saw.", sources=[src])
        == []
    )


def test_scene_block_drops_oldest_frames_to_fit():
    from failtax.reasoning import fit_scene_text

    texts = ["a" * 50, "b" * 50, "c" * 50]
    assert fit_scene_text(texts, 120) == "b" * 50 + "\n" + "c" * 50
    assert fit_scene_text(texts, 30) == "c" * 30  # the failure frame stays, cut
    assert fit_scene_text([], 100) == "(no frames)"

"""The structured-output schemas generated from the typed answers (failtax.answers)
equal the hand-written dicts they replaced, key order included, and the same
models validate the answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import ValidationError

from failtax.answers import (
    answer_schema,
    mode_answer_for,
    mode_choice_answer,
    rephrase_answer,
    taxonomy_answer_for,
)
from failtax.config import DownsampleConfig, ReasoningConfig, SceneConfig, SourceConfig
from failtax.discovery import DiscoveryConfig
from failtax.discovery.common import CallLog, call_json
from failtax.downsample import Downsampler
from failtax.reasoning import explanation_schema, make_reasoner
from failtax.scene import SceneDescriber
from failtax.sources import make_source
from serving.protocol import CallResult

# ---------------------------------------------------------------- golden: the old hand-written dicts


def old_explanation_schema(cfg: ReasoningConfig) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if cfg.include_reasoning:
        props["reasoning"] = {"type": "string", "maxLength": cfg.reasoning_max_chars}
    props["trajectory"] = {"type": "string", "minLength": 1, "maxLength": cfg.trajectory_max_chars}
    props["failure_reason"] = {
        "type": "string",
        "minLength": 1,
        "maxLength": cfg.failure_reason_max_chars,
    }
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def old_mode_schema(cfg: Any, *, with_percent: bool) -> dict[str, Any]:
    props: dict[str, Any] = {
        "name": {"type": "string", "minLength": 1, "maxLength": cfg.name_max_chars},
        "description": {"type": "string", "minLength": 1, "maxLength": cfg.description_max_chars},
        "keywords": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": cfg.keyword_max_chars},
            "minItems": 1,
            "maxItems": cfg.max_keywords,
        },
    }
    required = ["name", "description", "keywords"]
    if with_percent:
        props["percent"] = {"type": "integer", "minimum": 0, "maximum": 100}
        required.append("percent")
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def old_taxonomy_schema(cfg: Any, max_modes: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "modes": {
                "type": "array",
                "items": old_mode_schema(cfg, with_percent=True),
                "minItems": 1,
                "maxItems": max_modes,
            }
        },
        "required": ["modes"],
        "additionalProperties": False,
    }


def old_choice_schema(choices: list[str], max_modes_per_explanation: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"modes": {"type": "array", "items": {"type": "string", "enum": choices},
                                 "minItems": 1, "maxItems": max_modes_per_explanation}},
        "required": ["modes"],
        "additionalProperties": False,
    }


def old_rephrase_schema(seed_instructions: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"instructions": {"type": "string", "minLength": 1,
                                        "maxLength": int(len(seed_instructions) * 1.25)}},
        "required": ["instructions"],
        "additionalProperties": False,
    }


def same(new: dict[str, Any], old: dict[str, Any]) -> None:
    """Equal, and equal as sent (key and property order included)."""
    assert new == old
    assert json.dumps(new) == json.dumps(old)


# ---------------------------------------------------------------- schemas


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"include_reasoning": False},
        {"include_reasoning": True, "reasoning_max_chars": 77, "trajectory_max_chars": 55,
         "failure_reason_max_chars": 33},
        {"include_reasoning": False, "trajectory_max_chars": 400, "failure_reason_max_chars": 150},
    ],
)
def test_explanation_schema_equals_the_hand_written_one(kw):
    cfg = ReasoningConfig(**kw)
    same(explanation_schema(cfg), old_explanation_schema(cfg))


DISCOVERY_CONFIGS = [
    {},
    {"name_max_chars": 30, "description_max_chars": 120, "keyword_max_chars": 16, "max_keywords": 3},
    {"max_keywords": 8, "max_modes": 4},
]


@pytest.mark.parametrize("kw", DISCOVERY_CONFIGS)
@pytest.mark.parametrize("with_percent", [True, False])
def test_mode_schema_equals_the_hand_written_one(kw, with_percent):
    cfg = DiscoveryConfig(**kw)
    same(answer_schema(mode_answer_for(cfg, with_percent=with_percent)), old_mode_schema(cfg, with_percent=with_percent))


@pytest.mark.parametrize("kw", DISCOVERY_CONFIGS)
@pytest.mark.parametrize("max_modes", [1, 5, 12])
def test_taxonomy_schema_equals_the_hand_written_one(kw, max_modes):
    cfg = DiscoveryConfig(**kw)
    same(answer_schema(taxonomy_answer_for(cfg, max_modes)), old_taxonomy_schema(cfg, max_modes))


@pytest.mark.parametrize(
    "choices", [["outlier"], ["glass door", "outlier"], ["pole", "box collision", "glass door", "outlier"]]
)
@pytest.mark.parametrize("max_modes", [2, 3])
def test_choice_schema_equals_the_hand_written_one(choices, max_modes):
    # One choice too: pydantic would write a one-value Literal as `const`.
    same(answer_schema(mode_choice_answer(tuple(choices), max_modes=max_modes)), old_choice_schema(choices, max_modes))


@pytest.mark.parametrize("seed", ["Name the failure modes.", "x" * 1001])
def test_rephrase_schema_equals_the_hand_written_one(seed):
    same(answer_schema(rephrase_answer(max_chars=int(len(seed) * 1.25))), old_rephrase_schema(seed))


def test_schema_is_flat_and_untitled_and_a_fresh_copy():
    model = taxonomy_answer_for(DiscoveryConfig(), 5)
    text = json.dumps(answer_schema(model))
    assert "$ref" not in text and "$defs" not in text and '"title"' not in text
    answer_schema(model)["properties"]["modes"]["maxItems"] = 99
    assert answer_schema(model)["properties"]["modes"]["maxItems"] == 5
    assert taxonomy_answer_for(DiscoveryConfig(), 5) is model  # built once per parameter set


# ---------------------------------------------------------------- validation at the boundary


def test_models_check_what_the_schema_says():
    cfg = DiscoveryConfig(max_keywords=2, name_max_chars=10)
    mode = mode_answer_for(cfg, with_percent=True)
    good = {"name": "pole", "description": "hit a pole", "keywords": ["pole"], "percent": 40}
    assert mode.model_validate(good).name == "pole"
    for bad in (
        {**good, "name": ""},
        {**good, "name": "x" * 11},
        {**good, "keywords": ["a", "b", "c"]},
        {**good, "keywords": []},
        {**good, "percent": 101},
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "percent"},
    ):
        with pytest.raises(ValidationError):
            mode.model_validate(bad)
    choice = mode_choice_answer(("a", "b"), max_modes=2)
    assert choice.model_validate({"modes": ["b"]}).modes == ["b"]
    with pytest.raises(ValidationError):
        choice.model_validate({"modes": ["c"]})


class Unchecked:
    """A backend that hands back its answer without checking it against the schema."""

    model_id = "unchecked"

    def __init__(self, parsed: Any) -> None:
        self.parsed = parsed
        self.schemas: list[dict] = []

    async def complete_json(self, messages, schema, *, max_tokens, temperature=0.0, seed=0):
        self.schemas.append(schema)
        return CallResult(text=json.dumps(self.parsed), model=self.model_id, call_id="c1",
                          finish_reason="stop", parsed=self.parsed)


def ask(parsed: Any) -> tuple[Any, CallLog, Unchecked]:
    backend, log = Unchecked(parsed), CallLog()
    answer = rephrase_answer(max_chars=20)
    out, _ = asyncio.run(call_json(backend, "p", answer, max_tokens=16, temperature=0.0, seed=0,
                                   purpose="rephrase:0", call_log=log))
    return out, log, backend


def test_call_json_sends_the_generated_schema_and_validates_the_answer():
    out, log, backend = ask({"instructions": "Name them."})
    assert out == {"instructions": "Name them."} and log.errors == []
    assert backend.schemas == [answer_schema(rephrase_answer(max_chars=20))]
    for bad in ({"instructions": "x" * 21}, {"instructions": "ok", "more": 1}, ["instructions"]):
        out, log, _ = ask(bad)
        assert out is None
        assert [e["kind"] for e in log.errors] == ["parse_error"] and log.errors[0]["call_id"] == "c1"


@pytest.fixture
def reason_inputs(tmp_path, episode_factory):
    episode_factory(tmp_path, "ep", hazard="pole", n_steps=10)
    ep = next(make_source(SourceConfig(path=str(tmp_path))).scan())
    kf = Downsampler(DownsampleConfig()).keyframes(ep)
    return ep, kf, SceneDescriber(SceneConfig()).describe(ep, kf)


GOOD_EXPLANATION = {
    "reasoning": "The pole got closer each frame.",
    "trajectory": "Drove straight at 0.5 m/s.",
    "failure_reason": "Hit a thin pole it did not avoid, probably too thin to notice.",
}


@pytest.mark.parametrize(
    "parsed, kind",
    [
        (GOOD_EXPLANATION, None),
        ({**GOOD_EXPLANATION, "confidence": 0.9}, "schema_mismatch"),  # not in the schema
        ({k: v for k, v in GOOD_EXPLANATION.items() if k != "reasoning"}, "schema_mismatch"),
        ({**GOOD_EXPLANATION, "failure_reason": ""}, "schema_mismatch"),
        ({**GOOD_EXPLANATION, "trajectory": 3}, "schema_mismatch"),
    ],
)
def test_reasoner_validates_the_answer_with_the_typed_model(reason_inputs, parsed, kind):
    backend = Unchecked(parsed)
    reasoner = make_reasoner(ReasoningConfig(input_mode="scene_text"), SceneConfig(), backend)
    out = asyncio.run(reasoner.explain(*reason_inputs))
    assert backend.schemas == [explanation_schema(ReasoningConfig())]
    if kind is None:
        assert out.errors == [] and out.explanation.failure_reason == GOOD_EXPLANATION["failure_reason"]
    else:
        assert out.explanation.degenerate == [f"fallback:{kind}"]
        assert [e["kind"] for e in out.errors] == [kind]

"""Assignment: embedding baseline, cluster membership, and the LLM path with a
scripted backend (parsing and control flow only)."""

from __future__ import annotations

import asyncio
import json

import pytest

from failtax.assignment import (
    AssignmentConfig,
    assign,
    cluster_members,
    embedding_assign,
    match_mode_name,
    update_frequencies,
)
from failtax.embedding import EmbeddingConfig, make_text_embedder
from failtax.types import OUTLIER, Assignment, Explanation, Mode, Taxonomy
from serving.protocol import BackendError

HASHING = EmbeddingConfig(kind="hashing")


def expl(eid: str, reason: str) -> Explanation:
    return Explanation(eid, "The robot drove on.", reason, "given", None)


@pytest.fixture
def taxonomy() -> Taxonomy:
    return Taxonomy(
        modes=[
            Mode("glass collisions", "The robot hits a glass door it sees through.", ["glass", "door"],
                 reported_frequency=0.5),
            Mode("thin pole collisions", "The robot hits a thin pole or narrow post.", ["pole", "post"],
                 reported_frequency=0.3),
            Mode("low obstacles", "The robot hits a low box below the camera view.", ["box", "low"],
                 reported_frequency=0.2),
        ],
        strategy="ensemble",
    )


@pytest.fixture
def explanations() -> list[Explanation]:
    return [
        expl("e1", "It hit the glass door because the glass is see-through."),
        expl("e2", "Collision with a thin pole, the pole was a narrow post."),
        expl("e3", "The low box was below the camera view."),
        expl("e4", "Zebra quantum marmalade."),
        expl("e5", ""),
    ]


def cfg(**kw) -> AssignmentConfig:
    return AssignmentConfig(**{"embedding": HASHING, **kw})


def test_match_mode_name():
    names = ["glass collisions", "thin pole collisions"]
    assert match_mode_name("Glass Collisions.", names) == "glass collisions"
    assert match_mode_name("2", names) == "thin pole collisions"
    assert match_mode_name("glass colisions", names) == "glass collisions"  # close spelling
    assert match_mode_name("I think: thin pole collisions", names) == "thin pole collisions"
    assert match_mode_name("OUTLIER", names) == OUTLIER
    assert match_mode_name("collisions", names) is None  # ambiguous
    assert match_mode_name("", names) is None


def test_embedding_assignment_and_floor(explanations, taxonomy):
    out = embedding_assign(explanations, taxonomy, make_text_embedder(HASHING), cfg(similarity_floor=0.15))
    got = {a.episode_id: a.modes for a in out}
    assert got["e1"] == ["glass collisions"]
    assert got["e2"] == ["thin pole collisions"]
    assert got["e3"] == ["low obstacles"]
    assert got["e4"] == [OUTLIER]
    assert got["e5"] == [OUTLIER] and out[4].method == "empty"
    assert set(out[0].scores) == set(taxonomy.names)


def test_assign_fills_frequencies_and_keeps_reported(explanations, taxonomy):
    out = asyncio.run(assign(explanations, taxonomy, None, cfg(method="embedding")))
    assert len(out) == 5
    assert [m.count for m in taxonomy.modes] == [1, 1, 1]
    assert taxonomy.modes[0].frequency == pytest.approx(0.2)
    assert taxonomy.modes[0].reported_frequency == 0.5
    assert taxonomy.outlier_count == 2
    assert taxonomy.notes["assignment"]["method"] == "embedding"


def test_llm_answers_mapped_unknown_counted(explanations, taxonomy, stub_backend_factory):
    answers = {"e1": "Glass Collisions", "e2": "something else entirely", "e3": "low obstacles"}

    def responder(method, messages, attempt):
        assert method == "complete_choice"
        text = messages[0]["content"]
        for eid, reason in (("e1", "glass door because"), ("e2", "thin pole,"), ("e3", "low box")):
            if reason in text:
                return answers[eid]
        raise AssertionError("below-floor explanations must not reach the model")

    backend = stub_backend_factory(responder)
    out = asyncio.run(assign(explanations, taxonomy, backend, cfg(method="llm", top_k_candidates=2)))
    got = {a.episode_id: a for a in out}
    assert got["e1"].modes == ["glass collisions"] and got["e1"].method == "llm+embedding-prefilter"
    assert got["e2"].modes == [OUTLIER]
    assert got["e3"].modes == ["low obstacles"]
    assert got["e4"].modes == [OUTLIER] and got["e4"].method == "embedding"
    counters = taxonomy.notes["assignment"]["counters"]
    assert counters["unknown_name"] == 1 and counters["unknown_to_outlier"] == 1
    assert counters["llm_calls"] == 3
    assert len(backend.requests) == 3
    # At most the top-2 candidates (above the floor) plus "outlier" were offered.
    prompt = backend.requests[0][1][0]["content"]
    assert 1 <= len(got["e1"].scores) <= 2
    assert prompt.count("\n- ") == len(got["e1"].scores)


def test_llm_dead_server_falls_back_to_embeddings(explanations, taxonomy, stub_backend_factory):
    def dead(method, messages, attempt):
        raise BackendError("connection refused")

    out = asyncio.run(assign(explanations, taxonomy, stub_backend_factory(dead), cfg(method="llm")))
    got = {a.episode_id: a for a in out}
    assert got["e1"].modes == ["glass collisions"]
    assert got["e1"].method == "embedding (llm: backend_error)"
    assert taxonomy.notes["assignment"]["counters"]["backend_error"] == 3


def test_llm_several_modes_and_malformed_json(explanations, taxonomy, stub_backend_factory):
    def responder(method, messages, attempt):
        assert method == "complete_json"
        if "glass is see-through" in messages[0]["content"]:
            return json.dumps({"modes": ["glass collisions", "low obstacles"]})
        return "not json"

    out = asyncio.run(assign(explanations, taxonomy, stub_backend_factory(responder),
                             cfg(method="llm", max_modes_per_explanation=2, top_k_candidates=0,
                                 similarity_floor=-1.0)))
    got = {a.episode_id: a for a in out}
    assert got["e1"].modes == ["glass collisions", "low obstacles"]
    assert got["e2"].method == "embedding (llm: parse_error)"
    assert taxonomy.notes["assignment"]["counters"]["parse_error"] == 3  # e2, e3, e4 (e5 is empty)


def test_cluster_method_uses_discovery_members(explanations, taxonomy):
    taxonomy.notes["members"] = {"low obstacles": ["e1"], "glass collisions": ["e2"]}
    assert cluster_members(taxonomy) == {"e1": "low obstacles", "e2": "glass collisions"}
    out = asyncio.run(assign(explanations, taxonomy, None, cfg()))  # auto → cluster
    got = {a.episode_id: a for a in out}
    assert got["e1"].modes == ["low obstacles"] and got["e1"].method == "cluster"
    assert got["e3"].method.startswith("embedding")
    assert taxonomy.notes["assignment"]["method"] == "cluster"


def test_update_frequencies_multi_label(taxonomy):
    a = [Assignment("1", ["glass collisions", "low obstacles"], "x"), Assignment("2", [OUTLIER], "x")]
    counts = update_frequencies(taxonomy, a)
    assert counts["glass collisions"] == 1 and taxonomy.outlier_count == 1
    assert taxonomy.modes[2].frequency == pytest.approx(0.5)


def test_config_rejects_useless_llm_setting():
    with pytest.raises(ValueError, match="top_k_candidates"):
        AssignmentConfig(method="llm", top_k_candidates=1)

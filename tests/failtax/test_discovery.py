"""Discovery strategies with a scripted backend: parsing and control flow only.

The stub backend answers by prompt kind; it never demonstrates a feature. The
hashing embedder keeps these tests fast; MiniLM is exercised in
test_discovery_server.py and the benchmark.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from synthetic import make_synthetic_explanations

from failtax.discovery import DiscoveryConfig, make_strategy
from failtax.discovery.common import (
    check_description,
    check_name,
    ctfidf_keywords,
    fill,
    group_by_similarity,
    keyword_name,
)
from failtax.discovery.ensemble import check_rephrasing, split_seed
from failtax.embedding import EmbeddingConfig
from serving.protocol import BackendError

HASHING = EmbeddingConfig(kind="hashing")


@pytest.fixture(scope="module")
def data():
    return make_synthetic_explanations(140, seed=3)


def cfg(**kw) -> DiscoveryConfig:
    # refine off: these tests script the per-cluster naming calls; the review call that
    # groups clusters has its own tests below
    base = {"embedding": HASHING, "min_modes": 3, "max_modes": 8, "refine": False}
    return DiscoveryConfig(**{**base, **kw})


def kind_of(messages) -> str:
    text = messages[0]["content"]
    if "Rewrite the following instructions" in text:
        return "rephrase"
    if "Other groups, which this name must NOT describe" in text:
        return "name"
    if "Several analysts" in text:
        return "aggregate"
    if "grouped automatically by wording" in text:
        return "refine"
    return "map"


GOOD_TAXONOMY = {
    "modes": [
        {"name": "transparent surfaces", "description": "Collisions with glass the camera sees through.",
         "keywords": ["glass", "pane"], "percent": 40},
        {"name": "slender obstacles", "description": "Thin posts too narrow to notice in the image.",
         "keywords": ["pole"], "percent": 30},
        {"name": "low objects", "description": "Obstacles below the camera's field of view.",
         "keywords": ["box"], "percent": 30},
    ]
}


def discover(strategy, explanations, backend):
    return asyncio.run(strategy.discover(explanations, backend))


def test_cluster_then_name_uses_model_names_and_records_decisions(data, stub_backend_factory):
    explanations, _ = data
    counter = iter(range(1000))

    def responder(method, messages, attempt):
        assert kind_of(messages) == "name"
        i = next(counter)
        return json.dumps({"name": f"failure kind {chr(97 + i)}", "description": f"Distinct cause number {i} here.",
                           "keywords": ["alpha", "beta"]})

    backend = stub_backend_factory(responder)
    tax = discover(make_strategy(cfg()), explanations, backend)
    assert tax.strategy == "cluster-then-name"
    assert 3 <= len(tax.modes) <= 8
    assert all(m.named_by == "model" for m in tax.modes)
    assert len({m.name for m in tax.modes}) == len(tax.modes)
    assert sum(m.reported_frequency for m in tax.modes) == pytest.approx(1.0, abs=1e-4)
    notes = tax.notes
    assert notes["decided_by"]["reported_frequency"].startswith("code")
    assert notes["k_chosen_by"] == "silhouette"
    assert notes["calls"]["calls"] == notes["k"]  # one naming call per cluster, not per explanation
    assert notes["call_ids"] == sorted(notes["call_ids"])  # stable across runs, whatever order calls finish
    members = [eid for ids in notes["members"].values() for eid in ids]
    assert sorted(members) == sorted(e.episode_id for e in explanations)
    assert set(notes["mode_vectors"]["vectors"]) == {m.name for m in tax.modes}


@pytest.mark.parametrize(
    "answer, flag",
    [
        ({"name": "The robot hit the glass door and it broke.",
          "description": "A short but fine description.", "keywords": ["x"]}, "name:sentence"),
        ({"name": "failure", "description": "Generic name, fine description.", "keywords": ["x"]}, "name:generic"),
        # says only that something was hit
        ({"name": "It's a collision with an obstacle", "description": "Generic, fine description.",
          "keywords": ["x"]}, "name:generic"),
        ({"name": "slippery floor tiles", "description": "Every cluster gets the same name.", "keywords": ["x"]},
         "name:duplicate"),
    ],
)
def test_degenerate_names_fall_back_to_keywords(data, stub_backend_factory, answer, flag):
    explanations, _ = data
    backend = stub_backend_factory(lambda m, msgs, a: json.dumps(answer))
    tax = discover(make_strategy(cfg(num_modes=4)), explanations, backend)
    assert tax.notes["degenerate"].get(flag, 0) >= 1
    fallback = [m for m in tax.modes if m.named_by == "keywords"]
    assert fallback, "a degenerate name must be replaced"
    for m in fallback:
        assert m.name and "/" in m.name or m.name.startswith("mode")
    assert "keywords" in tax.notes["decided_by"]["names"]
    assert len({m.name for m in tax.modes}) == len(tax.modes)


def test_copied_description_is_replaced_by_code(data, stub_backend_factory):
    explanations, _ = data

    def responder(method, messages, attempt):
        sample = messages[0]["content"].split("Explanations in this group:\n- ")[1].split("\n")[0]
        return json.dumps({"name": "some cause", "description": sample[:150], "keywords": ["k"]})

    tax = discover(make_strategy(cfg(num_modes=3)), explanations, stub_backend_factory(responder))
    assert tax.notes["degenerate"].get("description:copied_input", 0) >= 1
    assert any(m.description.startswith("Failures mentioning") for m in tax.modes)


def test_malformed_and_truncated_output_are_recorded(data, stub_backend_factory):
    explanations, _ = data
    answers = iter(["this is not json {", ('{"name": "glass', "length")] * 50)
    backend = stub_backend_factory(lambda m, msgs, a: next(answers))
    tax = discover(make_strategy(cfg(num_modes=4)), explanations, backend)
    kinds = {e["kind"] for e in tax.notes["errors"]}
    assert kinds <= {"parse_error", "truncated"} and kinds
    assert len(tax.modes) == 4
    assert all(m.named_by == "keywords" and m.name for m in tax.modes)
    assert tax.notes["retryable"] is False


def test_dead_server_keeps_clusters_and_marks_retryable(data, stub_backend_factory):
    explanations, _ = data

    def dead(method, messages, attempt):
        raise BackendError("connection refused")

    tax = discover(make_strategy(cfg(num_modes=5)), explanations, stub_backend_factory(dead))
    assert len(tax.modes) == 5
    assert tax.notes["retryable"] is True
    assert {e["kind"] for e in tax.notes["errors"]} == {"backend_error"}


def test_no_model_names_makes_no_calls(data, stub_backend_factory):
    explanations, _ = data
    backend = stub_backend_factory(lambda *a: pytest.fail("no call expected"))
    tax = discover(make_strategy(cfg(use_model_names=False, num_modes=3)), explanations, backend)
    assert len(tax.modes) == 3 and not backend.requests


def test_fixed_number_of_modes_survives_merging(data, stub_backend_factory):
    explanations, _ = data
    # The same description everywhere would merge every mode; num_modes forbids it.
    backend = stub_backend_factory(lambda m, msgs, a: json.dumps(
        {"name": "x y", "description": "Identical description for all.", "keywords": ["k"]}))
    tax = discover(make_strategy(cfg(num_modes=6, merge_name_similarity=0.0)), explanations, backend)
    assert len(tax.modes) == 6


def test_near_duplicate_modes_merge(data, stub_backend_factory):
    explanations, _ = data
    backend = stub_backend_factory(lambda m, msgs, a: json.dumps(
        {"name": "x y", "description": "Identical description for all.", "keywords": ["k"]}))
    # Every centroid pair counts as "the same" here: merging stops at min_modes.
    tax = discover(make_strategy(cfg(min_modes=2, max_modes=6, merge_centroid_similarity=0.0)), explanations, backend)
    assert len(tax.modes) == 2  # merged down to min_modes
    assert tax.notes["merged"]
    assert sum(m.reported_frequency for m in tax.modes) == pytest.approx(1.0, abs=1e-4)


def test_tiny_inputs(stub_backend_factory):
    explanations, _ = make_synthetic_explanations(2, seed=0)
    backend = stub_backend_factory(lambda m, msgs, a: json.dumps(
        {"name": "glass cases", "description": "Hits on glass.", "keywords": ["glass"]}))
    tax = discover(make_strategy(cfg()), explanations, backend)
    assert 1 <= len(tax.modes) <= 2
    empty = discover(make_strategy(cfg()), [], backend)
    assert empty.modes == []


def test_ensemble_map_reduce_aggregate(data, stub_backend_factory):
    explanations, _ = data

    def responder(method, messages, attempt):
        kind = kind_of(messages)
        if kind == "rephrase":
            return json.dumps({"instructions": (
                "Sort the robot failure notes below into no more than eight groups, one shared root cause per "
                "group. Groups must hang together, must not overlap, and must cover every note. Name each group "
                "in a few words after its cause, describe it in one sentence, list keywords and its percent.")})
        return json.dumps(GOOD_TAXONOMY)

    backend = stub_backend_factory(responder)
    # A small context forces several map batches per member and reduce calls.
    strategy = make_strategy(cfg(strategy="ensemble", context_tokens=2048, max_modes=4,
                                 description_max_chars=80, max_explanations_per_candidate=100))
    tax = discover(strategy, explanations, backend)
    kinds = [kind_of(msgs) for _, msgs in backend.requests]
    assert kinds.count("rephrase") == 3
    assert kinds.count("map") > 4  # more than one batch per member
    assert kinds.count("aggregate") >= 5  # a reduce per member + the final aggregation
    assert [m.name for m in tax.modes] == ["transparent surfaces", "slender obstacles", "low objects"]
    assert len(tax.candidates) == 4
    assert [n["source"] for n in tax.notes["ensemble_members"]] == ["seed", "model", "model", "model"]
    assert sum(m.reported_frequency for m in tax.modes) == pytest.approx(1.0, abs=1e-4)
    assert tax.notes["decided_by"]["clusters"].startswith("model")
    assert len(tax.notes["call_ids"]) > 10 and tax.notes["call_ids"] == sorted(tax.notes["call_ids"])


def test_ensemble_copied_rephrasing_uses_seed_and_says_so(data, stub_backend_factory):
    explanations, _ = data

    def responder(method, messages, attempt):
        text = messages[0]["content"]
        if kind_of(messages) == "rephrase":
            return json.dumps({"instructions": text.split("Instructions:\n")[1].split("\n\nAnswer in JSON")[0]})
        return json.dumps(GOOD_TAXONOMY)

    tax = discover(make_strategy(cfg(strategy="ensemble", num_rephrasings=3)), explanations[:40],
                   stub_backend_factory(responder))
    assert [n["source"] for n in tax.notes["ensemble_members"]][1:] == ["seed (rephrasing degenerate)"] * 3
    assert tax.notes["degenerate"]["rephrasing:copied_input"] == 6  # 3 rephrasings × 2 attempts


def test_ensemble_all_failures_fall_back_to_embedding_clusters(data, stub_backend_factory):
    explanations, _ = data

    def dead(method, messages, attempt):
        raise BackendError("server gone")

    tax = discover(make_strategy(cfg(strategy="ensemble", num_modes=3)), explanations, stub_backend_factory(dead))
    assert tax.strategy == "ensemble"
    assert len(tax.modes) == 3
    assert "fallback" in tax.notes and tax.notes["retryable"] is True
    assert all(m.named_by == "keywords" for m in tax.modes)


def test_ensemble_degenerate_final_names_fall_back(data, stub_backend_factory):
    explanations, _ = data
    bad = {"modes": [
        {"name": "failure", "description": "Many things.", "keywords": ["a"], "percent": 50},
        {"name": "failure", "description": "Other things.", "keywords": ["b"], "percent": 50},
        {"name": explanations[0].failure_reason[:48], "description": "Copied.", "keywords": ["c"], "percent": 10},
    ]}
    backend = stub_backend_factory(lambda m, msgs, a: json.dumps(bad) if kind_of(msgs) != "rephrase" else "{}")
    tax = discover(make_strategy(cfg(strategy="ensemble")), explanations[:30], backend)
    assert tax.notes["degenerate"].get("name:duplicate", 0) >= 1
    assert any(m.named_by == "keywords" for m in tax.modes)
    assert len({m.name for m in tax.modes}) == len(tax.modes)


# --------------------------------------------------------------------------- helpers


def test_check_name_flags():
    assert check_name("", sources=[], taken=set(), max_words=6) == ["empty"]
    assert "sentence" in check_name("The robot hit the glass door and stopped there.", sources=[], taken=set(),
                                    max_words=6)
    assert "duplicate" in check_name("Glass Door", sources=[], taken={"glass door"}, max_words=6)
    for name in ("Fatal Failure", "FatalError", "Robot collision", "Unexpected error"):
        assert "generic" in check_name(name, sources=[], taken=set(), max_words=6), name
    assert check_description("Frequent words", sources=[],
                             prompt="Frequent words: glass, door") == ["copied_prompt"]
    assert check_description("Collisions with glass doors the camera sees through", sources=[],
                             prompt="Frequent words: glass, door") == []
    for name in ("Glass door", "Thin pole collision", "Featureless walls"):
        assert "generic" not in check_name(name, sources=[], taken=set(), max_words=6), name
    assert "copied_input" in check_name("hit the glass door hard", sources=["It hit the glass door hard today"],
                                        taken=set(), max_words=6)
    assert "repetition" in check_name("glass glass glass glass", sources=[], taken=set(), max_words=6)
    for name in ("Our Obstacle Damage", "We hit glass", "my knees"):
        assert "first_person" in check_name(name, sources=[], taken=set(), max_words=6), name
    assert "first_person" not in check_name("Ourobox collision", sources=[], taken=set(), max_words=6)
    assert check_name("collision with glass door", sources=["the robot hit a glass door"], taken=set(),
                      max_words=6) == []


def test_check_description_and_rephrasing():
    assert check_description("x", sources=[]) == ["empty"]
    src = "the robot drove ahead and hit the glass door because it is see through"
    assert "copied_input" in check_description(src, sources=[src])
    seed = "Group the explanations into failure modes that are coherent distinct and complete and name them."
    assert "copied_input" in check_rephrasing(seed, seed)
    assert "too_short" in check_rephrasing("Group them.", seed)


def test_ctfidf_keywords_separate_classes():
    texts = ["glass door pane", "glass pane window", "thin pole post", "pole post column"]
    kw = ctfidf_keywords(texts, [0, 0, 1, 1], top_n=2)
    assert "glass" in " ".join(kw[0]) and "pole" in " ".join(kw[1]) or "post" in " ".join(kw[1])
    assert keyword_name(["glass", "pane", "door"], 12, "m") == "glass / pane"


def test_group_by_similarity_respects_min_groups():
    sims = np.array([[1, 0.95, 0.1], [0.95, 1, 0.2], [0.1, 0.2, 1]])
    assert sorted(map(sorted, group_by_similarity(sims, 0.9))) == [[0, 1], [2]]
    assert len(group_by_similarity(sims, 0.0, min_groups=2)) == 2


def test_prompts_fill_and_seed_split():
    assert fill('{a} and {"json": 1}', a="x") == 'x and {"json": 1}'
    with pytest.raises(KeyError):
        fill("{missing}")
    instructions, data_section = split_seed("Do this.\nAnd that.\n\nItems:\n{explanations}\nAnswer in JSON.")
    assert instructions == "Do this.\nAnd that." and data_section.startswith("Items:")


def test_config_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="min_modes"):
        DiscoveryConfig(min_modes=5, max_modes=3)
    with pytest.raises(ValueError, match="max_modes"):
        DiscoveryConfig(num_modes=12, max_modes=10)
    with pytest.raises(ValueError, match="lower max_modes"):
        DiscoveryConfig(max_modes=40, context_tokens=1024)
    with pytest.raises(ValueError):
        DiscoveryConfig(strategy="magic")


def test_without_backend_both_strategies_still_answer(data):
    explanations, _ = data
    for strategy in ("cluster-then-name", "ensemble"):
        tax = discover(make_strategy(cfg(strategy=strategy, num_modes=3)), explanations, None)
        assert len(tax.modes) == 3 and all(m.named_by == "keywords" for m in tax.modes)


def test_unknown_strategy_lists_valid_ones():
    bad = DiscoveryConfig.model_construct(strategy="magic")
    with pytest.raises(ValueError, match="cluster-then-name, ensemble"):
        make_strategy(bad)


def test_names_copied_from_the_prompt_are_degenerate():
    prompt = "Merge them into one taxonomy. Frequent words in this group: {keywords}"
    assert "copied_prompt" in check_name("Merge", sources=[], taken=set(), max_words=6, prompt=prompt)
    assert "copied_prompt" in check_name("Frequent words", sources=[], taken=set(), max_words=6, prompt=prompt)
    assert check_name("glass door", sources=[], taken=set(), max_words=6, prompt=prompt) == []


def test_ensemble_collapsed_aggregation_is_merged_by_code(data, stub_backend_factory):
    explanations, _ = data
    one = {"modes": [{"name": "all failures here", "description": "Everything.", "keywords": ["x"], "percent": 100}]}

    def responder(method, messages, attempt):
        kind = kind_of(messages)
        if kind == "aggregate":
            return json.dumps(one)
        if kind == "rephrase":
            return "{}"
        return json.dumps(GOOD_TAXONOMY)

    tax = discover(make_strategy(cfg(strategy="ensemble", min_modes=3)), explanations[:40],
                   stub_backend_factory(responder))
    assert len(tax.modes) >= 3
    assert tax.notes["aggregated_by"].startswith("code")
    assert tax.notes["degenerate"]["aggregate:too_few_modes"] == 1


def _refine_responder(answer_for_refine):
    counter = iter(range(1000))

    def responder(method, messages, attempt):
        if kind_of(messages) == "refine":
            return json.dumps(answer_for_refine(messages[0]["content"]))
        i = next(counter)
        return json.dumps({"name": f"lone kind {chr(97 + i)}", "description": f"Separate cause number {i}.",
                           "keywords": ["gamma"]})
    return responder


def test_refine_lets_the_model_group_clusters_by_cause(data, stub_backend_factory):
    """The model's review merges clusters it says share a cause; a cluster it leaves out
    stays a mode and is named on its own; notes say the grouping was the model's."""
    explanations, _ = data

    def refine(prompt):
        k = prompt.count("explanations) words:")
        assert k >= 5 and "[1] (" in prompt
        return {"modes": [
            {"name": "unseen glass", "description": "Glass the depth sensor did not see.",
             "keywords": ["glass"], "groups": [1, 2]},
            {"name": "thin poles", "description": "Slender posts lost at range.", "keywords": ["pole"],
             "groups": [3, 2]},  # 2 is already taken: it stays with the first mode
            {"name": "low boxes", "description": "Low objects below the camera.", "keywords": ["box"],
             "groups": list(range(4, k))},
        ]}

    backend = stub_backend_factory(_refine_responder(refine))
    tax = discover(make_strategy(cfg(refine=True)), explanations, backend)
    notes = tax.notes
    k = notes["k"]
    assert notes["refine"]["used"] and notes["refine"]["groups"] == [[1, 2], [3], list(range(4, k))]
    assert notes["refine"]["left_out"] == [k]
    assert [m.name for m in tax.modes][:3] == ["unseen glass", "thin poles", "low boxes"]
    assert tax.modes[3].name == "lone kind a" and all(m.named_by == "model" for m in tax.modes)
    assert notes["calls"]["calls"] == 2  # one review, one naming call for the cluster left out
    assert f"the model grouped the {k} clusters into 4 modes" in notes["decided_by"]["clusters"]
    assert notes["decided_by"]["number_of_modes"].startswith("model")
    members = notes["members"]
    assert sorted(len(v) for v in members.values()) == sorted(
        int(round(m.reported_frequency * len(explanations))) for m in tax.modes)
    assert sum(len(v) for v in members.values()) == len(explanations)


@pytest.mark.parametrize("answer, why", [
    ({"modes": [{"name": "everything", "description": "All of it.", "keywords": ["x"], "groups": [1, 2, 3, 4, 5, 6]}]},
     "fewer than min_modes"),
    ({"modes": [{"name": "bad", "description": "Group out of range.", "keywords": ["x"], "groups": [99]}]},
     "no usable answer"),
    ({"name": "not a taxonomy"}, "no usable answer"),
])
def test_refine_answers_that_cannot_be_used_keep_the_clusters(data, stub_backend_factory, answer, why):
    explanations, _ = data
    backend = stub_backend_factory(_refine_responder(lambda prompt: answer))
    tax = discover(make_strategy(cfg(refine=True, num_modes=6)), explanations, backend)  # 6 clusters
    assert not tax.notes["refine"]["used"] and why in tax.notes["refine"]["skipped"]
    assert len(tax.modes) == 6 and all(m.name.startswith("lone kind") for m in tax.modes)
    assert tax.notes["calls"]["calls"] == 7


def test_clusters_the_model_names_alike_become_one_mode(data, stub_backend_factory):
    """Two clusters named alike are shown to the model side by side; a model that gives the
    same name again says they share a cause: they merge (the mode keeps the model's name)
    instead of one falling back to keywords."""
    explanations, _ = data
    counter = iter(range(1000))

    def responder(method, messages, attempt):
        text = messages[0]["content"]
        if 'Another group is already named "unseen glass panes"' in text:
            name = "unseen glass panes"  # asked to set it apart, it insists
        else:
            i = next(counter)
            name = "unseen glass panes" if i < 2 else f"failure kind {chr(97 + i)}"
        return json.dumps({"name": name, "description": "A distinct cause described here.", "keywords": ["k"]})

    backend = stub_backend_factory(responder)
    tax = discover(make_strategy(cfg(min_modes=3)), explanations, backend)
    names = [m.name for m in tax.modes]
    assert len(tax.modes) == tax.notes["k"] - 1 and names.count("unseen glass panes") == 1
    assert all(m.named_by == "model" for m in tax.modes)
    assert {"by": "model (named alike)"}.items() <= tax.notes["merged"][0].items()
    assert "name:duplicate" not in tax.notes["degenerate"]
    [apart] = tax.notes["told_apart"]
    assert apart["was"] == apart["now"] == "unseen glass panes"


def _alike_names_responder(first_names: list[str], apart_name: str):
    """A naming model that gives the clusters `first_names` in order and, shown a cluster
    beside another of the same name, answers `apart_name`; also the side-by-side prompts."""
    names = iter(first_names)
    asked: list[str] = []

    def responder(method, messages, attempt):
        text = messages[0]["content"]
        if "Another group is already named" in text:
            asked.append(text)
            name = apart_name
        else:
            name = next(names)
        return json.dumps({"name": name, "description": "A distinct cause described here.", "keywords": ["k"]})

    return responder, asked


def test_the_model_shown_two_alike_clusters_can_set_them_apart(data, stub_backend_factory):
    """A shared salient trait ("head-on") must not merge clusters of different causes: the
    smaller one, shown beside the bigger one, gets the name that sets it apart."""
    explanations, _ = data
    first = ["head-on collision"] * 2 + [f"failure kind {chr(97 + i)}" for i in range(2, 12)]
    responder, asked = _alike_names_responder(first, "thin poles missed at range")
    backend = stub_backend_factory(responder)
    tax = discover(make_strategy(cfg(min_modes=3)), explanations, backend)
    names = [m.name for m in tax.modes]
    assert len(tax.modes) == tax.notes["k"] and "thin poles missed at range" in names
    assert names.count("head-on collision") == 1 and all(m.named_by == "model" for m in tax.modes)
    assert not tax.notes["merged"]
    assert len(asked) == 1 and "Its explanations:" in asked[0]
    [apart] = tax.notes["told_apart"]
    assert apart == {"cluster": apart["cluster"], "named_like": apart["named_like"],
                     "was": "head-on collision", "now": "thin poles missed at range"}


def test_alike_names_that_cannot_merge_fall_back_to_keywords(data, stub_backend_factory):
    explanations, _ = data
    backend = stub_backend_factory(lambda method, messages, attempt: json.dumps(
        {"name": "slippery floor tiles", "description": "Every cluster gets the same name.", "keywords": ["x"]}))
    tax = discover(make_strategy(cfg(num_modes=4, min_modes=4)), explanations, backend)
    assert len(tax.modes) == 4 and len({m.name for m in tax.modes}) == 4
    assert [m.named_by for m in tax.modes].count("model") == 1
    assert tax.notes["degenerate"]["name:duplicate"] == 3


def test_an_unusable_name_is_asked_once_more_with_the_reason(data, stub_backend_factory):
    explanations, _ = data
    counter = iter(range(1000))

    def responder(method, messages, attempt):
        text = messages[0]["content"]
        if "cannot be used" not in text:
            return json.dumps({"name": "failure", "description": "Generic name here.", "keywords": ["x"]})
        assert 'Your previous name "failure" cannot be used: it names no cause' in text
        i = next(counter)
        return json.dumps({"name": f"cause kind {chr(97 + i)}", "description": f"Specific cause {i}.",
                           "keywords": ["y"]})

    backend = stub_backend_factory(responder)
    tax = discover(make_strategy(cfg(num_modes=5)), explanations, backend)
    assert all(m.named_by == "model" and m.name.startswith("cause kind") for m in tax.modes)
    assert tax.notes["calls"]["calls"] == 10 and tax.notes["degenerate"]["name_retry:generic"] == 5


def test_unreachable_review_leaves_naming_for_the_rerun(data, stub_backend_factory):
    """Naming depends on the review's grouping: without the review's answer no cluster is
    named (a rerun asks both), so no call is spent on clusters the review may merge."""
    explanations, _ = data

    def responder(method, messages, attempt):
        raise BackendError("connection refused")

    backend = stub_backend_factory(responder)
    tax = discover(make_strategy(cfg(refine=True)), explanations, backend)
    assert {kind_of(m) for _, m in backend.requests} == {"refine"}
    assert tax.notes["refine"]["unreachable"] and tax.notes["retryable"]
    assert all(m.named_by == "keywords" for m in tax.modes)


def test_model_keywords_drop_the_answer_format_words():
    from failtax.discovery.common import clean_keywords

    raw = ["wide", "json", "Description", "featureless", 7, "wide", "uniform colour"]
    assert clean_keywords(raw, max_keywords=5, max_chars=24) == ["wide", "featureless", "uniform colour"]


def test_names_worded_almost_alike_are_asked_apart_too(data, stub_backend_factory):
    """"wall collision" and "wall collisions" name one thing: the smaller cluster is asked to
    set itself apart; insisting on an alike name makes one mode with the bigger one's name."""
    explanations, _ = data
    first = ["wall collision", "wall collisions", "glass panes", "thin poles", "low boxes",
             "chair legs", "narrow doors", "dark corners", "wet floors", "steep ramps"]
    responder, asked = _alike_names_responder(first, "wall collisions")
    backend = stub_backend_factory(responder)
    tax = discover(make_strategy(cfg(min_modes=3, alike_name_similarity=0.8)), explanations, backend)
    names = [m.name for m in tax.modes]
    assert len(asked) == 1 and len(tax.modes) == tax.notes["k"] - 1
    assert sum(n in ("wall collision", "wall collisions") for n in names) == 1
    assert {"by": "model (named alike)"}.items() <= tax.notes["merged"][0].items()

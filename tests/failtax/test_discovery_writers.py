"""Writer invariance: boilerplate stripping, writer detection and per-writer standardisation."""

from __future__ import annotations

import asyncio

import numpy as np

from failtax.discovery import DiscoveryConfig, make_strategy
from failtax.discovery.writers import (
    centre_by_group,
    find_boilerplate,
    normalise_segment,
    split_segments,
    strip_boilerplate,
    writer_groups,
    writer_view,
)
from failtax.embedding import EmbeddingConfig, make_text_embedder
from failtax.types import Explanation

HEAD_A, FOOT_A = "ACME Robotics ticket AC-{n} | site 4{n}", "Confidential to ACME Ltd. Do not forward."
HEAD_B = "Zephyr fleet log #{n}."
CONTENT = ["The robot drove into a glass door.", "It clipped the corner of a shelf while turning.",
           "A chair blocked the aisle and the robot hit it.", "The robot got stuck between two carts.",
           "It ran over a small box on the floor.", "The robot bumped a thin metal pole."]


ROOMS = ["kitchen", "lobby", "hall", "office", "lab", "garage", "attic", "porch"]


def _content(i: int) -> str:  # 24 distinct sentences
    return f"{CONTENT[i % 6][:-1]} in the {ROOMS[i % 8]}."


def _writer_a(i: int) -> str:
    return f"{HEAD_A.format(n=1000 + 7 * i)}\n{_content(i)}\n{FOOT_A}"


def _writer_b(i: int) -> str:
    return f"{HEAD_B.format(n=50 + i)} {_content(i + 3)} Logged at 12:{i:02d} by shift {i % 3}."


def test_segments_and_normalisation():
    assert split_segments("Head | site 12\nFirst one. Second one! -- footer") == [
        "Head", "site 12", "First one.", "Second one!", "footer"]
    assert split_segments("- Observation: a rod.\n- speed 0.5") == ["Observation: a rod.", "speed 0.5"]
    assert normalise_segment("Ticket AC-1234,  site 4B.") == normalise_segment("ticket ac-99 site 7c")
    assert normalise_segment("The robot hit a wall.") != normalise_segment("The robot hit a door.")
    # a template filled with other names, places and times is the same line
    assert normalise_segment("At 10:23 AM PT the AV was on Mission St in San Francisco.") == normalise_segment(
        "At 9:05 PM PT the AV was on Fifth Avenue in Oakland.") == "at # the # was on # in #"


def test_boilerplate_is_what_many_texts_repeat_and_content_survives():
    texts = [_writer_a(i) for i in range(12)] + [_writer_b(i) for i in range(12)]
    boiler = find_boilerplate(texts, min_share=0.25)
    assert "do not forward" in boiler and "confidential to #" in boiler
    assert normalise_segment(HEAD_B.format(n=3)) in boiler
    assert normalise_segment("Logged at 12:05 by shift 2.") in boiler
    assert not any(normalise_segment(c) in boiler for c in CONTENT)  # each in 4/24 texts < 25%
    assert strip_boilerplate(texts[0], boiler) == _content(0)
    assert strip_boilerplate(texts[12], boiler) == _content(3)
    # a text that is all boilerplate keeps its rarest segments (never an empty explanation)
    assert strip_boilerplate(f"{FOOT_A} Logged at 12:00 by shift 1.", {**boiler, "logged at # by shift #": 5}) == (
        "Logged at 12:00 by shift 1.")
    assert strip_boilerplate(FOOT_A, boiler) == FOOT_A


def test_writers_found_from_their_boilerplate_not_from_a_shared_line():
    texts = [_writer_a(i) + "\nEnd of report." for i in range(10)]
    texts += [_writer_b(i) + "\nEnd of report." for i in range(10)]
    texts += ["The robot hit a wall."]  # no boilerplate: no writer
    groups = writer_groups(texts, find_boilerplate(texts, min_share=0.2))
    assert len(set(groups[:10])) == 1 and len(set(groups[10:20])) == 1
    assert groups[0] != groups[10] and groups[20] == -1
    view = writer_view(texts, min_share=0.2, min_writer_share=0.1)
    assert view.writers == 2 and view.notes()["centred"] and view.notes()["texts_without_writer"] == 1
    single = writer_view([c + " Thanks." for c in CONTENT * 3], min_share=0.3, min_writer_share=0.1)
    assert single.writers == 1 and not single.notes()["centred"]


def test_standardising_per_writer_removes_the_writer_offset():
    rng = np.random.default_rng(0)
    cause = rng.normal(size=(2, 8))  # two causes
    offset = rng.normal(size=(2, 8)) * 5  # two writers, offsets larger than the cause difference
    labels = np.array([0, 1] * 20)
    groups = np.repeat([0, 1], 20)
    x = cause[labels] + offset[groups] + 0.05 * rng.normal(size=(40, 8))
    raw = x / np.linalg.norm(x, axis=1, keepdims=True)
    z = centre_by_group(x, groups)
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)

    def nearest_same(v: np.ndarray, same: np.ndarray) -> float:
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        return float((same[np.arange(40), sims.argmax(axis=1)]).mean())

    by_cause = labels[:, None] == labels[None, :]
    across = groups[:, None] != groups[None, :]
    # before: nearest neighbours share the writer; after: the cause, also across writers
    assert nearest_same(raw, groups[:, None] == groups[None, :]) == 1.0
    assert nearest_same(z, by_cause) == 1.0
    sims = z @ z.T
    assert sims[by_cause & across].mean() > sims[~by_cause & across].mean() + 0.5
    # rows without a writer are centred on everyone's mean and stay finite
    z2 = centre_by_group(x, np.where(np.arange(40) == 0, -1, groups))
    assert np.isfinite(z2).all()


def _discover(explanations, **cfg):
    strategy = make_strategy(DiscoveryConfig(use_model_names=False, **cfg),
                             make_text_embedder(EmbeddingConfig(kind="hashing")))
    return asyncio.run(strategy.discover(explanations, None))


def test_auto_is_on_for_given_and_off_for_model_written_explanations():
    texts = [_writer_a(i) for i in range(12)] + [_writer_b(i) for i in range(12)]
    given = [Explanation(f"e{i}", "", t, "given", None) for i, t in enumerate(texts)]
    tax = _discover(given, num_modes=3)
    notes = tax.notes["writer_invariance"]
    assert notes["used"] and notes["writers"] == 2 and notes["texts_stripped"] == 24
    assert "2 writers" in tax.notes["decided_by"]["writer_invariance"]
    # exemplars and keywords come from the stripped texts: no boilerplate in them
    assert not any("Confidential" in s for ex in tax.notes["exemplars"].values() for s in ex)
    facts = [Explanation(f"e{i}", "", t, "facts", None) for i, t in enumerate(texts)]
    assert _discover(facts, num_modes=3).notes["writer_invariance"] == {"used": False}
    assert _discover(facts, num_modes=3, writer_invariance="on").notes["writer_invariance"]["used"]
    assert _discover(given, num_modes=3, writer_invariance="off").notes["writer_invariance"] == {"used": False}


def test_ensemble_and_llm_assignment_read_the_stripped_reports(stub_backend_factory):
    """The model proposing the taxonomy and the model assigning reports never see a writer's
    boilerplate (ticket headers, legal footers), so it cannot name modes after the writer."""
    import json

    from failtax.assignment import AssignmentConfig, assign

    texts = [_writer_a(i) for i in range(12)] + [_writer_b(i) for i in range(12)]
    given = [Explanation(f"e{i}", "", t, "given", None) for i, t in enumerate(texts)]
    taxonomy = {"modes": [
        {"name": "glass doors", "description": "Drove into glass.", "keywords": ["glass"], "percent": 50},
        {"name": "furniture contact", "description": "Hit a chair or shelf.", "keywords": ["chair"], "percent": 50},
        {"name": "stuck between carts", "description": "Wedged in a gap.", "keywords": ["carts"], "percent": 0},
    ]}

    def responder(method, messages, attempt):
        text = messages[0]["content"]
        if "Rewrite the following instructions" in text:
            return json.dumps({"instructions": "Group the robot failure notes below by their cause, at most "
                               "eight groups that do not overlap and cover every note; name and describe each."})
        if '"modes"' in text or "Several analysts" in text or "groups" in text.lower():
            return json.dumps(taxonomy)
        return "glass doors"

    backend = stub_backend_factory(responder)
    strategy = make_strategy(DiscoveryConfig(strategy="ensemble", num_rephrasings=1, min_modes=2),
                             make_text_embedder(EmbeddingConfig(kind="hashing")))
    tax = asyncio.run(strategy.discover(given, backend))
    notes = tax.notes["writer_invariance"]
    assert notes["used"] and not notes["centred"] and notes["texts_stripped"] == 24
    assert "the model reads the stripped texts" in tax.notes["decided_by"]["writer_invariance"]
    asyncio.run(assign(given, tax, backend, AssignmentConfig(method="llm", top_k_candidates=0),
                       embedder=make_text_embedder(EmbeddingConfig(kind="hashing"))))
    prompts = [m[0]["content"] for _, m in backend.requests]
    assert any("assign" in p.lower() or "glass doors" in p for p in prompts[-24:])
    for p in prompts:
        assert "Confidential to ACME" not in p and "Zephyr fleet log" not in p, p[:300]
    # the content reached the model
    assert sum("glass door" in p for p in prompts) >= 4


# --------------------------------------------------------------------------- templates with varying fields

STREETS = ["Mill Lane", "King Street", "Harbour Road", "Station Way"]
NAMES = ["Patel", "Okafor", "Nowak", "Moreau"]


def _fielded_a(i: int) -> str:
    """A template whose one sentence mixes fields (date, time, unit, street, speed) with the
    event, and a closing with a varying damage word and name: no sentence repeats verbatim."""
    return (f"On May {i % 28 + 1}, 2025 at {i % 12 + 1}:{i % 60:02d} PM, unit NW-{100 + i} operating in "
            f"autonomous mode on {STREETS[i % 4]} at {0.3 + i % 5 / 10:.1f} m/s "
            f"{CONTENT[i % 6][0].lower()}{CONTENT[i % 6][1:-1]}. The unit sustained "
            f"{['minor', 'no', 'cosmetic', 'light', 'slight', 'surface'][i % 6]} damage and was returned to service by {NAMES[i % 4]}.")


def _fielded_b(i: int) -> str:
    return (f"Incident HC-{5000 + i} on {['Rowan', 'Cedar', 'Aspen'][i % 3]} Ward: while delivering medication "
            f"the courier noted that {CONTENT[(i + 2) % 6][0].lower()}{CONTENT[(i + 2) % 6][1:-1]}. "
            f"Reviewed by {NAMES[i % 4]} after {i % 9 + 2} minutes of delay on the "
            f"{['ward round', 'night shift', 'day shift', 'handover', 'morning round', 'evening round', 'cover'][i % 7]}.")


def _free(i: int) -> str:  # a writer without any template
    return _content(i + 5)


def test_writers_found_from_template_phrases_when_no_sentence_repeats():
    """Templates whose sentences carry fields and content (as in public collision narratives)
    share no verbatim segment; their phrases ("operating in autonomous mode on #") reveal the
    writer. A writer without a template becomes one writer of its own (unmarked)."""
    texts = [_fielded_a(i) for i in range(20)] + [_fielded_b(i) for i in range(14)] + [_free(i) for i in range(10)]
    assert find_boilerplate(texts, min_share=0.1) == {}  # the segment view alone finds nothing
    view = writer_view(texts, min_share=0.1, min_writer_share=0.05)
    g = view.groups
    assert len(set(g[:20])) == len(set(g[20:34])) == len(set(g[34:])) == 1
    assert len({g[0], g[20], g[34]}) == 3 and view.writers == 3
    assert view.notes()["unmarked_writer_texts"] == 10 and view.notes()["centred"]
    # without phrases (the segment view only) no writer is found
    assert writer_view(texts, min_share=0.1, min_writer_share=0.05, phrases=False).writers == 0


def test_template_phrases_are_cut_from_sentences_but_measurements_and_content_stay():
    texts = [_fielded_a(i) for i in range(20)] + [_fielded_b(i) for i in range(14)] + [_free(i) for i in range(10)]
    view = writer_view(texts, min_share=0.1, min_writer_share=0.05)
    assert any(k.startswith("~") for k in view.boilerplate)
    first = view.texts[0]
    assert "autonomous mode" not in first and "returned to service" not in first and "Mill Lane" not in first
    assert "NW-100" not in first and "2025" not in first  # identifiers and dates went with the template
    assert "0.3" in first  # a measurement the template carried stays
    from failtax.discovery.writers import _normalised_words

    for t in texts[::5]:  # the token-level normalisation that stripping uses is normalise_segment's
        for seg in split_segments(t):
            assert " ".join(w for w, _ in _normalised_words(seg)) == normalise_segment(seg)
    assert "glass door" in first  # the content stays
    assert "autonomous mode" in view.sentence_texts[0]  # the whole-sentence view keeps the sentence
    # assignment strips the same phrases from a new report of that writer
    from failtax.discovery.common import strip_boilerplate_of

    new = _fielded_a(23)
    assert strip_boilerplate_of(new, {"writer_invariance": {"boilerplate": view.boilerplate}}).count("autonomous") == 0


def test_sentence_forms_of_one_writer_are_not_writers():
    """One writer's sentence forms ("Hit a X. Likely cause: Y.", "Collision with a X: Y.") recur
    as phrases in a fifth of the texts each, but a form fills one sentence: not a writer. The
    single-writer set keeps its partition (nothing centred)."""
    from synthetic import make_synthetic_explanations

    explanations, _ = make_synthetic_explanations(300, seed=0)
    view = writer_view([e.failure_reason for e in explanations], min_share=0.1, min_writer_share=0.03)
    assert view.writers == 0 and not view.notes()["centred"]
    assert view.texts == [" ".join(e.failure_reason.split()) for e in explanations]


def test_a_cluster_of_one_writer_merges_into_its_nearest_cluster():
    from failtax.discovery.cluster_name import merge_single_writer_clusters

    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3] * 3  # three clusters
    centres = np.vstack([centres, centres[0] + [0, 0, 0, 1.5]])  # a fourth near the first
    labels = np.repeat([0, 1, 2, 3], 20)
    z = centres[labels] + 0.1 * rng.normal(size=(80, 4))
    groups = np.tile([0, 1], 40)  # clusters 0..2 hold both writers
    groups[labels == 3] = 1  # cluster 3: writer 1 only (its way of writing cause 0)
    out, merged = merge_single_writer_clusters(z, labels, groups, share=0.9, min_clusters=2)
    assert len(set(out.tolist())) == 3 and len(merged) == 1
    assert (out[labels == 3] == out[labels == 0][0]).all()
    # never below min_clusters, and nothing to do with a single writer or share 1.0 of nothing
    out, merged = merge_single_writer_clusters(z, labels, groups, share=0.9, min_clusters=4)
    assert merged == [] and (out == labels).all()
    out, merged = merge_single_writer_clusters(z, labels, np.zeros(80, dtype=int), share=0.9, min_clusters=2)
    assert merged == []


def test_reports_read_by_a_model_are_clustered_as_answered_with_writers_from_the_reports():
    """failtax/reading.py: the model's answer is the text; the writers come from the reports."""
    reports = [_writer_a(i) for i in range(12)] + [_writer_b(i) for i in range(12)]
    answers = [CONTENT[i % 6].split(" the ")[-1].rstrip(".") for i in range(12)]
    answers += [CONTENT[(i + 3) % 6].split(" the ")[-1].rstrip(".") for i in range(12)]
    read = [Explanation(f"e{i}", "", a, "report", "m", report=r) for i, (a, r) in enumerate(zip(answers, reports))]
    tax = _discover(read, num_modes=3)
    notes = tax.notes["writer_invariance"]
    assert notes["used"] and notes["writers"] == 2 and notes["writer_sizes"] == [12, 12]
    assert notes["texts_stripped"] == 0  # the model's answers are clustered as they are
    members = {e for m in tax.modes for e in tax.notes["members"][m.name]}
    assert members == {f"e{i}" for i in range(24)}
    assert not any("ACME" in s or "Zephyr" in s for ex in tax.notes["exemplars"].values() for s in ex)
    said = tax.notes["decided_by"]["writer_invariance"]
    assert "found in the reports" in said and "found from boilerplate and template phrases of the reports" in said

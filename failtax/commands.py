"""`failtax discover | assign | evaluate | report`: thin wrappers over failtax.pipeline."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click
import yaml

from common import apply_overrides, load_yaml, parse_sets


def _load(
    config: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    embedded: str | None,
    model: str | None,
):
    from failtax.config import load_config

    overrides = parse_sets(sets)
    if base_url and embedded:
        raise click.UsageError("pass either --base-url or --embedded, not both")
    if base_url:
        overrides["backend.kind"] = "openai"
        overrides["backend.base_url"] = base_url
    overrides.update(embedded_overrides(embedded))
    if model:
        overrides["backend.model"] = model
    try:
        return load_config(config, overrides)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def embedded_overrides(choice: str | None) -> dict[str, Any]:
    """The backend overrides of `--embedded [judge|tiny]` ({} when not given)."""
    from serving.embedded import LOCAL_CHOICES

    return {"backend.kind": "embedded", "backend.recipe": LOCAL_CHOICES[choice]} if choice else {}


def _run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise click.UsageError(
            f"{run_dir} has no config.yaml; is it a run folder made by `failtax discover`?"
        )
    return (yaml.safe_load(path.read_text()) or {}).get("config", {})


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


_backend_options = [
    click.option(
        "--base-url",
        default=None,
        metavar="URL",
        help="OpenAI-compatible endpoint incl. /v1 (your vLLM/SGLang server); sets backend.kind=openai.",
    ),
    click.option(
        "--embedded",
        type=click.Choice(["judge", "tiny"]),
        is_flag=False,
        flag_value="judge",
        default=None,
        help="Use a local model the project installs: `judge` (the default when given alone) is "
             "Qwen2.5-Coder-1.5B, which groups and names the modes; `tiny` is SmolLM2-135M "
             "(fast, mechanics only, no judgement).",
    ),
    click.option(
        "--model",
        default=None,
        help="Served model name (or weights folder for backend.kind=transformers).",
    ),
]


def _with_backend_options(f):
    for option in reversed(_backend_options):
        f = option(f)
    return f


@click.command()
@click.argument("episodes", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Pipeline YAML, or a shipped preset (`default`, `quick`, or its path "
         "configs/pipeline/default.yaml, found from any directory); defaults for every key "
         "left out.",
)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Run folder; an existing one is resumed (finished work and cached calls are not redone).",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set reasoning.input_mode=scene_text (repeatable).",
)
@_with_backend_options
@click.option(
    "--stages",
    default=None,
    help="Comma-separated subset of downsample,reason,discover,assign,report.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("-v", "--verbose", is_flag=True, help="Log each stage's start and finish.")
def discover(episodes, config, run_dir, sets, base_url, embedded, model, stages, quiet, verbose):
    """Episodes in, failure taxonomy and assignments out.

    EPISODES is a folder of episodes (docs/EPISODE_FORMAT.md), a folder of image
    folders (one per trajectory, failure at the last image), a folder of videos
    (or one video), a LeRobot v2.1/v3 dataset, ROS 2 bags (MCAP), dashcam clips,
    manipulation runs (images + task.txt + plan.txt; docs/INPUTS.md has an example
    of each), or a CSV/JSONL of failure reports written by people (episode_id,
    failure_reason[, trajectory]): a model that judges reads each one and says
    what was hit or went wrong, and the modes are built from its answers
    (reasoning.reports; as_is clusters the texts as written).

    The run folder gets config.yaml, keyframes.jsonl, explanations.jsonl,
    taxonomy.json, assignments.jsonl, errors.jsonl, stages.jsonl, summary.md and
    report.html (docs/RUN_FORMAT.md). Run the same command again to resume a
    killed run: finished episodes are skipped and model calls come from the cache.

    How each failure is explained is reasoning.input_mode: facts (no model,
    written from the depth/semantic channels; the CPU default), scene_text (a
    text model reads per-frame scene descriptions) or vision (a VLM sees the key
    frames). Which parts a model decided is said in every output.

    Examples:

    \b
        failtax discover episodes/ --config configs/pipeline/default.yaml --run-dir runs/a
        failtax discover episodes/ --run-dir runs/b --base-url http://gpu:8000/v1 \\
            --model qwen2.5-vl-7b --set reasoning.input_mode=vision
        failtax discover reasons.csv --run-dir runs/c --embedded
    """
    from failtax.pipeline import failed_calls_message, run_pipeline
    from failtax.types import STAGES

    _setup_logging(verbose)
    if stages:
        sets = (*sets, f"stages=[{stages}]")
    cfg = _load(config, sets, base_url, embedded, model)
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise click.UsageError(f"unknown stages {unknown}; valid: {', '.join(STAGES)}")
    try:
        summary = run_pipeline(cfg, run_dir, episodes=episodes, progress=not quiet)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(summary, indent=2, sort_keys=True))
    click.echo(f"run folder: {run_dir}")
    _exit_on_failed_calls(failed_calls_message(summary, run_dir))


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a value of the run's config, e.g. --set assignment.method=embedding.",
)
@_with_backend_options
@click.option(
    "--edits",
    "edits_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A person's edits (edits.json exported from the report's edit mode, or YAML): rename, "
         "merge, split, move, not a failure. Writes a NEW run folder (--out); RUN_DIR is not changed.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --edits: the new run folder (default: RUN_DIR-edited beside RUN_DIR).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log the stage's start and finish.")
def assign(run_dir, sets, base_url, embedded, model, edits_file, out_dir, verbose):
    """Assign the explanations of RUN_DIR to its taxonomy (again).

    Rewrites assignments.jsonl and the assigned frequencies in taxonomy.json,
    e.g. after editing taxonomy.json by hand or to try another assignment
    method with --set. Cached calls are not repeated.

    With --edits FILE, applies a person's edits of the taxonomy instead (no model
    call): the edited taxonomy, assignments, the edits and a report go to a new run
    folder, and RUN_DIR stays as it was (docs/BROWSER.md).

    \b
        failtax assign runs/a --edits edits.json --out runs/a-edited
    """
    from failtax.config import PipelineConfig
    from failtax.pipeline import Run, failed_calls_message

    _setup_logging(verbose)
    if edits_file is not None:
        _apply_edits(run_dir, edits_file, out_dir, bool(sets or base_url or embedded or model))
        return
    if out_dir is not None:
        raise click.UsageError("--out goes with --edits (a plain assign rewrites RUN_DIR)")
    base = _run_config(run_dir)
    overrides = parse_sets(sets)
    if base_url:
        overrides.update({"backend.kind": "openai", "backend.base_url": base_url})
    overrides.update(embedded_overrides(embedded))
    if model:
        overrides["backend.model"] = model
    overrides["stages"] = ["assign", "report"]
    try:
        cfg = PipelineConfig.model_validate(apply_overrides(base, overrides))
        summary = Run(cfg, run_dir, episodes=base.get("source", {}).get("path")).run()
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(summary, indent=2, sort_keys=True))
    _exit_on_failed_calls(failed_calls_message(summary, run_dir))


def _apply_edits(run_dir: Path, edits_file: Path, out_dir: Path | None, other_options: bool) -> None:
    from failtax.edits import EditsError, apply_edits
    from failtax.report import write_report

    if other_options:
        raise click.UsageError("--edits applies a person's decisions without a model; "
                               "drop --set / --base-url / --embedded / --model")
    out = out_dir or run_dir.with_name(run_dir.name + "-edited")
    try:
        apply_edits(run_dir, edits_file, out)
    except (EditsError, FileExistsError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    write_report(out)
    click.echo(f"edited run: {out} (report: {out / 'report.html'}); {run_dir} is unchanged")


# Exit status of a finished run some of whose results are fallbacks from failed model calls.
FAILED_CALLS_EXIT_CODE = 3


def _exit_on_failed_calls(message: str) -> None:
    """Say which results are fallbacks from failed model calls, and exit non-zero."""
    if message:
        click.echo(f"warning: {message}", err=True)
        raise click.exceptions.Exit(FAILED_CALLS_EXIT_CODE)


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--labels",
    "labels",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Ground truth: an episodes folder (each ground_truth.json) or a CSV of expert labels. "
    "Default: the episodes folder recorded in the run's config.yaml.",
)
@click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Evaluation YAML (keys of failtax.evaluation.EvaluationConfig).",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override an evaluation value, e.g. --set llm_judge=true (judge calls use the run's backend).",
)
def evaluate(run_dir, labels, config, sets):
    """Score RUN_DIR against ground-truth cause labels → RUN_DIR/evaluation.json.

    Reports cluster precision, taxonomy coverage and semantic alignment
    (embedding and, with llm_judge, LLM-judge variants), assignment weighted F1,
    NMI/ARI and explanation quality (failtax.evaluation). Only evaluation reads
    ground truth; the pipeline's readers never do.
    """
    from failtax.evaluation import EvaluationConfig, evaluate_run

    try:
        cfg = load_yaml(EvaluationConfig, config, parse_sets(sets))
        result = evaluate_run(run_dir, labels, cfg)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report(run_dir):
    """Rebuild summary.md and report.html of RUN_DIR from its files (no model calls)."""
    from failtax.report import write_report

    write_report(run_dir)
    click.echo(f"wrote {run_dir / 'summary.md'} and {run_dir / 'report.html'}")

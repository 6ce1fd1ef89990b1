"""The umbrella `failtax` command line (the installed entry point).

It lists the robot-agnostic pipeline commands of `failtax.cli` and the bundled
robot's commands (simulator, navigation policy, closed loop). Every command is
imported only when invoked, so `failtax --help` stays instant.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from failtax.cli import COMMANDS as PIPELINE_COMMANDS
from failtax.cli import LazyGroup

COMMANDS: dict[str, tuple[str, str]] = {
    **PIPELINE_COMMANDS,
    "sim": ("sim.cli:sim", "Bundled indoor-navigation simulator: sample images, maps, episodes."),
    "nav": ("nav_policy.cli:nav", "Navigation policy: collect expert data, train, evaluate."),
    "close-loop": ("loop.cli:close_loop", "Evaluate → discover → collect in failure regions → retrain → evaluate."),
    "corpus": ("loop.corpus:corpus", "Write a multi-operator crash-report corpus with cause labels (sim ground truth)."),
}


class UmbrellaGroup(LazyGroup):
    commands_table = COMMANDS


@click.group(cls=UmbrellaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="failtax")
def main() -> None:
    """failtax: turn robot failure logs into an interpretable failure taxonomy,
    with self-hosted models, and close the loop back into the policy.

    Typical use: `failtax serve embedded` (or point at your own vLLM server),
    then `failtax discover EPISODES --config configs/pipeline/default.yaml`.
    `failtax COMMAND --help` explains each command.
    """



def _parse_sets(ctx: click.Context, param: click.Parameter, items: tuple[str, ...]) -> dict:
    # common.set_option's parser, imported on use: `common` pulls in numpy, and this
    # module also holds the umbrella group, so `failtax --help` would wait for it
    from common import parse_sets

    return parse_sets(items)


@click.command("close-loop")
@click.argument("preset", default="quick")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Loop folder (default runs/loop-<preset>); an existing one is resumed.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              callback=_parse_sets,
              help="Dotted override of the loop config, e.g. --set budget_samples=2000 "
                   "--set nav.train.epochs=4 (repeatable).")
@click.option("--base-url", default=None, metavar="URL",
              help="Use a running OpenAI-compatible server (…/v1) for discovery instead of "
                   "starting the embedded model.")
@click.option("--model", default=None, help="Served model name at --base-url.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("-v", "--verbose", is_flag=True, help="Log each stage's start and finish.")
def close_loop(preset, out_dir, overrides, base_url, model, quiet, verbose):
    """Close the loop from failure taxonomy to a safer policy.

    PRESET is `quick` (CPU, ~20 min), `full` (paper scale, every arm 3 times),
    another configs/loop/ preset or a loop YAML (keys: loop/config.py). Stages: base policy →
    evaluate → mine failures → `failtax discover` → regions (collision sites +
    semantic matches) → collect B expert samples per arm (targeted_semantic,
    targeted_collision, uniform; same budget and seeds) → fine-tune each arm →
    evaluate on fixed in-distribution and held-out sets → results.json,
    report.md, report.html. `replicates: R` repeats every arm with its own
    seeds and pools them in the report. Rerun the same command to resume;
    finished stages are skipped, and raising `replicates` adds only the new
    replicates.

    \b
        failtax close-loop quick --out runs/loop-quick
        failtax close-loop full --out runs/loop-full --set nav.train.device=cuda
        failtax close-loop quick --out runs/loop-quick --set replicates=3
    """
    from loop.config import load_loop_config
    from loop.run import run_loop

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    if base_url:
        overrides["pipeline.backend.kind"] = "openai"
        overrides["pipeline.backend.base_url"] = base_url
        if model:
            overrides["pipeline.backend.model"] = model
    try:
        cfg = load_loop_config(preset, overrides)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    out_dir = out_dir or Path("runs") / f"loop-{cfg.preset or 'custom'}"
    try:
        results = run_loop(cfg, out_dir, progress=not quiet)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    brief = {p: {s: f"{r['failure_rate']:.1%} [{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}]"
                 for s, r in sets_.items()} for p, sets_ in results["policies"].items()}
    click.echo(json.dumps(brief, indent=2))
    click.echo(f"total stage time {results['total_seconds']:.0f} s; report: "
               f"{Path(out_dir) / 'report.html'}")


if __name__ == "__main__":
    main()

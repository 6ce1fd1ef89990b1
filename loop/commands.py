"""`failtax close-loop`: discover → regions → collect → fine-tune → evaluate, one folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from common import set_option
from loop.config import load_loop_config


@click.command("close-loop")
@click.argument("preset", default="quick")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Loop folder (default runs/loop-<preset>); an existing one is resumed.")
@set_option("Dotted override of the loop config, e.g. --set budget_samples=2000 "
            "--set nav.train.epochs=4 (repeatable).")
@click.option("--base-url", default=None, metavar="URL",
              help="Use a running OpenAI-compatible server (…/v1) for discovery instead of "
                   "starting the embedded model.")
@click.option("--model", default=None, help="Served model name at --base-url.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("-v", "--verbose", is_flag=True, help="Log each stage's start and finish.")
def close_loop(preset, out_dir, overrides, base_url, model, quiet, verbose):
    """Close the loop from failure taxonomy to a safer policy.

    PRESET is `quick` (CPU, first look at every arm), `full` (paper scale, every arm 3
    times), `newsite` (targeting a building family with no failures yet), another
    configs/loop/ preset or a loop YAML (keys: loop/config.py). Stages: base policy →
    evaluate (and the camera-blind follower) → mine failures → `failtax discover` →
    regions (collision sites + kinds matched to the modes' text) → collect B expert
    samples per arm (targeted_semantic, targeted_collision, targeted_shuffled, uniform,
    site_semantic, site_uniform; same budget and seeds) → fine-tune each arm → evaluate
    on fixed in-distribution and held-out sets → results.json, report.md, report.html,
    which say which arm needed the taxonomy. `replicates: R` repeats every arm with its
    own seeds; the headline is the t interval over them. Rerun the same command to
    resume; finished stages are skipped, and raising `replicates` adds only the new
    replicates.

    \b
        failtax close-loop quick --out runs/loop-quick
        failtax close-loop full --out runs/loop-full --set nav.train.device=cuda
        failtax close-loop quick --out runs/loop-quick --set replicates=3
    """
    from loop.run import run_loop  # torch and the simulator: only when the loop runs

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
    if results.get("scope"):
        click.echo(results["scope"])
    click.echo(f"total stage time {results['total_seconds']:.0f} s; report: "
               f"{Path(out_dir) / 'report.html'}")

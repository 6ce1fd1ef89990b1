"""`failtax nav`: collect expert data, train, evaluate, check the expert.

Every command takes `--config` (a configs/nav/ preset name or a YAML path) and
`--set key=value` dotted overrides; dedicated options are shortcuts for the
common overrides.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from common import set_option
from nav_policy.config import NavConfig, load_nav_config

_DEFAULT_PRESET = "default"


def _load(config: str, sets: dict[str, Any], extra: dict[str, Any]) -> NavConfig:
    overrides = {**sets, **{k: v for k, v in extra.items() if v is not None}}
    try:
        return load_nav_config(config, overrides)
    except ValueError as e:
        raise click.ClickException(str(e)) from None


def _common(f):
    f = set_option("Dotted config override, repeatable (e.g. --set train.epochs=4).",
                   name="sets")(f)
    f = click.option("--config", "config", default=_DEFAULT_PRESET, show_default=True,
                     metavar="PRESET|YAML",
                     help="Nav config: a configs/nav/ preset name or a YAML file.")(f)
    return f


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log progress messages.")
def nav(verbose: bool) -> None:
    """Navigation policy: expert data collection, training, evaluation."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")


@nav.command()
@_common
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Dataset folder.")
@click.option("--arm", type=click.Choice(["uniform", "targeted"]), default=None)
@click.option("--budget", type=int, default=None, help="Samples to collect.")
@click.option("--regions", type=click.Path(dir_okay=False), default=None,
              help="regions.json for --arm targeted.")
@click.option("--seed", type=int, default=None)
@click.option("--family", default=None, help="Building family (office_a / office_b).")
@click.option("--workers", type=int, default=None, help="Worker processes.")
@click.option("--dagger", type=click.Path(dir_okay=False), default=None,
              help="Policy checkpoint that drives while the expert labels (DAgger).")
def collect(config, sets, out, arm, budget, regions, seed, family, workers, dagger) -> None:
    """Collect expert demonstrations into OUT (resumes when OUT holds a partial run)."""
    from nav_policy.collect import collect as run

    cfg = _load(config, sets, {"collect.arm": arm, "collect.budget_samples": budget,
                               "collect.regions_path": regions, "collect.seed": seed,
                               "collect.family": family, "collect.num_workers": workers,
                               "collect.dagger_checkpoint": dagger})
    m = run(cfg, out)
    click.echo(f"{out}: {m['num_samples']}/{m['budget_samples']} samples in {len(m['shards'])} "
               f"shards (arm {m['arm']}, complete={m['complete']})")


@nav.command()
@_common
@click.option("--data", "data", multiple=True, required=True, type=click.Path(file_okay=False),
              help="Dataset folder, repeatable (base + new data when fine-tuning).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--init", "init", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint to fine-tune from.")
@click.option("--epochs", type=int, default=None)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
def train(config, sets, data, out, init, epochs, device) -> None:
    """Train (or fine-tune with --init) the CNN policy; resumes an interrupted run."""
    from nav_policy.train import train_policy

    cfg = _load(config, sets, {"train.epochs": epochs, "train.device": device})
    m = train_policy(cfg, list(data), out, init_checkpoint=init)
    click.echo(json.dumps(m, indent=2, sort_keys=True))


@nav.command()
@_common
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Evaluation folder.")
@click.option("--family", default=None, help="office_a (in-distribution) or office_b (held out).")
@click.option("--rollouts", type=int, default=None)
@click.option("--eval-set", "eval_set", type=int, default=None, help="Which fixed evaluation set.")
@click.option("--workers", type=int, default=None)
def evaluate(config, sets, checkpoint, out, family, rollouts, eval_set, workers) -> None:
    """Failure rate of a checkpoint on a fixed evaluation set; failures saved as episodes."""
    from nav_policy.evaluate import evaluate_checkpoint, format_summary

    cfg = _load(config, sets, {"evaluate.family": family, "evaluate.num_rollouts": rollouts,
                               "evaluate.eval_set_seed": eval_set,
                               "evaluate.num_workers": workers})
    try:
        s = evaluate_checkpoint(cfg, checkpoint, out)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(format_summary(s))
    click.echo(f"summary: {Path(out) / 'summary.json'}")


@nav.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--data", "data", multiple=True, required=True,
              type=click.Path(file_okay=False, exists=True),
              help="Dataset folder, repeatable (DAgger data: the states a policy visits).")
@click.option("--max-samples", type=int, default=20000, show_default=True,
              help="Random subset per folder (0: all).")
def agreement(checkpoint, data, max_samples) -> None:
    """Does the policy command what the expert labelled? Turn and speed R², and how hard it
    turns where the expert turns hard, per dataset folder (JSON)."""
    from nav_policy.train import label_agreement

    try:
        res = {d: label_agreement(checkpoint, d, max_samples=max_samples or None) for d in data}
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(res, indent=2))


@nav.command()
@_common
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Evaluation folder.")
@click.option("--family", default=None, help="office_a (in-distribution) or office_b (held out).")
@click.option("--rollouts", type=int, default=None)
@click.option("--eval-set", "eval_set", type=int, default=None, help="Which fixed evaluation set.")
@click.option("--workers", type=int, default=None)
def baseline(config, sets, out, family, rollouts, eval_set, workers) -> None:
    """Failure rate of a camera-blind route follower on the same fixed set.

    It steers at the floor-plan route point and never looks, so it hits every
    piece of clutter the floor plan leaves out: the bar a camera policy must
    clear, and a measure of what the camera adds.
    """
    from nav_policy.evaluate import format_summary, run_evaluation

    cfg = _load(config, sets, {"evaluate.family": family, "evaluate.num_rollouts": rollouts,
                               "evaluate.eval_set_seed": eval_set,
                               "evaluate.num_workers": workers})
    s = run_evaluation(cfg, {"kind": "route_pursuit", "config": cfg.model_dump(mode="json")},
                       out)
    click.echo(format_summary(s))
    click.echo(f"summary: {Path(out) / 'summary.json'}")


@nav.command("expert-check")
@_common
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--family", default=None)
@click.option("--rollouts", type=int, default=None)
@click.option("--workers", type=int, default=None)
def expert_check(config, sets, out, family, rollouts, workers) -> None:
    """Success rate and solve time of the expert on random start/goal pairs."""
    from nav_policy.evaluate import expert_check_summary, format_summary, run_evaluation

    cfg = _load(config, sets, {"evaluate.family": family, "evaluate.num_rollouts": rollouts,
                               "evaluate.num_workers": workers, "evaluate.save_failures": True})
    s = run_evaluation(cfg, {"kind": "expert", "config": cfg.model_dump(mode="json")}, out)
    s = expert_check_summary(out, s)
    click.echo(format_summary(s))
    click.echo(f"expert success {s['eval/success_rate']:.1%}; solve time per step median "
               f"{s['expert/solve_ms_median']:.2f} ms (p95 {s['expert/solve_ms_p95']:.2f} ms); "
               f"controllers {s['expert/controllers']}")

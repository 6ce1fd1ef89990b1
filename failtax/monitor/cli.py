"""`failtax monitor`: evaluate runtime monitors on episode folders and train the
frame-classifier monitors. (The bundled simulator adds `sets` and `safeguard`; see
`loop.safeguard`.)"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click

from common import parse_sets

log = logging.getLogger(__name__)


def named_paths(items: tuple[str, ...], what: str) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        if name in out:
            raise click.UsageError(f"{what} name {name!r} given twice; use NAME=PATH")
        out[name] = Path(path)
    return out


def load_configs(configs: tuple[str, ...], sets: tuple[str, ...], max_episodes: int | None):
    from failtax.monitor.config import load_monitor_config

    overrides = parse_sets(sets)
    if max_episodes is not None:
        overrides["max_episodes"] = max_episodes
    try:
        cfgs = [load_monitor_config(c, overrides) for c in (configs or (None,))]
    except (ValueError, FileNotFoundError) as e:
        raise click.UsageError(str(e)) from None
    labels = [c.label for c in cfgs]
    if len(set(labels)) != len(labels):
        raise click.UsageError(f"two monitors share a name ({labels}); set `name:` in the configs")
    return cfgs


async def _close(backend: Any) -> None:
    for name in ("aclose", "close"):
        closer = getattr(backend, name, None)
        if closer is not None:
            result = closer()
            if asyncio.iscoroutine(result):
                await result
            return


async def calibrate(cfg, monitor, backend, name: str, path: Path, out: Path, *,
                    progress: bool, concurrency: int):
    """Run a probability-deciding model monitor on the calibration episodes at `path`
    and return (its config with the calibrated `unsafe_threshold`, the monitor built from
    that config, the calibration record without its candidate list). The decisions stay
    under `out/name/<monitor>/` with calibration.json (every candidate)."""
    from common import atomic_write_json
    from failtax.monitor import make_monitor
    from failtax.monitor.evaluate import evaluate_monitor, fingerprint, select_episodes
    from failtax.monitor.llm import CALIBRATION_FILE, calibrate_threshold

    monitor.name_modes = False
    episodes, _ = select_episodes(path, cfg)
    fp = fingerprint(cfg, monitor, [_taxonomy_digest(cfg), "calibration"])
    runs = await evaluate_monitor(monitor, episodes, cfg, out / name / cfg.label, fp=fp,
                                  progress=progress, concurrency=concurrency)
    record = calibrate_threshold([(r.failure, [d.p_unsafe for d in r.decisions]) for r in runs],
                                 cfg.k_consecutive)
    record["set"] = name
    atomic_write_json(out / name / cfg.label / CALIBRATION_FILE, record)
    tuned = cfg.model_copy(update={"unsafe_threshold": record["threshold"]})
    return tuned, make_monitor(tuned, backend), {k: v for k, v in record.items()
                                                 if k != "candidates"}


async def evaluate_all(cfgs: list, episode_sets: dict[str, Path], out: Path, *,
                       progress: bool = True, concurrency: int = 4,
                       calibration: tuple[str, Path] | None = None) -> dict[str, Any]:
    """Every monitor on every episode set; writes the decisions, results.json,
    summary.md and report.html under `out` and returns the results. With
    `calibration` (name, folder), each model monitor that decides by probability first
    sets its UNSAFE threshold on those episodes (never an evaluation set)."""
    from failtax.monitor import make_monitor
    from failtax.monitor.evaluate import (
        evaluate_monitor,
        fingerprint,
        score,
        select_episodes,
        write_results,
    )
    from failtax.run_folder import backend_stats
    from serving import make_backend

    backends: dict[str, Any] = {}
    results: dict[str, Any] = {"monitors": {}, "config": {}, "episode_sets": {},
                               "model_calls": {}}
    runs: dict[tuple[str, str], list] = {}
    try:
        for cfg in cfgs:
            backend = None
            if cfg.kind == "llm":
                key = cfg.backend.model_dump_json()
                if key not in backends:
                    backends[key] = make_backend(cfg.backend)
                backend = backends[key]
            monitor = make_monitor(cfg, backend)
            if calibration and cfg.kind == "llm" and cfg.decide == "probability":
                cfg, monitor, record = await calibrate(
                    cfg, monitor, backend, *calibration, out, progress=progress,
                    concurrency=concurrency)
                results.setdefault("calibration", {})[cfg.label] = record
            fp = fingerprint(cfg, monitor, _taxonomy_digest(cfg))
            results["config"][cfg.label] = {**cfg.model_dump(mode="json"), "model": monitor.model,
                                            "fingerprint": fp}
            before = backend_stats(backend) if backend is not None else {}
            for set_name, path in episode_sets.items():
                episodes, errors = select_episodes(path, cfg)
                results["episode_sets"][set_name] = {
                    "path": str(path), "episodes": len(episodes),
                    "skipped": len(errors)}
                ep_runs = await evaluate_monitor(
                    monitor, episodes, cfg, out / set_name / cfg.label, fp=fp, progress=progress,
                    concurrency=concurrency)
                runs[(set_name, cfg.label)] = ep_runs
                results["monitors"].setdefault(cfg.label, {})[set_name] = score(
                    ep_runs, seed=cfg.seed, k=cfg.k_consecutive)
            if backend is not None:
                after = backend_stats(backend)
                results["model_calls"][cfg.label] = {k: after.get(k, 0) - before.get(k, 0)
                                                     for k in after}
    finally:
        for backend in backends.values():
            await _close(backend)
    results["note"] = (
        "One trial per episode: an alarm (k consecutive UNSAFE decisions) before a collision "
        "is a true positive, an alarm in a success episode a false positive.")
    write_results(out, results, runs)
    return results


def _taxonomy_digest(cfg) -> str | None:
    if cfg.kind != "llm" or cfg.variant != "taxonomy" or not cfg.taxonomy_path:
        return None
    from common import stable_hash
    from failtax.monitor.llm import load_taxonomy

    return stable_hash(load_taxonomy(cfg.taxonomy_path).to_dict())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def monitor() -> None:
    """Runtime failure monitor: a model reads what the robot logs, with the failure
    taxonomy in its prompt, and says SAFE/UNSAFE (and which mode is coming) every few
    control steps; an alarm fires after k consecutive UNSAFE. Baselines: the same
    without the taxonomy (NoContext), an anomaly-detection prompt (LLM-AD), a CNN on
    frames trained on "collision within H s" labels, and a CNN distilled from a model
    monitor's labels. See docs/MONITOR.md."""


@monitor.command("evaluate")
@click.option("--config", "configs", multiple=True,
              help="Monitor YAML or preset name (configs/monitor/); repeat for several monitors.")
@click.option("--episodes", "episode_sets", multiple=True, required=True,
              help="NAME=FOLDER of episodes with failures and successes; repeat (e.g. id=..., ood=...).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output folder: decisions per set and monitor, results.json, summary.md, report.html.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config value in every monitor, e.g. --set k_consecutive=2.")
@click.option("--max-episodes", type=int, default=None,
              help="At most this many episodes per set (half failures, half successes).")
@click.option("--calibrate", "calibrate_on", default=None, metavar="NAME=FOLDER",
              help="Training episodes (failures and successes, not an evaluation set) on which "
                   "each monitor with `decide: probability` first sets its UNSAFE threshold "
                   "(highest episode F1 under the k-consecutive rule).")
@click.option("--concurrency", type=int, default=4, show_default=True,
              help="Episodes in flight at once (a model backend further limits calls in flight).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def evaluate(configs, episode_sets, out, sets, max_episodes, calibrate_on, concurrency,
             no_progress) -> None:
    """Run monitors on episode folders and score them: TPR/TNR/FPR/FNR with Wilson
    intervals, F1, lead time of true alarms, detection per failure cause,
    decisions per second. A rerun redoes nothing (decisions and model calls are kept).

    Example: failtax monitor evaluate --config taxonomy --config nocontext
    --episodes id=sets/id --episodes ood=sets/ood --out runs/monitor

    Deciding by the model's probability of UNSAFE, threshold set on training episodes:
    failtax monitor evaluate --config taxonomy --set decide=probability
    --calibrate train=sets/train --episodes id=sets/id --out runs/monitor-p"""
    from failtax.monitor.report import HEADER, table_rows

    cfgs = load_configs(configs, sets, max_episodes)
    named = named_paths(episode_sets, "episode set")
    calibration = None
    if calibrate_on:
        ((cal_name, cal_path),) = named_paths((calibrate_on,), "calibration set").items()
        if cal_name in named:
            raise click.UsageError(f"--calibrate {cal_name!r} is also an evaluation set; "
                                   "calibrate on training episodes only")
        calibration = (cal_name, cal_path)
    try:
        results = asyncio.run(evaluate_all(cfgs, named, out, progress=not no_progress,
                                           concurrency=concurrency, calibration=calibration))
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(" | ".join(HEADER))
    for row in table_rows(results):
        click.echo(" | ".join(row))
    for label, record in (results.get("calibration") or {}).items():
        click.echo(f"{label}: UNSAFE threshold {record['threshold']:.4f} set on "
                   f"{record['set']} ({record['episodes']} episodes, F1 {record['f1']:.3f})")
    click.echo(f"model calls: {results['model_calls']}")
    click.echo(f"wrote {out / 'results.json'}, {out / 'summary.md'}, {out / 'report.html'}")


@monitor.command("train")
@click.option("--config", default=None, help="Monitor YAML or preset (its `cnn:` section).")
@click.option("--episodes", "episodes_dir", required=True, type=click.Path(path_type=Path),
              help="Training episodes (failures and successes), never the evaluation sets.")
@click.option("--teacher", default=None, type=click.Path(path_type=Path),
              help="decisions.jsonl of a model monitor on these episodes: train the distilled "
                   "monitor on its labels. Without it: the supervised 'collision within H s' baseline.")
@click.option("--teacher-threshold", type=float, default=None,
              help="A probability teacher's labels: UNSAFE where its P(UNSAFE) reaches this. "
                   "Default: the threshold in calibration.json beside --teacher, if there is one.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Checkpoint file to write.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config value.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def train(config, episodes_dir, teacher, teacher_threshold, out, sets, no_progress) -> None:
    """Train a frame-classifier monitor (supervised, or distilled from --teacher).

    A teacher that decided by probability (`decide: probability`) and was calibrated on
    these episodes (`evaluate --calibrate train=...`) labels by its P(UNSAFE) against the
    calibrated threshold: the verdicts of its calibration run were recorded before it."""
    import json

    from failtax.monitor.cnn import distilled_frames, supervised_frames, train_cnn
    from failtax.monitor.cnn import teacher_threshold as calibrated
    from failtax.monitor.evaluate import select_episodes

    (cfg,) = load_configs((config,) if config else (), sets, None)
    episodes, _ = select_episodes(episodes_dir, cfg)
    if not episodes:
        raise click.ClickException(f"no failure or success episodes in {episodes_dir}")
    try:
        if teacher and teacher_threshold is None:
            teacher_threshold = calibrated(teacher)
        if teacher_threshold is not None:
            click.echo(f"teacher labels: UNSAFE where P(UNSAFE) >= {teacher_threshold:.4f}")
        frames = (distilled_frames(episodes, cfg, teacher, teacher_threshold) if teacher
                  else supervised_frames(episodes, cfg))
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    stats = train_cnn(frames, cfg.cnn, out, kind="distilled" if teacher else "supervised",
                      progress=not no_progress)
    click.echo(json.dumps({k: v for k, v in stats.items() if k != "cnn"}, indent=1))

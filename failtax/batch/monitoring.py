"""The monitors' model calls as a batch round (stage `monitoring`).

`failtax monitor evaluate` asks an LLM monitor for a decision every few control steps
of every episode: thousands of short calls, batch work like the pipeline's. Export
runs the evaluation with a `BatchBackend` behind the monitors' call cache (decisions
go to a scratch folder that is removed), so every decision not yet in the cache is
recorded and written as shards under `<batch>/monitoring/round-NN/`. After the
shards are answered (`failtax batch run | slurm | ray`) and imported (`failtax batch
import`), `failtax monitor evaluate` with the same configs finds every call in the
cache and makes zero live calls. Re-asks, error lines and killed tasks come back in
the next export, as for the pipeline's stages.

One batch folder holds one model: the LLM monitors exported together must share
`backend.recipe` and `backend.cache_dir` (others go to another `--batch-dir`).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from failtax.batch import (
    MONITORING,
    BatchFolder,
    ExportResult,
    _list_too_long,
    _write_round,
    batch_backend,
    write_manifest,
)
from failtax.monitor import make_monitor
from failtax.monitor.config import MonitorConfig
from failtax.monitor.evaluate import RETRYABLE, evaluate_monitor, select_episodes
from serving.batch import BatchIdentity
from serving.embedded import DEFAULT_LOCAL
from serving.recipes import get_recipe

_KEY = re.compile(r"batch request ([0-9a-f]{32})")


def _shared_backend(cfgs: list[MonitorConfig]) -> tuple[str, str | None]:
    """The recipe and cache folder every LLM monitor uses (ValueError when they differ)."""
    pairs = {(c.backend.recipe or DEFAULT_LOCAL, c.backend.cache_dir) for c in cfgs}
    if len(pairs) != 1:
        raise ValueError(
            f"the LLM monitors use different models or caches ({sorted(pairs, key=str)}); a batch folder holds "
            "one model: export each group into its own --batch-dir")
    return pairs.pop()


async def export_monitoring(
    cfgs: list[MonitorConfig],
    episode_sets: dict[str, str | os.PathLike],
    batch_dir: str | os.PathLike,
    *,
    shard_size: int = 1000,
    identity: BatchIdentity | None = None,
    max_error_rounds: int = 3,
    concurrency: int = 4,
    progress: bool = True,
) -> ExportResult:
    """Write the LLM monitors' unanswered calls on `episode_sets` as the next round.

    Args:
        cfgs: monitor configs (as for `failtax monitor evaluate`); frame-classifier
            monitors make no model calls and are skipped.
        episode_sets: set name → episode folder.
        batch_dir: the batch folder (e.g. `<evaluation out>/batch`).
        shard_size: request lines per shard.
        identity: who answers (default: the recipe's weights, as a launched server).
        max_error_rounds: error lines after which a request is given up.
        concurrency: episodes in flight while the calls are collected.
        progress: progress bars.

    Returns:
        An `ExportResult` whose `stage` is `monitoring`, or None when every call is
        answered (then `failtax monitor evaluate` makes zero live calls).
    """
    llm = [c for c in cfgs if c.kind == "llm"]
    if not llm:
        raise ValueError("none of the monitors is an LLM monitor (kind: llm); only those make model calls")
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    recipe_name, cache_dir = _shared_backend(llm)
    recipe = get_recipe(recipe_name)
    folder = BatchFolder(batch_dir)
    backend, recorder = batch_backend(folder, recipe, cache_dir, identity=identity,
                                      max_error_rounds=max_error_rounds)
    write_manifest(folder, backend, recorder, recipe, monitors=[c.label for c in llm])
    scratch = folder.dir / ".monitoring-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    episodes_of: dict[str, str] = {}
    try:
        for cfg in llm:
            monitor = make_monitor(cfg, backend)
            for set_name, path in episode_sets.items():
                episodes, _ = select_episodes(Path(path), cfg)
                runs = await evaluate_monitor(monitor, episodes, cfg, scratch / set_name / cfg.label, fp="export",
                                              progress=progress, concurrency=concurrency)
                for run in runs:
                    for d in run.decisions:
                        m = _KEY.search(d.reason) if d.source == RETRYABLE else None
                        if m:
                            episodes_of[m.group(1)] = run.episode_id
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _list_too_long(folder, MONITORING, recorder.too_long, episodes_of)
    result = ExportResult(stage=None, token_counting=recorder.counter.how)
    if recorder.recorded:
        _write_round(folder, MONITORING, list(recorder.recorded.values()), episodes_of, shard_size, result)
    return result


__all__ = ["export_monitoring"]

"""Episode sets for the runtime monitor: failures and successes, in-distribution
(the office_a family the policy and the taxonomy come from) and out of
distribution (the held-out office_b family), plus a disjoint training set for
the supervised baselines and the distilled monitor.

Episodes are recorded with the simulator's scripted policies through
`sim.rollout.record_scripted_episodes` (its public API): `blind_follower` plans on
a map without glass, poles and low obstacles, the way a camera policy misses them,
so it collides for the reasons a taxonomy should find; `path_follower` sees the
whole map and mostly succeeds. Both run the same buildings, so one set holds both
outcomes. Each set uses its own reset seeds (`SETS`), so no episode is in two sets;
buildings are drawn from the family's pool and may repeat between the ID sets
(the held-out family never appears in training).

Example:
    >>> make_monitor_sets("runs/monitor-sets", per_set=250, train=300)
    {'train': {...}, 'id': {...}, 'ood': {...}}
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from common import atomic_write_json

# name -> (sim preset, first reset seed); seed ranges are far apart, so sets never overlap
SETS: dict[str, tuple[str, int]] = {
    "train": ("default", 0),
    "id": ("default", 100_000),
    "ood": ("office_b", 200_000),
}
# Two blind episodes per seeing one: about half of the episodes end in a collision.
POLICIES = ("blind_follower", "path_follower", "blind_follower")


def make_monitor_sets(
    out_dir: str | os.PathLike,
    *,
    per_set: int = 250,
    train: int = 300,
    frame_stride: int = 5,
    workers: int = 1,
    sets: tuple[str, ...] = ("train", "id", "ood"),
    progress: bool = True,
) -> dict[str, Any]:
    """Record the monitor's episode sets into `out_dir/<set>/` (resumable: episodes
    already on disk are kept) and write `out_dir/sets.json` with each set's outcomes.

    Args:
        out_dir: parent folder of the sets.
        per_set: episodes in each evaluation set (id, ood).
        train: episodes in the training set.
        frame_stride: a frame (and its depth) every this many control steps; the
            monitor decides at most once per stored frame.
        workers: recording processes.
        sets: which sets to record (names of `SETS`).
        progress: tqdm bars.

    Returns:
        {set: {"episodes": n, "outcomes": {outcome: n}, "family": ..., "seed": ...}}.
    """
    from sim.config import load_sim_config
    from sim.rollout import record_scripted_episodes

    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise ValueError(f"unknown monitor sets {unknown}; valid: {', '.join(SETS)}")
    out = Path(out_dir)
    summary: dict[str, Any] = {}
    for name in sets:
        preset, seed = SETS[name]
        cfg = load_sim_config(preset)
        n = train if name == "train" else per_set
        record_scripted_episodes(
            cfg, out / name, n, policies=POLICIES, seed=seed, frame_stride=frame_stride,
            channels=True, workers=workers, progress=progress,
        )
        outcomes = Counter(_outcome(p) for p in sorted((out / name).iterdir()) if p.is_dir())
        outcomes.pop(None, None)
        summary[name] = {"episodes": sum(outcomes.values()), "outcomes": dict(outcomes),
                         "family": cfg.world.family, "seed": seed, "frame_stride": frame_stride}
    atomic_write_json(out / "sets.json", summary)
    return summary


def _outcome(folder: Path) -> str | None:
    from common.episode import EpisodeFormatError, read_meta

    try:
        return read_meta(folder).outcome
    except EpisodeFormatError:
        return None

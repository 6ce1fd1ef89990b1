"""Record episodes with scripted policies, optionally over worker processes.

Episode i uses reset seed `seed + i` and policy `policies[i % len(policies)]`,
and is named ``{family}-{policy}-s{seed:06d}``, so a run is reproducible and a
rerun skips the episodes already on disk (each is written atomically).

Example:
    >>> summary = record_scripted_episodes(SimConfig(), "episodes", 20, workers=2)
    >>> summary.outcomes   # {(policy, outcome, cause_class): count}
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.config import SimConfig

CHANNELS = ("depth", "semantic", "instance")


@dataclass
class EpisodeSummary:
    """What one recorded episode came to (for tallies and maps)."""

    episode_id: str
    policy: str
    outcome: str
    cause_class: str | None
    building_id: str
    trajectory_xy: np.ndarray
    contact_xy: tuple[float, float] | None


@dataclass
class RolloutSummary:
    """Tally of a rollout run."""

    episodes: list[EpisodeSummary] = field(default_factory=list)
    skipped: int = 0

    @property
    def outcomes(self) -> Counter:
        return Counter((e.policy, e.outcome, e.cause_class) for e in self.episodes)


_STATE: dict[str, Any] = {}


def _init_worker(config_json: dict, frame_stride: int, channels: bool) -> None:
    from sim.env import IndoorNavEnv

    cfg = SimConfig.model_validate(config_json)
    _STATE.update(env=IndoorNavEnv(cfg), config=cfg, policies={}, frame_stride=frame_stride,
                  channels=channels)


def _record_one(job: tuple[str, int, str]) -> EpisodeSummary:
    from sim.policies import make_policy
    from sim.recorder import EpisodeRecorder

    out, ep_seed, name = job
    env, cfg = _STATE["env"], _STATE["config"]
    policy = _STATE["policies"].setdefault(name, make_policy(name))
    episode_id = f"{cfg.world.family}-{name}-s{ep_seed:06d}"
    recorder = EpisodeRecorder(out, robot=f"scripted:{name}", frame_stride=_STATE["frame_stride"],
                               channels=CHANNELS if _STATE["channels"] else ())
    obs, info = env.reset(seed=ep_seed)
    policy.reset(env, np.random.default_rng(ep_seed))
    recorder.start(episode_id, obs, info, seed=ep_seed, config=cfg)
    xy = [info["pose"][:2]]
    while True:
        action = policy.act(obs)
        obs, _, term, trunc, info = env.step(action)
        recorder.step(action, obs, info)
        xy.append(info["pose"][:2])
        if term or trunc:
            break
    recorder.finish()
    col = info["collision"]
    return EpisodeSummary(episode_id, name, info["outcome"] or "timeout",
                          col["cause_class"] if col else None, info["building_id"],
                          np.asarray(xy), tuple(col["contact_point"]) if col else None)


def record_scripted_episodes(
    config: SimConfig,
    out_dir: str | os.PathLike,
    num_episodes: int,
    *,
    policies: tuple[str, ...] = ("blind_follower", "path_follower"),
    seed: int = 0,
    frame_stride: int = 1,
    channels: bool = True,
    workers: int = 1,
    progress: bool = True,
) -> RolloutSummary:
    """Record `num_episodes` episodes into `out_dir` (see module docstring).

    Args:
        config: simulator config; with `channels` the depth/semantic/instance
            images are switched on (in the info dict) and stored.
        out_dir: episodes folder.
        num_episodes: episodes to run (existing ones count and are skipped).
        policies: scripted policy names (sim.policies.POLICY_NAMES).
        seed: episode i uses reset seed seed + i.
        frame_stride: keep a frame every this many steps.
        channels: store depth/semantic/instance arrays.
        workers: processes; episodes are independent, so they scale across cores.
        progress: show a tqdm bar.
    """
    from tqdm import tqdm

    from sim.policies import POLICY_NAMES
    from sim.recorder import EpisodeRecorder

    bad = [p for p in policies if p not in POLICY_NAMES]
    if bad or not policies:
        raise ValueError(f"unknown policies {bad}; choose from {POLICY_NAMES}")
    if channels:
        config = config.model_copy(update={"observation": config.observation.model_copy(
            update={k: "info" for k in CHANNELS})})
    out = Path(out_dir)
    probe = EpisodeRecorder(out)
    jobs, summary = [], RolloutSummary()
    for i in range(num_episodes):
        name = policies[i % len(policies)]
        if probe.exists(f"{config.world.family}-{name}-s{seed + i:06d}"):
            summary.skipped += 1
        else:
            jobs.append((str(out), seed + i, name))
    init_args = (config.model_dump(mode="json"), frame_stride, channels)
    bar = tqdm(total=len(jobs), desc="episodes", unit="ep", disable=not progress)
    if workers <= 1 or len(jobs) <= 1:
        _init_worker(*init_args)
        for job in jobs:
            summary.episodes.append(_record_one(job))
            bar.update()
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker,
                      initargs=init_args) as pool:
            for ep in pool.imap(_record_one, jobs):
                summary.episodes.append(ep)
                bar.update()
    bar.close()
    return summary

"""Collect expert demonstrations into a sharded, resumable dataset.

Arms:
    uniform   random start/goal pairs (the sim's own sampler) over the family's buildings.
    targeted  start/goal pairs whose planned path passes near given regions
              (`sim.query.MapQuery.sample_pairs_near`), regions drawn by share; or
              replays of logged failures (`replay_share`); or, for `coverage_share`
              of the episodes, pairs drawn as the uniform arm draws them.

Both count their budget in samples (labelled states), so arms compare at
equal cost. With `collect.dagger_checkpoint`, a trained policy drives with
probability 1 - `dagger_beta` at each step while the expert labels every
visited state (DAgger-style relabelling).

Shard i is a pure function of (fingerprint, i): its episodes' seeds derive
from (seed, arm, family, i, j). A killed run resumes by producing only the
missing shards; the result does not depend on the number of workers.

Example:
    >>> collect(load_nav_config("configs/nav/default.yaml"), "data/base")
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from common import derive_rng, derive_seed, stable_hash
from nav_policy.config import EVAL_SEED_OFFSET, NavConfig
from nav_policy.dataset import (
    Shard,
    list_shards,
    read_manifest,
    read_shard,
    write_manifest,
    write_shard,
)
from nav_policy.model import RobotLimits, action_to_command

log = logging.getLogger(__name__)


def training_seed(*parts: Any) -> int:
    """A reset seed for collection, always below EVAL_SEED_OFFSET (never an eval seed)."""
    return derive_seed(*parts) % EVAL_SEED_OFFSET


def collection_fingerprint(cfg: NavConfig, regions_hash: str | None,
                           dagger_hash: str | None) -> str:
    """Hash of everything that changes shard content (not the budget or worker count)."""
    c = cfg.collect
    return stable_hash({
        "arm": c.arm, "seed": c.seed, "family": c.family, "samples_per_shard": c.samples_per_shard,
        "region_radius_m": c.region_radius_m, "start_noise_yaw_rad": c.start_noise_yaw_rad,
        "dagger_beta": c.dagger_beta if c.dagger_checkpoint else None,
        "max_episode_steps": c.max_episode_steps, "drop_failed_episodes": c.drop_failed_episodes,
        "action_noise_std": list(c.action_noise_std), "intent_labels": c.intent_labels,
        "targeted_path_m": c.targeted_path_m, "facing_share": c.facing_share,
        # replays only change targeted data; other datasets keep their fingerprint
        **({"replay_share": c.replay_share, "replay_max_steps": c.replay_max_steps}
           if c.arm == "targeted" and c.replay_share else {}),
        **({"coverage_share": c.coverage_share} if c.arm == "targeted" and c.coverage_share
           else {}),
        **({"appearance_jitter": c.appearance_jitter} if c.appearance_jitter else {}),
        "regions": regions_hash, "dagger": dagger_hash,
        "expert": cfg.expert.model_dump(mode="json"),
        "sim": cfg.sim.model_dump(mode="json"),
    })


def _file_hash(path: str | os.PathLike) -> str:
    return stable_hash(Path(path).read_bytes())


def collection_sim(cfg: NavConfig) -> Any:
    """The sim config data is collected in: the nav config's, with the collection's
    appearance randomisation (`collect.appearance_jitter`) when it asks for one."""
    if not cfg.collect.appearance_jitter:
        return cfg.sim
    world = cfg.sim.world.model_copy(update={"appearance_jitter": cfg.collect.appearance_jitter})
    return cfg.sim.model_copy(update={"world": world})


# ---------------------------------------------------------------------- worker side
_WORKER: dict[str, Any] = {}


def _worker_state(cfg: NavConfig) -> dict[str, Any]:
    """Env, expert, regions and (for DAgger) policy, built once per process."""
    key = stable_hash(cfg.model_dump(mode="json"))
    if _WORKER.get("key") == key:
        return _WORKER
    from nav_policy.expert import make_expert
    from sim.env import IndoorNavEnv

    sim_cfg = collection_sim(cfg)
    state: dict[str, Any] = {
        "key": key, "sim_config": sim_cfg, "env": IndoorNavEnv(sim_cfg),
        "expert": make_expert(cfg.expert, sim_cfg), "limits": RobotLimits.from_sim(sim_cfg),
        "regions": None, "policy": None,
    }
    if cfg.collect.arm == "targeted":
        from nav_policy.regions import load_regions

        state["regions"] = load_regions(cfg.collect.regions_path)[0]
    if cfg.collect.dagger_checkpoint:
        import torch

        from nav_policy.model import PolicyRunner, load_checkpoint

        torch.set_num_threads(1)
        net, _ = load_checkpoint(cfg.collect.dagger_checkpoint)
        state["policy"] = PolicyRunner(net)
    _WORKER.clear()
    _WORKER.update(state)
    return _WORKER


def _targeted_reset_options(cfg: NavConfig, ws: dict[str, Any], ep_seed: int) -> tuple[dict, dict]:
    """Reset options for an episode whose path passes near a region (or a uniform fallback)."""
    from nav_policy.regions import pick_region, region_targets
    from sim.env import load_world
    from sim.query import MapQuery

    regions = ws["regions"]
    sim_cfg = ws["sim_config"]
    rng = derive_rng(ep_seed, "region")
    c = cfg.collect
    path_m = c.targeted_path_m or (sim_cfg.episode.min_start_goal_path_m,
                                   sim_cfg.episode.max_start_goal_path_m)
    facing = bool(rng.random() < c.facing_share)
    replay = c.replay_share > 0 and bool(rng.random() < c.replay_share)
    for attempt in range(6):
        r = regions[pick_region(regions, rng)]
        if replay and r.starts:
            opts = _replay_options(r, rng, sim_cfg, r.family or c.family)
            if opts is not None:
                return opts, {"region_id": r.region_id, "start": "replay"}
        family = r.family or c.family
        bseed = r.building_seed if r.building_seed is not None else int(
            rng.integers(sim_cfg.world.num_buildings))
        world = load_world(sim_cfg, family, bseed)
        q = MapQuery(world)
        targets = region_targets(r, q)
        if not targets:
            continue
        try:
            if facing:
                pairs = q.sample_starts_facing(
                    targets, 1, seed=derive_seed(ep_seed, "pair", attempt),
                    min_path_m=path_m[0], max_path_m=path_m[1])
            else:
                pairs = q.sample_pairs_near(
                    targets, 1, seed=derive_seed(ep_seed, "pair", attempt),
                    radius_m=r.radius_m or c.region_radius_m,
                    min_path_m=path_m[0], max_path_m=path_m[1])
        except ValueError:
            continue
        if pairs:
            opts = {"family": family, "building_seed": int(bseed), **pairs[0].reset_options()}
            return opts, {"region_id": r.region_id, "target": pairs[0].target,
                          "closest_approach_m": pairs[0].closest_approach_m,
                          "start": "facing" if facing else "pass_near"}
    # Region unreachable in the buildings tried: count it and fall back to a uniform pair.
    return {"family": c.family}, {"region_id": None, "target_miss": True}


def _replay_options(region, rng: np.random.Generator, sim_cfg, family: str) -> dict | None:
    """Reset options replaying one of the region's logged starts (None: it is not free)."""
    from sim.env import load_world

    st = region.starts[int(rng.integers(len(region.starts)))]
    world = load_world(sim_cfg, family, int(region.building_seed))
    if world.checker.clearance(np.asarray([st["xy"]], float))[0] < sim_cfg.robot.radius_m:
        return None
    return {"family": family, "building_seed": int(region.building_seed),
            "start_xy": list(st["xy"]), "start_yaw": float(st["yaw_rad"]),
            "goal_xy": list(st["goal_xy"])}


def _run_episode(cfg: NavConfig, ws: dict[str, Any], ep_seed: int, options: dict,
                 max_steps: int | None = None) -> tuple[dict[str, list], dict[str, Any]]:
    env, expert = ws["env"], ws["expert"]
    c = cfg.collect
    obs, info = env.reset(seed=ep_seed, options=options)
    if c.start_noise_yaw_rad > 0:
        yaw = float(env.state[2] + derive_rng(ep_seed, "yaw").normal(0, c.start_noise_yaw_rad))
        obs, info = env.reset(seed=ep_seed, options={
            **options, "family": info["building_family"], "building_seed": info["building_seed"],
            "start_xy": env.state[:2].tolist(), "goal_xy": env.goal_xy.tolist(), "start_yaw": yaw})
    expert.reset(env.world, env.goal_xy)
    mix_rng = derive_rng(ep_seed, "dagger")
    noise_std = np.asarray(c.action_noise_std, float)
    rows: dict[str, list] = {k: [] for k in ("image", "velocity", "goal", "route", "action",
                                             "pose")}
    controllers: Counter = Counter()
    solve_ms: list[float] = []
    max_steps = min(max_steps or 10**9, c.max_episode_steps or 10**9)
    policy_steps = 0
    intended_turn: float | None = None
    for _ in range(max_steps):
        state = env.state
        if c.intent_labels and intended_turn is not None:
            # The expert carries on from the turn rate it asked for, not the perturbed one.
            state = state.copy()
            state[4] = intended_turn
        step = expert.act(state)
        intended_turn = float(step.action[1])
        controllers[step.controller] += 1
        solve_ms.append(step.solve_time_s * 1e3)
        rows["image"].append(obs["image"])
        rows["velocity"].append(obs["velocity"])
        rows["goal"].append(obs["goal"])
        rows["route"].append(obs["route"])
        rows["action"].append(step.action.astype(np.float32))
        rows["pose"].append(state[:3].astype(np.float32))
        executed = step.action
        if ws["policy"] is not None and mix_rng.random() >= c.dagger_beta:
            executed = ws["policy"].act(obs)
            policy_steps += 1
        if noise_std.any():
            executed = executed + mix_rng.normal(0.0, 1.0, 2) * noise_std
        obs, _, term, trunc, info = env.step(executed)
        if term or trunc:
            break
    outcome = info["outcome"] or "timeout"
    record = {
        "seed": int(ep_seed), "building_id": info["building_id"],
        "building_seed": info["building_seed"], "family": info["building_family"],
        "outcome": outcome, "steps": len(rows["action"]),
        "cause_class": (info["collision"] or {}).get("cause_class"),
        "controllers": dict(controllers), "policy_steps": policy_steps,
        "median_solve_ms": float(np.median(solve_ms)) if solve_ms else None,
    }
    return rows, record


def collect_shard(cfg_json: dict, index: int, fingerprint: str) -> Shard:
    """Produce shard `index` (whole episodes until samples_per_shard is reached)."""
    cfg = NavConfig.model_validate(cfg_json)
    ws = _worker_state(cfg)
    c = cfg.collect
    arrays: dict[str, list] = {k: [] for k in ("image", "velocity", "goal", "route", "action",
                                               "pose")}
    episode_ids: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    episodes: list[dict] = []
    n, j, kept = 0, 0, 0
    while n < c.samples_per_shard:
        ep_seed = training_seed(c.seed, c.arm, c.family, "shard", index, "episode", j)
        j += 1
        if c.arm != "targeted":
            options, extra = {"family": c.family}, {}
        elif c.coverage_share and derive_rng(ep_seed, "coverage").random() < c.coverage_share:
            options, extra = {"family": c.family}, {"start": "coverage"}
        else:
            options, extra = _targeted_reset_options(cfg, ws, ep_seed)
        cap = c.replay_max_steps if extra.get("start") == "replay" else None
        rows, record = _run_episode(cfg, ws, ep_seed, options, cap)
        record.update(extra)
        keep = not (c.drop_failed_episodes and record["policy_steps"] == 0
                    and record["outcome"] == "collision")
        record["kept"] = keep
        record["episode"] = kept if keep else None
        episodes.append(record)
        if not keep or not rows["action"]:
            if j > 50 and kept == 0:
                raise RuntimeError(f"shard {index}: the expert failed its first {j} episodes; "
                                   "check the expert and sim configs (`failtax nav expert-check`)")
            continue
        m = len(rows["action"])
        for k, parts in arrays.items():
            parts.append(np.stack(rows[k]))
        episode_ids.append(np.full(m, kept, np.int32))
        steps.append(np.arange(m, dtype=np.int32))
        kept += 1
        n += m
    out = {k: np.concatenate(v) for k, v in arrays.items()}
    out["command"] = action_to_command(out["velocity"], out["action"],
                                       ws["limits"]).astype(np.float32)
    out["episode"] = np.concatenate(episode_ids)
    out["step"] = np.concatenate(steps)
    return Shard(index, out, episodes, fingerprint)


def _produce(cfg_json: dict, index: int, fingerprint: str, root: str) -> tuple[int, int, dict]:
    t0 = time.perf_counter()
    shard = collect_shard(cfg_json, index, fingerprint)
    write_shard(root, shard)
    eps = shard.episodes
    stats = {"seconds": time.perf_counter() - t0, "episodes": len(eps),
             "expert_collisions": sum(e["outcome"] == "collision" for e in eps),
             "target_misses": sum(bool(e.get("target_miss")) for e in eps)}
    return index, shard.num_samples, stats


# ---------------------------------------------------------------------- driver
def collect(cfg: NavConfig, out_dir: str | os.PathLike, *, progress: bool = True) -> dict[str, Any]:
    """Collect (or resume collecting) `cfg.collect.budget_samples` samples into `out_dir`.

    Returns:
        The manifest (also written to `out_dir/manifest.json`).
    """
    c = cfg.collect
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    regions_hash = None
    if c.arm == "targeted":
        from nav_policy.regions import load_regions

        _, regions_hash = load_regions(c.regions_path)  # fail early on a bad file
    dagger_hash = _file_hash(c.dagger_checkpoint) if c.dagger_checkpoint else None
    fp = collection_fingerprint(cfg, regions_hash, dagger_hash)
    old = read_manifest(root)
    if old is not None and old.get("fingerprint") != fp:
        raise ValueError(f"{root} holds a dataset collected with a different config "
                         f"(fingerprint {old.get('fingerprint')} != {fp}); use a new folder")
    counts: dict[int, int] = {}
    for idx, path in list_shards(root).items():
        try:
            sh = read_shard(path, load_arrays=False)
        except ValueError as e:
            log.warning("collect: %s; it will be recollected", e)
            path.unlink()
            continue
        if sh.fingerprint != fp:
            raise ValueError(f"{path} was collected with a different config; use a new folder")
        counts[idx] = sh.num_samples
    info = {
        "kind": "nav_expert_dataset", "arm": c.arm, "seed": c.seed, "family": c.family,
        "fingerprint": fp, "regions_path": c.regions_path, "regions_hash": regions_hash,
        "dagger_checkpoint": c.dagger_checkpoint, "dagger_hash": dagger_hash,
        "config": cfg.model_dump(mode="json"),
    }
    if counts:
        log.info("collect: resuming with %d shards on disk", len(counts))

    def prefix_total() -> int:
        total, i = 0, 0
        while i in counts:
            total += counts[i]
            i += 1
        return total

    manifest = write_manifest(root, info, counts, c.budget_samples)
    bar = tqdm(total=c.budget_samples, initial=min(prefix_total(), c.budget_samples),
               disable=not progress, desc=f"collect {c.arm}", unit="sample")
    cfg_json = cfg.model_dump(mode="json")
    stats_total: Counter = Counter()
    t0 = time.perf_counter()

    def needed_more(in_flight: int) -> bool:
        # Expected samples of the prefix plus shards in flight, each ~samples_per_shard.
        done_missing = 0
        i = 0
        total = 0
        while total + done_missing * c.samples_per_shard < c.budget_samples:
            if i in counts:
                total += counts[i]
            elif done_missing < in_flight:
                done_missing += 1
            else:
                return True
            i += 1
        return False

    def next_index(taken: set[int]) -> int:
        i = 0
        while i in counts or i in taken:
            i += 1
        return i

    if c.num_workers <= 1:
        while needed_more(0):
            i = next_index(set())
            _, num, stats = _produce(cfg_json, i, fp, str(root))
            counts[i] = num
            stats_total.update(stats)
            manifest = write_manifest(root, info, counts, c.budget_samples)
            bar.n = min(prefix_total(), c.budget_samples)
            bar.refresh()
    else:
        ctx = get_context("spawn")  # workers may load torch (DAgger); fork after torch is unsafe
        with ProcessPoolExecutor(max_workers=c.num_workers, mp_context=ctx) as pool:
            running: dict[Future, int] = {}
            while True:
                while len(running) < c.num_workers and needed_more(len(running)):
                    i = next_index(set(running.values()))
                    running[pool.submit(_produce, cfg_json, i, fp, str(root))] = i
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    running.pop(f)
                    i, num, stats = f.result()
                    counts[i] = num
                    stats_total.update(stats)
                manifest = write_manifest(root, info, counts, c.budget_samples)
                bar.n = min(prefix_total(), c.budget_samples)
                bar.refresh()
    bar.close()
    manifest = write_manifest(root, {**info, "last_run": {
        "seconds": time.perf_counter() - t0, **dict(stats_total)}}, counts, c.budget_samples)
    log.info("collect: %s holds %d/%d samples", root, manifest["num_samples"], c.budget_samples)
    return manifest

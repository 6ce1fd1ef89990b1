"""Roll out a policy (or the expert) on a fixed evaluation set and measure failures.

Evaluation sets are fixed per (building family, eval_set_seed): rollout i
resets the env with seed `eval_seed(family, set, i)`, which is always >=
EVAL_SEED_OFFSET, while collection seeds are always below it, so no
evaluation start/goal pair is ever a training episode.

Outputs in `out_dir`:
    rollouts.jsonl   one line per rollout: index, seed, outcome, cause, steps, ...
    summary.json     eval/failure_rate with its Wilson 95% interval, success and
                     timeout rates, failures by ground-truth cause class
    episodes/        failure episodes (docs/EPISODE_FORMAT.md) for `failtax discover`

A killed evaluation resumes: finished rollouts are read back from
rollouts.jsonl and only the missing ones run.

Example:
    >>> evaluate_checkpoint(cfg, "runs/base/model.pt", "runs/base/eval_office_a")
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from common import append_jsonl, atomic_write_json, derive_seed, read_jsonl, stable_hash
from nav_policy.config import EVAL_SEED_OFFSET, NavConfig
from nav_policy.stats import summarize_outcomes

log = logging.getLogger(__name__)
_CHANNELS = ("depth", "semantic", "instance")


def eval_seed(family: str, eval_set_seed: int, index: int) -> int:
    """Reset seed of rollout `index` of a fixed evaluation set (always >= EVAL_SEED_OFFSET)."""
    return EVAL_SEED_OFFSET + derive_seed(eval_set_seed, family, "eval", index) % EVAL_SEED_OFFSET


# ---------------------------------------------------------------------- controllers
class Controller:
    """What a rollout drives with: `reset(env)` then `act(obs, env)` each step."""

    name: str = "controller"

    def reset(self, env) -> None:  # pragma: no cover - interface
        pass

    def act(self, obs: dict, env) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def episode_stats(self) -> dict:
        """Extra per-rollout numbers (e.g. solve times); empty by default."""
        return {}


class PolicyController(Controller):
    """The CNN policy from a checkpoint (sees only the observation)."""

    def __init__(self, checkpoint: str, device: str = "cpu") -> None:
        import torch

        from nav_policy.model import PolicyRunner, load_checkpoint
        from nav_policy.train import resolve_device

        dev = resolve_device(device)
        if dev.type == "cpu":
            torch.set_num_threads(1)
        net, _ = load_checkpoint(checkpoint, dev)
        self.runner = PolicyRunner(net, dev)
        self.name = f"cnn-policy@{stable_hash(Path(checkpoint).read_bytes(), length=8)}"

    def act(self, obs: dict, env) -> np.ndarray:
        return self.runner.act(obs)

    def act_batch(self, obs: dict) -> np.ndarray:
        """(B, 2) actions for batched observations (one forward pass)."""
        from nav_policy.model import target_of

        return self.runner.act_batch(obs["image"], obs["velocity"],
                                     target_of(obs, self.runner.net.config.target_input))


class ExpertController(Controller):
    """The privileged expert (sees the map); used by `expert-check`."""

    def __init__(self, cfg: NavConfig) -> None:
        from nav_policy.expert import make_expert

        self.expert = make_expert(cfg.expert, cfg.sim)
        self.name = f"expert-{cfg.expert.kind}"

    def reset(self, env) -> None:
        self.expert.reset(env.world, env.goal_xy)
        self._first = len(self.expert.solve_times_s)
        self._counts = dict(self.expert.counts)

    def act(self, obs: dict, env) -> np.ndarray:
        return self.expert.act(env.state).action

    def episode_stats(self) -> dict:
        times = np.asarray(self.expert.solve_times_s[self._first:]) * 1e3
        counts = {k: v - self._counts.get(k, 0) for k, v in self.expert.counts.items()}
        return {"solve_ms": [round(float(t), 3) for t in times],
                "controllers": {k: v for k, v in counts.items() if v}}


class RoutePursuitController(Controller):
    """Camera-blind baseline: steers at the floor-plan route point, never looks.

    What the camera policy must beat: its failures are the clutter the floor
    plan leaves out (`failtax nav baseline`).
    """

    name = "route-pursuit"

    def __init__(self, cfg: NavConfig) -> None:
        from nav_policy.model import RobotLimits

        self.limits = RobotLimits.from_sim(cfg.sim)
        self.speed = cfg.expert.cruise_speed_mps

    def act(self, obs: dict, env) -> np.ndarray:
        from nav_policy.model import command_to_action, pursuit_command, target_of

        command = pursuit_command(target_of(obs, "route"), self.speed, self.limits)
        return command_to_action(obs["velocity"], command, self.limits)

    def act_batch(self, obs: dict) -> np.ndarray:
        """(B, 2) actions for batched observations (the same arithmetic, vectorised)."""
        return self.act(obs, None)


def _make_controller(spec: dict) -> Controller:
    if spec["kind"] == "policy":
        return PolicyController(spec["checkpoint"], spec.get("device", "cpu"))
    if spec["kind"] == "expert":
        return ExpertController(NavConfig.model_validate(spec["config"]))
    if spec["kind"] == "route_pursuit":
        return RoutePursuitController(NavConfig.model_validate(spec["config"]))
    raise ValueError(f"unknown controller kind {spec['kind']!r}; valid: policy, expert, "
                     "route_pursuit")


# ---------------------------------------------------------------------- rollouts
def _sim_config_for_eval(cfg: NavConfig, record: bool):
    sim_cfg = cfg.sim
    if record:
        # Channels go to the info dict, so the recorder stores them with the frames.
        obs = sim_cfg.observation.model_copy(update={k: "info" for k in _CHANNELS})
        sim_cfg = sim_cfg.model_copy(update={"observation": obs})
    return sim_cfg


def _rollouts(cfg_json: dict, spec: dict, indices: list[int], out_dir: str) -> list[dict]:
    """Run the given rollouts of the evaluation set (in a worker or inline)."""
    from sim.env import IndoorNavEnv
    from sim.recorder import EpisodeRecorder

    cfg = NavConfig.model_validate(cfg_json)
    e = cfg.evaluate
    record = e.save_failures or e.save_all
    sim_cfg = _sim_config_for_eval(cfg, record)
    env = IndoorNavEnv(sim_cfg)
    ctrl = _make_controller(spec)
    rec = EpisodeRecorder(Path(out_dir) / "episodes", robot=ctrl.name, frame_stride=e.frame_stride,
                          overwrite=True) if record else None
    out = []
    for i in indices:
        seed = eval_seed(e.family, e.eval_set_seed, i)
        obs, info = env.reset(seed=seed, options={"family": e.family})
        ctrl.reset(env)
        ep_id = f"eval-{e.family}-s{e.eval_set_seed}-{i:05d}"
        if rec is not None:
            rec.start(ep_id, obs, info, seed=seed, config=sim_cfg)
        t0 = time.perf_counter()
        steps = 0
        start_goal = [info["pose"][:2], info["goal_xy"]]
        while True:
            action = ctrl.act(obs, env)
            obs, _, term, trunc, info = env.step(action)
            steps += 1
            if rec is not None:
                rec.step(action, obs, info)
            if term or trunc:
                break
        outcome = info["outcome"] or "timeout"
        saved = None
        if rec is not None:
            if e.save_all or outcome == "collision":
                saved = rec.finish().name
            else:
                rec.discard()
        col = info["collision"] or {}
        out.append({
            "index": i, "seed": seed, "outcome": outcome, "steps": steps,
            "cause_class": col.get("cause_class"), "object_class": col.get("object_class"),
            "object_id": col.get("object_id"), "contact_point": col.get("contact_point"),
            "building_id": info["building_id"], "building_seed": info["building_seed"],
            "start_xy": start_goal[0], "goal_xy": start_goal[1],
            "episode_id": saved, "seconds": time.perf_counter() - t0,
            **ctrl.episode_stats(),
        })
    return out


def _rollouts_batched(cfg_json: dict, spec: dict, indices: list[int], out_dir: str) -> list[dict]:
    """The rollouts `_rollouts` runs, `evaluate.batch_size` robots at a time.

    Each robot slot runs one evaluation episode with that episode's own reset seed (the
    generator `IndoorNavEnv.reset(seed=...)` would draw from), so every episode starts as
    it does alone; the robots are stepped together (`NavBatch`) and the policy acts on
    all of them in one forward pass (the route follower in one vectorised call). A
    finished slot takes the next episode. No episode recording.
    """
    from gymnasium.utils import seeding

    from sim.env import NavBatch

    cfg = NavConfig.model_validate(cfg_json)
    e = cfg.evaluate
    ctrl = _make_controller(spec)
    if not isinstance(ctrl, (PolicyController, RoutePursuitController)):
        raise TypeError(f"batched rollouts drive a policy checkpoint or the route follower, "
                        f"not {spec['kind']!r}")
    queue = list(indices)
    n = min(e.batch_size, len(queue))
    batch = NavBatch(cfg.sim, n)
    live: list[dict | None] = [None] * n
    out: list[dict] = []

    def start(slot: int) -> None:
        i = queue.pop(0)
        seed = eval_seed(e.family, e.eval_set_seed, i)
        rng, _ = seeding.np_random(seed)
        batch.reset_robot(slot, rng, {"family": e.family})
        info = batch.info(slot)
        live[slot] = {"index": i, "seed": seed, "steps": 0, "t0": time.perf_counter(),
                      "start_xy": info["pose"][:2], "goal_xy": info["goal_xy"]}

    for slot in range(n):
        start(slot)
    while any(ep is not None for ep in live):
        active = np.array([ep is not None for ep in live])
        idx = np.flatnonzero(active)
        obs = batch.observe()
        actions = np.zeros((n, 2))
        actions[idx] = ctrl.act_batch({k: v[idx] for k, v in obs.items()})
        _, term, trunc = batch.step(actions, active=active)
        for slot in idx:
            ep = live[slot]
            ep["steps"] += 1
            if not (term[slot] or trunc[slot]):
                continue
            info = batch.info(slot)
            col = info["collision"] or {}
            out.append({
                "index": ep["index"], "seed": ep["seed"], "outcome": info["outcome"] or "timeout",
                "steps": ep["steps"], "cause_class": col.get("cause_class"),
                "object_class": col.get("object_class"), "object_id": col.get("object_id"),
                "contact_point": col.get("contact_point"), "building_id": info["building_id"],
                "building_seed": info["building_seed"], "start_xy": ep["start_xy"],
                "goal_xy": ep["goal_xy"], "episode_id": None,
                "seconds": time.perf_counter() - ep["t0"]})
            live[slot] = None
            if queue:
                start(slot)
    return sorted(out, key=lambda r: r["index"])


def run_evaluation(cfg: NavConfig, spec: dict, out_dir: str | os.PathLike, *,
                   progress: bool = True) -> dict[str, Any]:
    """Roll out `spec`'s controller on cfg.evaluate's fixed set; resumable.

    Args:
        cfg: nav config (uses cfg.evaluate and cfg.sim).
        spec: {"kind": "policy", "checkpoint": path} or {"kind": "expert", "config": ...}.
        out_dir: evaluation folder (see the module docstring).

    Returns:
        The summary dict (also written to summary.json).
    """
    e = cfg.evaluate
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ident = {"family": e.family, "eval_set_seed": e.eval_set_seed, "spec": spec.get("kind"),
             "controller": stable_hash(Path(spec["checkpoint"]).read_bytes())
             if spec["kind"] == "policy" else stable_hash(spec["config"]["expert"]),
             "sim": cfg.sim.model_dump(mode="json")}
    fp = stable_hash(ident)
    done = {r["index"]: r for r in read_jsonl(out / "rollouts.jsonl") if r.get("fingerprint") == fp}
    stale = [r for r in read_jsonl(out / "rollouts.jsonl") if r.get("fingerprint") != fp]
    if stale:
        raise ValueError(f"{out} holds rollouts of a different policy, set or sim config; "
                         "use a new folder")
    todo = [i for i in range(e.num_rollouts) if i not in done]
    log.info("evaluate: %d rollouts (%d already done) on %s set %d", e.num_rollouts,
             len(done), e.family, e.eval_set_seed)
    bar = tqdm(total=e.num_rollouts, initial=e.num_rollouts - len(todo), disable=not progress,
               desc=f"evaluate {e.family}", unit="rollout")
    t0 = time.perf_counter()
    cfg_json = cfg.model_dump(mode="json")

    def keep(rows: list[dict]) -> None:
        for r in rows:
            r["fingerprint"] = fp
            done[r["index"]] = r
        append_jsonl(out / "rollouts.jsonl", rows)
        bar.update(len(rows))

    batched = e.batch_size > 1 and spec["kind"] in ("policy", "route_pursuit") and not (
        e.save_failures or e.save_all)
    run = _rollouts_batched if batched else _rollouts
    if todo:
        if e.num_workers <= 1 and not batched:
            for i in todo:
                keep(_rollouts(cfg_json, spec, [i], str(out)))
        elif e.num_workers <= 1:
            for k in range(0, len(todo), 2 * e.batch_size):
                keep(run(cfg_json, spec, todo[k: k + 2 * e.batch_size], str(out)))
        else:
            size = max(4, 2 * e.batch_size) if batched else 4
            chunks = [todo[k: k + size] for k in range(0, len(todo), size)]
            with ProcessPoolExecutor(e.num_workers, mp_context=get_context("spawn")) as pool:
                futs = [pool.submit(run, cfg_json, spec, ch, str(out)) for ch in chunks]
                for f in as_completed(futs):
                    keep(f.result())
    bar.close()
    rows = [done[i] for i in range(e.num_rollouts)]
    summary = summarize_outcomes([r["outcome"] for r in rows], [r["cause_class"] for r in rows])
    summary.update({
        "family": e.family, "eval_set_seed": e.eval_set_seed, "controller": spec.get("kind"),
        "checkpoint": spec.get("checkpoint"), "fingerprint": fp,
        "failure_episodes": [r["episode_id"] for r in rows if r["episode_id"]
                             and r["outcome"] == "collision"],
        "episodes_dir": str(out / "episodes") if (e.save_failures or e.save_all) else None,
        "eval/seconds_this_run": time.perf_counter() - t0,
        "eval/mean_steps": float(np.mean([r["steps"] for r in rows])) if rows else 0.0,
    })
    atomic_write_json(out / "summary.json", summary)
    return summary


def evaluate_checkpoint(cfg: NavConfig, checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                        *, progress: bool = True) -> dict[str, Any]:
    """Failure rate of a trained policy on cfg.evaluate's fixed set (see run_evaluation)."""
    if not Path(checkpoint).exists():
        raise ValueError(f"checkpoint {checkpoint} does not exist; "
                         "train one with `failtax nav train`")
    spec = {"kind": "policy", "checkpoint": str(checkpoint), "device": cfg.evaluate.device}
    return run_evaluation(cfg, spec, out_dir, progress=progress)


def format_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines of an evaluation summary."""
    lo, hi = summary["eval/failure_rate_ci95"]
    causes = ", ".join(f"{k} {v}" for k, v in summary["eval/failures_by_cause"].items()) or "none"
    return (f"{summary['family']} set {summary['eval_set_seed']}: failure rate "
            f"{summary['eval/failure_rate']:.1%} (95% CI {lo:.1%}–{hi:.1%}) over "
            f"{summary['eval/num_rollouts']} rollouts; success {summary['eval/success_rate']:.1%}, "
            f"timeout {summary['eval/timeout_rate']:.1%}\nfailures by cause: {causes}")



def expert_check_summary(out_dir: str | os.PathLike, summary: dict[str, Any]) -> dict[str, Any]:
    """Add per-step solve-time statistics and controller counts of expert rollouts."""
    rows = read_jsonl(Path(out_dir) / "rollouts.jsonl")
    times = np.concatenate([np.asarray(r.get("solve_ms") or [], float) for r in rows] or [[]])
    controllers: dict[str, int] = {}
    for r in rows:
        for k, v in (r.get("controllers") or {}).items():
            controllers[k] = controllers.get(k, 0) + int(v)
    summary = {
        **summary,
        "expert/solve_ms_median": float(np.median(times)) if len(times) else float("nan"),
        "expert/solve_ms_p95": float(np.percentile(times, 95)) if len(times) else float("nan"),
        "expert/solve_ms_max": float(times.max()) if len(times) else float("nan"),
        "expert/steps": len(times),
        "expert/controllers": controllers,
    }
    atomic_write_json(Path(out_dir) / "summary.json", summary)
    return summary

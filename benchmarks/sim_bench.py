"""Simulator throughput: rendered frames/s and physics steps/s.

Measures, for 64x64 and 96x96 cameras:
  render/single      one Raycaster.render call per robot
  render/batched     one call for 32 robots in the same building
  env/single         IndoorNavEnv.step (physics + rendering + info)
  vec/1proc          IndoorNavVectorEnv, 32 robots in one process
  vec/Nproc          ProcessVectorEnv, 32 robots over N worker processes
and physics-only steps/s (NavBatch.step without observe), then profiles one
batched step to show where the time goes. Prints a table and writes
benchmarks/results/sim_bench.json.

Usage:
    python benchmarks/sim_bench.py            # full run (~1-2 min)
    python benchmarks/sim_bench.py --quick    # shorter timings
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from common import atomic_write_json
from sim.config import SimConfig
from sim.env import IndoorNavEnv, NavBatch, load_world
from sim.vector import IndoorNavVectorEnv, ProcessVectorEnv

RESULTS = Path(__file__).parent / "results" / "sim_bench.json"
NUM_ROBOTS = 32


def _config(size: int, shared_building: bool) -> SimConfig:
    return SimConfig.model_validate({
        "camera": {"width_px": size, "height_px": size},
        # Shared building: all robots in building 3 (batched rendering per call);
        # otherwise robots spread over 16 buildings.
        "world": {"building_seed": 3 if shared_building else None, "num_buildings": 16},
    })


def _goal_actions(obs: dict) -> np.ndarray:
    g = np.atleast_2d(obs["goal"])
    return np.stack([np.ones(len(g)), np.clip(2 * np.arctan2(g[:, 1], g[:, 0]), -1.5, 1.5)], 1)


def _cpu_seconds(pids: list[int]) -> float:
    """CPU seconds used so far by this process and the given worker processes."""
    import psutil

    total = time.process_time()
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def _timed(fn, duration_s: float, per_call: int, pids: list[int] = ()) -> dict[str, float]:
    """Rate of fn() (times per_call) over about duration_s after one warm-up.

    Returns wall-clock items/s and items per CPU-second (this process plus
    `pids`): the second is what one free core gives, the first what this
    machine gave while shared with other work.
    """
    fn()
    n, t0, c0 = 0, time.perf_counter(), _cpu_seconds(list(pids))
    while time.perf_counter() - t0 < duration_s:
        fn()
        n += 1
    wall, cpu = time.perf_counter() - t0, _cpu_seconds(list(pids)) - c0
    return {"wall": n * per_call / wall, "per_cpu_s": n * per_call / max(cpu, 1e-9)}


def _poses(world, n: int, seed: int = 0) -> np.ndarray:
    ys, xs = np.nonzero(world.planner.free)
    rng = np.random.default_rng(seed)
    k = rng.choice(len(ys), n)
    x, y = world.grid.cell_to_world(ys[k], xs[k])
    return np.stack([x, y, rng.uniform(-np.pi, np.pi, n)], axis=1)


def bench_render(size: int, duration_s: float) -> dict[str, dict[str, float]]:
    cfg = _config(size, True)
    world = load_world(cfg, "office_a", 3)
    poses = _poses(world, NUM_ROBOTS)
    r = world.raycaster
    single = _timed(lambda: [r.render(poses[i: i + 1]) for i in range(NUM_ROBOTS)], duration_s,
                    NUM_ROBOTS)
    batched = _timed(lambda: r.render(poses), duration_s, NUM_ROBOTS)
    channels = _timed(lambda: r.render(poses, depth=True, semantic=True, instance=True),
                      duration_s, NUM_ROBOTS)
    return {"render/single": single, "render/batched": batched,
            "render/batched+channels": channels}


def _run_vec(env, duration_s: float) -> dict[str, float]:
    # Robot i starts in building i % 16, so every worker generates all 16
    # buildings before timing starts (later resets draw from the same 16).
    obs, _ = env.reset(seed=0, options=[{"building_seed": i % 16} if env.config.world.building_seed
                                        is None else None for i in range(env.num_envs)])
    for _ in range(30):  # warm the building caches through a few autoresets
        obs, *_ = env.step(_goal_actions(obs))
    state = {"obs": obs}

    def step():
        state["obs"], *_ = env.step(_goal_actions(state["obs"]))

    pids = [p.pid for p in getattr(env, "_procs", [])]
    return _timed(step, duration_s, env.num_envs, pids)


def bench_env(size: int, duration_s: float, workers: int) -> dict[str, dict[str, float]]:
    out = {}
    env = IndoorNavEnv(_config(size, False))
    for b in range(16):  # generate the 16 buildings before timing
        env.reset(seed=b, options={"building_seed": b})
    obs, _ = env.reset(seed=0)
    state = {"obs": obs}

    def step_single():
        obs, _, term, trunc, _ = env.step(_goal_actions(state["obs"])[0])
        state["obs"] = env.reset()[0] if (term or trunc) else obs

    out["env/single"] = _timed(step_single, duration_s, 1)
    for shared in (True, False):
        tag = "shared_building" if shared else "16_buildings"
        out[f"vec/1proc/{tag}"] = _run_vec(IndoorNavVectorEnv(NUM_ROBOTS, _config(size, shared)),
                                           duration_s)
        if workers > 1:
            vec = ProcessVectorEnv(NUM_ROBOTS, workers, _config(size, shared))
            try:
                out[f"vec/{workers}proc/{tag}"] = _run_vec(vec, duration_s)
            finally:
                vec.close()
    return out


def bench_physics(duration_s: float) -> dict[str, dict[str, float]]:
    cfg = _config(64, True)
    out = {}
    for n in (1, NUM_ROBOTS):
        batch = NavBatch(cfg, n)
        rng = np.random.default_rng(0)
        for i in range(n):
            batch.reset_robot(i, rng)

        def step(batch=batch, rng=rng, n=n):
            _, term, trunc = batch.step(np.tile([0.5, 0.05], (n, 1)))
            for i in np.flatnonzero(term | trunc):
                batch.reset_robot(i, rng)

        out[f"physics/{'single' if n == 1 else 'batched'}"] = _timed(step, duration_s, n)
    return out


def profile_step(size: int, steps: int = 40) -> list[dict]:
    env = IndoorNavVectorEnv(NUM_ROBOTS, _config(size, True))
    obs, _ = env.reset(seed=0)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        obs, *_ = env.step(_goal_actions(obs))
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt
    rows = []
    for (file, line, name), (_, _, tt, _, _) in stats.stats.items():
        rows.append({"function": f"{Path(file).name}:{name}", "self_s": tt,
                     "share": tt / total if total else 0.0})
    rows.sort(key=lambda r: -r["self_s"])
    return rows[:12]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 s per measurement instead of 3 s")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="worker processes for the process vector env")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    duration = 1.0 if args.quick else 3.0
    load_before = os.getloadavg()
    results: dict[str, dict[str, float]] = {}
    for size in (64, 96):
        key = f"{size}x{size}"
        results[key] = {**bench_render(size, duration), **bench_env(size, duration, args.workers)}
    physics = bench_physics(duration)
    profile = profile_step(64)
    load_after = os.getloadavg()

    print(f"\nframes/s, wall clock (per CPU-second in brackets); {NUM_ROBOTS} robots where "
          f"batched; {args.workers} worker processes")
    names = list(results["64x64"])
    print(f"{'measurement':30s} {'64x64':>16s} {'96x96':>16s}")
    for name in names:
        cells = [f"{results[k][name]['wall']:7.0f} ({results[k][name]['per_cpu_s']:6.0f})"
                 for k in ("64x64", "96x96")]
        print(f"{name:30s} {cells[0]:>16s} {cells[1]:>16s}")
    print("\nsteps/s without rendering, wall (per CPU-second)")
    for name, v in physics.items():
        print(f"{name:30s} {v['wall']:7.0f} ({v['per_cpu_s']:6.0f})")
    print("\nwhere a batched 64x64 vector step spends its time (self time)")
    for row in profile:
        print(f"{row['function']:44s} {row['share']:6.1%}")
    print(f"\nload average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"on {os.cpu_count()} cores (other work shares this machine)")

    atomic_write_json(args.out, {
        "schema_version": 1,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "load_avg_1m_before": load_before[0], "load_avg_1m_after": load_after[0]},
        "num_robots": NUM_ROBOTS,
        "workers": args.workers,
        "seconds_per_measurement": duration,
        "frames_per_s": results,
        "physics_steps_per_s": physics,
        "profile_vec_step_64": profile,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

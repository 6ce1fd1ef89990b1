"""Policy-stack speed: expert solve time, collection and training throughput.

Measures, on this machine:
  * expert: success rate and per-step controller solve time (fatrop and IPOPT)
    over seeded random start/goal pairs of each building family;
  * collection: expert samples per second (1 worker and N workers);
  * training: samples per second of the CNN on CPU (1 thread and all
    threads), and on CUDA when torch sees a device (recorded by name);
  * inference: policy steps per second on CPU (batch 1, as in a rollout);
  * evaluate: policy rollouts per second, one env at a time (the code before batching)
    against `evaluate.batch_size` robots stepped together with one batched forward
    pass, on the same fixed evaluation set in the same run (ratio), and whether
    every rollout came out the same.

Prints a table and writes benchmarks/results/policy_bench[_<tag>].json.

Usage:
    python benchmarks/policy_bench.py                 # full (a few minutes)
    python benchmarks/policy_bench.py --quick         # smaller samples
    python benchmarks/policy_bench.py --only train    # one section
    python benchmarks/policy_bench.py --only evaluate --checkpoint runs/loop-quick/base/policy/model.pt
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        info["load_avg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def bench_expert(episodes: int) -> list[dict]:
    from nav_policy.config import ExpertConfig, MPCConfig, load_nav_config
    from nav_policy.evaluate import ExpertController
    from sim.env import IndoorNavEnv

    cfg = load_nav_config(REPO / "configs" / "nav" / "default.yaml")
    rows = []
    for family in ("office_a", "office_b"):
        for solver, fallback in (("fatrop", "ipopt"), ("ipopt", "pure_pursuit")):
            ecfg = ExpertConfig(**{**cfg.expert.model_dump(),
                                   "mpc": MPCConfig(**{**cfg.expert.mpc.model_dump(),
                                                       "solver": solver, "fallback": fallback})})
            c = cfg.model_copy(update={"expert": ecfg})
            sim_cfg = c.sim
            env = IndoorNavEnv(sim_cfg)
            ctrl = ExpertController(c)
            outcomes, t0, steps = [], time.perf_counter(), 0
            for i in range(episodes):
                obs, info = env.reset(seed=10_000 + i, options={"family": family})
                ctrl.reset(env)
                while True:
                    obs, _, term, trunc, info = env.step(ctrl.act(obs, env))
                    steps += 1
                    if term or trunc:
                        break
                outcomes.append(info["outcome"])
            wall = time.perf_counter() - t0
            times = np.asarray(ctrl.expert.solve_times_s) * 1e3
            counts = dict(ctrl.expert.counts)
            rows.append({
                "section": "expert", "family": family, "solver": solver, "episodes": episodes,
                "success_rate": outcomes.count("success") / episodes,
                "solve_ms_median": float(np.median(times)),
                "solve_ms_p95": float(np.percentile(times, 95)),
                "solve_ms_max": float(times.max()),
                "primary_failure_rate": counts.get("primary_failures", 0) / max(counts["steps"], 1),
                "steps_per_s_with_render": steps / wall, "controllers": counts,
            })
            print(_fmt(rows[-1]), flush=True)
    return rows


def bench_collect(budget: int, workers: list[int]) -> list[dict]:
    from nav_policy.collect import collect
    from nav_policy.config import load_nav_config

    rows = []
    for w in workers:
        cfg = load_nav_config(REPO / "configs" / "nav" / "default.yaml",
                              {"collect.budget_samples": budget, "collect.num_workers": w,
                               "collect.samples_per_shard": max(budget // (2 * w), 100)})
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            m = collect(cfg, Path(d) / "data", progress=False)
            wall = time.perf_counter() - t0
        rows.append({"section": "collect", "workers": w, "samples": m["num_samples"],
                     "seconds": wall, "samples_per_s": m["num_samples"] / wall})
        print(_fmt(rows[-1]), flush=True)
    return rows


def bench_train(samples: int, epochs: int) -> list[dict]:
    import torch

    from nav_policy.config import ModelConfig
    from nav_policy.model import NavPolicyNet, RobotLimits

    limits = RobotLimits(0.0, 1.0, 1.5, 1.5, 0.1)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, (samples, 64, 64, 3), dtype=np.uint8))
    vec = torch.from_numpy(rng.normal(size=(samples, 5)).astype(np.float32))
    tgt = torch.from_numpy(rng.uniform(-1, 1, (samples, 2)).astype(np.float32))
    setups = [("cpu", 1), ("cpu", os.cpu_count() or 1)]
    if torch.cuda.is_available():
        setups.append(("cuda", 0))
    rows = []
    for device, threads in setups:
        if device == "cpu":
            torch.set_num_threads(threads)
        torch.manual_seed(0)
        net = NavPolicyNet(ModelConfig(), (64, 64), limits).to(device)
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        im, v, t = images.to(device), vec.to(device), tgt.to(device)
        seen = 0
        for epoch in range(epochs + 1):  # first epoch is warm-up
            if epoch == 1:
                if device == "cuda":
                    torch.cuda.synchronize()
                t0, seen = time.perf_counter(), 0
            for s in range(0, samples, 128):
                x = im[s: s + 128].permute(0, 3, 1, 2).float().div(255)
                loss = ((net(x, v[s: s + 128]) - t[s: s + 128]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                seen += len(x)
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        rows.append({"section": "train", "device": device if device == "cpu" else
                     torch.cuda.get_device_name(0), "threads": threads, "batch_size": 128,
                     "num_parameters": net.num_parameters, "samples_per_s": seen / wall})
        print(_fmt(rows[-1]), flush=True)
    # Inference as in a rollout: batch 1 on CPU, one thread.
    torch.set_num_threads(1)
    net = NavPolicyNet(ModelConfig(), (64, 64), limits).eval()
    x, v1 = images[:1].permute(0, 3, 1, 2).float().div(255), vec[:1]
    with torch.no_grad():
        for _ in range(20):
            net(x, v1)
        t0 = time.perf_counter()
        for _ in range(500):
            net(x, v1)
    rows.append({"section": "inference", "device": "cpu", "threads": 1, "batch_size": 1,
                 "steps_per_s": 500 / (time.perf_counter() - t0)})
    print(_fmt(rows[-1]), flush=True)
    return rows


def bench_evaluate(rollouts: int, batch_sizes: list[int], checkpoint: str | None) -> list[dict]:
    """Evaluation rollouts per second by batch size, 1 worker, on the `quick` loop's sim."""
    from common import read_jsonl
    from loop.config import load_loop_config
    from nav_policy.evaluate import evaluate_checkpoint
    from nav_policy.model import NavPolicyNet, RobotLimits, save_checkpoint

    cfg = load_loop_config("quick").nav
    tmp = Path(tempfile.mkdtemp(prefix="evalbench-"))
    if checkpoint is None:  # an untrained net on the route-follower prior: real rollouts
        import torch

        torch.manual_seed(0)
        cam = cfg.sim.camera
        net = NavPolicyNet(cfg.model, (cam.height_px, cam.width_px), RobotLimits.from_sim(cfg.sim))
        checkpoint = str(tmp / "untrained.pt")
        save_checkpoint(checkpoint, net)
    rows, reference, base_rate = [], None, None
    for bs in batch_sizes:
        c = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={
            "num_rollouts": rollouts, "batch_size": bs, "num_workers": 1,
            "save_failures": False, "family": "office_a"})})
        t0 = time.perf_counter()
        evaluate_checkpoint(c, checkpoint, tmp / f"bs{bs}", progress=False)
        dt = time.perf_counter() - t0
        got = [(r["index"], r["outcome"], r["steps"]) for r in sorted(
            read_jsonl(tmp / f"bs{bs}" / "rollouts.jsonl"), key=lambda r: r["index"])]
        reference = reference or got
        rate = rollouts / dt
        base_rate = base_rate or rate
        rows.append({"section": "evaluate", "batch_size": bs, "rollouts": rollouts,
                     "steps": sum(g[2] for g in got), "rollouts_per_s": rate,
                     "ratio_vs_batch_1": rate / base_rate, "same_rollouts": got == reference,
                     "checkpoint": Path(checkpoint).name})
        print(_fmt(rows[-1]), flush=True)
    return rows


def _fmt(row: dict) -> str:
    parts = []
    for k, v in row.items():
        if isinstance(v, float):
            parts.append(f"{k}={v:.3g}")
        elif not isinstance(v, dict):
            parts.append(f"{k}={v}")
    return "  ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller samples (about a minute)")
    ap.add_argument("--only", choices=["expert", "collect", "train", "evaluate"], default=None)
    ap.add_argument("--checkpoint", default=None,
                    help="policy for the evaluate section (default: an untrained net)")
    ap.add_argument("--tag", default="", help="suffix of the results file (e.g. the device kind)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    results = {"machine": _machine(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
               "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": []}
    if args.only in (None, "expert"):
        results["rows"] += bench_expert(5 if args.quick else 25)
    if args.only in (None, "collect"):
        results["rows"] += bench_collect(1000 if args.quick else 4000, [1, 2])
    if args.only in (None, "train"):
        results["rows"] += bench_train(1024 if args.quick else 4096, 1 if args.quick else 2)
    if args.only in (None, "evaluate"):
        results["rows"] += bench_evaluate(16 if args.quick else 48, [1, 8, 16], args.checkpoint)
    out = REPO / "benchmarks" / "results" / f"policy_bench{'_' + args.tag if args.tag else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from common import atomic_write_json

    atomic_write_json(out, results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

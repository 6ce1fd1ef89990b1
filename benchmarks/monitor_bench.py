"""Runtime-monitor speed: decisions per second and CPU per decision.

Measures, on this machine:
  * frame-classifier monitors (supervised / distilled checkpoints): single-frame
    decisions (batch 1, as in the control loop) with 1 torch thread, and a batch
    of 64 (as in an offline evaluation);
  * scene descriptions (the model monitors' input): seconds per decision step;
  * a model monitor, when --base-url is given: uncached decisions one at a time
    (the call cache is off), wall latency per decision.

Prints a table and writes benchmarks/results/monitor_bench.json with the machine's load.

Usage:
    python benchmarks/monitor_bench.py --episodes EPISODES --checkpoint supervised=ckpt.pt \\
        --checkpoint distilled=d.pt [--base-url http://127.0.0.1:8000/v1 --model NAME \\
        --taxonomy taxonomy.json --llm-decisions 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "load_avg_at_start": list(os.getloadavg()),
            "note": "shared machine; other work ran at the same time"}


def bench_cnn(name: str, checkpoint: str, episodes: list, n: int) -> dict:
    from failtax.monitor.cnn import CNNMonitor, frame_array
    from failtax.monitor.config import MonitorConfig

    cfg = MonitorConfig(kind="cnn", checkpoint_path=checkpoint)
    mon = CNNMonitor(cfg)
    frames = [ep.load_frame(i) for ep in episodes for i in range(0, ep.num_frames, 3)][:n]
    mon.decide_frame(frames[0], 0, 0.0)  # warm up
    w0, c0 = time.perf_counter(), time.process_time()
    for k, rgb in enumerate(frames):
        mon.decide_frame(rgb, k, 0.0)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    batch = np.stack([frame_array(episodes[0], 0, mon.cnn.image_px)] * 64)
    w1 = time.perf_counter()
    for _ in range(5):
        mon.predict(batch)
    batched = 5 * 64 / (time.perf_counter() - w1)
    params = sum(p.numel() for p in mon.net.parameters())
    return {"monitor": name, "decisions": len(frames), "threads": 1, "parameters": params,
            "decisions_per_s": len(frames) / wall, "cpu_ms_per_decision": 1000 * cpu / len(frames),
            "decisions_per_s_batch64": batched}


def bench_describe(episodes: list) -> dict:
    from failtax.monitor.config import MonitorConfig
    from failtax.monitor.observe import decision_points, describe_points

    cfg = MonitorConfig()
    n, w0, c0 = 0, time.perf_counter(), time.process_time()
    for ep in episodes:
        pts = decision_points(ep, cfg)
        describe_points(ep, pts, cfg.scene)
        n += len(pts)
    return {"decisions": n, "s_per_decision": (time.perf_counter() - w0) / n,
            "cpu_s_per_decision": (time.process_time() - c0) / n}


def bench_llm(base_url: str, model: str, taxonomy: str | None, episodes: list, n: int) -> list[dict]:
    from failtax.monitor import make_monitor
    from failtax.monitor.config import MonitorConfig
    from failtax.monitor.observe import decision_points, describe_points, window_text
    from serving import make_backend
    from serving.config import BackendConfig

    backend = make_backend(BackendConfig(kind="openai", base_url=base_url, model=model, cache=False))
    rows = []
    for variant in ("taxonomy", "nocontext", "llm_ad"):
        if variant == "taxonomy" and not taxonomy:
            continue
        cfg = MonitorConfig(variant=variant, taxonomy_path=taxonomy)
        mon = make_monitor(cfg, backend)
        windows = []
        for ep in episodes:
            pts = decision_points(ep, cfg)
            describe_points(ep, pts, cfg.scene)
            windows += [window_text(pts, i, cfg.window_decisions) for i in range(len(pts))]
        windows = windows[:n]

        async def run(ws=windows, m=mon):
            out = []
            for i, w in enumerate(ws):
                t0 = time.perf_counter()
                d = await m.decide(w, i, 0.0, 0.5)
                out.append((time.perf_counter() - t0, d.source == "model"))
            return out

        res = asyncio.run(run())
        lat = [r[0] for r in res]
        rows.append({"monitor": variant, "decisions": len(res), "parsed": sum(r[1] for r in res),
                     "latency_s_median": float(np.median(lat)), "decisions_per_s": len(lat) / sum(lat)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", required=True, help="an episode folder (frames + depth)")
    ap.add_argument("--checkpoint", action="append", default=[], help="NAME=PATH of a cnn monitor")
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--base-url")
    ap.add_argument("--model")
    ap.add_argument("--taxonomy")
    ap.add_argument("--llm-decisions", type=int, default=20)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "monitor_bench.json"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from failtax.monitor.config import MonitorConfig
    from failtax.monitor.evaluate import select_episodes

    episodes, _ = select_episodes(args.episodes, MonitorConfig(max_episodes=10))
    result = {"machine": _machine(), "cnn": [], "describe": bench_describe(episodes[:4]), "llm": []}
    for item in args.checkpoint:
        name, _, path = item.partition("=")
        result["cnn"].append(bench_cnn(name, path, episodes, args.frames))
    if args.base_url:
        result["llm"] = bench_llm(args.base_url, args.model, args.taxonomy, episodes[:4],
                                  args.llm_decisions)
    result["machine"]["load_avg_at_end"] = list(os.getloadavg())
    print(f"{'monitor':<14}{'decisions':>10}{'dec/s (1 thread)':>18}{'CPU ms/dec':>12}{'dec/s batch64':>15}")
    for r in result["cnn"]:
        print(f"{r['monitor']:<14}{r['decisions']:>10}{r['decisions_per_s']:>18.1f}"
              f"{r['cpu_ms_per_decision']:>12.2f}{r['decisions_per_s_batch64']:>15.1f}")
    d = result["describe"]
    print(f"scene descriptions: {1000 * d['s_per_decision']:.1f} ms per decision step")
    for r in result["llm"]:
        print(f"{r['monitor']:<14}{r['decisions']:>10}{r['decisions_per_s']:>18.2f}  "
              f"median latency {r['latency_s_median']:.2f} s, parsed {r['parsed']}/{r['decisions']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Discovery at fleet scale on CPU: 10k and 100k explanations, 1M extrapolated.

Runs `cluster-then-name` (embeddings included: local MiniLM, every text really
encoded) followed by the default assignment, each size in a fresh process, and
records wall time, peak RSS of that process, and model calls per explanation.

What is NOT measured: the model's speed. The naming calls are answered by a
replay backend in this file (a deterministic answer built from the prompt's
keywords, no model runs): the number of calls is what the strategy asks for,
their latency is zero here. With a real model, add calls x seconds per call
(docs/SCALE.md): naming makes one call per cluster, whatever the number of
explanations.

The explanations are SYNTHETIC: template sentences over the simulator's hazard
causes (tests/failtax/synthetic.py), each given a distinct logged detail (time
into the run, distance to goal, speed) so that every text is encoded: the
embedder's cache would otherwise make repeated template sentences free.

    nice -n 10 python benchmarks/scale_bench.py                 # 10k and 100k
    python benchmarks/scale_bench.py --sizes 2000 --out /tmp/x.json

Prints a table and writes benchmarks/results/scale_bench.json (with the load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "tests" / "failtax"))  # the synthetic set lives with the tests


class ReplayNamer:
    """Answers naming calls without a model: name and keywords from the prompt's
    keyword line. Counts the calls. Not a model: it keeps model speed out of the
    measurement (see the module docstring)."""

    model_id = "replay-namer"

    def __init__(self) -> None:
        self.calls = 0

    async def complete_json(self, messages, schema, *, max_tokens, temperature=0.0, seed=0):
        from serving.protocol import CallResult

        self.calls += 1
        text = messages[-1]["content"]
        m = re.search(r"(?im)^.*keywords?[^:\n]*:\s*(.+)$", text)
        words = [w.strip() for w in (m.group(1) if m else "").split(",") if w.strip()][:4] or ["unnamed"]
        answer = {
            "name": " ".join(w.title() for w in words[:2])[:40],
            "description": f"failures mentioning {', '.join(words[:3])}"[:150],
            "keywords": words,
        }
        return CallResult(json.dumps(answer), self.model_id, f"replay-{self.calls}", parsed=answer)

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=0):
        raise NotImplementedError("cluster-then-name only asks for JSON")

    async def complete_choice(self, messages, choices, *, temperature=0.0, seed=0):
        raise NotImplementedError("the default assignment makes no model call")


def make_explanations(n: int, seed: int = 1234):
    """`n` synthetic explanations, each with a distinct logged detail appended."""
    from synthetic import make_synthetic_explanations

    from common import derive_rng

    explanations, _ = make_synthetic_explanations(n, seed=seed)
    rng = derive_rng(seed, "scale-details")
    t = rng.uniform(2.0, 180.0, n)
    d = rng.uniform(0.3, 25.0, n)
    v = rng.uniform(0.1, 1.2, n)
    for i, e in enumerate(explanations):
        # written like a reasoner's output (the batch path's input), so discovery's writer
        # invariance (for human reports) stays off and the detail is not stripped as boilerplate
        e.input_mode = "scene_text"
        e.failure_reason = (
            f"{e.failure_reason} Logged {t[i]:.1f} s into run {i}, {d[i]:.2f} m from the goal "
            f"at {v[i]:.2f} m/s."
        )
    return explanations


def one_size(n: int) -> dict[str, Any]:
    """Discovery + assignment on `n` explanations in this process; the numbers."""
    import resource

    import psutil

    from failtax.assignment import AssignmentConfig, assign
    from failtax.discovery import DiscoveryConfig, make_strategy

    def cpu_s() -> float:  # this process's CPU time, all threads: robust to a shared machine's load
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    c0 = cpu_s()
    t0 = time.perf_counter()
    explanations = make_explanations(n)
    t_make = time.perf_counter() - t0
    namer = ReplayNamer()
    strategy = make_strategy(DiscoveryConfig(seed=0))
    t1 = time.perf_counter()
    taxonomy = asyncio.run(strategy.discover(explanations, namer))
    t_discover = time.perf_counter() - t1
    t2 = time.perf_counter()
    asyncio.run(assign(explanations, taxonomy, None, AssignmentConfig()))
    t_assign = time.perf_counter() - t2
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": round(cpu_s() - c0, 1),
        "explanations": n,
        "distinct_texts": len({e.failure_reason for e in explanations}),
        "embedded_texts": getattr(strategy.embedder, "encoded_texts", None),
        "generate_s": round(t_make, 1),
        "discover_wall_s": round(t_discover, 1),
        "assign_wall_s": round(t_assign, 1),
        "total_wall_s": round(t_make + t_discover + t_assign, 1),
        "peak_rss_mib": round(ru.ru_maxrss / 1024, 1),
        "rss_at_end_mib": round(psutil.Process().memory_info().rss / 2**20, 1),
        "modes": len(taxonomy.modes),
        "k_chosen_by": taxonomy.notes.get("k_chosen_by"),
        "model_calls": namer.calls,
        "model_calls_per_explanation": namer.calls / n,
        "assign_method": taxonomy.notes.get("assignment", {}).get("method"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: one size, JSON on stdout
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale_bench.json"))
    args = p.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(one_size(args.one)), flush=True)
        return 0
    started = time.time()
    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/scale_bench.py", *(argv or sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "load_avg_at_start": list(os.getloadavg()),
                    "note": "shared machine; other work ran at the same time"},
        "what": "cluster-then-name discovery (MiniLM embeddings, TF-IDF, k-means with a sampled "
                "silhouette search, naming, merging) + default assignment",
        "model_note": "naming calls answered by a replay backend (no model): model speed is not "
                      "measured, only the number of calls",
        "data_note": "synthetic template explanations, each with a distinct logged detail",
        "runs": [],
    }
    out = Path(args.out)
    for n in args.sizes:  # a fresh process per size: peak RSS is that size's own
        proc = subprocess.run([sys.executable, __file__, "--one", str(n)], check=False, capture_output=True, text=True,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"size {n} failed (exit {proc.returncode})")
        result["runs"].append(json.loads(line[len("RESULT "):]))
        result["machine"]["load_avg_at_end"] = list(os.getloadavg())
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    runs = result["runs"]
    if len(runs) >= 2:
        a, b = runs[0], runs[-1]
        size_ratio = b["explanations"] / a["explanations"]
        time_ratio = b["total_wall_s"] / max(a["total_wall_s"], 1e-9)
        cpu_ratio = b["cpu_s"] / max(a["cpu_s"], 1e-9)
        # time ~ n^e between the two sizes; e near 1 is linear
        import math

        exponent = math.log(time_ratio) / math.log(size_ratio)
        cpu_exponent = math.log(cpu_ratio) / math.log(size_ratio)
        per_expl_s = b["total_wall_s"] / b["explanations"]
        mem_per_expl = (b["peak_rss_mib"] - a["peak_rss_mib"]) / (b["explanations"] - a["explanations"])
        result["growth"] = {
            "size_ratio": size_ratio,
            "time_ratio": round(time_ratio, 2),
            "time_exponent": round(exponent, 3),
            "cpu_ratio": round(cpu_ratio, 2),
            "cpu_exponent": round(cpu_exponent, 3),
            "peak_rss_ratio": round(b["peak_rss_mib"] / a["peak_rss_mib"], 2),
        }
        million = 1_000_000
        result["extrapolated_1m"] = {
            "method": "linear in n from the largest size (time) and the RSS slope between the sizes",
            "total_wall_h": round(per_expl_s * million / 3600, 2),
            "cpu_h": round(b["cpu_s"] / b["explanations"] * million / 3600, 2),
            "total_wall_h_at_measured_exponent": round(
                b["total_wall_s"] * (million / b["explanations"]) ** exponent / 3600, 2),
            "peak_rss_gib": round((b["peak_rss_mib"] + mem_per_expl * (million - b["explanations"])) / 1024, 2),
            "model_calls": b["model_calls"],
        }
    result["total_wall_s"] = round(time.time() - started, 1)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"{'n':>8} {'discover s':>11} {'assign s':>9} {'total s':>8} {'cpu s':>8} {'peak MiB':>9} {'calls':>6} "
          f"{'calls/expl':>11}")
    for r in runs:
        print(f"{r['explanations']:>8} {r['discover_wall_s']:>11} {r['assign_wall_s']:>9} {r['total_wall_s']:>8} "
              f"{r['cpu_s']:>8} "
              f"{r['peak_rss_mib']:>9} {r['model_calls']:>6} {r['model_calls_per_explanation']:>11.2e}")
    if "growth" in result:
        print("growth:", result["growth"])
        print("1M extrapolated:", result["extrapolated_1m"])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

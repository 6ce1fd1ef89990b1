"""Does a batch run give the same taxonomy as the all-live run on the same model and seed?

Runs the pipeline twice on the same episodes, model, recipe and seed, each with its own
call cache:
- live: `backend.kind: embedded` (a vLLM server this process starts; the client keeps
  up to `backend.concurrency` requests in flight);
- batch: export → vLLM's batch runner (`run_batch`, every request of a shard at once)
  → import, round after round, then `finish` (zero live calls).
Then compares every answer both runs asked for (same custom_id = same call), and the
taxonomies, assignments and explanations (failtax.batch.parity).

    failtax sim rollout --out eps -n 8 --seed 100 --no-map --policy blind_follower
    python benchmarks/batch_parity_bench.py eps --limit 0 --seed 0   # --seed 1, --seed 2: replicates
    python benchmarks/batch_parity_bench.py eps --limit 8 --recipe qwen2.5-coder-1.5b

Prints a table and adds the run to benchmarks/results/batch_parity_bench.json as one
replicate (with the machine's load; a rerun of the same seed replaces it), with the
totals over all replicates. Needs the vLLM server environment
(scripts/setup_server_env.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from failtax.batch import answer_here, finish
from failtax.batch.parity import call_agreement, run_agreement, summarize
from failtax.config import load_config
from failtax.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def limited(episodes: Path, limit: int | None, work: Path) -> Path:
    """The first `limit` episode folders (links), or the folder itself."""
    if not limit:
        return episodes
    chosen = sorted(p for p in episodes.iterdir() if (p / "meta.json").is_file())[:limit]
    out = work / "episodes"
    out.mkdir(parents=True, exist_ok=True)
    for p in chosen:
        (out / p.name).symlink_to(p.resolve())
    return out


def write_replicate(out: Path, result: dict) -> None:
    """Add `result` to the replicates in `out` (replacing one of the same recipe, seed,
    stages and overrides) and total them: answers compared and differing, runs whose
    taxonomy differs."""
    same = lambda r: [r[k] for k in ("recipe", "seed", "stages", "overrides")]
    old = json.loads(out.read_text()).get("replicates", []) if out.is_file() else []
    reps = [r for r in old if same(r) != same(result)] + [result]
    total = {
        "replicates": len(reps),
        "answers_compared": sum(r["calls"]["common"] for r in reps),
        "answers_differing": sum(r["calls"]["different"] for r in reps),
        "calls_in_one_run_only": sum(r["calls"]["only_a"] + r["calls"]["only_b"] for r in reps),
        "taxonomies_differing": sum(not r["runs"]["same_taxonomy"] for r in reps),
        "assignments_differing": sum(r["runs"]["assignments_differing"] for r in reps),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"total": total, "replicates": sorted(reps, key=lambda r: r["seed"])},
                              indent=1, sort_keys=True) + "\n")
    print("all replicates:", total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("episodes", type=Path)
    parser.add_argument("--limit", type=int, default=8, help="first N episodes (0: all)")
    parser.add_argument("--recipe", default="embedded", help="the model (an embedded recipe)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default="downsample,reason,discover,assign")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config overrides")
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=RESULTS / "batch_parity_bench.json")
    args = parser.parse_args()

    from common import parse_sets

    work = args.work or Path(tempfile.mkdtemp(prefix="batch-parity-"))
    episodes = limited(args.episodes, args.limit, work)
    base = {
        "stages": args.stages.split(","),
        "reasoning.input_mode": "scene_text",
        "backend.kind": "embedded",
        "backend.recipe": args.recipe,
        "assignment.method": "llm",
        "seed": args.seed,
        **parse_sets(args.sets),
    }
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    live_cfg = load_config(None, {**base, "cache_dir": str(work / "live-cache")})
    live = run_pipeline(live_cfg, work / "live", episodes=episodes, progress=False)
    live_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    batch_cfg = load_config(None, {**base, "cache_dir": str(work / "batch-cache")})
    rounds = asyncio.run(answer_here(batch_cfg, work / "batch", episodes=episodes, shard_size=1000, progress=False))
    done = asyncio.run(finish(batch_cfg, work / "batch", episodes=episodes, progress=False))
    batch_s = time.perf_counter() - t0

    calls = call_agreement(work / "live-cache", work / "batch-cache")
    runs = run_agreement(work / "live", work / "batch")
    result = {
        "recipe": args.recipe, "seed": args.seed, "episode_folders": len(list(episodes.iterdir())),
        "stages": base["stages"], "overrides": parse_sets(args.sets),
        "live": {"wall_s": round(live_s, 1), "model_calls": live["model_calls"]},
        "batch": {"wall_s": round(batch_s, 1), "rounds": [(r["export"]["stage"], r["export"]["requests"])
                                                        for r in rounds],
                  "finish_model_calls": done["model_calls"], "unanswered": done["unanswered_calls"]},
        "calls": calls, "runs": runs, "summary": summarize(calls, runs),
        "machine": {"cpus": os.cpu_count(), "load_start": load0, "load_end": os.getloadavg()},
    }
    print(f"| {'':22} | live | batch |\n|---|---|---|")
    print(f"| wall s                 | {live_s:.0f} | {batch_s:.0f} |")
    print(f"| model calls            | {live['model_calls'].get('calls')} | "
          f"{sum(r for _, r in result['batch']['rounds'])} in {len(rounds)} rounds |")
    print(f"| modes                  | {runs['names_a']} | {runs['names_b']} |")
    print(result["summary"])
    for d in calls["examples"]:
        print(f"  {d['method']} {d['key'][:8]}:\n    live : {d['a']!r}\n    batch: {d['b']!r}")
    write_replicate(args.out, result)
    print(f"wrote {args.out}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

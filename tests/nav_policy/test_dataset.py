"""Dataset shards, manifests and resumable collection (including a real kill)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nav_policy.collect import collect
from nav_policy.dataset import (
    ARRAY_KEYS,
    list_shards,
    load_datasets,
    read_manifest,
    read_shard,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "nav" / "tiny.yaml"


def test_manifest_cuts_last_shard_to_budget(tmp_path, synthetic_dataset):
    root = synthetic_dataset(tmp_path / "d", num_samples=100)
    m = write_manifest(root, {"arm": "x"}, {0: 100}, 70)
    assert m["complete"] and m["num_samples"] == 70
    assert len(load_datasets([root])) == 70
    m = write_manifest(root, {"arm": "x"}, {0: 100}, 150)
    assert not m["complete"]
    with pytest.raises(ValueError, match="incomplete"):
        load_datasets([root])


def test_corrupt_shard_is_reported(tmp_path, synthetic_dataset):
    root = synthetic_dataset(tmp_path / "d")
    path = list_shards(root)[0]
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="unreadable"):
        read_shard(path)


def _cfg(tiny_cfg, budget):
    return tiny_cfg.model_copy(update={"collect": tiny_cfg.collect.model_copy(update={
        "budget_samples": budget, "num_workers": 1})})


def test_collection_resumes_after_kill(tmp_path, tiny_cfg):
    budget = 300  # two shards of >= 150 samples
    ref = tmp_path / "ref"
    collect(_cfg(tiny_cfg, budget), ref, progress=False)
    m_ref = read_manifest(ref)
    assert m_ref["complete"] and m_ref["num_samples"] == budget

    # Start the same collection in a separate process and kill it after its first shard.
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loop.cli", "nav", "collect", "--config", str(TINY),
         "--out", str(out), "--budget", str(budget), "--workers", "1"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list_shards(out) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    first = read_manifest(out)
    assert 0 in list_shards(out)
    assert first is None or not first["complete"] or proc.returncode == 0

    # Resume: only the missing shard is produced, and the data equals the uninterrupted run.
    before = {i: p.stat().st_mtime_ns for i, p in list_shards(out).items()}
    collect(_cfg(tiny_cfg, budget), out, progress=False)
    m = read_manifest(out)
    assert m["complete"] and m["num_samples"] == budget
    assert list_shards(out)[0].stat().st_mtime_ns == before[0]  # shard 0 not redone
    for i in list_shards(ref):
        a, b = read_shard(list_shards(ref)[i]), read_shard(list_shards(out)[i])
        for k in ARRAY_KEYS:
            np.testing.assert_array_equal(a.arrays[k], b.arrays[k])
    assert [s["index"] for s in m["shards"]] == [s["index"] for s in m_ref["shards"]]


def test_budget_is_exact_and_can_grow(tmp_path, tiny_cfg):
    out = tmp_path / "d"
    collect(_cfg(tiny_cfg, 200), out, progress=False)
    assert read_manifest(out)["num_samples"] == 200
    collect(_cfg(tiny_cfg, 320), out, progress=False)  # same config, bigger budget: reuse shards
    m = read_manifest(out)
    assert m["num_samples"] == 320 and m["complete"]
    data = load_datasets([out])
    assert len(data) == 320
    assert data.image.dtype == np.uint8 and data.image.shape[1:] == (64, 64, 3)
    assert np.all(np.abs(data.action[:, 0]) <= 1.5 + 1e-6)
    json.dumps(m)  # manifest is plain JSON


def test_other_config_refuses_existing_folder(tmp_path, tiny_cfg):
    out = tmp_path / "d"
    collect(_cfg(tiny_cfg, 150), out, progress=False)
    other = _cfg(tiny_cfg, 150)
    other = other.model_copy(update={"collect": other.collect.model_copy(update={"seed": 5})})
    with pytest.raises(ValueError, match="different config"):
        collect(other, out, progress=False)


@pytest.mark.parametrize("intent", [True, False])
def test_noisy_collection_labels_from_the_experts_intent(tiny_cfg, intent):
    """With DART noise the expert carries on from the turn rate it asked for (or not)."""
    from nav_policy.collect import _run_episode, _worker_state

    cfg = tiny_cfg.model_copy(deep=True)
    cfg.collect.action_noise_std = (0.3, 0.8)
    cfg.collect.intent_labels = intent
    ws = dict(_worker_state(cfg))
    seen: list[np.ndarray] = []

    class Recording:
        def __init__(self, expert):
            self.expert = expert

        def reset(self, *a):
            self.expert.reset(*a)

        def act(self, state):
            seen.append(np.array(state))
            return self.expert.act(state)

    ws["expert"] = Recording(ws["expert"])
    rows, _ = _run_episode(cfg, ws, 123, {})
    assert len(rows["action"]) > 5
    asked = np.array([a[1] for a in rows["action"][:-1]])
    carried = np.array([s[4] for s in seen[1:]])
    # the executed turn rate is the asked one plus noise of std 0.8
    assert np.allclose(carried, asked, atol=1e-6) == intent

"""Tiny collect -> train -> evaluate on CPU through the CLI, plus targeted collection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from nav_policy.cli import nav
from nav_policy.collect import training_seed
from nav_policy.config import EVAL_SEED_OFFSET
from nav_policy.dataset import read_manifest, read_shard
from nav_policy.evaluate import eval_seed
from nav_policy.regions import parse_regions

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "nav" / "tiny.yaml")


def _ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_collect_train_evaluate(tmp_path):
    runner = CliRunner()
    data, run, ev = tmp_path / "data", tmp_path / "run", tmp_path / "eval"
    _ok(runner.invoke(nav, ["collect", "--config", TINY, "--out", str(data)]))
    assert read_manifest(data)["complete"]
    _ok(runner.invoke(nav, ["train", "--config", TINY, "--data", str(data), "--out", str(run)]))
    assert (run / "model.pt").exists()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "train/loss" in metrics[-1] and "val/loss" in metrics[-1]
    res = _ok(runner.invoke(nav, ["evaluate", "--config", TINY, "--checkpoint",
                                  str(run / "model.pt"), "--out", str(ev)]))
    assert "failure rate" in res.output
    s = json.loads((ev / "summary.json").read_text())
    assert s["eval/num_rollouts"] == 3
    lo, hi = s["eval/failure_rate_ci95"]
    assert lo <= s["eval/failure_rate"] <= hi
    assert s["eval/failures"] == sum(s["eval/failures_by_cause"].values())
    # Failure episodes are written in the episode format, with hidden ground truth.
    assert len(s["failure_episodes"]) == s["eval/failures"]
    for ep in s["failure_episodes"]:
        meta = json.loads((ev / "episodes" / ep / "meta.json").read_text())
        assert meta["outcome"] == "collision" and meta["failure_step"] is not None
        truth = json.loads((ev / "episodes" / ep / "ground_truth.json").read_text())
        assert truth["cause_class"] in s["eval/failures_by_cause"]
    # Re-running resumes: nothing to do, same summary.
    _ok(runner.invoke(nav, ["evaluate", "--config", TINY, "--checkpoint", str(run / "model.pt"),
                            "--out", str(ev)]))
    assert json.loads((ev / "summary.json").read_text())["eval/failures"] == s["eval/failures"]
    # The policy steered by the floor-plan route point the dataset recorded.
    shard = read_shard(next((data / "shards").glob("*.npz")))
    assert shard.arrays["route"].shape == shard.arrays["goal"].shape
    assert (abs(shard.arrays["route"]).sum(1) > 0).all()


def test_camera_blind_baseline_runs_on_the_same_set(tmp_path):
    res = _ok(CliRunner().invoke(nav, ["baseline", "--config", TINY, "--out",
                                       str(tmp_path / "b"), "--rollouts", "3"]))
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["controller"] == "route_pursuit" and s["eval/num_rollouts"] == 3, res.output
    assert s["eval/success_rate"] + s["eval/failure_rate"] + s["eval/timeout_rate"] == \
        pytest.approx(1.0)


def test_expert_check_succeeds(tmp_path):
    res = _ok(CliRunner().invoke(nav, ["expert-check", "--config", TINY, "--out",
                                       str(tmp_path / "x"), "--rollouts", "3"]))
    s = json.loads((tmp_path / "x" / "summary.json").read_text())
    assert s["eval/success_rate"] == 1.0, res.output
    assert s["expert/solve_ms_median"] > 0


def test_targeted_collection_passes_near_regions(tmp_path):
    regions = [{"region_id": "glass", "causes": ["glass"], "share": 1.0, "why": "semantic_match"}]
    path = tmp_path / "regions.json"
    path.write_text(json.dumps({"schema_version": 1, "regions": regions}))
    out = tmp_path / "t"
    _ok(CliRunner().invoke(nav, ["collect", "--config", TINY, "--out", str(out), "--arm",
                                 "targeted", "--regions", str(path), "--budget", "150"]))
    m = read_manifest(out)
    assert m["complete"] and m["arm"] == "targeted" and m["regions_hash"]
    eps = read_shard(out / m["shards"][0]["file"], load_arrays=False).episodes
    hits = [e for e in eps if e.get("region_id") == "glass"]
    assert hits and all(e["closest_approach_m"] <= 1.0 for e in hits)


def test_targeted_collection_replays_logged_starts(tmp_path):
    import numpy as np

    from nav_policy.config import load_nav_config
    from sim.env import IndoorNavEnv

    env = IndoorNavEnv(load_nav_config(TINY).sim)
    env.reset(seed=5, options={"family": "office_a", "building_seed": 3})
    start = {"xy": env.state[:2].tolist(), "yaw_rad": float(env.state[2]) + 0.3,
             "goal_xy": env.goal_xy.tolist()}
    regions = [{"region_id": "site", "building_seed": 3, "starts": [start],
                "areas": [{"kind": "circle", "points": [start["xy"]], "radius_m": 0.8}]}]
    path = tmp_path / "regions.json"
    path.write_text(json.dumps({"schema_version": 1, "regions": regions}))
    out = tmp_path / "t"
    _ok(CliRunner().invoke(nav, [
        "collect", "--config", TINY, "--out", str(out), "--arm", "targeted", "--regions",
        str(path), "--budget", "12", "--set", "collect.samples_per_shard=12",
        "--set", "collect.replay_share=1", "--set", "collect.replay_max_steps=4"]))
    m = read_manifest(out)
    shard = read_shard(out / m["shards"][0]["file"])
    assert [e["start"] for e in shard.episodes] == ["replay"] * 3
    assert all(e["steps"] <= 4 for e in shard.episodes)
    first = shard.arrays["pose"][shard.arrays["step"] == 0]
    np.testing.assert_allclose(first[:, :2], [start["xy"]] * 3, atol=1e-5)
    np.testing.assert_allclose(first[:, 2], start["yaw_rad"], atol=1e-5)
    # With a coverage share, some episodes are drawn as the uniform arm draws them.
    mixed = tmp_path / "mixed"
    _ok(CliRunner().invoke(nav, [
        "collect", "--config", TINY, "--out", str(mixed), "--arm", "targeted", "--regions",
        str(path), "--budget", "40", "--set", "collect.samples_per_shard=40",
        "--set", "collect.replay_share=1", "--set", "collect.replay_max_steps=4",
        "--set", "collect.coverage_share=0.5"]))
    mm = read_manifest(mixed)
    starts = [e["start"] for e in read_shard(mixed / mm["shards"][0]["file"]).episodes]
    assert set(starts) == {"replay", "coverage"}, starts
    assert mm["fingerprint"] != m["fingerprint"]


def test_eval_and_training_seeds_are_disjoint():
    assert all(eval_seed("office_a", 0, i) >= EVAL_SEED_OFFSET for i in range(200))
    assert all(training_seed(0, "uniform", "office_a", "shard", s, "episode", j) < EVAL_SEED_OFFSET
               for s in range(5) for j in range(40))


def test_bad_regions_are_explained():
    with pytest.raises(ValueError, match="building_seed"):
        parse_regions([{"object_ids": [3]}])
    with pytest.raises(ValueError, match="give object_ids"):
        parse_regions([{"share": 1}])
    with pytest.raises(ValueError, match="non-empty"):
        parse_regions([])
    start = {"xy": [1, 2], "yaw_rad": 0.5, "goal_xy": [3, 4]}
    with pytest.raises(ValueError, match="building-specific"):
        parse_regions([{"causes": ["glass"], "starts": [start]}])
    with pytest.raises(ValueError, match=r"starts\[0\]: a start needs"):
        parse_regions([{"building_seed": 1, "areas": [{"kind": "circle", "points": [[1, 2]]}],
                        "starts": [{"xy": [1, 2]}]}])
    (r,) = parse_regions([{"building_seed": 1, "causes": ["glass"], "starts": [start]}])
    assert r.starts == ({"xy": [1.0, 2.0], "yaw_rad": 0.5, "goal_xy": [3.0, 4.0]},)


def test_collection_in_appearance_randomised_floors(tmp_path):
    """The same episodes (poses, actions) in floors whose colours were redrawn: the images
    differ, the labels do not."""
    runner = CliRunner()
    plain, jittered = tmp_path / "plain", tmp_path / "jittered"
    _ok(runner.invoke(nav, ["collect", "--config", TINY, "--out", str(plain)]))
    _ok(runner.invoke(nav, ["collect", "--config", TINY, "--out", str(jittered),
                            "--set", "collect.appearance_jitter=0.3"]))
    a = read_shard(next((plain / "shards").glob("*.npz"))).arrays
    b = read_shard(next((jittered / "shards").glob("*.npz"))).arrays
    image = next(k for k in a if a[k].ndim == 4)
    n = min(len(a[image]), len(b[image]))
    assert n > 0 and (a["goal"][:n] == b["goal"][:n]).all()
    assert abs(a[image][:n].astype(float) - b[image][:n].astype(float)).mean() > 1.0

"""Batched evaluation rollouts give the rollouts of the one-env-at-a-time code."""

from __future__ import annotations

import pytest
import torch

from nav_policy.evaluate import evaluate_checkpoint
from nav_policy.model import NavPolicyNet, RobotLimits, save_checkpoint

KEYS = ("index", "seed", "outcome", "steps", "cause_class", "object_id", "building_id",
        "start_xy", "goal_xy")


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path):
    """An untrained camera policy correcting the route follower (acts, and sometimes fails)."""
    torch.manual_seed(0)
    cfg = tiny_cfg.model_copy(update={"model": tiny_cfg.model.model_copy(
        update={"prior": "route_pursuit", "goal_range_m": 2.0})})
    cam = cfg.sim.camera
    net = NavPolicyNet(cfg.model, (cam.height_px, cam.width_px), RobotLimits.from_sim(cfg.sim))
    path = tmp_path / "m.pt"
    save_checkpoint(path, net)
    return path


@pytest.mark.parametrize("batch_size,workers", [(4, 1), (3, 2)])
def test_batched_rollouts_equal_sequential(tiny_cfg, checkpoint, tmp_path, batch_size, workers):
    from common import read_jsonl

    rows = {}
    for name, bs, nw in (("one", 1, 1), ("batched", batch_size, workers)):
        cfg = tiny_cfg.model_copy(update={"evaluate": tiny_cfg.evaluate.model_copy(update={
            "num_rollouts": 7, "batch_size": bs, "num_workers": nw, "save_failures": False})})
        summary = evaluate_checkpoint(cfg, checkpoint, tmp_path / name, progress=False)
        rows[name] = sorted(read_jsonl(tmp_path / name / "rollouts.jsonl"),
                            key=lambda r: r["index"])
        rows[name + "_summary"] = summary
    assert [[r[k] for k in KEYS] for r in rows["batched"]] == [
        [r[k] for k in KEYS] for r in rows["one"]]
    for a, b in zip(rows["batched"], rows["one"]):
        assert a["contact_point"] == pytest.approx(b["contact_point"]) if b["contact_point"] \
            else a["contact_point"] is None
    assert rows["batched_summary"]["eval/failure_rate"] == rows["one_summary"]["eval/failure_rate"]


def test_batched_route_follower_equals_sequential(tiny_cfg, tmp_path):
    from common import read_jsonl
    from nav_policy.evaluate import run_evaluation

    rows = {}
    for name, bs in (("one", 1), ("batched", 4)):
        cfg = tiny_cfg.model_copy(update={"evaluate": tiny_cfg.evaluate.model_copy(update={
            "num_rollouts": 6, "batch_size": bs, "num_workers": 1, "save_failures": False})})
        spec = {"kind": "route_pursuit", "config": cfg.model_dump(mode="json")}
        run_evaluation(cfg, spec, tmp_path / name, progress=False)
        rows[name] = [[r[k] for k in KEYS] for r in sorted(
            read_jsonl(tmp_path / name / "rollouts.jsonl"), key=lambda r: r["index"])]
    assert rows["batched"] == rows["one"]

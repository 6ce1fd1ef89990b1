"""`failtax sim` commands write real images and episodes."""

from __future__ import annotations

import json

from click.testing import CliRunner
from PIL import Image

from sim.cli import sim


def test_samples_writes_one_image_per_hazard_and_a_map(tmp_path):
    res = CliRunner().invoke(sim, ["samples", "--out", str(tmp_path), "--building-seed", "1"])
    assert res.exit_code == 0, res.output
    names = {p.name for p in tmp_path.iterdir()}
    for hazard in ("glass", "thin_pole", "plain_wall", "low_obstacle", "wall", "map", "hazards"):
        assert f"office_a-000001_{hazard}.png" in names
    assert Image.open(tmp_path / "office_a-000001_glass.png").size == (64, 64)


def test_rollout_records_and_resumes(tmp_path):
    args = ["rollout", "--out", str(tmp_path), "-n", "2", "--set", "episode.time_limit_s=4",
            "--policy", "goal_seeker", "--no-channels"]
    res = CliRunner().invoke(sim, args)
    assert res.exit_code == 0, res.output
    eps = sorted(p for p in tmp_path.iterdir() if (p / "meta.json").exists())
    assert len(eps) == 2 and (tmp_path / "maps").is_dir()
    meta = json.loads((eps[0] / "meta.json").read_text())
    assert meta["robot"] == "scripted:goal_seeker" and meta["channels"] == []
    again = CliRunner().invoke(sim, args)
    assert "0 episodes" in again.output and "2 already there" in again.output


def test_bad_override_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(sim, ["map", "--out", str(tmp_path / "m.png"), "--set",
                                   "camera.widht_px=3"])
    assert res.exit_code != 0 and "widht_px" in res.output


def test_rollout_workers_give_identical_episodes(tmp_path):
    from sim.config import SimConfig
    from sim.rollout import record_scripted_episodes

    cfg = SimConfig.model_validate({"episode": {"time_limit_s": 3.0}})
    one = record_scripted_episodes(cfg, tmp_path / "one", 2, channels=False, progress=False)
    two = record_scripted_episodes(cfg, tmp_path / "two", 2, channels=False, workers=2,
                                   progress=False)
    assert [e.episode_id for e in one.episodes] == [e.episode_id for e in two.episodes]
    for e in one.episodes:
        a = (tmp_path / "one" / e.episode_id / "steps.jsonl").read_text()
        b = (tmp_path / "two" / e.episode_id / "steps.jsonl").read_text()
        assert a == b

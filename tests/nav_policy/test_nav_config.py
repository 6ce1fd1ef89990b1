"""NavConfig holds the simulator config resolved once, at load time."""

from __future__ import annotations

import json

import pytest

from nav_policy.config import NavConfig, SimRefConfig, load_nav_config
from sim.config import SimConfig, load_sim_config


def _write_configs(tmp_path):
    sim_yaml = tmp_path / "my_sim.yaml"
    sim_yaml.write_text("camera:\n  fov_deg: 75.0\nepisode:\n  time_limit_s: 6.0\n")
    nav_yaml = tmp_path / "nav.yaml"
    nav_yaml.write_text(f"sim:\n  config_path: {sim_yaml}\n  overrides:\n"
                        "    episode.max_start_goal_path_m: 6.0\n"
                        "evaluate:\n  num_rollouts: 1\n  num_workers: 1\n")
    return sim_yaml, nav_yaml


def test_the_sim_yaml_is_read_once_when_the_config_loads(tmp_path):
    """Every later use (workers re-validating the dump, evaluation rollouts) works from
    the resolved config: the sim YAML may be gone by then."""
    from nav_policy.evaluate import run_evaluation

    sim_yaml, nav_yaml = _write_configs(tmp_path)
    cfg = load_nav_config(nav_yaml)
    sim_yaml.unlink()
    assert isinstance(cfg.sim, SimConfig)
    assert cfg.sim.camera.fov_deg == 75.0 and cfg.sim.episode.time_limit_s == 6.0
    assert cfg.sim.episode.max_start_goal_path_m == 6.0
    assert cfg.sim.observation.route == "obs"  # the nav stack always observes the route
    assert NavConfig.model_validate(cfg.model_dump(mode="json")) == cfg  # what workers get
    summary = run_evaluation(cfg, {"kind": "route_pursuit", "config": cfg.model_dump(
        mode="json")}, tmp_path / "eval", progress=False)
    assert summary["eval/num_rollouts"] == 1
    rollout = json.loads((tmp_path / "eval" / "rollouts.jsonl").read_text().splitlines()[0])
    assert rollout["steps"] <= 60  # 6 s at dt 0.1 s: the resolved time limit ran


def test_sim_reference_forms():
    nav_yaml_sim = load_sim_config("configs/sim/nav.yaml")
    assert NavConfig().sim == nav_yaml_sim.model_copy(update={
        "observation": nav_yaml_sim.observation.model_copy(update={"route": "obs"})})
    by_name = NavConfig.model_validate({"sim": {"config_path": "office_b"}}).sim
    assert by_name.world.family == "office_b"
    defaults = NavConfig.model_validate({"sim": {"config_path": None,
                                                 "overrides": {"camera.fov_deg": 80}}}).sim
    assert defaults.camera.fov_deg == 80 and defaults.robot == SimConfig().robot
    values = NavConfig.model_validate({"sim": {"camera": {"fov_deg": 50}}}).sim
    assert values.camera.fov_deg == 50 and values.observation.route == "obs"
    assert SimRefConfig().resolve() == NavConfig().sim
    with pytest.raises(ValueError, match=r"put the values into sim.overrides"):
        NavConfig.model_validate({"sim": {"overrides": {}, "camera": {"fov_deg": 50}}})
    with pytest.raises(ValueError, match="fov_degg"):
        NavConfig.model_validate({"sim": {"overrides": {"camera.fov_degg": 50}}})


def test_shipped_nav_presets_keep_their_sim_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # presets found from the package, not the working directory
    tiny = load_nav_config("tiny")
    assert tiny == load_nav_config("configs/nav/tiny.yaml")
    nav = load_sim_config("nav", {"episode.time_limit_s": 20.0,
                                  "episode.max_start_goal_path_m": 8.0})
    assert tiny.sim == nav.model_copy(update={"observation": nav.observation.model_copy(
        update={"route": "obs"})})
    default = load_nav_config("default").sim
    assert default.camera.fov_deg == 90
    assert default.model_copy(update={"camera": nav.camera}) == NavConfig().sim

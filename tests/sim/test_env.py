"""Gymnasium conformance, determinism and episode termination."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim
from sim.config import SimConfig
from sim.env import IndoorNavEnv


def _policy(obs: dict) -> np.ndarray:
    g = obs["goal"]
    return np.array([1.0, np.clip(2 * np.arctan2(g[1], g[0]), -1.5, 1.5)], np.float32)


def test_registered_and_check_env_passes():
    env = gym.make("failtax/IndoorNav-v0")
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["velocity"].shape == (2,) and obs["goal"].shape == (2,)
    assert info["outcome"] is None and info["building_family"] == "office_a"


def test_check_env_with_channels_in_obs():
    cfg = SimConfig.model_validate({"observation": {"depth": "obs", "semantic": "obs",
                                                    "instance": "obs"},
                                    "camera": {"width_px": 32, "height_px": 24}})
    env = IndoorNavEnv(cfg)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert obs["depth"].shape == (24, 32) and obs["semantic"].dtype == np.uint8
    assert obs["instance"].dtype == np.uint16 and obs["instance"].max() > 0


def _rollout(seed: int, steps: int, config: SimConfig | None = None) -> list[dict]:
    env = IndoorNavEnv(config)
    obs, _ = env.reset(seed=seed)
    out, episode = [obs], 0
    for _ in range(steps):
        obs, _, term, trunc, _ = env.step(_policy(obs))
        out.append(obs)
        if term or trunc:
            episode += 1
            obs, _ = env.reset(seed=seed + 1000 * episode)
            out.append(obs)
    return out


def test_same_seed_identical_rollout_200_steps():
    a, b = _rollout(7, 200), _rollout(7, 200)
    assert len(a) == len(b)
    for oa, ob in zip(a, b):
        for k in oa:
            np.testing.assert_array_equal(oa[k], ob[k])


def test_different_seed_differs():
    a, b = _rollout(7, 5), _rollout(8, 5)
    assert any(not np.array_equal(x["image"], y["image"]) for x, y in zip(a, b))


def test_episode_ends_with_an_outcome(small_config):
    env = IndoorNavEnv(small_config)
    obs, info = env.reset(seed=3)
    for _ in range(small_config.max_steps + 1):
        obs, _, term, trunc, info = env.step(_policy(obs))
        if term or trunc:
            break
    assert term or trunc
    assert info["outcome"] in ("collision", "success", "timeout")
    assert trunc == (info["outcome"] == "timeout")
    if info["outcome"] == "collision":
        assert info["collision"]["object_id"] >= 1


def test_reset_options_place_robot_and_reject_unknown():
    env = IndoorNavEnv()
    env.reset(seed=0, options={"building_seed": 2})
    free = env.world.planner.free
    iy, ix = np.argwhere(free)[len(np.argwhere(free)) // 2]
    x, y = env.world.grid.cell_to_world(iy, ix)
    _, info = env.reset(seed=0, options={"building_seed": 2, "start_xy": [x, y],
                                         "goal_xy": [x + 0.1, y], "start_yaw": 0.5})
    assert info["pose"] == pytest.approx([x, y, 0.5])
    # One end given: the other is drawn at a path cost in the configured range.
    _, info = env.reset(seed=0, options={"building_seed": 2, "goal_xy": [x, y]})
    assert info["goal_xy"] == pytest.approx([x, y])
    assert 4.0 <= info["cost_to_go"] <= 25.0
    _, info = env.reset(seed=0, options={"building_seed": 2, "start_xy": [x, y]})
    assert info["pose"][:2] == pytest.approx([x, y])
    assert 4.0 <= info["cost_to_go"] <= 25.0
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(seed=0, options={"buildin_seed": 2})


def test_office_b_family_is_held_out_style():
    env = IndoorNavEnv(SimConfig.model_validate({"world": {"family": "office_b"}}))
    _, info = env.reset(seed=0)
    assert info["building_family"] == "office_b"
    assert info["building_id"].startswith("office_b-")


def test_config_rejects_tunnelling_speed():
    with pytest.raises(ValueError, match="thin obstacles"):
        SimConfig.model_validate({"robot": {"max_speed_mps": 3.0}, "episode": {"dt_s": 0.1}})


def test_config_rejects_inverted_ranges_and_unknown_keys():
    with pytest.raises(ValueError, match="tables_per_room"):
        SimConfig.model_validate({"world": {"hazards": {"tables_per_room": [3, 1]}}})
    with pytest.raises(ValueError, match="robot diameter"):
        SimConfig.model_validate({"world": {"hazards": {"narrow_door_width_m": [0.3, 0.5]}}})
    with pytest.raises(ValueError):
        SimConfig.model_validate({"camera": {"widht_px": 64}})


def test_package_exports_resolve_lazily():
    for name in sim.__all__:
        assert getattr(sim, name) is not None
    with pytest.raises(AttributeError):
        sim.not_a_name  # noqa: B018


def test_shipped_yaml_configs_load():
    from pathlib import Path

    from sim.config import load_sim_config

    root = Path(__file__).resolve().parents[2] / "configs" / "sim"
    assert load_sim_config(root / "default.yaml") == SimConfig()
    assert load_sim_config(root / "office_b.yaml").world.family == "office_b"
    assert load_sim_config(root / "with_channels.yaml").observation.semantic == "info"

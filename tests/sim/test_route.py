"""The `route` observation: a floor-plan route point a little ahead of the robot."""

from __future__ import annotations

import numpy as np
from gymnasium.utils.env_checker import check_env

from sim.building import Part, WorldObject
from sim.env import IndoorNavEnv
from sim.world import simple_room

ROUTE = {"observation.route": "obs", "observation.route_lookahead_m": 1.0}


def _block(object_id: int, cls: str, x0: float, y0: float, x1: float, y1: float) -> WorldObject:
    part = Part("polygon", ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), 0.0, 2.0, name="body")
    return WorldObject(object_id, cls, "cardboard", (part,), (0.5, 0.4, 0.3))


def _route_world_xy(env: IndoorNavEnv, obs: dict) -> np.ndarray:
    x, y, yaw = env.state[:3]
    f, left = obs["route"]
    return np.array([x + np.cos(yaw) * f - np.sin(yaw) * left,
                     y + np.sin(yaw) * f + np.cos(yaw) * left])


def test_route_obs_passes_check_env_and_sits_near_the_lookahead():
    env = IndoorNavEnv({**ROUTE, "observation.route_lookahead_m": 1.5})
    check_env(env, skip_render_check=True)
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        assert obs["route"].shape == (2,) and obs["route"].dtype == np.float32
        if np.hypot(*obs["goal"]) > 3.0:
            # 1.5 m of route ahead: the straight line to it is at most that, and not much less.
            assert 0.9 < np.hypot(*obs["route"]) <= 1.5 + 0.15


def test_route_is_off_by_default():
    obs, _ = IndoorNavEnv().reset(seed=0)
    assert "route" not in obs


def test_route_runs_through_clutter_the_true_planner_avoids():
    """A box across the corridor is not on the floor plan: the route goes straight at it."""
    room = simple_room(8.0, 3.0, [_block(5, "box", 3.6, 0.9, 4.4, 2.1)])
    env = IndoorNavEnv(ROUTE)
    opts = {"building": room, "start_xy": [2.6, 1.5], "goal_xy": [7.0, 1.5], "start_yaw": 0.0}
    obs, _ = env.reset(seed=0, options=opts)
    assert abs(obs["route"][1]) < 0.15 and abs(obs["route"][0] - 1.0) < 0.2
    true_path = env.world.planner.plan((2.6, 1.5), (7.0, 1.5)).points_xy
    assert np.abs(true_path[:, 1] - 1.5).max() > 0.5  # the expert's planner goes around
    # Facing away, the same point is behind the robot.
    obs, _ = env.reset(seed=0, options={**opts, "start_yaw": np.pi})
    assert obs["route"][0] < -0.8


def test_route_goes_through_the_doorway_of_a_wall():
    """A wall with a gap near y=2.5 is on the floor plan: the route heads for the gap."""
    room = simple_room(8.0, 3.0, [_block(5, "wall", 3.95, 0.0, 4.05, 1.9)])
    env = IndoorNavEnv(ROUTE)
    obs, _ = env.reset(seed=0, options={"building": room, "start_xy": [3.0, 0.8],
                                        "goal_xy": [5.0, 0.8], "start_yaw": 0.0})
    assert obs["route"][1] > 0.3  # to the left, towards the gap, not straight through the wall
    for _ in range(60):  # follow the route point with a simple pursuit law
        r = obs["route"]
        obs, _, term, trunc, info = env.step(np.array([0.5, np.clip(2 * np.arctan2(r[1], r[0]),
                                                                    -1.5, 1.5)]))
        if term or trunc:
            break
    assert info["outcome"] == "success"


def test_route_is_the_goal_near_the_end():
    room = simple_room(8.0, 3.0)
    env = IndoorNavEnv(ROUTE)
    obs, _ = env.reset(seed=0, options={"building": room, "start_xy": [3.0, 1.5],
                                        "goal_xy": [3.6, 1.7], "start_yaw": 0.0})
    assert np.allclose(_route_world_xy(env, obs), [3.6, 1.7], atol=1e-4)

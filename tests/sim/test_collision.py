"""Analytic collision cases: drive straight at one object and check what and when."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sim_scenes import GLASS, LOW_BOX, POLE, TABLE

from sim.config import SimConfig
from sim.env import IndoorNavEnv
from sim.physics import unicycle_step


def expected_contact_step(start_x: float, surface_x: float, cfg: SimConfig) -> int:
    """First step k whose state overlaps the surface, with full acceleration."""
    x, v, k = start_x, 0.0, 0
    rob, dt = cfg.robot, cfg.episode.dt_s
    while x + rob.radius_m < surface_x:
        v = min(v + rob.max_accel_mps2 * dt, rob.max_speed_mps)
        x += v * dt
        k += 1
    return k


@pytest.mark.parametrize("obj, surface_x, cls, material, cause", [
    (GLASS, 5.0, "glass_partition", "glass", "glass"),
    (POLE, 5.0 - 0.03, "pole", "metal", "thin_pole"),
    (LOW_BOX, 5.0, "box", "cardboard", "low_obstacle"),
])
def test_drive_straight_into(room_with, obj, surface_x, cls, material, cause):
    cfg = SimConfig()
    env = IndoorNavEnv(cfg)
    building = room_with(obj)
    _, info = env.reset(seed=0, options={"building": building, "start_xy": [2.0, 2.0],
                                           "start_yaw": 0.0, "goal_xy": [7.5, 2.0]})
    steps = 0
    while True:
        _, _, term, trunc, info = env.step(np.array([cfg.robot.max_accel_mps2, 0.0]))
        steps += 1
        if term or trunc:
            break
    assert info["outcome"] == "collision"
    hit = info["collision"]
    assert hit["object_id"] == obj.object_id
    assert (hit["object_class"], hit["material"], hit["cause_class"]) == (cls, material, cause)
    assert hit["step"] == steps == expected_contact_step(2.0, surface_x, cfg)
    assert hit["contact_point"] == pytest.approx([surface_x, 2.0], abs=0.02)
    # The robot stops where it first touched, not inside the object.
    assert info["pose"][0] + cfg.robot.radius_m == pytest.approx(surface_x, abs=0.01)


def test_table_top_above_robot_is_not_hit(room_with):
    env = IndoorNavEnv()
    _, info = env.reset(seed=0, options={"building": room_with(TABLE), "start_xy": [2.0, 2.0],
                                           "start_yaw": 0.0, "goal_xy": [7.0, 2.0]})
    for _ in range(200):
        _, _, term, trunc, info = env.step(np.array([1.5, 0.0]))
        if term or trunc:
            break
    assert info["outcome"] == "success"  # drove under the table top, between its legs


def test_table_leg_is_a_thin_pole(room_with):
    env = IndoorNavEnv()
    _, info = env.reset(seed=0, options={"building": room_with(TABLE), "start_xy": [2.0, 1.2],
                                           "start_yaw": 0.0, "goal_xy": [7.0, 1.2]})
    for _ in range(200):
        _, _, term, trunc, info = env.step(np.array([1.5, 0.0]))
        if term or trunc:
            break
    assert info["collision"]["object_id"] == TABLE.object_id
    assert info["collision"]["part"] == "leg"
    assert info["collision"]["cause_class"] == "thin_pole"


def test_oblique_glass_contact_point_on_panel(room_with):
    env = IndoorNavEnv()
    env.reset(seed=0, options={"building": room_with(GLASS), "start_xy": [3.0, 1.0],
                               "start_yaw": math.radians(30), "goal_xy": [7.0, 3.5]})
    for _ in range(100):
        _, _, term, _, info = env.step(np.array([1.5, 0.0]))
        if term:
            break
    cx, cy = info["collision"]["contact_point"]
    assert cx == pytest.approx(5.0, abs=1e-3) and 1.0 <= cy <= 3.0
    x, y = info["pose"][:2]
    assert math.hypot(x - cx, y - cy) == pytest.approx(0.2, abs=0.005)


def test_unicycle_arc_integration():
    cfg = SimConfig()
    state = np.array([[0.0, 0.0, 0.0, 1.0, 0.0]])
    for _ in range(10):  # a quarter turn at 1 m/s, pi/2 rad/s -> radius 2/pi
        state = unicycle_step(state, np.array([[0.0, math.pi / 2]]), cfg.robot.model_copy(
            update={"max_turn_rate_radps": 2.0}), 0.1)
    r = 2 / math.pi
    assert state[0, :3] == pytest.approx([r, r, math.pi / 2], abs=1e-6)


def test_start_inside_an_obstacle_is_refused(room_with):
    env = IndoorNavEnv()
    with pytest.raises(ValueError, match="overlaps an obstacle"):
        env.reset(seed=0, options={"building": room_with(POLE), "start_xy": [5.1, 2.0],
                                   "goal_xy": [7.0, 2.0]})

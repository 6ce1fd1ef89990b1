"""The MPC tracks straight and turning paths, and keeps clear of obstacles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nav_policy.config import ExpertConfig, MPCConfig
from nav_policy.expert.mpc import MPCTracker
from nav_policy.expert.reference import ReferencePath
from nav_policy.expert.surfaces import SurfaceIndex
from nav_policy.model import RobotLimits
from sim.config import RobotConfig
from sim.physics import unicycle_step

LIMITS = RobotLimits(0.0, 1.0, 1.5, 1.5, 0.1)
RADIUS = 0.2


class _Geometry:
    """Just the primitive arrays SurfaceIndex reads (segments and circles)."""

    def __init__(self, segments=(), circles=()):
        seg = np.asarray(segments, float).reshape(-1, 2, 2)
        circ = list(circles)
        self.seg_a, self.seg_b = seg[:, 0], seg[:, 1]
        self.circ_c = np.asarray([c for c, _ in circ], float).reshape(-1, 2)
        self.circ_r = np.asarray([r for _, r in circ], float)

    def colliders(self, body_height_m):
        return np.ones(len(self.seg_a), bool), np.ones(len(self.circ_c), bool)


def _drive(path_xy, solver="fatrop", geometry=None, steps=400, start_yaw=None):
    cfg = ExpertConfig(mpc=MPCConfig(solver=solver,
                                     fallback="ipopt" if solver == "fatrop" else "pure_pursuit"))
    ref = ReferencePath(np.asarray(path_xy, float), None, cfg, LIMITS)
    mpc = MPCTracker(cfg.mpc, LIMITS, RADIUS)
    surfaces = SurfaceIndex(geometry or _Geometry(), 0.7)
    yaw = ref.yaw[0] if start_yaw is None else start_yaw
    state = np.array([path_xy[0][0], path_xy[0][1], yaw, 0.0, 0.0])
    robot = RobotConfig()
    s = 0.0
    track, ok = [], []
    for _ in range(steps):
        s, dist = ref.project(state[:2], s)
        track.append(dist)
        r = ref.reference(s, state[3], cfg.mpc.horizon_steps, LIMITS.dt_s)
        q, n = surfaces.nearest(mpc.predicted_positions(state, r), cfg.mpc.obstacles_per_stage,
                                state[:2], 3.0)
        res = mpc.solve(state, r, q, n)
        ok.append(res.ok)
        state = unicycle_step(state[None], res.action[None], robot, LIMITS.dt_s)[0]
        if np.hypot(*(state[:2] - np.asarray(path_xy[-1]))) < 0.15 and state[3] < 0.05:
            break
    return state, np.asarray(track), np.asarray(ok)


@pytest.mark.parametrize("solver", ["fatrop", "ipopt"])
def test_tracks_straight_path(solver):
    state, track, ok = _drive([(0.0, 0.0), (6.0, 0.0)], solver)
    assert ok.mean() > 0.95
    assert np.hypot(state[0] - 6.0, state[1]) < 0.3  # reaches the goal
    assert track.max() < 0.05  # stays on the line


def test_tracks_turning_path():
    # An L-shaped corridor path with a 90 degree turn.
    pts = [(0.0, 0.0), (4.0, 0.0), (4.0, 4.0)]
    state, track, ok = _drive(pts)
    assert ok.mean() > 0.95
    assert np.hypot(state[0] - 4.0, state[1] - 4.0) < 0.3
    # Corner rounding is allowed, but not wandering off.
    assert track.max() < 0.35
    assert np.median(track) < 0.05


def test_turns_in_place_when_facing_away():
    state, _, ok = _drive([(0.0, 0.0), (4.0, 0.0)], start_yaw=math.pi)
    assert ok.mean() > 0.9
    assert np.hypot(state[0] - 4.0, state[1]) < 0.3


def test_keeps_clear_of_a_pole_on_the_path():
    pole = ((3.0, 0.05), 0.05)
    geom = _Geometry(circles=[pole])
    cfg_margin = MPCConfig().safety_margin_m
    cfg = ExpertConfig()
    ref = ReferencePath(np.array([(0.0, 0.0), (6.0, 0.0)]), None, cfg, LIMITS)
    mpc = MPCTracker(cfg.mpc, LIMITS, RADIUS)
    surfaces = SurfaceIndex(geom, 0.7)
    state = np.array([0.0, 0.0, 0.0, 0.0, 0.0])
    min_gap, s = np.inf, 0.0
    for _ in range(200):
        s, _ = ref.project(state[:2], s)
        r = ref.reference(s, state[3], cfg.mpc.horizon_steps, LIMITS.dt_s)
        q, n = surfaces.nearest(mpc.predicted_positions(state, r), cfg.mpc.obstacles_per_stage,
                                state[:2], 3.0)
        res = mpc.solve(state, r, q, n)
        state = unicycle_step(state[None], res.action[None], RobotConfig(), LIMITS.dt_s)[0]
        min_gap = min(min_gap, np.hypot(*(state[:2] - pole[0])) - pole[1])
    assert min_gap > RADIUS + cfg_margin - 0.03  # never touched the pole
    assert state[0] > 5.5  # and still got past it


def test_expert_with_a_wider_berth_plans_with_more_clearance():
    from pathlib import Path

    from nav_policy.expert import make_expert
    from sim.config import load_sim_config
    from sim.env import load_world, sample_start_goal

    sim_cfg = load_sim_config(Path(__file__).resolve().parents[2] / "configs/sim/nav.yaml")
    world = load_world(sim_cfg, "office_a", 0)
    rng = np.random.default_rng(3)
    mean_clearance = {}
    for preferred in (None, 1.0):
        expert = make_expert(ExpertConfig(preferred_clearance_m=preferred, clearance_weight=8.0),
                             sim_cfg)
        gaps = []
        for start, goal, _ in (sample_start_goal(world, sim_cfg, np.random.default_rng(s))
                               for s in rng.integers(0, 2**31, 4)):
            expert.reset(world, goal)
            path = expert._plan(start)
            gaps += [world.grid.clearance_at(float(x), float(y)) for x, y in path.xy[::5]]
        mean_clearance[preferred] = float(np.mean(gaps))
    assert mean_clearance[1.0] > mean_clearance[None] + 0.02

"""Scripted policies for producing episodes without a learned model.

* `GoalSeeker`: turns toward the goal and drives; ignores obstacles.
* `PathFollower`: pure pursuit along a grid-planner path. With `blind_to`
  it plans on a map from which some classes are removed (e.g. glass, poles,
  low obstacles), which mimics a vision policy that does not perceive them:
  its collisions then have the causes a failure taxonomy should find.
* `RandomPolicy`: smoothed random actions.

All take the env's observation and (for PathFollower) the env itself at
`reset`; `act(obs)` returns [acceleration, turn rate].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from sim.building import Building
from sim.env import IndoorNavEnv, world_from_building
from sim.planning import shortcut_path

POLICY_NAMES = ("goal_seeker", "path_follower", "blind_follower", "random")
# Classes a camera-based policy tends not to perceive (see docs/SIM.md).
DEFAULT_BLIND_CLASSES = ("glass_partition", "glass_door", "pole", "box", "bin")


class ScriptedPolicy(Protocol):
    """A policy that needs only the observation (and the env at reset)."""

    name: str

    def reset(self, env: IndoorNavEnv, rng: np.random.Generator) -> None: ...

    def act(self, obs: dict) -> np.ndarray: ...


def _steer(env: IndoorNavEnv, target_fwd: float, target_left: float, speed_mps: float,
           v_now: float) -> np.ndarray:
    rob = env.config.robot
    heading = math.atan2(target_left, target_fwd)
    w = float(np.clip(2.5 * heading, -rob.max_turn_rate_radps, rob.max_turn_rate_radps))
    v_target = speed_mps * max(0.0, math.cos(heading)) ** 2
    a = float(np.clip((v_target - v_now) / env.config.episode.dt_s, -rob.max_accel_mps2,
                      rob.max_accel_mps2))
    return np.array([a, w], np.float32)


class GoalSeeker:
    """Straight at the goal (collides with whatever is in between)."""

    name = "goal_seeker"

    def __init__(self, speed_mps: float = 0.8) -> None:
        self.speed_mps = speed_mps
        self.env: IndoorNavEnv | None = None

    def reset(self, env: IndoorNavEnv, rng: np.random.Generator) -> None:
        self.env = env

    def act(self, obs: dict) -> np.ndarray:
        g = obs["goal"]
        return _steer(self.env, float(g[0]), float(g[1]), self.speed_mps, float(obs["velocity"][0]))


class RandomPolicy:
    """Random accelerations and turn rates, low-pass filtered."""

    name = "random"

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)
        self.prev = np.zeros(2)
        self.env: IndoorNavEnv | None = None

    def reset(self, env: IndoorNavEnv, rng: np.random.Generator) -> None:
        self.env, self.rng, self.prev = env, rng, np.zeros(2)

    def act(self, obs: dict) -> np.ndarray:
        hi = self.env.action_space.high
        self.prev = 0.8 * self.prev + 0.2 * self.rng.uniform(-hi, hi)
        self.prev[0] = abs(self.prev[0]) if obs["velocity"][0] < 0.3 else self.prev[0]
        return self.prev.astype(np.float32)


class PathFollower:
    """Pure pursuit along the planner's path, optionally blind to some classes.

    Args:
        blind_to: object classes removed from the map it plans on.
        speed_mps: cruise speed.
        lookahead_m: pure-pursuit lookahead.
        heading_noise_rad: std of a slowly varying steering bias.
    """

    def __init__(self, blind_to: Sequence[str] = (), speed_mps: float = 0.7,
                 lookahead_m: float = 0.6, heading_noise_rad: float = 0.0) -> None:
        self.blind_to = tuple(blind_to)
        self.name = "blind_follower" if self.blind_to else "path_follower"
        self.speed_mps = speed_mps
        self.lookahead_m = lookahead_m
        self.heading_noise_rad = heading_noise_rad
        self._blind_worlds: dict[str, object] = {}
        self.path = np.zeros((0, 2))
        self.progress = 0
        self.env: IndoorNavEnv | None = None
        self.bias = 0.0
        self.rng = np.random.default_rng(0)

    def reset(self, env: IndoorNavEnv, rng: np.random.Generator) -> None:
        self.env, self.rng, self.bias = env, rng, 0.0
        world = env.world
        if self.blind_to:
            key = world.building.building_id
            if key not in self._blind_worlds:
                b = world.building
                seen = [o for o in b.objects if o.object_class not in self.blind_to]
                blind = Building(b.building_id, b.family, b.seed, b.size_m, seen, b.doorways,
                                 b.spaces, b.floor_rgb, b.ceiling_rgb, b.floor_texture,
                                 b.ceiling_height_m)
                self._blind_worlds[key] = world_from_building(blind, env.config)
            world = self._blind_worlds[key]
        path = world.planner.plan(tuple(env.state[:2]), tuple(env.goal_xy))
        pts = path.points_xy if path is not None else np.asarray([env.state[:2], env.goal_xy])
        # Shortcuts keep 0.12 m more than the planner's minimum, so the robot
        # does not shave corners; where that is impossible (narrow doorways)
        # the planner's own cells are kept.
        short = shortcut_path(world.grid, pts, world.planner.min_clearance_m + 0.12)
        self.path = _resample(short, 0.1)
        self.progress = 0

    def act(self, obs: dict) -> np.ndarray:
        env = self.env
        x, y, yaw = env.state[:3]
        # Progress along the path only moves forward (within a 2 m window).
        window = self.path[self.progress: self.progress + 20]
        d = np.linalg.norm(window - [x, y], axis=1)
        self.progress += int(np.argmin(d))
        ahead = self.path[self.progress:]
        far = np.flatnonzero(np.linalg.norm(ahead - [x, y], axis=1) >= self.lookahead_m)
        target = ahead[far[0]] if len(far) else self.path[-1]
        dx, dy = target[0] - x, target[1] - y
        c, s = math.cos(yaw), math.sin(yaw)
        if self.heading_noise_rad:
            self.bias = 0.95 * self.bias + 0.05 * self.rng.normal(0, self.heading_noise_rad * 4)
        ang = math.atan2(-s * dx + c * dy, c * dx + s * dy) + self.bias
        dist = math.hypot(dx, dy)
        return _steer(env, dist * math.cos(ang), dist * math.sin(ang), self.speed_mps,
                      float(obs["velocity"][0]))


def _resample(points: np.ndarray, step_m: float) -> np.ndarray:
    """Points every `step_m` along a polyline (ends kept)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return points[:1]
    t = np.append(np.arange(0.0, s[-1], step_m), s[-1])
    return np.stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])], axis=1)


def make_policy(name: str) -> ScriptedPolicy:
    """A scripted policy by name (see POLICY_NAMES)."""
    if name == "goal_seeker":
        return GoalSeeker()
    if name == "path_follower":
        return PathFollower(heading_noise_rad=0.05)
    if name == "blind_follower":
        return PathFollower(blind_to=DEFAULT_BLIND_CLASSES, heading_noise_rad=0.05)
    if name == "random":
        return RandomPolicy()
    raise ValueError(f"unknown policy {name!r}; choose one of {POLICY_NAMES}")

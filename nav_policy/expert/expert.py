"""`MapExpert`: sim planner path + MPC (or pure pursuit) tracking, with fallbacks counted."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from nav_policy.config import ExpertConfig
from nav_policy.expert.pure_pursuit import pure_pursuit_action
from nav_policy.expert.reference import ReferencePath
from nav_policy.expert.surfaces import SurfaceIndex
from nav_policy.model import RobotLimits


@dataclass
class ExpertStep:
    """The expert's decision at one state.

    Attributes:
        action: (2,) [accel m/s², turn rate rad/s].
        controller: "fatrop", "ipopt", "pure_pursuit" or "stop" (no path).
        primary_ok: the configured primary controller succeeded.
        solve_time_s: controller wall time.
        replanned: the global path was (re)computed at this step.
        path_distance_m: distance from the robot to its reference path.
    """

    action: np.ndarray
    controller: str
    primary_ok: bool
    solve_time_s: float
    replanned: bool
    path_distance_m: float


class MapExpert:
    """Knows the map: plans on the sim's grid and tracks the path with an MPC.

    Args:
        cfg: expert settings.
        sim_config: the sim's SimConfig (robot limits, dt).

    Attributes:
        counts: Counter of controllers used and failures over the expert's life
            (keys: controller names, "primary_failures", "no_path", "steps").
        solve_times_s: per-step controller wall times (for benchmarks).
    """

    def __init__(self, cfg: ExpertConfig, sim_config) -> None:
        self.cfg = cfg
        self.sim_config = sim_config
        self.limits = RobotLimits.from_sim(sim_config)
        self.radius_m = sim_config.robot.radius_m
        self.mpc = None
        if cfg.kind == "mpc":
            from nav_policy.expert.mpc import MPCTracker

            self.mpc = MPCTracker(cfg.mpc, self.limits, self.radius_m)
        self.counts: Counter = Counter()
        self.solve_times_s: list[float] = []
        self._world = None
        self._surfaces: SurfaceIndex | None = None
        self._surfaces_key: int | None = None
        self._planner = None
        self._pred: np.ndarray | None = None
        self._goal: np.ndarray | None = None
        self._path: ReferencePath | None = None
        self._s = 0.0

    # ------------------------------------------------------------------ episode
    def reset(self, world, goal_xy: np.ndarray) -> None:
        """Start an episode: Dijkstra from the goal once, paths from any state after."""
        self._world = world
        self._goal = np.asarray(goal_xy, float)
        if self._surfaces_key != id(world):
            self._surfaces = SurfaceIndex(world.geometry, self.sim_config.robot.height_m)
            self._planner = self._planner_for(world)
            self._surfaces_key = id(world)
        _, self._pred = self._planner.cost_from(tuple(self._goal))
        self._path = None
        self._s = 0.0
        if self.mpc is not None:
            self.mpc.reset()

    def _planner_for(self, world):
        """The world's planner, or one on its grid with the expert's clearance preference."""
        if self.cfg.preferred_clearance_m is None:
            return world.planner
        from sim.planning import GridPlanner

        lo = world.planner.min_clearance_m
        return GridPlanner(world.grid, lo, max(lo, self.cfg.preferred_clearance_m),
                           self.cfg.clearance_weight)

    def _plan(self, xy: np.ndarray) -> ReferencePath | None:
        planner = self._planner
        gp = planner.path_from_predecessors(self._pred, tuple(self._goal),
                                            (float(xy[0]), float(xy[1])))
        if gp is None:
            return None
        pts = gp.points_xy[::-1]  # predecessors run from the goal; we drive from the robot
        grid = self._world.grid

        def clearance(p: np.ndarray) -> np.ndarray:
            return np.array([grid.clearance_at(float(a), float(b)) for a, b in p])

        return ReferencePath(pts, clearance, self.cfg, self.limits, planner.min_clearance_m)

    # ------------------------------------------------------------------ step
    def act(self, state: np.ndarray) -> ExpertStep:
        """Action for the sim state (5,) [x, y, yaw, v, w]."""
        if self._world is None:
            raise RuntimeError("call reset(world, goal_xy) first")
        state = np.asarray(state, float)
        xy = state[:2]
        self.counts["steps"] += 1
        replanned = False
        dist = np.inf
        if self._path is not None:
            self._s, dist = self._path.project(xy, self._s)
        if self._path is None or dist > self.cfg.replan_distance_m:
            path = self._plan(xy)
            if path is None:
                self.counts["no_path"] += 1
                brake = np.array([-self.limits.max_accel_mps2, 0.0])
                return ExpertStep(brake, "stop", False, 0.0, False, float("inf"))
            self._path, replanned = path, True
            self._s, dist = self._path.project(xy)
            if self.mpc is not None:
                self.mpc.reset()
        t0 = time.perf_counter()
        if self.mpc is None:
            act = pure_pursuit_action(state, self._path, self._s, self.cfg.lookahead_m, self.limits)
            step = ExpertStep(act, "pure_pursuit", True, time.perf_counter() - t0, replanned, dist)
        else:
            step = self._mpc_step(state, replanned, dist)
        self.counts[step.controller] += 1
        if not step.primary_ok:
            self.counts["primary_failures"] += 1
        self.solve_times_s.append(step.solve_time_s)
        return step

    def _mpc_step(self, state: np.ndarray, replanned: bool, dist: float) -> ExpertStep:
        n = self.cfg.mpc.horizon_steps
        ref = self._path.reference(self._s, float(state[3]), n, self.limits.dt_s)
        predicted = self.mpc.predicted_positions(state, ref)
        q, nrm = self._surfaces.nearest(predicted, self.cfg.mpc.obstacles_per_stage, state[:2],
                                        self.cfg.mpc.obstacle_search_radius_m)
        res = self.mpc.solve(state, ref, q, nrm)
        if res.ok:
            return ExpertStep(res.action, res.solver, res.solver == self.cfg.mpc.solver,
                              res.solve_time_s, replanned, dist)
        # Every MPC solver failed this step: pure pursuit keeps the robot going.
        t0 = time.perf_counter()
        act = pure_pursuit_action(state, self._path, self._s, self.cfg.lookahead_m, self.limits)
        return ExpertStep(act, "pure_pursuit", False, res.solve_time_s + time.perf_counter() - t0,
                          replanned, dist)

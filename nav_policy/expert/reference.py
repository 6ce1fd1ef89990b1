"""A smoothed, time-parametrised reference along a planned path.

The grid planner returns cell centres (8-connected, so zig-zags and sharp
corners). `ReferencePath` resamples them, rounds corners with a moving
average, and attaches a speed profile that respects the cruise speed, the
curvature (lateral acceleration and turn-rate limits), clearance (slower near
surfaces) and braking to a stop at the goal. `reference()` then marches along
the profile from the robot's projection to give the MPC its N targets.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from nav_policy.config import ExpertConfig
from nav_policy.model import RobotLimits

_DS_M = 0.05  # resampling step


def _resample(points: np.ndarray, ds: float) -> np.ndarray:
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-9])
    points = points[keep]
    if len(points) < 2:
        return np.repeat(points[:1], 2, axis=0)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    n = max(2, math.ceil(s[-1] / ds) + 1)
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])], axis=1)


def _smooth(points: np.ndarray, window: int) -> np.ndarray:
    """Moving average that keeps both end points fixed (window shrinks at the ends)."""
    if window < 3 or len(points) < 3:
        return points
    half = window // 2
    out = points.copy()
    c = np.vstack([np.zeros((1, 2)), np.cumsum(points, axis=0)])
    n = len(points)
    for i in range(1, n - 1):
        h = min(half, i, n - 1 - i)
        out[i] = (c[i + h + 1] - c[i - h]) / (2 * h + 1)
    return out


class ReferencePath:
    """Smoothed path with arc length, headings, curvature and a speed profile.

    Args:
        points_xy: (K, 2) planned path from the robot to the goal.
        clearance_fn: maps (P, 2) points to clearance in metres (for slowing
            down in tight spots); None: no clearance slow-down.
        cfg: expert settings (speeds, smoothing).
        limits: robot limits.
        min_clearance_m: the planner's minimum clearance (speed is lowest there).
    """

    def __init__(self, points_xy: np.ndarray,
                 clearance_fn: Callable[[np.ndarray], np.ndarray] | None,
                 cfg: ExpertConfig, limits: RobotLimits, min_clearance_m: float = 0.23) -> None:
        pts = _resample(np.asarray(points_xy, float), _DS_M)
        pts = _smooth(pts, round(cfg.smoothing_window_m / _DS_M) | 1)
        pts = _resample(pts, _DS_M)
        self.xy = pts
        d = np.diff(pts, axis=0)
        seg = np.linalg.norm(d, axis=1)
        self.s = np.concatenate([[0.0], np.cumsum(seg)])
        self.length_m = float(self.s[-1])
        yaw = np.arctan2(d[:, 1], d[:, 0]) if len(d) else np.zeros(1)
        yaw = np.unwrap(np.concatenate([yaw, yaw[-1:]]))
        self.yaw = yaw
        curv = np.abs(np.gradient(yaw, self.s)) if len(self.s) > 2 else np.zeros_like(self.s)
        # Curvature of the next ~0.5 m matters for the speed at a point.
        k = max(1, int(0.5 / _DS_M))
        curv = np.array([curv[i: i + k].max() for i in range(len(curv))])
        v = np.full(len(self.s), cfg.cruise_speed_mps)
        v = np.minimum(v, np.sqrt(cfg.lateral_accel_mps2 / np.maximum(curv, 1e-6)))
        v = np.minimum(v, 0.8 * limits.max_turn_rate_radps / np.maximum(curv, 1e-6))
        if clearance_fn is not None:
            c = np.asarray(clearance_fn(pts), float)
            span = max(cfg.slow_clearance_m - min_clearance_m, 1e-6)
            frac = np.clip((c - min_clearance_m) / span, 0.0, 1.0)
            v = np.minimum(v, cfg.cruise_speed_mps * (cfg.slow_speed_fraction
                                                      + (1 - cfg.slow_speed_fraction) * frac))
        v = np.minimum(v, limits.max_speed_mps)
        # Brake to a stop at the goal, and ahead of slow stretches.
        v[-1] = 0.0
        for i in range(len(v) - 2, -1, -1):
            ds = self.s[i + 1] - self.s[i]
            v[i] = min(v[i], math.sqrt(v[i + 1] ** 2 + 2 * cfg.decel_mps2 * ds))
        self.speed = v
        self._accel = 0.7 * limits.max_accel_mps2
        self._goal_floor_mps = 0.15  # keep creeping towards the goal

    def project(self, xy: np.ndarray, s_hint: float | None = None, window_m: float = 3.0
                ) -> tuple[float, float]:
        """(arc length, distance) of the path point nearest to `xy`.

        With `s_hint`, only [s_hint - 0.5, s_hint + window_m] is searched, so a
        path that doubles back on itself does not make progress jump.
        """
        xy = np.asarray(xy, float)
        lo, hi = 0, len(self.s)
        if s_hint is not None:
            lo = int(np.searchsorted(self.s, s_hint - 0.5))
            hi = int(np.searchsorted(self.s, s_hint + window_m)) + 1
        d = np.linalg.norm(self.xy[lo:hi] - xy, axis=1)
        i = lo + int(np.argmin(d))
        return float(self.s[i]), float(d[i - lo])

    def at(self, s: float | np.ndarray) -> np.ndarray:
        """(..., 3) x, y, yaw at arc length(s) (clipped to the path)."""
        s = np.clip(s, 0.0, self.length_m)
        return np.stack([np.interp(s, self.s, self.xy[:, 0]), np.interp(s, self.s, self.xy[:, 1]),
                         np.interp(s, self.s, self.yaw)], axis=-1)

    def speed_at(self, s: float) -> float:
        return float(np.interp(min(max(s, 0.0), self.length_m), self.s, self.speed))

    def reference(self, s0: float, v0: float, steps: int, dt_s: float) -> np.ndarray:
        """(3, steps) x, y, yaw targets for the next `steps` steps from arc length s0."""
        out = np.zeros((steps, 3))
        s, v = s0, max(v0, 0.0)
        for k in range(steps):
            target = max(self.speed_at(s), self._goal_floor_mps if s < self.length_m else 0.0)
            v = min(target, v + self._accel * dt_s)
            s = min(s + v * dt_s, self.length_m)
            out[k] = self.at(s)
        return out.T

"""Pure pursuit on the reference path: the cheap fallback when the MPC fails."""

from __future__ import annotations

import math

import numpy as np

from nav_policy.expert.reference import ReferencePath
from nav_policy.model import RobotLimits


def pure_pursuit_action(state: np.ndarray, path: ReferencePath, s: float, lookahead_m: float,
                        limits: RobotLimits) -> np.ndarray:
    """(2,) [accel, turn rate] steering towards the path point `lookahead_m` ahead.

    Turns on the spot when the target is more than 60 degrees off the heading
    (the unicycle cannot reverse). Speed follows the path's speed profile.
    """
    x, y, yaw, v = (float(c) for c in state[:4])
    tx, ty, _ = path.at(s + lookahead_m)
    alpha = math.atan2(ty - y, tx - x) - yaw
    alpha = (alpha + math.pi) % (2 * math.pi) - math.pi
    dist = max(math.hypot(tx - x, ty - y), 1e-6)
    if abs(alpha) > math.pi / 3:
        v_target, w = 0.0, math.copysign(limits.max_turn_rate_radps, alpha)
    else:
        v_target = max(path.speed_at(s), 0.15 if s < path.length_m else 0.0)
        v_target *= max(0.3, math.cos(alpha))
        w = v_target * 2.0 * math.sin(alpha) / dist
        w = max(min(w, limits.max_turn_rate_radps), -limits.max_turn_rate_radps)
        # Turning hard: slow down so the turn-rate limit can follow the curve.
        if abs(w) >= limits.max_turn_rate_radps:
            v_target = min(v_target, limits.max_turn_rate_radps * dist / (2 * abs(math.sin(alpha))
                                                                           + 1e-6))
    a = (v_target - v) / limits.dt_s
    a = max(min(a, limits.max_accel_mps2), -limits.max_accel_mps2)
    return np.array([a, w])

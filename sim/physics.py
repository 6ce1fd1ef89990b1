"""Unicycle dynamics and exact circle-vs-world collision, batched over robots.

State per robot: (x_m, y_m, yaw_rad, v_mps, w_radps). Action: (linear
acceleration m/s², turn rate rad/s), clipped to the robot's limits. A step is
checked for contact at 4 points along the motion; the first contact is then
refined by bisection, so the reported contact point and the robot's stopping
pose are where the disc first touched the surface.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from sim.building import Building, cause_class_of
from sim.config import RobotConfig
from sim.geometry import CompiledGeometry, nearest_contact

_SUBSTEPS = 4
_BISECT_ITERS = 12


@dataclass(frozen=True)
class Collision:
    """What the robot hit.

    Attributes:
        object_id, object_class, material: the object touched.
        part: the part touched ("leg", "seat", "panel", ...).
        contact_point: [x_m, y_m] on the object's surface.
        cause_class: hazard class held responsible (sim.building.CAUSE_CLASSES).
        step: index of the first state in contact, i.e. the number of actions
            taken when the contact happened (set by the env).
    """

    object_id: int
    object_class: str
    material: str
    part: str
    contact_point: tuple[float, float]
    cause_class: str
    step: int = -1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["contact_point"] = list(self.contact_point)
        return d


def clip_action(action: np.ndarray, robot: RobotConfig) -> np.ndarray:
    """Clip (B, 2) or (2,) actions to the acceleration and turn-rate limits."""
    a = np.asarray(action, dtype=np.float64)
    lo = np.array([-robot.max_accel_mps2, -robot.max_turn_rate_radps])
    return np.clip(a, lo, -lo)


def unicycle_step(state: np.ndarray, action: np.ndarray, robot: RobotConfig,
                  dt_s: float) -> np.ndarray:
    """Advance (B, 5) states by one step of (B, 2) clipped actions.

    Speed integrates the acceleration and is clipped to [min_speed, max_speed];
    the pose integrates exactly along an arc at the new speed and turn rate.
    """
    state = np.asarray(state, dtype=np.float64)
    act = clip_action(action, robot).reshape(-1, 2)
    x, y, yaw, v = state[:, 0], state[:, 1], state[:, 2], state[:, 3]
    v_new = np.clip(v + act[:, 0] * dt_s, robot.min_speed_mps, robot.max_speed_mps)
    w = act[:, 1]
    dyaw = w * dt_s
    small = np.abs(dyaw) < 1e-6
    safe_w = np.where(small, 1.0, w)
    # Exact arc integration (straight line when not turning).
    dx = np.where(small, v_new * dt_s * np.cos(yaw + dyaw / 2),
                  v_new / safe_w * (np.sin(yaw + dyaw) - np.sin(yaw)))
    dy = np.where(small, v_new * dt_s * np.sin(yaw + dyaw / 2),
                  -v_new / safe_w * (np.cos(yaw + dyaw) - np.cos(yaw)))
    yaw_new = np.mod(yaw + dyaw + math.pi, 2 * math.pi) - math.pi
    return np.stack([x + dx, y + dy, yaw_new, v_new, w], axis=1)


class CollisionChecker:
    """Distance queries against the parts a robot of a given height can touch."""

    def __init__(self, geom: CompiledGeometry, building: Building, robot: RobotConfig) -> None:
        self.geom = geom
        self.building = building
        self.radius_m = robot.radius_m
        self.seg_mask, self.circ_mask = geom.colliders(robot.height_m)
        self._a = geom.seg_a[self.seg_mask].astype(np.float64)
        self._ab = geom.seg_b[self.seg_mask].astype(np.float64) - self._a
        self._ab2 = np.maximum((self._ab**2).sum(-1), 1e-12)
        self._c = geom.circ_c[self.circ_mask].astype(np.float64)
        self._r = geom.circ_r[self.circ_mask].astype(np.float64)

    def clearance(self, xy: np.ndarray) -> np.ndarray:
        """(B,) distance from each centre in (B, 2) to the nearest colliding surface."""
        p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        best = np.full(len(p), np.inf)
        if len(self._a):
            ap = p[:, None, :] - self._a[None]
            t = np.clip((ap * self._ab[None]).sum(-1) / self._ab2[None], 0, 1)
            d = ap - t[..., None] * self._ab[None]
            best = np.minimum(best, np.sqrt((d**2).sum(-1)).min(axis=1))
        if len(self._c):
            dc = np.sqrt(((p[:, None, :] - self._c[None]) ** 2).sum(-1)) - self._r[None]
            best = np.minimum(best, dc.min(axis=1))
        return best

    def sweep(self, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First contact along straight moves from (B, 2) starts to (B, 2) ends.

        Returns:
            (hit (B,) bool, fraction (B,) in [0, 1] of the move at first contact;
            1 where no contact).
        """
        start = np.asarray(start, np.float64).reshape(-1, 2)
        end = np.asarray(end, np.float64).reshape(-1, 2)
        n = len(start)
        hit = np.zeros(n, bool)
        frac = np.ones(n)
        lo = np.zeros(n)
        # Clearance is 1-Lipschitz: a robot whose clearance at the start exceeds
        # its move plus its radius cannot touch anything during the move.
        move = np.linalg.norm(end - start, axis=1)
        maybe = self.clearance(start) - move <= self.radius_m
        if not maybe.any():
            return hit, frac
        hit[~maybe] = False
        for k in range(1, _SUBSTEPS + 1):
            f = k / _SUBSTEPS
            pending = ~hit & maybe
            if not pending.any():
                break
            idx = np.flatnonzero(pending)
            pts = start[idx] + f * (end[idx] - start[idx])
            touching = self.clearance(pts) < self.radius_m
            newly = idx[touching]
            hit[newly] = True
            frac[newly] = f
            lo[idx[~touching]] = f
        for i in np.flatnonzero(hit):
            a, b = lo[i], frac[i]
            for _ in range(_BISECT_ITERS):
                m = 0.5 * (a + b)
                p = start[i] + m * (end[i] - start[i])
                if self.clearance(p[None])[0] < self.radius_m:
                    b = m
                else:
                    a = m
            frac[i] = b
        return hit, frac

    def describe(self, xy: tuple[float, float], step: int = -1) -> Collision:
        """The object nearest to a robot centre in contact, as a Collision."""
        c = nearest_contact(self.geom, xy, self.seg_mask, self.circ_mask)
        if c is None:
            raise ValueError("no collidable geometry in this building")
        obj = self.building.object(c.object_id)
        return Collision(
            object_id=c.object_id, object_class=obj.object_class, material=obj.material,
            part=c.part_name, contact_point=(round(c.point_xy[0], 4), round(c.point_xy[1], 4)),
            cause_class=cause_class_of(self.building, c.object_id, c.part_name, c.point_xy),
            step=step,
        )

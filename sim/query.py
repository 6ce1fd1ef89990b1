"""Queries over a building's map for targeted data collection.

* `MapQuery.objects(classes=..., materials=..., causes=...)` lists objects with
  their positions; `MapQuery.objects_near(xy, radius_m)` names what surrounds
  a point (a collision, a region centre).
* `MapQuery.sample_pairs_near(targets, n, seed=...)` samples start/goal pairs
  whose shortest path passes within `radius_m` of the targets: object ids, or
  `sim.topdown.Region`s (circle, rect, polygon). Each pair carries the
  planner's path and its closest approach, so callers can check or draw it.

Example:
    >>> q = MapQuery(load_world(SimConfig(), "office_a", 7))
    >>> glass = q.objects(causes=["glass"])
    >>> pairs = q.sample_pairs_near([o.object_id for o in glass], n=8, seed=0)
    >>> env.reset(seed=0, options=pairs[0].reset_options())
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as MplPath

from common import derive_rng
from sim.building import default_cause_class
from sim.env import World
from sim.geometry import clearance_grid, point_segment_distance
from sim.topdown import Region


@dataclass(frozen=True)
class ObjectInfo:
    """An object's facts for queries (no geometry beyond its footprint box)."""

    object_id: int
    object_class: str
    material: str
    cause_class: str  # hazard class a collision with its main part is blamed on
    center_xy: tuple[float, float]
    bbox: tuple[tuple[float, float], tuple[float, float]]
    z_range_m: tuple[float, float]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class StartGoalPair:
    """A start/goal pair whose planned path passes near a target.

    Attributes:
        start_xy, goal_xy: world coordinates.
        start_yaw: heading along the first metre of the path.
        path_xy: (K, 2) planned path.
        path_length_m: its length.
        closest_approach_m: smallest distance from the path to the target.
        target: what it was sampled for ("object:12", "region:glass doors").
    """

    start_xy: tuple[float, float]
    goal_xy: tuple[float, float]
    start_yaw: float
    path_xy: np.ndarray
    path_length_m: float
    closest_approach_m: float
    target: str

    def reset_options(self) -> dict:
        """Options for `env.reset(options=...)` (building given separately)."""
        return {"start_xy": list(self.start_xy), "goal_xy": list(self.goal_xy),
                "start_yaw": self.start_yaw}


class MapQuery:
    """Queries over one World (building + grid + planner).

    Args:
        world: from sim.env.load_world.
        start_clearance_m: clearance required around sampled starts and goals
            (defaults to the planner's minimum + 0.1 m).
    """

    def __init__(self, world: World, start_clearance_m: float | None = None) -> None:
        self.world = world
        self.building = world.building
        self.start_clearance_m = (start_clearance_m if start_clearance_m is not None
                                  else world.planner.min_clearance_m + 0.1)

    # ------------------------------------------------------------------ objects
    def objects(
        self,
        classes: Iterable[str] | None = None,
        materials: Iterable[str] | None = None,
        causes: Iterable[str] | None = None,
    ) -> list[ObjectInfo]:
        """Objects matching all given filters (None = any), in id order."""
        classes = set(classes) if classes is not None else None
        materials = set(materials) if materials is not None else None
        causes = set(causes) if causes is not None else None
        out = []
        for o in self.building.objects:
            cause = self._cause(o.object_id)
            if classes is not None and o.object_class not in classes:
                continue
            if materials is not None and o.material not in materials:
                continue
            if causes is not None and not (causes & {cause, *self._extra_causes(o.object_id)}):
                continue
            out.append(ObjectInfo(o.object_id, o.object_class, o.material, cause, o.center_xy,
                                  o.bbox, o.z_range_m, o.tags))
        return out

    def objects_near(self, xy: tuple[float, float], radius_m: float) -> list[tuple[ObjectInfo,
                                                                                    float]]:
        """Objects whose surface lies within `radius_m` of a point, nearest first.

        Returns:
            (ObjectInfo, distance_m) pairs; e.g. to name what surrounds a
            collision point or the centre of a failure region.
        """
        geom = self.world.geometry
        best = np.full(len(geom.obj_id), np.inf)
        pt = np.asarray([xy], dtype=np.float64)
        if len(geom.seg_a):
            d, _ = point_segment_distance(pt, geom.seg_a, geom.seg_b)
            np.minimum.at(best, geom.seg_obj, d[0])
        if len(geom.circ_c):
            dc = np.maximum(np.hypot(*(geom.circ_c - pt).T) - geom.circ_r, 0)
            np.minimum.at(best, geom.circ_obj, dc)
        order = np.argsort(best)
        infos = {o.object_id: o for o in self.objects()}
        return [(infos[int(geom.obj_id[k])], float(best[k])) for k in order
                if best[k] <= radius_m]

    def _cause(self, object_id: int) -> str:
        return default_cause_class(self.building.object(object_id).object_class)

    def _extra_causes(self, object_id: int) -> set[str]:
        """Causes some contacts with this object are blamed on (jambs, legs)."""
        o = self.building.object(object_id)
        extra = set()
        if o.object_class == "table":
            extra.add("thin_pole")
        for g in self.building.doorways:
            if object_id in g.wall_object_ids:
                extra.add("narrow_gap" if g.narrow else "corner")
        return extra

    # ------------------------------------------------------------------ targets
    def target_distance(self, targets: Sequence[int | Region]) -> np.ndarray:
        """(H, W) distance (m) from each grid cell to the nearest target."""
        grid, geom = self.world.grid, self.world.geometry
        ny, nx = grid.shape
        dist = np.full((ny, nx), np.inf, np.float32)
        ids = [t for t in targets if isinstance(t, (int, np.integer))]
        regions = [t for t in targets if isinstance(t, Region)]
        if len(ids) + len(regions) != len(targets):
            raise ValueError("targets must be object ids (int) or sim.topdown.Region instances")
        if ids:
            known = {int(i) for i in geom.obj_id}
            missing = sorted(set(map(int, ids)) - known)
            if missing:
                raise ValueError(f"object ids {missing} are not in {self.building.building_id}")
            sel = np.isin(geom.obj_id, np.asarray(ids))
            masks = (sel[geom.seg_obj], sel[geom.circ_obj])
            dist = np.minimum(dist, clearance_grid(geom, grid.origin_xy, grid.resolution_m,
                                                   (ny, nx), 0.0, exact_within_m=3.0,
                                                   masks=masks))
        if regions:
            xs, ys = grid.cell_to_world(np.arange(ny)[:, None], np.arange(nx)[None, :])
            xs, ys = np.broadcast_to(xs, (ny, nx)), np.broadcast_to(ys, (ny, nx))
            for reg in regions:
                dist = np.minimum(dist, _region_distance(reg, xs, ys))
        return dist

    # ------------------------------------------------------------------ pairs
    def sample_pairs_near(
        self,
        targets: Sequence[int | Region],
        n: int,
        *,
        seed: int,
        radius_m: float = 1.0,
        min_path_m: float = 4.0,
        max_path_m: float = 25.0,
        max_tries: int | None = None,
    ) -> list[StartGoalPair]:
        """Start/goal pairs whose shortest path passes within `radius_m` of a target.

        A via-cell near a target is drawn, then a start and a goal such that
        the via-cell lies on a shortest start→goal path (up to a small cost
        tolerance); the planned path is checked before a pair is accepted.

        Args:
            targets: object ids and/or Regions.
            n: number of pairs wanted.
            seed: sampling seed (same seed → same pairs).
            radius_m: how close the path must pass.
            min_path_m, max_path_m: path length range.
            max_tries: attempts before giving up (default 8 * n + 20).

        Returns:
            Up to n pairs (fewer only when the map does not allow more).

        Raises:
            ValueError: when no free cell lies within radius_m of any target.
        """
        planner, grid = self.world.planner, self.world.grid
        rng = derive_rng(seed, self.building.building_id, "pairs_near",
                         sorted(str(t) for t in targets), radius_m)
        tdist = self.target_distance(targets)
        near = planner.free & (tdist <= radius_m)
        endpoints = grid.free_mask(self.start_clearance_m) & planner.free
        ey, ex = np.nonzero(endpoints)
        vy, vx = np.nonzero(near)
        if len(vy) == 0:
            raise ValueError(
                f"no free cell within {radius_m} m of the targets in {self.building.building_id};"
                " raise radius_m or pick other targets")
        label = _target_label(targets)
        pairs: list[StartGoalPair] = []
        tries = max_tries if max_tries is not None else 8 * n + 20
        tol = 2 * grid.resolution_m
        for _ in range(tries):
            if len(pairs) >= n:
                break
            k = int(rng.integers(len(vy)))
            via = grid.cell_to_world(vy[k], vx[k])
            d_via, _ = planner.cost_from(via)
            dv = d_via[ey, ex]
            s_ok = np.flatnonzero((dv >= min_path_m / 2) & (dv <= max_path_m / 2))
            if len(s_ok) == 0:
                s_ok = np.flatnonzero(np.isfinite(dv) & (dv >= 1.0))
                if len(s_ok) == 0:
                    continue
            j = int(s_ok[rng.integers(len(s_ok))])
            start = grid.cell_to_world(ey[j], ex[j])
            d_start, pred = planner.cost_from(start)
            ds = d_start[ey, ex]
            through = ds >= d_start[vy[k], vx[k]] + dv - tol
            g_ok = np.flatnonzero(through & (ds >= min_path_m) & (ds <= max_path_m * 1.2)
                                  & (dv >= min(2.0, min_path_m / 2)))
            if len(g_ok) == 0:
                continue
            g = int(g_ok[rng.integers(len(g_ok))])
            goal = grid.cell_to_world(ey[g], ex[g])
            path = planner.path_from_predecessors(pred, start, goal)
            if path is None or not (min_path_m <= path.length_m <= max_path_m):
                continue
            iy, ix = _cells(grid, path.points_xy)
            approach = float(tdist[iy, ix].min())
            if approach > radius_m:
                continue
            pairs.append(StartGoalPair(
                (float(start[0]), float(start[1])), (float(goal[0]), float(goal[1])),
                _heading(path.points_xy), path.points_xy, path.length_m, approach, label))
        return pairs


    def sample_starts_facing(
        self,
        targets: Sequence[int | Region],
        n: int,
        *,
        seed: int,
        distance_m: tuple[float, float] = (0.8, 2.0),
        yaw_noise_rad: float = 0.35,
        min_path_m: float = 2.0,
        max_path_m: float = 6.0,
        max_tries: int | None = None,
    ) -> list[StartGoalPair]:
        """Starts a short way from a target and facing it, with a goal elsewhere.

        The robot must notice the target and turn away: the approach a failing
        policy took, and the recovery an expert shows from it.

        Args:
            targets: object ids and/or Regions.
            n: number of pairs wanted.
            seed: sampling seed (same seed → same pairs).
            distance_m: [min, max] distance from the start to the target.
            yaw_noise_rad: std of the heading around "straight at the target".
            min_path_m, max_path_m: path length range from the start to the goal.
            max_tries: attempts before giving up (default 8 * n + 20).

        Returns:
            Up to n pairs; `closest_approach_m` is the start's distance to the target.

        Raises:
            ValueError: when no free start cell lies at that distance from any target.
        """
        planner, grid = self.world.planner, self.world.grid
        rng = derive_rng(seed, self.building.building_id, "starts_facing",
                         sorted(str(t) for t in targets), distance_m)
        tdist = self.target_distance(targets)
        endpoints = grid.free_mask(self.start_clearance_m) & planner.free
        sy, sx = np.nonzero(endpoints & (tdist >= distance_m[0]) & (tdist <= distance_m[1]))
        if len(sy) == 0:
            raise ValueError(f"no free start {distance_m[0]}-{distance_m[1]} m from the targets "
                             f"in {self.building.building_id}; widen distance_m")
        ey, ex = np.nonzero(endpoints)
        finite = np.where(np.isfinite(tdist), tdist, distance_m[1] + 3.0)
        down_y, down_x = np.gradient(-finite)  # towards the target
        label = _target_label(targets)
        pairs: list[StartGoalPair] = []
        for _ in range(max_tries if max_tries is not None else 8 * n + 20):
            if len(pairs) >= n:
                break
            k = int(rng.integers(len(sy)))
            start = grid.cell_to_world(sy[k], sx[k])
            d_start, pred = planner.cost_from(start)
            ds = d_start[ey, ex]
            g_ok = np.flatnonzero((ds >= min_path_m) & (ds <= max_path_m))
            if len(g_ok) == 0:
                continue
            g = int(g_ok[rng.integers(len(g_ok))])
            goal = grid.cell_to_world(ey[g], ex[g])
            path = planner.path_from_predecessors(pred, start, goal)
            if path is None:
                continue
            yaw = math.atan2(down_y[sy[k], sx[k]], down_x[sy[k], sx[k]])
            yaw = float((yaw + rng.normal(0.0, yaw_noise_rad) + math.pi) % (2 * math.pi) - math.pi)
            pairs.append(StartGoalPair(
                (float(start[0]), float(start[1])), (float(goal[0]), float(goal[1])), yaw,
                path.points_xy, path.length_m, float(tdist[sy[k], sx[k]]), label))
        return pairs


def _target_label(targets: Sequence[int | Region]) -> str:
    """"object:12,region:glass doors": what a pair was sampled for."""
    return ",".join(f"object:{t}" if not isinstance(t, Region) else f"region:{t.label}"
                    for t in targets)


def _cells(grid, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = grid.shape
    ix = np.clip(np.floor((pts[:, 0] - grid.origin_xy[0]) / grid.resolution_m).astype(int), 0,
                 nx - 1)
    iy = np.clip(np.floor((pts[:, 1] - grid.origin_xy[1]) / grid.resolution_m).astype(int), 0,
                 ny - 1)
    return iy, ix


def _heading(path: np.ndarray, lookahead_m: float = 1.0) -> float:
    d = np.linalg.norm(path - path[0], axis=1)
    j = int(np.argmax(d >= lookahead_m)) if (d >= lookahead_m).any() else len(path) - 1
    v = path[j] - path[0]
    return float(math.atan2(v[1], v[0])) if np.hypot(*v) > 1e-9 else 0.0


def _region_distance(reg: Region, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Distance from points to a region (0 inside)."""
    if reg.kind == "circle":
        (cx, cy), r = reg.points[0], reg.radius_m
        return np.maximum(np.hypot(xs - cx, ys - cy) - r, 0).astype(np.float32)
    if reg.kind == "rect":
        (ax, ay), (bx, by) = reg.points
        x0, x1, y0, y1 = min(ax, bx), max(ax, bx), min(ay, by), max(ay, by)
        dx = np.maximum(np.maximum(x0 - xs, 0), xs - x1)
        dy = np.maximum(np.maximum(y0 - ys, 0), ys - y1)
        return np.hypot(dx, dy).astype(np.float32)
    if reg.kind == "polygon":
        poly = np.asarray(reg.points, float)
        pts = np.stack([xs.ravel(), ys.ravel()], axis=1)
        inside = MplPath(poly).contains_points(pts).reshape(xs.shape)
        a, b = poly, np.roll(poly, -1, axis=0)
        best = np.full(xs.shape, np.inf)
        for (ax, ay), (bx, by) in zip(a, b):
            abx, aby = bx - ax, by - ay
            t = np.clip(((xs - ax) * abx + (ys - ay) * aby) / max(abx**2 + aby**2, 1e-12), 0, 1)
            best = np.minimum(best, np.hypot(xs - ax - t * abx, ys - ay - t * aby))
        return np.where(inside, 0, best).astype(np.float32)
    raise ValueError(f"unknown region kind {reg.kind!r}; use circle, rect or polygon")

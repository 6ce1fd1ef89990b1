"""Grid shortest paths with a clearance cost (Dijkstra on an 8-connected grid).

One planner serves the map queries (which start/goal pairs pass near an
object) and the expert of nav_policy. Cells closer to a surface than
`min_clearance_m` are forbidden; cells closer than `preferred_clearance_m`
cost more, so paths keep to the middle of corridors and doorways unless the
detour is long.

Example:
    >>> planner = GridPlanner(grid, min_clearance_m=0.22)
    >>> path = planner.plan((1.0, 1.0), (12.0, 7.5))
    >>> path.length_m, path.points_xy.shape
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from sim.grid import OccupancyGrid

_NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (1, -1))  # each undirected edge once


@dataclass(frozen=True)
class GridPath:
    """A planned path.

    Attributes:
        points_xy: (K, 2) world coordinates of cell centres from start to goal
            (the exact start and goal are the first and last points).
        length_m: Euclidean length along points_xy.
        cost: the planner's cost (length weighted by clearance penalties).
        min_clearance_m: smallest clearance of the cells on the path.
    """

    points_xy: np.ndarray
    length_m: float
    cost: float
    min_clearance_m: float


class GridPlanner:
    """Dijkstra over the free cells of an OccupancyGrid (graph built once).

    Args:
        grid: the occupancy grid.
        min_clearance_m: cells with less clearance are forbidden (robot radius
            plus a small margin).
        preferred_clearance_m: below this clearance a cell costs extra.
        clearance_weight: how much extra: cost per metre is
            1 + weight * ((preferred - c) / preferred)**2 for c < preferred.
    """

    def __init__(
        self,
        grid: OccupancyGrid,
        min_clearance_m: float,
        preferred_clearance_m: float = 0.6,
        clearance_weight: float = 4.0,
    ) -> None:
        if preferred_clearance_m < min_clearance_m:
            raise ValueError("preferred_clearance_m must be >= min_clearance_m")
        self.grid = grid
        self.min_clearance_m = float(min_clearance_m)
        self.preferred_clearance_m = float(preferred_clearance_m)
        self.clearance_weight = float(clearance_weight)
        self.free = grid.free_mask(min_clearance_m)
        ny, nx = self.free.shape
        c = grid.clearance_m
        pen = np.clip((preferred_clearance_m - c) / max(preferred_clearance_m, 1e-9), 0, None)
        self._cell_cost = (1.0 + clearance_weight * pen**2).astype(np.float64)
        rows, cols, vals = [], [], []
        flat = np.arange(ny * nx).reshape(ny, nx)
        for dy, dx in _NEIGHBOURS:
            y0, y1 = max(0, -dy), ny - max(0, dy)
            x0, x1 = max(0, -dx), nx - max(0, dx)
            a = self.free[y0:y1, x0:x1]
            b = self.free[y0 + dy: y1 + dy, x0 + dx: x1 + dx]
            ok = a & b
            if dx != 0 and dy != 0:
                # No corner cutting: both side cells must be free too.
                ok &= self.free[y0 + dy: y1 + dy, x0:x1] & self.free[y0:y1, x0 + dx: x1 + dx]
            step = grid.resolution_m * (np.sqrt(2.0) if dx and dy else 1.0)
            w = 0.5 * (self._cell_cost[y0:y1, x0:x1] + self._cell_cost[y0 + dy: y1 + dy,
                                                                         x0 + dx: x1 + dx]) * step
            rows.append(flat[y0:y1, x0:x1][ok])
            cols.append(flat[y0 + dy: y1 + dy, x0 + dx: x1 + dx][ok])
            vals.append(w[ok])
        r, cidx, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        self._graph = csr_matrix((v, (r, cidx)), shape=(ny * nx, ny * nx))

    # ------------------------------------------------------------------ cells
    def snap(self, xy: tuple[float, float], max_dist_m: float = 0.6) -> tuple[int, int] | None:
        """The free cell nearest to `xy` within `max_dist_m`, or None."""
        iy, ix = self.grid.world_to_cell(*xy)
        cx, cy = self.grid.cell_to_world(iy, ix)
        if math.hypot(cx - xy[0], cy - xy[1]) > max_dist_m + self.grid.resolution_m:
            return None  # outside the grid
        if self.free[iy, ix]:
            return iy, ix
        r = int(np.ceil(max_dist_m / self.grid.resolution_m))
        ny, nx = self.free.shape
        y0, y1, x0, x1 = max(iy - r, 0), min(iy + r + 1, ny), max(ix - r, 0), min(ix + r + 1, nx)
        win = self.free[y0:y1, x0:x1]
        if not win.any():
            return None
        yy, xx = np.nonzero(win)
        wx, wy = self.grid.cell_to_world(yy + y0, xx + x0)
        d = np.hypot(wx - xy[0], wy - xy[1])
        k = int(np.argmin(d))
        if d[k] > max_dist_m:
            return None
        return int(yy[k] + y0), int(xx[k] + x0)

    def _flat(self, cell: tuple[int, int]) -> int:
        return cell[0] * self.free.shape[1] + cell[1]

    # ------------------------------------------------------------------ fields
    def cost_from(self, xy: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """Cost field and predecessor array of a single-source Dijkstra.

        Returns:
            (cost (H, W) float, inf where unreachable; predecessors (H*W,) int,
            -9999 where none). Raises ValueError when `xy` is not near free space.
        """
        cell = self.snap(xy)
        if cell is None:
            raise ValueError(f"point {xy} is not within 0.6 m of free space")
        dist, pred = dijkstra(self._graph, directed=False, indices=self._flat(cell),
                              return_predecessors=True)
        return dist.reshape(self.free.shape), pred

    def cost_to_go(self, goal_xy: tuple[float, float]) -> np.ndarray:
        """(H, W) cost from every cell to the goal (the graph is symmetric)."""
        return self.cost_from(goal_xy)[0]

    def path_from_predecessors(
        self, pred: np.ndarray, source_xy: tuple[float, float], target_xy: tuple[float, float]
    ) -> GridPath | None:
        """Walk predecessors of a `cost_from(source_xy)` result back from target."""
        tgt = self.snap(target_xy)
        src = self.snap(source_xy)
        if tgt is None or src is None:
            return None
        nx = self.free.shape[1]
        node, chain = self._flat(tgt), []
        src_flat = self._flat(src)
        while node != src_flat:
            chain.append(node)
            node = int(pred[node])
            if node < 0:
                return None
        chain.append(src_flat)
        chain.reverse()
        cells = np.asarray(chain)
        iy, ix = cells // nx, cells % nx
        x, y = self.grid.cell_to_world(iy, ix)
        pts = np.stack([np.atleast_1d(x), np.atleast_1d(y)], axis=1)
        pts = np.vstack([np.asarray(source_xy, float)[None], pts[1:-1],
                         np.asarray(target_xy, float)[None]]) if len(pts) >= 2 else \
            np.asarray([source_xy, target_xy], float)
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        costs = self._cell_cost[iy, ix]
        return GridPath(pts, float(seg.sum()), float((seg * costs[: len(seg)]).sum()),
                        float(self.grid.clearance_m[iy, ix].min()))

    # ------------------------------------------------------------------ paths
    def plan(self, start_xy: tuple[float, float], goal_xy: tuple[float, float]) -> GridPath | None:
        """Cheapest path from start to goal, or None if they are not connected."""
        _, pred = self.cost_from(start_xy)
        return self.path_from_predecessors(pred, start_xy, goal_xy)


def plan_path(
    grid: OccupancyGrid,
    start_xy: tuple[float, float],
    goal_xy: tuple[float, float],
    min_clearance_m: float,
    preferred_clearance_m: float = 0.6,
) -> GridPath | None:
    """One-shot convenience: build a GridPlanner and plan once."""
    return GridPlanner(grid, min_clearance_m, preferred_clearance_m).plan(start_xy, goal_xy)


def shortcut_path(grid: OccupancyGrid, points_xy: np.ndarray, min_clearance_m: float) -> np.ndarray:
    """Drop waypoints while the straight line between kept ones stays clear.

    Useful for followers that prefer few waypoints (pure pursuit, MPC
    references). The line is checked at half-cell steps against the grid.
    """
    pts = np.asarray(points_xy, float)
    if len(pts) <= 2:
        return pts
    free = grid.free_mask(min_clearance_m)

    def clear(a: np.ndarray, b: np.ndarray) -> bool:
        n = max(2, int(np.ceil(np.linalg.norm(b - a) / (grid.resolution_m * 0.5))))
        for t in np.linspace(0, 1, n):
            p = a + t * (b - a)
            if not free[grid.world_to_cell(float(p[0]), float(p[1]))]:
                return False
        return True

    out, i = [pts[0]], 0
    while i < len(pts) - 1:
        j = len(pts) - 1
        while j > i + 1 and not clear(pts[i], pts[j]):
            j -= 1
        out.append(pts[j])
        i = j
    return np.asarray(out)

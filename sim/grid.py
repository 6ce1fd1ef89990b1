"""Occupancy grid with an exact clearance field.

Cells are indexed `[iy, ix]`; cell (0, 0) has its lower-left corner at
`origin_xy`. `clearance_m[iy, ix]` is the exact distance from the cell centre
to the nearest surface a body of `body_height_m` can touch (objects entirely
above it, like table tops over a short robot, are ignored), so inflation by
any radius is a threshold, not a re-rasterisation.

Example:
    >>> grid = OccupancyGrid.from_building(building, resolution_m=0.1)
    >>> free = grid.free_mask(clearance_m=0.25)   # where a 0.25 m disc fits
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.building import Building
from sim.geometry import CompiledGeometry, clearance_grid, compile_building


@dataclass
class OccupancyGrid:
    """A 2-D grid over the building footprint.

    Attributes:
        origin_xy: world coordinates of the lower-left corner of cell (0, 0).
        resolution_m: cell size.
        clearance_m: (H, W) float32, distance from each cell centre to the
            nearest colliding surface.
        inside: (H, W) bool, cell centre inside the building's outer walls.
        body_height_m: height used to decide which objects collide.
    """

    origin_xy: tuple[float, float]
    resolution_m: float
    clearance_m: np.ndarray
    inside: np.ndarray
    body_height_m: float

    @classmethod
    def from_building(
        cls,
        building: Building,
        resolution_m: float = 0.1,
        body_height_m: float = 0.7,
        geometry: CompiledGeometry | None = None,
    ) -> OccupancyGrid:
        """Build the grid of `building` (clearance exact within 1.5 m of a surface)."""
        geom = geometry if geometry is not None else compile_building(building)
        w_m, d_m = building.size_m
        margin = 2 * resolution_m
        origin = (-margin, -margin)
        nx = int(np.ceil((w_m + 2 * margin) / resolution_m))
        ny = int(np.ceil((d_m + 2 * margin) / resolution_m))
        xs = origin[0] + (np.arange(nx) + 0.5) * resolution_m
        ys = origin[1] + (np.arange(ny) + 0.5) * resolution_m
        gx, gy = np.meshgrid(xs, ys)
        clearance = clearance_grid(geom, origin, resolution_m, (ny, nx), body_height_m)
        inside = (gx > 0) & (gx < w_m) & (gy > 0) & (gy < d_m)
        return cls(origin, float(resolution_m), clearance, inside, float(body_height_m))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) = (ny, nx)."""
        return self.clearance_m.shape  # type: ignore[return-value]

    @property
    def occupied(self) -> np.ndarray:
        """(H, W) bool: a surface passes through the cell."""
        return self.clearance_m < self.resolution_m * 0.5

    def free_mask(self, clearance_m: float) -> np.ndarray:
        """(H, W) bool: cells inside the building whose centre is farther than
        `clearance_m` from every colliding surface (inflation by that radius)."""
        return self.inside & (self.clearance_m > clearance_m)

    def world_to_cell(self, x_m: float, y_m: float) -> tuple[int, int]:
        """(iy, ix) of the cell containing the point, clipped to the grid."""
        ix = int(np.floor((x_m - self.origin_xy[0]) / self.resolution_m))
        iy = int(np.floor((y_m - self.origin_xy[1]) / self.resolution_m))
        ny, nx = self.shape
        return min(max(iy, 0), ny - 1), min(max(ix, 0), nx - 1)

    def cell_to_world(self, iy: int | np.ndarray, ix: int | np.ndarray) -> tuple:
        """World (x, y) of cell centres (scalars or arrays)."""
        x = self.origin_xy[0] + (np.asarray(ix) + 0.5) * self.resolution_m
        y = self.origin_xy[1] + (np.asarray(iy) + 0.5) * self.resolution_m
        if np.ndim(x) == 0:
            return float(x), float(y)
        return x, y

    def clearance_at(self, x_m: float, y_m: float) -> float:
        """Clearance of the cell containing (x, y)."""
        return float(self.clearance_m[self.world_to_cell(x_m, y_m)])

"""Occupancy grid and grid planner."""

from __future__ import annotations

import numpy as np
import pytest

from sim.building import Part, WorldObject
from sim.grid import OccupancyGrid
from sim.planning import GridPlanner, plan_path, shortcut_path
from sim.world import generate_building, simple_room


def test_clearance_is_exact_near_a_wall():
    room = simple_room(6.0, 4.0)
    grid = OccupancyGrid.from_building(room, resolution_m=0.1)
    # Cell centre (1.05, 2.05): nearest wall is x = 0 at 1.05 m.
    assert grid.clearance_at(1.05, 2.05) == pytest.approx(1.05, abs=1e-4)
    assert grid.free_mask(0.5).sum() < grid.free_mask(0.2).sum()


def test_objects_above_body_height_do_not_occupy():
    shelf = WorldObject(5, "cabinet", "steel", (Part("polygon", ((2, 1), (4, 1), (4, 3), (2, 3)),
                                                     1.0, 1.2, name="body"),), (0.5, 0.5, 0.5))
    room = simple_room(6.0, 4.0, [shelf])
    low = OccupancyGrid.from_building(room, body_height_m=0.7)
    tall = OccupancyGrid.from_building(room, body_height_m=1.5)
    assert low.clearance_at(3.0, 2.0) > 0.5 and tall.clearance_at(3.0, 2.0) == 0.0


def test_plan_avoids_obstacles_and_respects_clearance():
    b = generate_building("office_a", 3)
    grid = OccupancyGrid.from_building(b)
    planner = GridPlanner(grid, 0.23)
    start = b.doorways[0].center_xy
    cost, _ = planner.cost_from(start)
    far = np.unravel_index(np.argmax(np.where(np.isfinite(cost), cost, -1)), cost.shape)
    goal = grid.cell_to_world(*far)
    path = planner.plan(start, goal)
    assert path is not None
    assert path.min_clearance_m > 0.23
    assert path.length_m >= np.hypot(goal[0] - start[0], goal[1] - start[1]) - 1e-6
    assert np.allclose(path.points_xy[0], start) and np.allclose(path.points_xy[-1], goal)
    assert path.length_m > 10
    short = shortcut_path(grid, path.points_xy, 0.23)
    assert len(short) < len(path.points_xy) and np.allclose(short[-1], goal)


def test_unreachable_goal_gives_none():
    # A closed box room inside the room: its inside is cut off.
    walls = [WorldObject(5 + i, "wall", "painted_drywall",
                         (Part("segment", (a, b), 0.0, 2.6, name="panel"),), (0.8, 0.8, 0.7))
             for i, (a, b) in enumerate([((3, 1), (5, 1)), ((5, 1), (5, 3)), ((5, 3), (3, 3)),
                                         ((3, 3), (3, 1))])]
    room = simple_room(8.0, 4.0, walls)
    grid = OccupancyGrid.from_building(room)
    assert plan_path(grid, (1.0, 2.0), (4.0, 2.0), 0.2) is None
    assert plan_path(grid, (1.0, 2.0), (7.0, 2.0), 0.2) is not None


def test_snap_rejects_points_far_from_free_space():
    room = simple_room(6.0, 4.0)
    planner = GridPlanner(OccupancyGrid.from_building(room), 0.2)
    with pytest.raises(ValueError, match="free space"):
        planner.cost_from((-5.0, -5.0))

"""Top-down maps and map queries."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sim.config import SimConfig
from sim.env import load_world
from sim.query import MapQuery
from sim.topdown import Region, render_topdown, save_png


@pytest.fixture(scope="module")
def world():
    return load_world(SimConfig(), "office_a", 7)


def test_map_png_with_overlays(world, tmp_path):
    plain = np.asarray(render_topdown(world.building))
    traj = np.array([[2.0, 2.0], [5.0, 3.0], [8.0, 3.0]])
    img = render_topdown(world.building, trajectories=[traj], collisions=[(8.0, 3.0)],
                         regions=[Region.circle((5.0, 5.0), 1.5, "glass doors"),
                                  Region.rect(10, 2, 12, 4, "poles"),
                                  Region.polygon([(14, 2), (16, 2), (15, 4)], "tri")],
                         starts_goals=[((2.0, 2.0), (8.0, 3.0))], title="t")
    save_png(img, tmp_path / "map.png")
    back = np.asarray(Image.open(tmp_path / "map.png"))
    assert back.shape == plain.shape and back.shape[1] == int(world.building.size_m[0] * 20 + 24)
    assert (back != plain).any(axis=2).sum() > 500
    with pytest.raises(ValueError, match="circle, rect or polygon"):
        render_topdown(world.building, regions=[Region("blob", ((0.0, 0.0),))])


def test_objects_by_class_material_and_cause(world):
    q = MapQuery(world)
    glass = q.objects(causes=["glass"])
    assert glass and all(o.object_class in ("glass_partition", "glass_door") for o in glass)
    metal = q.objects(materials=["metal"])
    assert all(o.material == "metal" for o in metal)
    poles = q.objects(classes=["pole"])
    b = world.building
    assert [o.object_id for o in poles] == [o.object_id for o in b.objects_of_class("pole")]
    assert poles[0].center_xy == pytest.approx(b.object(poles[0].object_id).center_xy)
    assert q.objects(causes=["thin_pole"])  # poles and table legs
    near = q.objects_near(poles[0].center_xy, 0.5)
    assert near[0][0].object_id == poles[0].object_id and near[0][1] == 0.0
    assert all(d <= 0.5 for _, d in near) and [d for _, d in near] == sorted(d for _, d in near)


def test_pairs_pass_near_requested_objects(world):
    q = MapQuery(world)
    pole = q.objects(classes=["pole"])[0]
    pairs = q.sample_pairs_near([pole.object_id], n=4, seed=0, radius_m=1.0)
    assert len(pairs) == 4
    px, py = pole.center_xy
    for p in pairs:
        assert 4.0 <= p.path_length_m <= 25.0
        d = np.hypot(p.path_xy[:, 0] - px, p.path_xy[:, 1] - py).min()
        assert d <= 1.0 + 0.1 and p.closest_approach_m <= 1.0
        # The pair's own shortest path (replanned) also passes the pole.
        again = world.planner.plan(p.start_xy, p.goal_xy)
        assert np.hypot(again.points_xy[:, 0] - px, again.points_xy[:, 1] - py).min() <= 1.2
    same = q.sample_pairs_near([pole.object_id], n=4, seed=0, radius_m=1.0)
    assert [p.start_xy for p in same] == [p.start_xy for p in pairs]
    other = q.sample_pairs_near([pole.object_id], n=4, seed=1, radius_m=1.0)
    assert [p.start_xy for p in other] != [p.start_xy for p in pairs]


def test_pairs_through_a_region_and_bad_targets(world):
    q = MapQuery(world)
    corridor = next(s for s in world.building.spaces if s.kind == "corridor")
    x0, y0, x1, y1 = corridor.rect
    mid = (x0 + x1) / 2
    region = Region.rect(mid - 1, y0, mid + 1, y1, "corridor middle")
    pairs = q.sample_pairs_near([region], n=3, seed=2, radius_m=0.0)
    assert len(pairs) == 3
    for p in pairs:
        inside = (np.abs(p.path_xy[:, 0] - mid) <= 1.0 + 0.05) & \
            (p.path_xy[:, 1] >= y0) & (p.path_xy[:, 1] <= y1)
        assert inside.any()
        assert set(p.reset_options()) == {"start_xy", "goal_xy", "start_yaw"}
    with pytest.raises(ValueError, match="not in"):
        q.sample_pairs_near([999_999], n=1, seed=0)


def test_starts_facing_a_target_see_it_ahead(world):
    q = MapQuery(world)
    pole = q.objects(classes=["pole"])[0]
    pairs = q.sample_starts_facing([pole.object_id], n=4, seed=0, yaw_noise_rad=0.0)
    assert len(pairs) == 4
    px, py = pole.center_xy
    for p in pairs:
        assert 0.8 <= p.closest_approach_m <= 2.0 and 2.0 <= p.path_length_m <= 6.0
        # Heading straight at the pole (within the grid's resolution at that distance).
        bearing = np.arctan2(py - p.start_xy[1], px - p.start_xy[0])
        err = (p.start_yaw - bearing + np.pi) % (2 * np.pi) - np.pi
        assert abs(err) < 0.35
    again = q.sample_starts_facing([pole.object_id], n=4, seed=0, yaw_noise_rad=0.0)
    assert [p.start_xy for p in again] == [p.start_xy for p in pairs]
    with pytest.raises(ValueError, match="widen distance_m"):
        q.sample_starts_facing([pole.object_id], n=1, seed=0, distance_m=(50.0, 60.0))

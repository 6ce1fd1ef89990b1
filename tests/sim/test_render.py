"""The raycaster shows each hazard the way a camera would."""

from __future__ import annotations

import numpy as np
from sim_scenes import GLASS, LOW_BOX, POLE

from sim.building import CLASS_IDS, Part, WorldObject
from sim.config import CameraConfig
from sim.geometry import compile_building
from sim.render import Raycaster
from sim.world import simple_room

RED = WorldObject(9, "wall", "painted_drywall",
                  (Part("segment", ((7.0, 0.5), (7.0, 3.5)), 0.0, 2.6, name="panel"),),
                  (0.9, 0.1, 0.1), "flat")
CAM = CameraConfig(width_px=64, height_px=64, pitch_deg=0.0)


def _render(*objs, pose=(2.0, 2.0, 0.0), cam=CAM, **kw):
    room = simple_room(8.0, 4.0, objs)
    return Raycaster(compile_building(room), room, cam).render(np.array([pose]), **kw)


def test_glass_is_mostly_see_through_but_labelled():
    behind = _render(RED).rgb[0, 20:40, 28:36].astype(float).mean((0, 1))
    through = _render(RED, GLASS, semantic=True, depth=True)
    seen = through.rgb[0, 20:40, 28:36].astype(float).mean((0, 1))
    assert np.abs(seen - behind).max() < 0.2 * 255  # the red wall shows through
    assert seen[0] > 2 * seen[1]  # still red
    assert (through.semantic[0, 20:40, 28:36] == CLASS_IDS["glass_partition"]).all()
    assert np.allclose(through.depth[0, 32, 32], 3.0, atol=0.05)


def test_distant_thin_pole_still_visible_but_thin():
    pole_far = WorldObject(6, "pole", "metal",
                           (Part("circle", ((7.5, 2.0),), 0.0, 2.0, 0.02, "shaft"),),
                           (0.05, 0.05, 0.05), "flat")
    with_pole = _render(pole_far, pose=(0.5, 2.0, 0.0)).rgb[0].astype(float)
    without = _render(pose=(0.5, 2.0, 0.0)).rgb[0].astype(float)
    changed_cols = np.flatnonzero(np.abs(with_pole - without).max(axis=(0, 2)) > 3)
    assert 1 <= len(changed_cols) <= 2  # ~0.33 px wide at 7 m: blended in, not lost


def test_near_pole_spans_several_columns():
    inst = _render(POLE, pose=(4.0, 2.0, 0.0), instance=True).instance[0]
    cols = np.flatnonzero((inst == POLE.object_id).any(axis=0))
    assert 2 <= len(cols) <= 6


def test_low_box_only_in_bottom_rows_and_leaves_view_when_close():
    far = _render(LOW_BOX, pose=(2.0, 2.0, 0.0), instance=True).instance[0]
    rows = np.flatnonzero((far == LOW_BOX.object_id).any(axis=1))
    assert len(rows) and rows.min() > 32  # below the horizon only
    # Default camera (0.6 m high, pitched 3 deg down, 60 deg fov): a 0.25 m high,
    # 0.3 m deep box 1 m ahead is seen; 0.22 m ahead (0.02 m from the bumper) it
    # is entirely under the camera's gaze.
    seen = _render(LOW_BOX, pose=(4.0, 2.0, 0.0), cam=CameraConfig(), instance=True).instance[0]
    assert (seen == LOW_BOX.object_id).any()
    near = _render(LOW_BOX, pose=(4.78, 2.0, 0.0), cam=CameraConfig(), instance=True).instance[0]
    assert not (near == LOW_BOX.object_id).any()


def test_plain_wall_is_featureless_textured_wall_is_not():
    def wall(cls, tex, rgb):
        return WorldObject(9, cls, "x", (Part("segment", ((4.0, 0.0), (4.0, 4.0)), 0.0, 2.6,
                                              name="panel"),), rgb, tex)
    plain = _render(wall("plain_wall", "flat", (0.58, 0.55, 0.51))).rgb[0, 5:30].astype(float)
    textured = _render(wall("wall", "panels", (0.8, 0.76, 0.66))).rgb[0, 5:30].astype(float)
    assert plain.std(axis=(0, 1)).max() < 1.0
    assert textured.std(axis=(0, 1)).max() > 5.0

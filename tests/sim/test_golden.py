"""Golden images of the renderer: a fixed hand-made scene must keep its look.

Regenerate after an intended rendering change (and bump the env version in
sim/__init__.py, since observations change):

    .venv/bin/python tests/sim/test_golden.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sim_scenes import GLASS, LOW_BOX, POLE

from sim.building import Part, WorldObject
from sim.config import CameraConfig
from sim.geometry import compile_building
from sim.render import Raycaster
from sim.world import generate_building, simple_room

GOLDEN = Path(__file__).parent / "golden"
PLAIN = WorldObject(9, "plain_wall", "plain_drywall",
                    (Part("segment", ((7.0, 0.2), (7.0, 3.8)), 0.0, 2.6, name="panel"),),
                    (0.58, 0.55, 0.51), "flat")


def _scenes() -> dict[str, np.ndarray]:
    cam = CameraConfig()
    room = simple_room(8.0, 4.0, [GLASS, PLAIN,
                                  WorldObject(10, POLE.object_class, POLE.material,
                                              (Part("circle", ((3.5, 2.6),), 0.0, 2.0, 0.03),),
                                              POLE.color_rgb, POLE.texture),
                                  WorldObject(11, LOW_BOX.object_class, LOW_BOX.material,
                                              (Part("polygon", ((3.0, 1.0), (3.3, 1.0), (3.3, 1.4),
                                                                (3.0, 1.4)), 0.0, 0.25),),
                                              LOW_BOX.color_rgb, LOW_BOX.texture)])
    r = Raycaster(compile_building(room), room, cam)
    office = generate_building("office_b", 3)
    r2 = Raycaster(compile_building(office), office, cam)
    return {"room_64": r.render(np.array([[1.0, 2.0, 0.1]])).rgb[0],
            "office_b3_64": r2.render(np.array([[20.55, 15.85, -2.02]])).rgb[0]}


def test_renders_match_golden_images():
    for name, img in _scenes().items():
        golden = np.asarray(Image.open(GOLDEN / f"{name}.png").convert("RGB")).astype(int)
        diff = np.abs(img.astype(int) - golden).max(axis=2)
        # Float noise may move a few pixels by a level or two, nothing more.
        assert (diff > 2).mean() < 0.005, f"{name}: {(diff > 2).mean():.2%} pixels changed"


if __name__ == "__main__":
    GOLDEN.mkdir(exist_ok=True)
    for name, img in _scenes().items():
        Image.fromarray(img).save(GOLDEN / f"{name}.png")
        print(f"wrote {GOLDEN / name}.png")

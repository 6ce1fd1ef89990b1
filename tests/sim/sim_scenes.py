"""Hand-made objects for analytic tests (one hazard each)."""

from __future__ import annotations

from sim.building import Part, WorldObject

GLASS = WorldObject(5, "glass_partition", "glass",
                    (Part("segment", ((5.0, 1.0), (5.0, 3.0)), 0.0, 2.6, name="panel"),),
                    (0.7, 0.85, 0.9), "glass", 0.12)
POLE = WorldObject(6, "pole", "metal", (Part("circle", ((5.0, 2.0),), 0.0, 2.0, 0.03, "shaft"),),
                   (0.3, 0.3, 0.32), "metal")
LOW_BOX = WorldObject(7, "box", "cardboard",
                      (Part("polygon", ((5.0, 1.7), (5.3, 1.7), (5.3, 2.3), (5.0, 2.3)), 0.0, 0.25,
                            name="box"),), (0.72, 0.56, 0.35), "flat")
# A table whose top (0.72 m) is above the 0.7 m robot; legs well off the robot's line.
TABLE = WorldObject(8, "table", "wood", (
    Part("circle", ((4.0, 1.2),), 0.0, 0.72, 0.025, "leg"),
    Part("circle", ((4.0, 2.8),), 0.0, 0.72, 0.025, "leg"),
    Part("circle", ((5.2, 1.2),), 0.0, 0.72, 0.025, "leg"),
    Part("circle", ((5.2, 2.8),), 0.0, 0.72, 0.025, "leg"),
    Part("polygon", ((4.0, 1.2), (5.2, 1.2), (5.2, 2.8), (4.0, 2.8)), 0.72, 0.76, name="top"),
), (0.6, 0.45, 0.3), "wood")


"""The building data model: objects, their parts, doorways, spaces and classes.

A `Building` is a flat list of `WorldObject`s (walls, glass, poles, furniture…).
Each object has an integer id (>= 1; 0 means "nothing" in instance images), a
class, a material, a colour/texture for the renderer and one or more `Part`s:
a segment, a polygon or a circle, each with its own height range. A chair is
one object with leg circles, a seat polygon and a backrest segment, so a
collision reports "chair" whichever part was touched.

The semantic class ids (`SEMANTIC_CLASSES`, also the `semantic` image channel)
and the hazard classes of ground truth (`CAUSE_CLASSES`, `cause_class_of`) live
here too. This module imports nothing else from `sim`, so the geometry, grid,
renderer and generator (`sim.world`) can all build on it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

SCHEMA_VERSION = 1

# Semantic class ids (also the `semantic` image channel). 0..2 are not objects.
SEMANTIC_CLASSES: dict[int, str] = {
    0: "void",
    1: "floor",
    2: "ceiling",
    3: "wall",
    4: "plain_wall",
    5: "glass_partition",
    6: "glass_door",
    7: "pole",
    8: "table",
    9: "chair",
    10: "box",
    11: "bin",
    12: "pillar",
    13: "cabinet",
}
CLASS_IDS: dict[str, int] = {name: i for i, name in SEMANTIC_CLASSES.items()}
OBJECT_CLASSES: tuple[str, ...] = tuple(n for i, n in SEMANTIC_CLASSES.items() if i >= 3)

# Hazard taxonomy used for `cause_class` in ground truth (see cause_class_of).
CAUSE_CLASSES: tuple[str, ...] = (
    "glass",
    "thin_pole",
    "plain_wall",
    "low_obstacle",
    "narrow_gap",
    "chair",
    "corner",
    "wall",
    "furniture",
)
_CLASS_TO_CAUSE = {
    "wall": "wall",
    "plain_wall": "plain_wall",
    "glass_partition": "glass",
    "glass_door": "glass",
    "pole": "thin_pole",
    "table": "furniture",  # legs are "thin_pole", see cause_class_of
    "chair": "chair",
    "box": "low_obstacle",
    "bin": "low_obstacle",
    "pillar": "corner",
    "cabinet": "furniture",
}
# Textures the renderer knows; "glass" is drawn see-through with a faint frame.
TEXTURES = ("flat", "panels", "brick", "wood", "glass", "fabric", "metal")

PartKind = Literal["segment", "polygon", "circle"]


@dataclass(frozen=True)
class Part:
    """One primitive of an object.

    Attributes:
        kind: "segment" (2 points, zero thickness), "polygon" (>= 3 points,
            counter-clockwise or clockwise) or "circle" (1 point = centre).
        points: vertices in world metres.
        z_min_m: bottom height of the part.
        z_max_m: top height of the part.
        radius_m: circle radius (0 for other kinds).
        name: role inside the object, e.g. "leg", "seat", "panel".
    """

    kind: PartKind
    points: tuple[tuple[float, float], ...]
    z_min_m: float
    z_max_m: float
    radius_m: float = 0.0
    name: str = "body"

    def edges(self) -> list[tuple[tuple[float, float], tuple[float, float]]]:
        """Segments that bound the part (empty for circles)."""
        if self.kind == "segment":
            return [(self.points[0], self.points[1])]
        if self.kind == "polygon":
            pts = self.points
            return [(pts[i], pts[(i + 1) % len(pts)]) for i in range(len(pts))]
        return []


@dataclass(frozen=True)
class WorldObject:
    """A wall, glass pane, pole or piece of furniture.

    Attributes:
        object_id: unique id >= 1 within the building (instance image value).
        object_class: one of OBJECT_CLASSES.
        material: e.g. "painted_drywall", "glass", "metal", "cardboard".
        parts: the primitives.
        color_rgb: base colour in [0, 1].
        texture: one of TEXTURES.
        opacity: 1 = opaque; glass is ~0.12 (mostly see-through in RGB,
            still solid for collision).
        tags: free-form facts, e.g. ("corridor",) or ("narrow_doorway_jamb",).
    """

    object_id: int
    object_class: str
    material: str
    parts: tuple[Part, ...]
    color_rgb: tuple[float, float, float]
    texture: str = "flat"
    opacity: float = 1.0
    tags: tuple[str, ...] = ()

    @property
    def points(self) -> np.ndarray:
        """All vertices and circle extremes, shape (n, 2)."""
        pts = []
        for p in self.parts:
            if p.kind == "circle":
                (cx, cy), r = p.points[0], p.radius_m
                pts += [(cx - r, cy - r), (cx + r, cy + r)]
            else:
                pts += list(p.points)
        return np.asarray(pts, dtype=float)

    @property
    def center_xy(self) -> tuple[float, float]:
        """Centre of the bounding box (metres)."""
        lo, hi = self.bbox
        return ((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2)

    @property
    def bbox(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((x_min, y_min), (x_max, y_max)) of the footprint."""
        pts = self.points
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        return (float(lo[0]), float(lo[1])), (float(hi[0]), float(hi[1]))

    @property
    def z_range_m(self) -> tuple[float, float]:
        """(lowest bottom, highest top) over the parts."""
        return min(p.z_min_m for p in self.parts), max(p.z_max_m for p in self.parts)


@dataclass(frozen=True)
class Doorway:
    """An opening in a wall between two spaces.

    Attributes:
        doorway_id: index within the building.
        p0, p1: the two jamb points (ends of the wall segments at the opening).
        width_m: free width.
        narrow: True when drawn from the narrow-doorway hazard range.
        wall_object_ids: ids of the wall objects whose ends form the jambs.
    """

    doorway_id: int
    p0: tuple[float, float]
    p1: tuple[float, float]
    width_m: float
    narrow: bool
    wall_object_ids: tuple[int, ...] = ()

    @property
    def center_xy(self) -> tuple[float, float]:
        return ((self.p0[0] + self.p1[0]) / 2, (self.p0[1] + self.p1[1]) / 2)


@dataclass(frozen=True)
class Space:
    """A named rectangle of free space: a room, the corridor, an open-plan bay."""

    space_id: int
    kind: Literal["room", "corridor", "open_plan"]
    rect: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max


@dataclass
class Building:
    """One generated office floor.

    Attributes:
        building_id: e.g. "office_a-000123" (family and seed).
        family: building family name.
        seed: generator seed.
        size_m: (width along x, depth along y); the floor spans [0, w] x [0, d].
        objects: every object; ids are unique and >= 1.
        doorways: openings between spaces.
        spaces: rooms, corridors, open-plan bays.
        floor_rgb / ceiling_rgb: colours of the floor and ceiling.
        floor_texture: "carpet" or "concrete".
        ceiling_height_m: ceiling height.
    """

    building_id: str
    family: str
    seed: int
    size_m: tuple[float, float]
    objects: list[WorldObject]
    doorways: list[Doorway] = field(default_factory=list)
    spaces: list[Space] = field(default_factory=list)
    floor_rgb: tuple[float, float, float] = (0.55, 0.52, 0.48)
    ceiling_rgb: tuple[float, float, float] = (0.86, 0.86, 0.84)
    floor_texture: str = "carpet"
    ceiling_height_m: float = 2.6

    def __post_init__(self) -> None:
        self._by_id = {o.object_id: o for o in self.objects}
        if len(self._by_id) != len(self.objects):
            raise ValueError(f"{self.building_id}: object ids are not unique")

    def object(self, object_id: int) -> WorldObject:
        """The object with this id (KeyError if none)."""
        return self._by_id[object_id]

    def objects_of_class(self, *classes: str) -> list[WorldObject]:
        """Objects whose class is one of `classes`."""
        return [o for o in self.objects if o.object_class in classes]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (see from_dict)."""
        d = asdict(self)
        d["schema_version"] = SCHEMA_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Building:
        """Inverse of to_dict."""
        def tup(v: Any) -> Any:
            return tuple(tup(x) for x in v) if isinstance(v, list) else v

        objects = [
            WorldObject(
                object_id=o["object_id"], object_class=o["object_class"], material=o["material"],
                parts=tuple(Part(kind=p["kind"], points=tup(p["points"]), z_min_m=p["z_min_m"],
                                 z_max_m=p["z_max_m"], radius_m=p["radius_m"], name=p["name"])
                            for p in o["parts"]),
                color_rgb=tup(o["color_rgb"]), texture=o["texture"], opacity=o["opacity"],
                tags=tup(o["tags"]),
            )
            for o in d["objects"]
        ]
        return cls(
            building_id=d["building_id"], family=d["family"], seed=d["seed"],
            size_m=tup(d["size_m"]), objects=objects,
            doorways=[Doorway(**{k: tup(v) for k, v in g.items()}) for g in d["doorways"]],
            spaces=[Space(**{k: tup(v) for k, v in s.items()}) for s in d["spaces"]],
            floor_rgb=tup(d["floor_rgb"]), ceiling_rgb=tup(d["ceiling_rgb"]),
            floor_texture=d["floor_texture"], ceiling_height_m=d["ceiling_height_m"],
        )


def default_cause_class(object_class: str) -> str:
    """The hazard class a collision with an object of this class is blamed on
    when no geometric rule (narrow doorway, wall end, table leg) applies."""
    return _CLASS_TO_CAUSE[object_class]


def cause_class_of(
    building: Building, object_id: int, part_name: str, contact_xy: tuple[float, float]
) -> str:
    """The hazard class held responsible for touching `object_id` at `contact_xy`.

    Rules, first match wins: a wall/glass jamb of a narrow doorway within
    0.3 m of the contact -> "narrow_gap"; a table leg -> "thin_pole"; a free
    wall end (door jamb or wall stub) within 0.06 m -> "corner"; otherwise the
    object's class maps to a cause (glass_* -> "glass", box/bin ->
    "low_obstacle", pillar -> "corner", ...).
    """
    obj = building.object(object_id)
    cx, cy = contact_xy
    if obj.object_class in ("wall", "plain_wall", "glass_partition"):
        for g in building.doorways:
            if not g.narrow:
                continue
            for jx, jy in (g.p0, g.p1):
                if math.hypot(cx - jx, cy - jy) < 0.3:
                    return "narrow_gap"
    if obj.object_class == "table" and part_name == "leg":
        return "thin_pole"
    if obj.object_class in ("wall", "plain_wall"):
        for g in building.doorways:
            for jx, jy in (g.p0, g.p1):
                if math.hypot(cx - jx, cy - jy) < 0.06:
                    return "corner"
    return _CLASS_TO_CAUSE[obj.object_class]

"""The procedural building generator.

`generate_building(family, seed, hazards, robot_radius_m)` builds one office
floor out of the data model of `sim.building`. Two families differ in layout
and materials:

* ``office_a`` (in-distribution): a long corridor with rooms on both sides,
  painted walls with panel texture, glass fronts, open-plan bays.
* ``office_b`` (held out): rooms from recursive splits (no main corridor),
  brick and concrete, tinted glass, darker floor, different furniture colours.

Example:
    >>> b = generate_building("office_a", seed=3)
    >>> [o.object_class for o in b.objects][:3]
    ['wall', 'wall', 'wall']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from common import derive_rng
from sim.building import Building, Doorway, Part, Space, WorldObject
from sim.config import BUILDING_FAMILIES, HazardConfig
from sim.grid import OccupancyGrid

# --------------------------------------------------------------------------- generation

_PALETTES: dict[str, dict[str, Any]] = {
    "office_a": {
        "floor": (0.55, 0.52, 0.48), "floor_texture": "carpet", "ceiling": (0.86, 0.86, 0.84),
        "wall": ((0.80, 0.76, 0.66), "panels", "painted_drywall"),
        "plain_wall": ((0.58, 0.55, 0.51), "flat", "plain_drywall"),
        "glass": ((0.70, 0.85, 0.90), "glass", "glass"),
        "pillar": ((0.70, 0.70, 0.72), "flat", "painted_concrete"),
        "table": ((0.62, 0.45, 0.28), "wood", "wood"),
        "chair": ((0.20, 0.25, 0.45), "fabric", "fabric"),
        "cabinet": ((0.45, 0.47, 0.50), "metal", "steel"),
        "box": ((0.72, 0.56, 0.35), "flat", "cardboard"),
        "bin": ((0.25, 0.45, 0.30), "flat", "plastic"),
        "pole": ((0.30, 0.30, 0.32), "metal", "metal"),
    },
    "office_b": {
        "floor": (0.40, 0.39, 0.38), "floor_texture": "concrete", "ceiling": (0.70, 0.71, 0.74),
        "wall": ((0.62, 0.34, 0.26), "brick", "brick"),
        "plain_wall": ((0.43, 0.42, 0.41), "flat", "plain_plaster"),
        "glass": ((0.65, 0.90, 0.75), "glass", "tinted_glass"),
        "pillar": ((0.55, 0.55, 0.53), "flat", "raw_concrete"),
        "table": ((0.85, 0.85, 0.82), "flat", "laminate"),
        "chair": ((0.60, 0.15, 0.12), "fabric", "leather"),
        "cabinet": ((0.35, 0.28, 0.22), "wood", "wood"),
        "box": ((0.30, 0.35, 0.55), "flat", "plastic_crate"),
        "bin": ((0.55, 0.55, 0.58), "metal", "steel"),
        "pole": ((0.75, 0.72, 0.20), "metal", "painted_steel"),
    },
}

WALL_HEIGHT_M = 2.6
_WALL_TEXTURES = ("panels", "brick", "flat")
_FLOOR_TEXTURES = ("carpet", "concrete")


def floor_palette(family: str, seed: int, appearance_jitter: float = 0.0) -> dict[str, Any]:
    """The colours and textures of one floor: the family's palette, or with
    `appearance_jitter` > 0 a per-floor redraw (colours moved by up to that much per
    channel, wall and floor textures redrawn with that probability; featureless walls
    keep the floor's tone). Drawn from its own random stream, so the layout is the same
    with or without it.

    Example:
        >>> floor_palette("office_a", 0) is _PALETTES["office_a"]
        True
        >>> floor_palette("office_a", 0, 0.2)["wall"] != _PALETTES["office_a"]["wall"]
        True
    """
    base = _PALETTES[family]
    if appearance_jitter <= 0:
        return base
    rng = derive_rng(seed, family, "appearance")

    def shift(rgb: tuple[float, ...], offset: np.ndarray) -> tuple[float, float, float]:
        return tuple(float(np.clip(c + d, 0, 1)) for c, d in zip(rgb, offset))

    def draw() -> np.ndarray:
        return rng.uniform(-appearance_jitter, appearance_jitter, 3)

    floor_offset = draw()
    out: dict[str, Any] = {"floor": shift(base["floor"], floor_offset),
                           "ceiling": shift(base["ceiling"], draw()),
                           "floor_texture": (str(rng.choice(_FLOOR_TEXTURES))
                                             if rng.random() < appearance_jitter
                                             else base["floor_texture"])}
    for key in [k for k in base if k not in out]:  # dict order: the same draws every run
        rgb, tex, material = base[key]
        offset = floor_offset if key == "plain_wall" else draw()
        if key == "wall" and rng.random() < appearance_jitter:
            tex = str(rng.choice(_WALL_TEXTURES))
        out[key] = (shift(rgb, offset), tex, material)
    return out


class _Builder:
    """Accumulates objects with fresh ids and remembers occupied footprints."""

    def __init__(self, family: str, rng: np.random.Generator, hazards: HazardConfig,
                 palette: dict[str, Any]) -> None:
        self.family = family
        self.rng = rng
        self.hz = hazards
        self.palette = palette
        self.objects: list[WorldObject] = []
        self.doorways: list[Doorway] = []
        self.spaces: list[Space] = []
        self.footprints: list[tuple[float, float, float, float]] = []  # furniture bboxes
        self.keep_clear: list[tuple[float, float, float]] = []  # (x, y, radius) near doors

    def _color(self, key: str, jitter: float = 0.04) -> tuple[tuple[float, float, float], str, str]:
        rgb, tex, mat = self.palette[key]
        j = self.rng.uniform(-jitter, jitter, 3)
        return tuple(float(np.clip(c + d, 0, 1)) for c, d in zip(rgb, j)), tex, mat

    def add(self, cls: str, key: str, parts: list[Part], tags: tuple[str, ...] = (),
            opacity: float = 1.0, jitter: float = 0.04) -> WorldObject:
        rgb, tex, mat = self._color(key, jitter)
        obj = WorldObject(len(self.objects) + 1, cls, mat, tuple(parts), rgb, tex, opacity, tags)
        self.objects.append(obj)
        return obj

    # -- walls
    def wall(self, p: tuple[float, float], q: tuple[float, float], style: str,
             tags: tuple[str, ...] = ()) -> WorldObject | None:
        if math.dist(p, q) < 1e-3:
            return None
        part = Part("segment", (p, q), 0.0, WALL_HEIGHT_M, name="panel")
        if style == "glass":
            return self.add("glass_partition", "glass", [part], tags, opacity=0.12, jitter=0.0)
        if style == "plain":
            # Featureless walls take the floor's tone so they barely stand out.
            return self.add("plain_wall", "plain_wall", [part], tags, jitter=0.0)
        return self.add("wall", "wall", [part], tags, jitter=0.02)

    def wall_style(self, glass_ok: bool) -> str:
        if glass_ok and self.rng.random() < self.hz.glass_partition_prob:
            return "glass"
        return "plain" if self.rng.random() < self.hz.plain_wall_prob else "textured"

    def wall_with_door(self, p: tuple[float, float], q: tuple[float, float], style: str,
                       door_at: float | None = None, glass_door_side: int = 1,
                       tags: tuple[str, ...] = ()) -> Doorway | None:
        """A straight wall from p to q with one doorway; returns it (None if too short)."""
        length = math.dist(p, q)
        narrow = self.rng.random() < self.hz.narrow_door_prob
        lo, hi = self.hz.narrow_door_width_m if narrow else self.hz.door_width_m
        width = float(self.rng.uniform(lo, hi))
        if length < width + 0.7:
            self.wall(p, q, style, tags)
            return None
        ux, uy = (q[0] - p[0]) / length, (q[1] - p[1]) / length
        if door_at is None:
            door_at = float(self.rng.uniform(0.35 + width / 2, length - 0.35 - width / 2))
        a, b = door_at - width / 2, door_at + width / 2
        ja = (p[0] + ux * a, p[1] + uy * a)
        jb = (p[0] + ux * b, p[1] + uy * b)
        w1 = self.wall(p, ja, style, tags)
        w2 = self.wall(jb, q, style, tags)
        door = Doorway(len(self.doorways), ja, jb, width, narrow,
                       tuple(w.object_id for w in (w1, w2) if w is not None))
        self.doorways.append(door)
        c = door.center_xy
        self.keep_clear.append((c[0], c[1], max(1.0, width)))
        if self.rng.random() < self.hz.glass_door_prob and not narrow:
            # An open glass leaf hinged at one jamb, swung out of the opening.
            hinge, sign = (ja, 1.0) if self.rng.random() < 0.5 else (jb, -1.0)
            ang = math.atan2(uy, ux) + glass_door_side * sign * math.radians(
                float(self.rng.uniform(75, 110)))
            leaf = width * 0.92
            end = (hinge[0] + leaf * math.cos(ang), hinge[1] + leaf * math.sin(ang))
            self.add("glass_door", "glass",
                     [Part("segment", (hinge, end), 0.0, 2.1, name="leaf")], opacity=0.12,
                     jitter=0.0)
            self.footprints.append((min(hinge[0], end[0]) - 0.05, min(hinge[1], end[1]) - 0.05,
                                    max(hinge[0], end[0]) + 0.05, max(hinge[1], end[1]) + 0.05))
        return door

    def pillar(self, x: float, y: float, sx: float, sy: float) -> None:
        self.add("pillar", "pillar", [_rect_part(x - sx / 2, y - sy / 2, x + sx / 2, y + sy / 2,
                                                  0.0, WALL_HEIGHT_M, "block")])
        self.footprints.append((x - sx / 2, y - sy / 2, x + sx / 2, y + sy / 2))

    # -- free-standing things
    def _free(self, box: tuple[float, float, float, float], margin: float) -> bool:
        x0, y0, x1, y1 = box
        for a0, b0, a1, b1 in self.footprints:
            if x0 < a1 + margin and a0 < x1 + margin and y0 < b1 + margin and b0 < y1 + margin:
                return False
        for cx, cy, r in self.keep_clear:
            nx, ny = min(max(cx, x0), x1), min(max(cy, y0), y1)
            if math.hypot(nx - cx, ny - cy) < r:
                return False
        return True

    def try_place(self, rect: tuple[float, float, float, float], sx: float, sy: float,
                  margin: float, tries: int = 20) -> tuple[float, float] | None:
        x0, y0, x1, y1 = rect
        if x1 - x0 < sx + 0.1 or y1 - y0 < sy + 0.1:
            return None
        for _ in range(tries):
            cx = float(self.rng.uniform(x0 + sx / 2 + 0.05, x1 - sx / 2 - 0.05))
            cy = float(self.rng.uniform(y0 + sy / 2 + 0.05, y1 - sy / 2 - 0.05))
            box = (cx - sx / 2, cy - sy / 2, cx + sx / 2, cy + sy / 2)
            if self._free(box, margin):
                self.footprints.append(box)
                return cx, cy
        return None

    def pole(self, rect: tuple[float, float, float, float], tags: tuple[str, ...]) -> None:
        r = float(self.rng.uniform(0.02, 0.045))
        at = self.try_place(rect, 2 * r, 2 * r, margin=0.55)
        if at:
            top = WALL_HEIGHT_M if self.rng.random() < 0.5 else float(self.rng.uniform(1.5, 2.0))
            self.add("pole", "pole", [Part("circle", (at,), 0.0, top, r, "shaft")], tags)

    def low_obstacle(self, rect: tuple[float, float, float, float], tags: tuple[str, ...]) -> None:
        if self.rng.random() < 0.6:
            sx, sy = self.rng.uniform(0.3, 0.6, 2)
            at = self.try_place(rect, sx, sy, margin=0.55)
            if at:
                h = float(self.rng.uniform(0.18, 0.38))
                self.add("box", "box", [_rect_part(at[0] - sx / 2, at[1] - sy / 2, at[0] + sx / 2,
                                                   at[1] + sy / 2, 0.0, h, "box")], tags)
        else:
            r = float(self.rng.uniform(0.13, 0.2))
            at = self.try_place(rect, 2 * r, 2 * r, margin=0.55)
            if at:
                h = float(self.rng.uniform(0.3, 0.45))
                self.add("bin", "bin", [Part("circle", (at,), 0.0, h, r, "body")], tags)

    def chair(self, cx: float, cy: float, facing: float, tags: tuple[str, ...]) -> None:
        s = 0.22  # half seat size
        c, si = math.cos(facing), math.sin(facing)

        def w(lx: float, ly: float) -> tuple[float, float]:
            return (cx + lx * c - ly * si, cy + lx * si + ly * c)

        legs = [Part("circle", (w(lx, ly),), 0.0, 0.44, 0.015, "leg")
                for lx in (-s + 0.03, s - 0.03) for ly in (-s + 0.03, s - 0.03)]
        seat = Part("polygon", (w(-s, -s), w(s, -s), w(s, s), w(-s, s)), 0.42, 0.48, name="seat")
        back = Part("segment", (w(-s, -s), w(-s, s)), 0.48, 0.92, name="backrest")
        self.add("chair", "chair", [*legs, seat, back], tags)

    def table(self, rect: tuple[float, float, float, float], tags: tuple[str, ...]) -> None:
        sx, sy = float(self.rng.uniform(1.1, 1.8)), float(self.rng.uniform(0.7, 0.9))
        if self.rng.random() < 0.5:
            sx, sy = sy, sx
        at = self.try_place(rect, sx, sy, margin=0.7)
        if not at:
            return
        x0, y0, x1, y1 = at[0] - sx / 2, at[1] - sy / 2, at[0] + sx / 2, at[1] + sy / 2
        top_z = float(self.rng.uniform(0.72, 0.76))
        legs = [Part("circle", ((x, y),), 0.0, top_z, 0.025, "leg")
                for x in (x0 + 0.06, x1 - 0.06) for y in (y0 + 0.06, y1 - 0.06)]
        self.add("table", "table", [*legs, _rect_part(x0, y0, x1, y1, top_z, top_z + 0.04, "top")],
                 tags)
        lo, hi = self.hz.chairs_per_table
        for _ in range(int(self.rng.integers(lo, hi + 1))):
            side = int(self.rng.integers(4))
            off = float(self.rng.uniform(-0.3, 0.3))
            cx, cy, facing = [(at[0] + off * sx, y0 - 0.3, math.pi / 2),
                              (at[0] + off * sx, y1 + 0.3, -math.pi / 2),
                              (x0 - 0.3, at[1] + off * sy, 0.0),
                              (x1 + 0.3, at[1] + off * sy, math.pi)][side]
            box = (cx - 0.25, cy - 0.25, cx + 0.25, cy + 0.25)
            if rect[0] < box[0] and box[2] < rect[2] and rect[1] < box[1] and box[3] < rect[3] \
                    and self._free(box, 0.05):
                self.footprints.append(box)
                self.chair(cx, cy, facing + math.pi, tags)

    def loose_chair(self, rect: tuple[float, float, float, float], tags: tuple[str, ...]) -> None:
        at = self.try_place(rect, 0.5, 0.5, margin=0.5)
        if at:
            self.chair(at[0], at[1], float(self.rng.uniform(-math.pi, math.pi)), tags)

    def cabinet(self, room: tuple[float, float, float, float], tags: tuple[str, ...]) -> None:
        x0, y0, x1, y1 = room
        length, depth = float(self.rng.uniform(0.8, 1.6)), float(self.rng.uniform(0.4, 0.5))
        side = int(self.rng.integers(4))
        strip = [(x0, y0, x1, y0 + depth + 0.12), (x0, y1 - depth - 0.12, x1, y1),
                 (x0, y0, x0 + depth + 0.12, y1), (x1 - depth - 0.12, y0, x1, y1)][side]
        sx, sy = (length, depth) if side < 2 else (depth, length)
        at = self.try_place(strip, sx, sy, margin=0.3)
        if at:
            h = float(self.rng.choice([0.95, 1.8]))
            self.add("cabinet", "cabinet", [_rect_part(at[0] - sx / 2, at[1] - sy / 2,
                                                       at[0] + sx / 2, at[1] + sy / 2, 0.0, h,
                                                       "body")], tags)

    def furnish(self, room: tuple[float, float, float, float], kind: str) -> None:
        """Tables, chairs, cabinets inside a room (inset from its walls)."""
        inner = (room[0] + 0.12, room[1] + 0.12, room[2] - 0.12, room[3] - 0.12)
        tags = (kind,)
        lo, hi = self.hz.cabinets_per_room
        for _ in range(int(self.rng.integers(lo, hi + 1))):
            self.cabinet(inner, tags)
        lo, hi = self.hz.tables_per_room
        n_tables = int(self.rng.integers(lo, hi + 1)) * (2 if kind == "open_plan" else 1)
        for _ in range(n_tables):
            self.table(inner, tags)

    def scatter(self, rects: list[tuple[float, float, float, float]], per_100m2: float,
                fn: Any, tags: tuple[str, ...]) -> None:
        """Place `fn(rect, tags)` about `per_100m2` times per 100 m² over `rects`."""
        areas = np.array([(r[2] - r[0]) * (r[3] - r[1]) for r in rects])
        if len(rects) == 0 or areas.sum() <= 0:
            return
        n = int(self.rng.poisson(per_100m2 * areas.sum() / 100.0))
        for _ in range(n):
            i = int(self.rng.choice(len(rects), p=areas / areas.sum()))
            fn(rects[i], tags)

    def hazards_in(self, rects: list[tuple[float, float, float, float]], share: float,
                   kind: str) -> None:
        self.scatter(rects, self.hz.poles_per_100m2 * share, self.pole, (kind,))
        self.scatter(rects, self.hz.low_obstacles_per_100m2 * share, self.low_obstacle, (kind,))
        self.scatter(rects, self.hz.loose_chairs_per_100m2 * share, self.loose_chair, (kind,))


def _rect_part(x0: float, y0: float, x1: float, y1: float, z0: float, z1: float,
               name: str) -> Part:
    return Part("polygon", ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), z0, z1, name=name)


def _hazard_area_scale(total_area: float, corridor_area: float, share: float) -> tuple[float, float]:
    """Densities for corridors and rooms so that `share` of hazards land in corridors."""
    room_area = max(total_area - corridor_area, 1e-6)
    corridor_area = max(corridor_area, 1e-6)
    return share * total_area / corridor_area, (1 - share) * total_area / room_area


def _gen_office_a(b: _Builder, w_m: float, d_m: float) -> None:
    rng = b.rng
    cw = float(rng.uniform(1.9, 2.5))
    yc = float(rng.uniform(0.42, 0.52)) * d_m - cw / 2
    ytop = yc + cw
    corridor = (0.0, yc, w_m, ytop)
    b.spaces.append(Space(0, "corridor", corridor))
    # Outer shell.
    for p, q in [((0, 0), (w_m, 0)), ((w_m, 0), (w_m, d_m)), ((w_m, d_m), (0, d_m)),
                 ((0, d_m), (0, 0))]:
        b.wall(p, q, "textured", ("outer",))
    rooms: list[tuple[float, float, float, float]] = []
    open_bays: list[tuple[float, float, float, float]] = []
    for side, (y_lo, y_hi, y_front) in enumerate([(0.0, yc, yc), (ytop, d_m, ytop)]):
        # Chunk boundaries along x.
        xs = [0.0]
        while w_m - xs[-1] > 7.0:
            xs.append(xs[-1] + float(rng.uniform(3.5, 6.0)))
        xs.append(w_m)
        door_side = 1 if side == 0 else -1  # glass leaves swing into the corridor
        open_prev = False
        for i in range(len(xs) - 1):
            x0, x1 = xs[i], xs[i + 1]
            is_open = rng.random() < 0.18 and i > 0
            if i > 0 and not (is_open and open_prev):
                # Side wall between neighbours; sometimes with a connecting door.
                style = b.wall_style(glass_ok=False)
                if rng.random() < 0.3 and (y_hi - y_lo) > 2.5:
                    b.wall_with_door((x0, y_lo), (x0, y_hi), style)
                else:
                    b.wall((x0, y_lo), (x0, y_hi), style)
                # A protruding pillar where the side wall meets the corridor.
                if rng.random() < b.hz.pillar_prob:
                    sx, sy = float(rng.uniform(0.35, 0.5)), float(rng.uniform(0.35, 0.55))
                    py = y_front + (sy / 2 - 0.05) * (1 if side == 0 else -1)
                    b.pillar(x0, py, sx, sy)
            rect = (x0, y_lo, x1, y_hi)
            if is_open:
                open_bays.append(rect)
                b.spaces.append(Space(len(b.spaces), "open_plan", rect))
            else:
                rooms.append(rect)
                b.spaces.append(Space(len(b.spaces), "room", rect))
                b.wall_with_door((x0, y_front), (x1, y_front), b.wall_style(glass_ok=True),
                                 glass_door_side=door_side)
            open_prev = is_open
    for r in rooms:
        b.furnish(r, "room")
    for r in open_bays:
        b.furnish(r, "open_plan")
    total = w_m * d_m
    c_scale, r_scale = _hazard_area_scale(total, w_m * cw, b.hz.corridor_hazard_share)
    # Corridor hazards hug one side so a robot-width lane always stays open.
    lane = 2 * 0.2 + 0.5
    cor_inner = (0.6, yc + 0.1, w_m - 0.6, ytop - 0.1)
    if cor_inner[3] - cor_inner[1] > lane + 0.3:
        hug = (cor_inner[0], cor_inner[1], cor_inner[2], cor_inner[3] - lane) \
            if rng.random() < 0.5 else (cor_inner[0], cor_inner[1] + lane, cor_inner[2],
                                        cor_inner[3])
        b.hazards_in([hug], c_scale, "corridor")
    b.hazards_in([_inset(r, 0.3) for r in rooms + open_bays], r_scale, "room")


def _inset(r: tuple[float, float, float, float], m: float) -> tuple[float, float, float, float]:
    return (r[0] + m, r[1] + m, r[2] - m, r[3] - m)


def _gen_office_b(b: _Builder, w_m: float, d_m: float) -> None:
    rng = b.rng
    for p, q in [((0, 0), (w_m, 0)), ((w_m, 0), (w_m, d_m)), ((w_m, d_m), (0, d_m)),
                 ((0, d_m), (0, 0))]:
        b.wall(p, q, "textured", ("outer",))
    leaves: list[tuple[float, float, float, float]] = []
    open_leaves: list[tuple[float, float, float, float]] = []
    walls_drawn: list[tuple[float, float, float, float]] = []  # axis-aligned split walls

    def blocked(axis: int, coord: float, lo: float, hi: float) -> bool:
        # Would a new wall ending at (coord on axis) land inside an existing doorway?
        for g in b.doorways:
            (ax, ay), (bx, by) = g.p0, g.p1
            if axis == 0:  # vertical wall at x = coord touching horizontal walls
                if abs(ay - by) < 1e-6 and min(ax, bx) - 0.5 < coord < max(ax, bx) + 0.5 \
                        and (abs(ay - lo) < 1e-6 or abs(ay - hi) < 1e-6):
                    return True
            else:
                if abs(ax - bx) < 1e-6 and min(ay, by) - 0.5 < coord < max(ay, by) + 0.5 \
                        and (abs(ax - lo) < 1e-6 or abs(ax - hi) < 1e-6):
                    return True
        return False

    def split(rect: tuple[float, float, float, float], depth: int) -> None:
        x0, y0, x1, y1 = rect
        w, h = x1 - x0, y1 - y0
        if max(w, h) < 6.0 or (depth >= 2 and max(w, h) < 9.0 and rng.random() < 0.35):
            leaves.append(rect)
            return
        axis = 0 if w >= h else 1  # 0: vertical wall (split x)
        lo, hi = (x0, x1) if axis == 0 else (y0, y1)
        for _ in range(20):
            s = float(lo + (hi - lo) * rng.uniform(0.33, 0.67))
            if not blocked(axis, s, *((y0, y1) if axis == 0 else (x0, x1))):
                break
        else:
            leaves.append(rect)
            return
        if rng.random() < 0.12 and depth >= 1:
            pass  # open split: the two halves form one open area
        else:
            p, q = ((s, y0), (s, y1)) if axis == 0 else ((x0, s), (x1, s))
            b.wall_with_door(p, q, b.wall_style(glass_ok=True),
                             glass_door_side=1 if rng.random() < 0.5 else -1)
            walls_drawn.append((*p, *q))
            if rng.random() < b.hz.pillar_prob:
                # Pillar at one end of the new wall (a T-junction), protruding sideways.
                end = p if rng.random() < 0.5 else q
                sx, sy = (0.45, 0.35) if axis == 1 else (0.35, 0.45)
                inward = 0.25 if (end[0 if axis == 1 else 1] == (x0 if axis == 1 else y0)) \
                    else -0.25
                if axis == 1:
                    b.pillar(end[0] + inward, end[1], sx, sy)
                else:
                    b.pillar(end[0], end[1] + inward, sx, sy)
        if axis == 0:
            split((x0, y0, s, y1), depth + 1)
            split((s, y0, x1, y1), depth + 1)
        else:
            split((x0, y0, x1, s), depth + 1)
            split((x0, s, x1, y1), depth + 1)

    split((0.0, 0.0, w_m, d_m), 0)
    for r in leaves:
        area = (r[2] - r[0]) * (r[3] - r[1])
        kind = "open_plan" if area > 40 else "room"
        (open_leaves if kind == "open_plan" else []).append(r)
        b.spaces.append(Space(len(b.spaces), kind, r))
        b.furnish(r, kind)
    # No corridor: hazards spread over the spaces next to doorways weigh more.
    b.hazards_in([_inset(r, 0.3) for r in leaves], 1.0, "room")


def generate_building(
    family: str = "office_a",
    seed: int = 0,
    hazards: HazardConfig | None = None,
    robot_radius_m: float = 0.2,
    ceiling_height_m: float = 2.6,
    appearance_jitter: float = 0.0,
) -> Building:
    """Generate one office floor, deterministically from (family, seed, hazards).

    Objects that would cut the free space into pieces a robot of
    `robot_radius_m` cannot cross are removed, so every doorway is reachable.

    Args:
        family: "office_a" (in-distribution) or "office_b" (held out).
        seed: generator seed.
        hazards: placement rates; defaults to HazardConfig().
        robot_radius_m: body radius used for the connectivity check.
        ceiling_height_m: ceiling height stored with the building.
        appearance_jitter: per-floor colour and texture randomisation (`floor_palette`).

    Returns:
        The building; `building_id` is f"{family}-{seed:06d}".

    Raises:
        ValueError: on an unknown family (lists the valid ones).
    """
    if family not in BUILDING_FAMILIES:
        raise ValueError(f"unknown building family {family!r}; choose one of {BUILDING_FAMILIES}")
    hazards = hazards or HazardConfig()
    rng = derive_rng(seed, family, "building")
    pal = floor_palette(family, seed, appearance_jitter)
    b = _Builder(family, rng, hazards, pal)
    if family == "office_a":
        w_m, d_m = float(rng.uniform(24, 32)), float(rng.uniform(14, 18))
        _gen_office_a(b, w_m, d_m)
    else:
        w_m, d_m = float(rng.uniform(20, 27)), float(rng.uniform(16, 21))
        _gen_office_b(b, w_m, d_m)
    building = Building(
        building_id=f"{family}-{seed:06d}", family=family, seed=int(seed), size_m=(w_m, d_m),
        objects=b.objects, doorways=b.doorways, spaces=b.spaces, floor_rgb=pal["floor"],
        ceiling_rgb=pal["ceiling"], floor_texture=pal["floor_texture"],
        ceiling_height_m=ceiling_height_m,
    )
    return _ensure_connected(building, robot_radius_m)


def simple_room(width_m: float, depth_m: float, objects: Sequence[WorldObject] = (),
                family: str = "office_a", building_id: str = "room") -> Building:
    """A closed rectangular room (textured walls, ids 1-4) holding `objects`.

    For tests and hand-made scenes; give the extra objects ids >= 5.
    """
    pal = _PALETTES[family]
    rgb, tex, mat = pal["wall"]
    corners = [(0.0, 0.0), (width_m, 0.0), (width_m, depth_m), (0.0, depth_m)]
    walls = [WorldObject(i + 1, "wall", mat, (Part("segment", (corners[i], corners[(i + 1) % 4]),
                                                  0.0, WALL_HEIGHT_M, name="panel"),),
                         rgb, tex, 1.0, ("outer",)) for i in range(4)]
    return Building(building_id, family, 0, (width_m, depth_m), [*walls, *objects],
                    floor_rgb=pal["floor"], ceiling_rgb=pal["ceiling"],
                    floor_texture=pal["floor_texture"])


_MOVABLE = ("pole", "box", "bin", "chair", "table", "cabinet", "glass_door", "pillar")


def _ensure_connected(building: Building, robot_radius_m: float) -> Building:
    """Drop movable objects until all doorways lie in one free-space component."""
    for _ in range(40):
        grid = OccupancyGrid.from_building(building, resolution_m=0.1, body_height_m=2.0)
        # Clearance is exact (distance to the true geometry), so a doorway only
        # slightly wider than the robot still reads as passable.
        free = grid.free_mask(robot_radius_m + 0.01)
        labels, n = _label(free)
        probes = []
        for g in building.doorways:
            iy, ix = grid.world_to_cell(*g.center_xy)
            window = labels[max(iy - 1, 0): iy + 2, max(ix - 1, 0): ix + 2]
            probes.append((g, int(window.max())))
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        sizes[0] = 0
        main = int(np.argmax(sizes))
        bad = [g for g, lab in probes if lab != main]
        if not bad:
            return building
        # Remove the movable object nearest to the first unreachable doorway.
        gx, gy = bad[0].center_xy
        movable = [o for o in building.objects if o.object_class in _MOVABLE]
        if not movable:
            return building
        nearest = min(movable, key=lambda o: math.hypot(o.center_xy[0] - gx, o.center_xy[1] - gy))
        kept = [o for o in building.objects if o.object_id != nearest.object_id]
        building = Building(
            building.building_id, building.family, building.seed, building.size_m, kept,
            building.doorways, building.spaces, building.floor_rgb, building.ceiling_rgb,
            building.floor_texture, building.ceiling_height_m,
        )
    return building


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return labels, int(n)

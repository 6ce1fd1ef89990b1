"""Top-down map images (PNG) of a building.

Obstacles are coloured by class (legend included); trajectories, collision
points, start/goal markers and arbitrary highlighted regions (circles,
rectangles or polygons, each with a label) can be drawn on top. Other modules
draw their taxonomy regions with `Region`.

Example:
    >>> img = render_topdown(building, trajectories=[traj_xy],
    ...                      collisions=[(3.2, 4.1)],
    ...                      regions=[Region.circle((5, 5), 1.5, "glass doors")])
    >>> save_png(img, "map.png")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sim.building import Building

CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "wall": (60, 60, 60),
    "plain_wall": (150, 120, 200),
    "glass_partition": (40, 170, 230),
    "glass_door": (0, 120, 255),
    "pole": (230, 30, 30),
    "table": (150, 100, 50),
    "chair": (240, 140, 0),
    "box": (200, 170, 40),
    "bin": (120, 170, 60),
    "pillar": (120, 0, 120),
    "cabinet": (110, 110, 140),
}
_REGION_COLORS = [(255, 0, 120), (0, 170, 120), (255, 120, 0), (90, 60, 255), (0, 150, 200),
                  (200, 0, 0), (120, 120, 0), (0, 0, 160)]


@dataclass(frozen=True)
class Region:
    """A highlighted area on the map.

    Attributes:
        kind: "circle", "rect" or "polygon".
        points: circle: [(cx, cy)]; rect: [(x0, y0), (x1, y1)]; polygon: vertices.
        radius_m: circle radius.
        label: text drawn next to the region.
        color_rgb: None picks a colour from a fixed cycle.
    """

    kind: str
    points: tuple[tuple[float, float], ...]
    radius_m: float = 0.0
    label: str = ""
    color_rgb: tuple[int, int, int] | None = None

    @staticmethod
    def circle(center_xy: tuple[float, float], radius_m: float, label: str = "",
               color_rgb: tuple[int, int, int] | None = None) -> Region:
        """A disc around a point."""
        return Region("circle", (tuple(map(float, center_xy)),), float(radius_m), label, color_rgb)

    @staticmethod
    def rect(x0: float, y0: float, x1: float, y1: float, label: str = "",
             color_rgb: tuple[int, int, int] | None = None) -> Region:
        """An axis-aligned rectangle."""
        return Region("rect", ((float(x0), float(y0)), (float(x1), float(y1))), 0.0, label,
                      color_rgb)

    @staticmethod
    def polygon(points_xy: Sequence[tuple[float, float]], label: str = "",
                color_rgb: tuple[int, int, int] | None = None) -> Region:
        """Any polygon (vertices in order)."""
        return Region("polygon", tuple((float(x), float(y)) for x, y in points_xy), 0.0, label,
                      color_rgb)


@dataclass
class _Canvas:
    scale: float  # pixels per metre
    margin: int
    height_px: int
    draw: ImageDraw.ImageDraw = field(repr=False)

    def px(self, x: float, y: float) -> tuple[float, float]:
        # y grows up in the world, down in the image.
        return self.margin + x * self.scale, self.height_px - self.margin - y * self.scale


def render_topdown(
    building: Building,
    *,
    px_per_m: float = 20.0,
    trajectories: Sequence[np.ndarray] = (),
    trajectory_colors: Sequence[tuple[int, int, int]] | None = None,
    collisions: Sequence[tuple[float, float]] = (),
    starts_goals: Sequence[tuple[tuple[float, float], tuple[float, float]]] = (),
    regions: Sequence[Region] = (),
    highlight_object_ids: Sequence[int] = (),
    legend: bool = True,
    title: str | None = None,
) -> Image.Image:
    """Draw the building from above.

    Args:
        building: the floor to draw.
        px_per_m: image scale.
        trajectories: each an (T, 2+) array of world x, y.
        trajectory_colors: one colour per trajectory (default: dark blue).
        collisions: contact points, drawn as red crosses.
        starts_goals: (start, goal) pairs: green dot, red star-ish square.
        regions: highlighted areas with labels (semi-transparent fill).
        highlight_object_ids: objects drawn with a thick magenta outline.
        legend: draw the class colour legend below the map.
        title: optional caption at the top-left.

    Returns:
        An RGB PIL image.
    """
    w_m, d_m = building.size_m
    margin = 12
    legend_h = 44 if legend else 0
    width = int(w_m * px_per_m + 2 * margin)
    map_h = int(d_m * px_per_m + 2 * margin)
    img = Image.new("RGB", (width, map_h + legend_h), (255, 255, 255))
    floor = tuple(int(c * 255) for c in building.floor_rgb)
    draw = ImageDraw.Draw(img, "RGBA")
    cv = _Canvas(px_per_m, margin, map_h, draw)
    x0, y0 = cv.px(0, d_m)
    x1, y1 = cv.px(w_m, 0)
    draw.rectangle([x0, y0, x1, y1], fill=(*floor, 70))
    font = ImageFont.load_default()

    for region_i, reg in enumerate(regions):
        col = reg.color_rgb or _REGION_COLORS[region_i % len(_REGION_COLORS)]
        if reg.kind == "circle":
            (cx, cy), r = reg.points[0], reg.radius_m
            a, b = cv.px(cx - r, cy + r), cv.px(cx + r, cy - r)
            draw.ellipse([a, b], fill=(*col, 60), outline=(*col, 255), width=2)
            anchor = cv.px(cx + r * 0.7, cy + r * 0.7)
        elif reg.kind == "rect":
            (ax, ay), (bx, by) = reg.points
            a, b = cv.px(min(ax, bx), max(ay, by)), cv.px(max(ax, bx), min(ay, by))
            draw.rectangle([a, b], fill=(*col, 60), outline=(*col, 255), width=2)
            anchor = a
        elif reg.kind == "polygon":
            pts = [cv.px(x, y) for x, y in reg.points]
            draw.polygon(pts, fill=(*col, 60), outline=(*col, 255))
            anchor = min(pts, key=lambda p: (p[1], p[0]))
        else:
            raise ValueError(f"unknown region kind {reg.kind!r}; use circle, rect or polygon")
        if reg.label:
            draw.text((anchor[0] + 2, anchor[1] - 11), reg.label, fill=(*col, 255), font=font)

    highlighted = set(highlight_object_ids)
    for obj in building.objects:
        col = CLASS_COLORS.get(obj.object_class, (0, 0, 0))
        for part in obj.parts:
            if part.kind == "circle":
                (cx, cy), r = part.points[0], max(part.radius_m, 1.5 / px_per_m)
                draw.ellipse([cv.px(cx - r, cy + r), cv.px(cx + r, cy - r)], fill=col)
            elif part.kind == "polygon":
                fill = (*col, 110) if part.z_min_m > 0.3 else (*col, 230)
                draw.polygon([cv.px(x, y) for x, y in part.points], fill=fill, outline=col)
            else:
                wd = 3 if obj.object_class in ("wall", "plain_wall", "glass_partition") else 2
                draw.line([cv.px(*part.points[0]), cv.px(*part.points[1])], fill=col, width=wd)
        if obj.object_id in highlighted:
            (bx0, by0), (bx1, by1) = obj.bbox
            draw.rectangle([cv.px(bx0 - 0.1, by1 + 0.1), cv.px(bx1 + 0.1, by0 - 0.1)],
                           outline=(255, 0, 255), width=3)

    colors = list(trajectory_colors or [])
    for i, traj in enumerate(trajectories):
        traj = np.asarray(traj, float)
        if len(traj) < 2:
            continue
        col = colors[i] if i < len(colors) else (20, 40, 160)
        draw.line([cv.px(float(x), float(y)) for x, y in traj[:, :2]], fill=(*col, 220), width=2)
    for start, goal in starts_goals:
        sx, sy = cv.px(*start)
        gx, gy = cv.px(*goal)
        draw.ellipse([sx - 4, sy - 4, sx + 4, sy + 4], fill=(0, 170, 0))
        draw.rectangle([gx - 4, gy - 4, gx + 4, gy + 4], fill=(220, 0, 0))
    for cx, cy in collisions:
        px, py = cv.px(cx, cy)
        draw.line([px - 6, py - 6, px + 6, py + 6], fill=(255, 0, 0), width=3)
        draw.line([px - 6, py + 6, px + 6, py - 6], fill=(255, 0, 0), width=3)

    if title:
        draw.text((margin, 0), title, fill=(0, 0, 0), font=font)
    if legend:
        x, y = margin, map_h + 2
        for name, col in CLASS_COLORS.items():
            label_w = int(draw.textlength(name, font=font)) + 22
            if x + label_w > width - margin:
                x, y = margin, y + 14
            draw.rectangle([x, y + 2, x + 10, y + 12], fill=col)
            draw.text((x + 13, y + 1), name, fill=(0, 0, 0), font=font)
            x += label_w
    return img


def save_png(img: Image.Image, path: str | os.PathLike) -> None:
    """Write a PIL image as PNG atomically."""
    import io

    from common import atomic_write_bytes

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())

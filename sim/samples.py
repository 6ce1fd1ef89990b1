"""Sample camera views of each hazard class and a top-down map.

`hazard_views(world, config)` finds, for each hazard class, an object of that
class and a free camera pose 1–3 m away that sees it (checked with the
instance channel), and renders the view. Used by `failtax sim samples`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sim.building import CAUSE_CLASSES, OBJECT_CLASSES, default_cause_class
from sim.config import SimConfig
from sim.env import World
from sim.render import Raycaster

# Hazard class -> object classes that show it (a narrow gap is a doorway).
HAZARD_OBJECTS: dict[str, tuple[str, ...]] = {
    cause: tuple(c for c in OBJECT_CLASSES if default_cause_class(c) == cause)
    for cause in CAUSE_CLASSES
}


@dataclass
class HazardView:
    """One rendered view of a hazard."""

    hazard: str
    object_ids: tuple[int, ...]
    pose: tuple[float, float, float]
    rgb: np.ndarray  # (H, W, 3) uint8
    visible_fraction: float  # share of central pixels showing the target (1.0 for doorways)


def _candidate_poses(world: World, target: tuple[float, float], rng: np.random.Generator,
                     radii: tuple[float, ...] = (1.2, 1.6, 2.0, 2.6, 3.2), n_angles: int = 24):
    grid, planner = world.grid, world.planner
    for r in radii:
        for a in rng.permutation(np.linspace(-math.pi, math.pi, n_angles, endpoint=False)):
            x, y = target[0] + r * math.cos(a), target[1] + r * math.sin(a)
            iy, ix = grid.world_to_cell(x, y)
            if planner.free[iy, ix] and grid.clearance_m[iy, ix] > planner.min_clearance_m + 0.05:
                yaw = math.atan2(target[1] - y, target[0] - x)
                yield (x, y, yaw)


def hazard_views(world: World, config: SimConfig, seed: int = 0,
                 size_px: int | None = None) -> list[HazardView]:
    """Best view found for each hazard class present in the building."""
    rng = np.random.default_rng(seed)
    cam = config.camera if size_px is None else config.camera.model_copy(
        update={"width_px": size_px, "height_px": size_px})
    probe = Raycaster(world.geometry, world.building, config.camera.model_copy(
        update={"width_px": 64, "height_px": 64}))
    final = Raycaster(world.geometry, world.building, cam)
    b = world.building
    views = []
    for hazard, classes in HAZARD_OBJECTS.items():
        if hazard == "narrow_gap":
            # Face the doorway square on, from either side.
            opaque = [g for g in b.doorways if g.narrow and all(
                b.object(i).opacity >= 1 for i in g.wall_object_ids)]
            doors = opaque or [g for g in b.doorways if g.narrow]
            for g in doors[:6]:
                (ax, ay), (bx, by) = g.p0, g.p1
                nx, ny = -(by - ay) / g.width_m, (bx - ax) / g.width_m
                cx, cy = g.center_xy
                for side in (1, -1):
                    x, y = cx + side * 1.6 * nx, cy + side * 1.6 * ny
                    iy, ix = world.grid.world_to_cell(x, y)
                    if world.planner.free[iy, ix]:
                        yaw = math.atan2(cy - y, cx - x)
                        rgb = final.render(np.asarray([(x, y, yaw)])).rgb[0]
                        views.append(HazardView(hazard, tuple(g.wall_object_ids),
                                                (x, y, yaw), rgb, 1.0))
                        break
                else:
                    continue
                break
            continue
        else:
            targets = [(o.center_xy, (o.object_id,)) for o in b.objects_of_class(*classes)
                       if "outer" not in o.tags]
        best = None
        for center, ids in targets[:12]:
            poses = list(_candidate_poses(world, center, rng))[:40]
            if not poses:
                continue
            out = probe.render(np.asarray(poses), instance=True)
            # Target pixels in the middle half of the image, so it is clearly in view.
            mid = out.instance[:, :, 16:48]
            frac = np.isin(mid, ids).mean(axis=(1, 2))
            k = int(np.argmax(frac))
            if best is None or frac[k] > best[0]:
                best = (float(frac[k]), poses[k], ids)
        if best is None or best[0] <= 0:
            continue
        rgb = final.render(np.asarray([best[1]])).rgb[0]
        views.append(HazardView(hazard, best[2], tuple(map(float, best[1])), rgb, best[0]))
    return views


def contact_sheet(views: list[HazardView], tile_px: int = 192) -> Image.Image:
    """All views side by side with their hazard names."""
    font = ImageFont.load_default()
    cols = min(4, max(1, len(views)))
    rows = math.ceil(len(views) / cols)
    sheet = Image.new("RGB", (cols * tile_px, rows * (tile_px + 14)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, v in enumerate(views):
        img = Image.fromarray(v.rgb).resize((tile_px, tile_px), Image.NEAREST)
        x, y = (i % cols) * tile_px, (i // cols) * (tile_px + 14)
        sheet.paste(img, (x, y + 14))
        draw.text((x + 3, y + 1), v.hazard, fill=(0, 0, 0), font=font)
    return sheet

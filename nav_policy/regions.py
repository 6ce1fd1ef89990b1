"""Regions for targeted collection: where the expert's paths should pass.

A regions file (JSON) is either a list of region records or
``{"schema_version": 1, "regions": [...]}``. Each record:

| key | meaning |
|---|---|
| `region_id` | name (defaults to its index) |
| `family` | building family (default: the collection's) |
| `building_seed` | one building, or null for any building of the family |
| `object_ids` | objects the path must pass near (needs `building_seed`) |
| `areas` | `[{"kind": "circle", "points": [[x, y]], "radius_m": r}]`, or kind "rect" |
|  | (two corners) / "polygon" (vertices); needs `building_seed` |
| `object_classes`, `materials`, `causes` | semantic selectors: matching objects of the building |
| `radius_m` | pass-near distance (default: collect.region_radius_m) |
| `share` | share of the budget (normalised over regions; default 1) |
| `why` | free text kept in the manifest, e.g. "collision_site" or "semantic_match" |
| `starts` | logged states to replay: `[{"xy": [x, y], "yaw_rad": a, "goal_xy": [x, y]}]`, |
|  | e.g. the failing robot's pose seconds before its collision (needs `building_seed`; |
|  | used for `collect.replay_share` of the region's episodes) |

Anything else (e.g. the mode's name or description) is kept but ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common import stable_hash

_AREA_KINDS = ("circle", "rect", "polygon")


@dataclass(frozen=True)
class TargetRegion:
    """One parsed region record (see the module docstring)."""

    region_id: str
    family: str | None
    building_seed: int | None
    object_ids: tuple[int, ...] = ()
    areas: tuple[dict, ...] = ()
    object_classes: tuple[str, ...] | None = None
    materials: tuple[str, ...] | None = None
    causes: tuple[str, ...] | None = None
    radius_m: float | None = None
    share: float = 1.0
    why: str = ""
    starts: tuple[dict, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def has_selectors(self) -> bool:
        return any(v is not None for v in (self.object_classes, self.materials, self.causes))


def _tuple_or_none(v: Any, name: str, where: str) -> tuple | None:
    if v is None:
        return None
    if not isinstance(v, list):
        raise ValueError(f"{where}: `{name}` must be a list")
    return tuple(v)


def parse_regions(data: Any, source: str = "regions") -> list[TargetRegion]:
    """Validate region records; raises ValueError saying which record is wrong and why."""
    if isinstance(data, dict):
        if data.get("schema_version", 1) != 1:
            raise ValueError(f"{source}: schema_version {data.get('schema_version')} "
                             "unsupported (expected 1)")
        data = data.get("regions")
    if not isinstance(data, list) or not data:
        raise ValueError(f"{source}: expected a non-empty list of regions "
                         "(or {'regions': [...]})")
    known = {"region_id", "family", "building_seed", "object_ids", "areas", "object_classes",
             "materials", "causes", "radius_m", "share", "why", "starts"}
    out = []
    for i, rec in enumerate(data):
        where = f"{source}[{i}]"
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: each region must be an object")
        seed = rec.get("building_seed")
        ids = tuple(int(v) for v in rec.get("object_ids") or ())
        areas = tuple(rec.get("areas") or ())
        for a in areas:
            if not isinstance(a, dict) or a.get("kind") not in _AREA_KINDS or not a.get("points"):
                raise ValueError(f"{where}: each area needs kind in {_AREA_KINDS} and points")
        starts = tuple(_parse_start(st, f"{where}.starts[{k}]")
                       for k, st in enumerate(rec.get("starts") or ()))
        if (ids or areas or starts) and seed is None:
            raise ValueError(f"{where}: object_ids/areas/starts are building-specific; "
                             "set building_seed")
        r = TargetRegion(
            region_id=str(rec.get("region_id", i)), family=rec.get("family"),
            building_seed=None if seed is None else int(seed), object_ids=ids, areas=areas,
            object_classes=_tuple_or_none(rec.get("object_classes"), "object_classes", where),
            materials=_tuple_or_none(rec.get("materials"), "materials", where),
            causes=_tuple_or_none(rec.get("causes"), "causes", where),
            radius_m=None if rec.get("radius_m") is None else float(rec["radius_m"]),
            share=float(rec.get("share", 1.0)), why=str(rec.get("why", "")), starts=starts,
            extra={k: v for k, v in rec.items() if k not in known},
        )
        if r.share < 0:
            raise ValueError(f"{where}: share must be >= 0")
        if not (r.object_ids or r.areas or r.has_selectors):
            raise ValueError(f"{where}: give object_ids, areas, or object_classes/materials/causes")
        out.append(r)
    if sum(r.share for r in out) <= 0:
        raise ValueError(f"{source}: all shares are 0")
    return out


def _parse_start(rec: Any, where: str) -> dict:
    """One replay start: {"xy": [x, y], "yaw_rad": a, "goal_xy": [x, y]} as floats."""
    try:
        xy = [float(v) for v in rec["xy"]]
        goal = [float(v) for v in rec["goal_xy"]]
        yaw = float(rec["yaw_rad"])
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{where}: a start needs xy [x, y], yaw_rad and goal_xy [x, y]") from None
    if len(xy) != 2 or len(goal) != 2 or not np.isfinite([*xy, *goal, yaw]).all():
        raise ValueError(f"{where}: xy and goal_xy must be two finite numbers each")
    return {"xy": xy, "yaw_rad": yaw, "goal_xy": goal}


def load_regions(path: str | os.PathLike) -> tuple[list[TargetRegion], str]:
    """(regions, content hash) of a regions JSON file."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"regions file {p} does not exist")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON: {e}") from None
    return parse_regions(data, str(p)), stable_hash(data)


def pick_region(regions: list[TargetRegion], rng: np.random.Generator) -> int:
    """Index of a region drawn with probability proportional to its share."""
    shares = np.array([r.share for r in regions], float)
    return int(rng.choice(len(regions), p=shares / shares.sum()))


def region_targets(region: TargetRegion, query) -> list:
    """Targets (object ids and sim Regions) of `region` in the query's building."""
    from sim.topdown import Region

    targets: list = []
    if region.building_seed is not None and int(region.building_seed) == int(query.building.seed):
        targets += list(region.object_ids)
        for a in region.areas:
            pts = [tuple(map(float, p)) for p in a["points"]]
            if a["kind"] == "circle":
                radius = float(a.get("radius_m", 0.5))
                targets.append(Region.circle(pts[0], radius, region.region_id))
            elif a["kind"] == "rect":
                (x0, y0), (x1, y1) = pts[:2]
                targets.append(Region.rect(x0, y0, x1, y1, region.region_id))
            else:
                targets.append(Region.polygon(pts, region.region_id))
    if region.has_selectors:
        objs = query.objects(classes=region.object_classes, materials=region.materials,
                             causes=region.causes)
        seen = {t for t in targets if isinstance(t, int)}
        targets += [o.object_id for o in objs if o.object_id not in seen]
    return targets

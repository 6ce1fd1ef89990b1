"""Typed configuration of the simulator (values live in configs/sim/*.yaml).

`SimConfig` nests one model per concern: the robot, its camera, the world
generator with its hazard rates, and episode limits. Load one with
`load_sim_config(path_or_preset, overrides)`; unknown keys are errors.
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

from pydantic import Field, model_validator

from common import StrictModel, load_yaml, resolve_preset

BUILDING_FAMILIES = ("office_a", "office_b")


class RobotConfig(StrictModel):
    """Unicycle robot: a disc that drives forward and turns."""

    radius_m: float = Field(0.2, gt=0)  # body radius used for collision
    height_m: float = Field(0.7, gt=0)  # body height; objects entirely above it are not hit
    max_speed_mps: float = Field(1.0, gt=0)  # forward speed limit
    min_speed_mps: float = Field(0.0, le=0)  # reverse speed limit (0 = no reversing)
    max_accel_mps2: float = Field(1.5, gt=0)  # |linear acceleration| limit (action 0)
    max_turn_rate_radps: float = Field(1.5, gt=0)  # |turn rate| limit (action 1)


class CameraConfig(StrictModel):
    """Front camera of the 2.5-D raycaster."""

    width_px: int = Field(64, ge=8, le=1024)  # image width
    height_px: int = Field(64, ge=8, le=1024)  # image height
    fov_deg: float = Field(60.0, gt=10, lt=170)  # horizontal field of view (square pixels)
    height_m: float = Field(0.6, gt=0)  # camera height above the floor
    pitch_deg: float = Field(-3.0, ge=-45, le=45)  # camera pitch, negative looks down
    max_range_m: float = Field(14.0, gt=1)  # beyond this, surfaces fade into fog
    max_hits_per_column: int = Field(5, ge=1, le=16)  # nearest surfaces composited per column


class HazardConfig(StrictModel):
    """How often each hazard is placed (probabilities per site or counts per area)."""

    glass_partition_prob: float = Field(0.35, ge=0, le=1)  # room front wall made of glass
    glass_door_prob: float = Field(0.3, ge=0, le=1)  # doorway with an open glass door leaf
    plain_wall_prob: float = Field(0.3, ge=0, le=1)  # wall drawn featureless (no texture, floor tone)
    narrow_door_prob: float = Field(0.2, ge=0, le=1)  # doorway narrower than comfortable
    narrow_door_width_m: tuple[float, float] = (0.62, 0.72)  # width range of narrow doorways
    door_width_m: tuple[float, float] = (0.95, 1.3)  # width range of ordinary doorways
    pillar_prob: float = Field(0.35, ge=0, le=1)  # protruding pillar at a wall junction
    poles_per_100m2: float = Field(1.5, ge=0)  # free-standing thin poles
    low_obstacles_per_100m2: float = Field(2.0, ge=0)  # boxes and bins
    tables_per_room: tuple[int, int] = (0, 2)  # tables (top + thin legs) per room
    chairs_per_table: tuple[int, int] = (1, 3)  # chairs around each table
    loose_chairs_per_100m2: float = Field(0.8, ge=0)  # chairs away from tables
    cabinets_per_room: tuple[int, int] = (0, 2)  # tall furniture against walls
    corridor_hazard_share: float = Field(0.45, ge=0, le=1)  # share of poles/boxes/chairs in corridors

    @model_validator(mode="after")
    def _check_ranges(self) -> HazardConfig:
        for name in ("narrow_door_width_m", "door_width_m", "tables_per_room",
                     "chairs_per_table", "cabinets_per_room"):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(f"hazards.{name} = {[lo, hi]}: give [low, high] with "
                                 "0 <= low <= high")
        return self


class WorldConfig(StrictModel):
    """Procedural office floors."""

    family: Literal["office_a", "office_b"] = "office_a"  # office_a in-distribution, office_b held out
    grid_resolution_m: float = Field(0.1, gt=0.01, le=0.5)  # occupancy grid cell size
    ceiling_height_m: float = Field(2.6, gt=1)  # ceiling height
    hazards: HazardConfig = HazardConfig()  # hazard rates
    # Seeds that pick the building. None: every reset draws a new building from
    # the reset seed; an int: the same building always (start/goal still vary).
    building_seed: int | None = None
    num_buildings: int = Field(64, ge=1)  # building_seed None: reset draws a seed in [0, this)
    # Appearance randomisation: per floor, every kind's colour (walls, floor, ceiling,
    # furniture, hazards) moves by up to this much per RGB channel, and wall and floor
    # textures are redrawn with this probability. Layout, materials and the depth sensor
    # are untouched. 0: the family's own palette.
    appearance_jitter: float = Field(0.0, ge=0, le=0.5)


class EpisodeConfig(StrictModel):
    """Episode timing and termination."""

    dt_s: float = Field(0.1, gt=0, le=1)  # control period
    time_limit_s: float = Field(60.0, gt=0)  # truncate after this many seconds
    goal_tolerance_m: float = Field(0.4, gt=0)  # success when the robot centre is this close
    min_start_goal_path_m: float = Field(4.0, ge=0)  # shortest-path length lower bound
    max_start_goal_path_m: float = Field(25.0, gt=0)  # shortest-path length upper bound
    start_clearance_m: float = Field(0.25, ge=0)  # free space around the start beyond the body


class ObservationConfig(StrictModel):
    """What the env returns besides the RGB image."""

    depth: Literal["off", "info", "obs"] = "off"  # depth (m) along the forward axis
    semantic: Literal["off", "info", "obs"] = "off"  # per-pixel semantic class id
    instance: Literal["off", "info", "obs"] = "off"  # per-pixel object id (0 = none)
    # "obs": add `route`, a point about route_lookahead_m ahead on the shortest route to the
    # goal over the building's floor plan (walls, partitions, pillars, doorways; no furniture,
    # poles, boxes, chairs or door leaves), in the robot frame: what a route planner with an
    # architectural map tells the robot. The clutter it leaves out is for the camera to see.
    route: Literal["off", "obs"] = "off"
    route_lookahead_m: float = Field(1.5, gt=0, le=10)  # how far ahead the route point sits


class DepthSensorConfig(StrictModel):
    """What the depth channel reports.

    `ideal` reports the first surface of every pixel, glass included (the
    simulator's noise-free channel, as in IndoorNav-v0). `realistic` behaves like
    an active depth camera: a surface returns only where it is opaque enough
    (glass panes are transparent to depth: the ray reports what is behind them;
    their thin frames still return), and objects thinner than `thin_width_m`
    return only up to `thin_max_range_m` (beyond it they cover too little of a
    pixel to give a return). Low obstacles leave the view on close approach by
    the camera geometry alone, in both modes. RGB is the same in both modes.
    """

    mode: Literal["ideal", "realistic"] = "realistic"  # ideal = every surface, glass included
    min_return_opacity: float = Field(0.5, gt=0, le=1)  # realistic: per-pixel opacity that returns
    thin_width_m: float = Field(0.1, ge=0)  # realistic: objects narrower than this are "thin"
    thin_max_range_m: float = Field(2.5, gt=0)  # realistic: thin objects vanish from depth beyond


class SimConfig(StrictModel):
    """Everything that defines `failtax/IndoorNav-v1`."""

    robot: RobotConfig = RobotConfig()  # body and dynamics limits
    camera: CameraConfig = CameraConfig()  # front camera
    world: WorldConfig = WorldConfig()  # building generator
    episode: EpisodeConfig = EpisodeConfig()  # timing and termination
    observation: ObservationConfig = ObservationConfig()  # extra channels
    depth_sensor: DepthSensorConfig = DepthSensorConfig()  # what the depth channel reports

    @model_validator(mode="after")
    def _check_consistency(self) -> SimConfig:
        step_m = self.robot.max_speed_mps * self.episode.dt_s
        if step_m >= self.robot.radius_m:
            raise ValueError(
                f"robot.max_speed_mps * episode.dt_s = {step_m:.3f} m per step must be below "
                f"robot.radius_m = {self.robot.radius_m} m, or thin obstacles can be skipped; "
                "lower the speed or dt_s"
            )
        if self.episode.min_start_goal_path_m >= self.episode.max_start_goal_path_m:
            raise ValueError("episode.min_start_goal_path_m must be below max_start_goal_path_m")
        if self.camera.height_m >= self.world.ceiling_height_m:
            raise ValueError("camera.height_m must be below world.ceiling_height_m")
        lo = self.world.hazards.narrow_door_width_m[0]
        if lo <= 2 * self.robot.radius_m:
            raise ValueError(
                f"hazards.narrow_door_width_m lower bound {lo} must exceed the robot diameter "
                f"{2 * self.robot.radius_m} so narrow doorways stay passable"
            )
        return self

    @property
    def max_steps(self) -> int:
        """Steps before the time limit truncates an episode."""
        return math.ceil(self.episode.time_limit_s / self.episode.dt_s - 1e-9)


def load_sim_config(
    path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None
) -> SimConfig:
    """Load a `SimConfig` from YAML (None: defaults) with dotted-key overrides.

    `path` may be a shipped preset's name ("nav", "office_b": configs/sim/).

    Example:
        >>> cfg = load_sim_config(None, {"camera.width_px": 96, "camera.height_px": 96})
        >>> cfg = load_sim_config("office_b")
    """
    return load_yaml(SimConfig, None if path is None else resolve_preset(path, "sim"), overrides)

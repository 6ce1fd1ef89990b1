"""`failtax/IndoorNav-v1`: drive a unicycle robot to a goal through an office floor.

Observation (Dict):
    image     (H, W, 3) uint8 front camera.
    velocity  (2,) float32 [v_mps, w_radps].
    goal      (2,) float32 goal in the robot frame [forward_m, left_m].
    route     (2,) float32, when observation.route is "obs": a point about
              route_lookahead_m ahead on the floor-plan route to the goal, in
              the robot frame (see World.route_planner).
    depth / semantic / instance   optional, see ObservationConfig.
Action (Box(2,)): [linear acceleration m/s², turn rate rad/s], clipped to limits.
Episode end: collision -> terminated (failure); goal within tolerance ->
terminated (success); time limit -> truncated (timeout). `info["outcome"]`
says which ("collision" | "success" | "timeout" | None while running) and
`info["collision"]` holds what was hit (see sim.physics.Collision).

Reset options (all optional): ``family``, ``building_seed``, ``building`` (a
hand-made sim.building.Building), ``start_xy``, ``start_yaw``, ``goal_xy``.
Everything random comes from `reset(seed=...)`.

The batched core `NavBatch` steps and renders many robots at once; the env
is a batch of one, the vector env in sim.vector a batch of many.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from common import stable_hash
from sim import ENV_ID  # noqa: F401  (re-exported for callers of sim.env)
from sim.building import SEMANTIC_CLASSES, Building
from sim.config import SimConfig, load_sim_config
from sim.geometry import CompiledGeometry, compile_building
from sim.grid import OccupancyGrid
from sim.physics import Collision, CollisionChecker, unicycle_step
from sim.planning import GridPlanner
from sim.render import Raycaster
from sim.world import generate_building

RESET_OPTIONS = ("family", "building_seed", "building", "start_xy", "start_yaw", "goal_xy")
PLANNER_MARGIN_M = 0.03  # extra clearance the grid planner keeps beyond the body radius
# Object classes on the floor plan the `route` observation is planned over.
FLOORPLAN_CLASSES = ("wall", "plain_wall", "glass_partition", "pillar")


@dataclass
class World:
    """A building with everything derived from it for one robot/camera config.

    Attributes:
        building: the floor plan and objects.
        geometry: flat primitive arrays.
        grid: occupancy grid with clearance field.
        planner: grid shortest-path planner at robot radius + margin.
        checker: collision checker for the robot's radius and height.
        raycaster: renderer for the camera.
        robot_radius_m: body radius the planners inflate by.
    """

    building: Building
    geometry: CompiledGeometry
    grid: OccupancyGrid
    planner: GridPlanner
    checker: CollisionChecker
    raycaster: Raycaster
    robot_radius_m: float = 0.2
    _route_planner: GridPlanner | None = None

    @property
    def route_planner(self) -> GridPlanner:
        """Planner over the floor plan only (built on first use).

        The floor plan holds what an architectural drawing shows: walls,
        glass partitions and pillars, with their doorways. Furniture, poles,
        boxes, bins, chairs and open door leaves are left out, so a route
        through it can run into clutter that only the camera shows.
        """
        if self._route_planner is None:
            plan = dataclasses.replace(self.building, objects=[
                o for o in self.building.objects if o.object_class in FLOORPLAN_CLASSES])
            grid = OccupancyGrid.from_building(plan, self.grid.resolution_m,
                                               self.grid.body_height_m)
            self._route_planner = GridPlanner(
                grid, self.robot_radius_m + PLANNER_MARGIN_M,
                preferred_clearance_m=self.planner.preferred_clearance_m)
        return self._route_planner


_WORLD_CACHE: OrderedDict[str, World] = OrderedDict()
_WORLD_CACHE_SIZE = 64  # a world is a few MB (grid, planner graph)


def load_world(config: SimConfig, family: str | None = None, seed: int = 0) -> World:
    """Generate (or fetch from a small per-process cache) a building and its helpers.

    Args:
        config: simulator config (robot, camera, hazards, grid resolution).
        family: building family; None uses config.world.family.
        seed: building seed.
    """
    family = family or config.world.family
    key = stable_hash([family, int(seed), config.world.model_dump(mode="json"),
                       config.robot.model_dump(mode="json"),
                       config.camera.model_dump(mode="json"),
                       config.depth_sensor.model_dump(mode="json")])
    if key in _WORLD_CACHE:
        _WORLD_CACHE.move_to_end(key)
        return _WORLD_CACHE[key]
    building = generate_building(family, seed, config.world.hazards, config.robot.radius_m,
                                 config.world.ceiling_height_m, config.world.appearance_jitter)
    world = world_from_building(building, config)
    _WORLD_CACHE[key] = world
    while len(_WORLD_CACHE) > _WORLD_CACHE_SIZE:
        _WORLD_CACHE.popitem(last=False)
    return world


def world_from_building(building: Building, config: SimConfig) -> World:
    """Derive geometry, grid, planner, checker and renderer of a given building."""
    geom = compile_building(building)
    grid = OccupancyGrid.from_building(building, config.world.grid_resolution_m,
                                       config.robot.height_m, geom)
    planner = GridPlanner(grid, config.robot.radius_m + PLANNER_MARGIN_M,
                          preferred_clearance_m=max(0.6, config.robot.radius_m + 0.2))
    return World(building, geom, grid, planner, CollisionChecker(geom, building, config.robot),
                 Raycaster(geom, building, config.camera, config.depth_sensor),
                 config.robot.radius_m)


def _world_for_building(building: Building, config: SimConfig) -> World:
    """World of a hand-made Building (cached by object identity and config)."""
    key = f"custom:{id(building)}:" + stable_hash(config.model_dump(mode="json"))
    cached = _WORLD_CACHE.get(key)
    if cached is not None and cached.building is building:
        return cached
    world = world_from_building(building, config)
    _WORLD_CACHE[key] = world
    while len(_WORLD_CACHE) > _WORLD_CACHE_SIZE:
        _WORLD_CACHE.popitem(last=False)
    return world


def goal_in_robot_frame(state: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """(B, 2) goal offsets [forward, left] from (B, 5) states and (B, 2) goals."""
    d = goal - state[:, :2]
    c, s = np.cos(state[:, 2]), np.sin(state[:, 2])
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)


class NavBatch:
    """B robots, each in its own (cached) building, stepped and rendered together.

    Robots in the same building are rendered in one raycaster call.
    """

    def __init__(self, config: SimConfig, num_robots: int) -> None:
        self.config = config
        self.num_robots = num_robots
        self.worlds: list[World | None] = [None] * num_robots
        self.state = np.zeros((num_robots, 5))
        self.goal = np.zeros((num_robots, 2))
        self.steps = np.zeros(num_robots, dtype=np.int64)
        self.cost_to_go: list[np.ndarray | None] = [None] * num_robots
        self._ctg_filled: list[np.ndarray | None] = [None] * num_robots
        self.prev_ctg = np.zeros(num_robots)
        self.last_action = np.zeros((num_robots, 2))
        self.collision: list[Collision | None] = [None] * num_robots
        self.outcome: list[str | None] = [None] * num_robots
        # Per robot: (H*W, 2) world point about route_lookahead_m ahead of each floor-plan
        # cell on its route to the goal (NaN where the cell has no route).
        self._route_ahead: list[np.ndarray | None] = [None] * num_robots

    # ------------------------------------------------------------------ reset
    def reset_robot(self, i: int, rng: np.random.Generator, options: dict | None = None) -> None:
        """Place robot i in a building with a start and goal (see module docstring)."""
        cfg = self.config
        opts = dict(options or {})
        unknown = set(opts) - set(RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; valid: {RESET_OPTIONS}")
        if opts.get("building") is not None:
            world = _world_for_building(opts["building"], cfg)
        else:
            family = opts.get("family") or cfg.world.family
            seed = opts.get("building_seed")
            if seed is None:
                seed = cfg.world.building_seed
            if seed is None:
                seed = int(rng.integers(cfg.world.num_buildings))
            world = load_world(cfg, family, int(seed))
        self.worlds[i] = world
        start_opt, goal_opt = opts.get("start_xy"), opts.get("goal_xy")
        if start_opt is not None and goal_opt is not None:
            start = np.asarray(start_opt, float)
            goal = np.asarray(goal_opt, float)
            ctg = world.planner.cost_to_go(tuple(goal))
        else:
            start, goal, ctg = sample_start_goal(world, cfg, rng, start_xy=start_opt,
                                                 goal_xy=goal_opt)
        if world.checker.clearance(start[None])[0] < cfg.robot.radius_m:
            raise ValueError(f"start {start.tolist()} overlaps an obstacle in "
                             f"{world.building.building_id}; pick a free start_xy")
        yaw = opts.get("start_yaw")
        if yaw is None:
            yaw = _initial_heading(world, ctg, start, rng)
        self.state[i] = (start[0], start[1], float(yaw), 0.0, 0.0)
        self.goal[i] = goal
        self.cost_to_go[i] = ctg
        self._ctg_filled[i] = _fill_from_nearest(ctg)
        if cfg.observation.route == "obs":
            self._route_ahead[i] = _route_lookahead(world.route_planner, goal,
                                                    cfg.observation.route_lookahead_m)
        self.prev_ctg[i] = self._ctg_at(i)
        self.steps[i] = 0
        self.last_action[i] = 0
        self.collision[i] = None
        self.outcome[i] = None

    def _ctg_at(self, i: int) -> float:
        # Cells the planner forbids (closer to a surface than its clearance)
        # take their nearest reachable neighbour's cost, so the reward stays
        # smooth when the robot grazes a wall.
        world = self.worlds[i]
        return float(self._ctg_filled[i][world.grid.world_to_cell(*self.state[i, :2])])

    # ------------------------------------------------------------------ step
    def step(self, actions: np.ndarray,
             active: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance every robot (or those where `active` is True) by one step.

        Returns:
            (reward (B,), terminated (B,), truncated (B,)); outcomes and
            collisions are in self.outcome / self.collision.
        """
        cfg = self.config
        actions = np.asarray(actions, dtype=np.float64).reshape(self.num_robots, 2)
        active = np.ones(self.num_robots, bool) if active is None else np.asarray(active, bool)
        new = unicycle_step(self.state, actions, cfg.robot, cfg.episode.dt_s)
        new[~active] = self.state[~active]
        self.last_action[active] = actions[active]
        reward = np.zeros(self.num_robots)
        terminated = np.zeros(self.num_robots, bool)
        truncated = np.zeros(self.num_robots, bool)
        groups = {k: [i for i in idx if active[i]] for k, idx in self._groups().items()}
        groups = {k: idx for k, idx in groups.items() if idx}
        hit_any = np.zeros(self.num_robots, bool)
        for idx in groups.values():
            world = self.worlds[idx[0]]
            hit, frac = world.checker.sweep(self.state[idx, :2], new[idx, :2])
            for j, i in enumerate(idx):
                if hit[j]:
                    # Stop where the disc first touched the surface.
                    new[i, :2] = self.state[i, :2] + frac[j] * (new[i, :2] - self.state[i, :2])
                    new[i, 3] = 0.0
                    hit_any[i] = True
        self.state = new
        self.steps[active] += 1
        for i in np.flatnonzero(active):
            ctg = self._ctg_at(i)
            reward[i] = (self.prev_ctg[i] - ctg) - 0.01
            self.prev_ctg[i] = ctg
        # Collision / success / timeout, in that order of precedence.
        for idx in groups.values():
            world = self.worlds[idx[0]]
            for i in idx:
                if hit_any[i]:
                    # The step index of the first state in contact (= actions taken).
                    step_idx = int(self.steps[i])
                    self.collision[i] = world.checker.describe(tuple(self.state[i, :2]), step_idx)
                    self.outcome[i] = "collision"
                    reward[i] -= 10.0
                    terminated[i] = True
                elif np.hypot(*(self.goal[i] - self.state[i, :2])) <= cfg.episode.goal_tolerance_m:
                    self.outcome[i] = "success"
                    reward[i] += 10.0
                    terminated[i] = True
                elif self.steps[i] >= cfg.max_steps:
                    self.outcome[i] = "timeout"
                    truncated[i] = True
        return reward, terminated, truncated

    def _groups(self) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(self.worlds):
            groups.setdefault(id(w), []).append(i)
        return groups

    # ------------------------------------------------------------------ observe
    def observe(self) -> dict[str, np.ndarray]:
        """Batched observation dict plus every enabled channel.

        Keys: image, velocity, goal, and depth/semantic/instance when enabled
        (in "obs" or "info" mode; the env decides where they go).
        """
        cam, ob = self.config.camera, self.config.observation
        want = {k: getattr(ob, k) != "off" for k in ("depth", "semantic", "instance")}
        n, h, w = self.num_robots, cam.height_px, cam.width_px
        out: dict[str, np.ndarray] = {"image": np.zeros((n, h, w, 3), np.uint8)}
        if want["depth"]:
            out["depth"] = np.zeros((n, h, w), np.float32)
        if want["semantic"]:
            out["semantic"] = np.zeros((n, h, w), np.uint8)
        if want["instance"]:
            out["instance"] = np.zeros((n, h, w), np.uint16)
        for idx in self._groups().values():
            world = self.worlds[idx[0]]
            r = world.raycaster.render(self.state[idx, :3], **want)
            out["image"][idx] = r.rgb
            for k in ("depth", "semantic", "instance"):
                if want[k]:
                    out[k][idx] = getattr(r, k)
        out["velocity"] = self.state[:, 3:5].astype(np.float32)
        out["goal"] = goal_in_robot_frame(self.state, self.goal).astype(np.float32)
        if self.config.observation.route == "obs":
            out["route"] = goal_in_robot_frame(self.state, self._route_points()).astype(np.float32)
        return out

    def _route_points(self) -> np.ndarray:
        """(B, 2) world route point of each robot (its goal where no route is known)."""
        pts = self.goal.copy()
        for i, world in enumerate(self.worlds):
            table = self._route_ahead[i]
            if world is None or table is None:
                continue
            planner = world.route_planner
            cell = world.grid.world_to_cell(*self.state[i, :2])
            if not planner.free[cell]:
                cell = planner.snap(tuple(self.state[i, :2]))
            if cell is None:
                continue
            p = table[planner._flat(cell)]
            if np.isfinite(p[0]):
                pts[i] = p
        return pts

    def info(self, i: int) -> dict[str, Any]:
        """Per-robot info dict (JSON-friendly values)."""
        world = self.worlds[i]
        b = world.building
        return {
            "building_id": b.building_id,
            "building_family": b.family,
            "building_seed": b.seed,
            "step": int(self.steps[i]),
            "pose": [float(v) for v in self.state[i, :3]],
            "goal_xy": [float(v) for v in self.goal[i]],
            # Planner cost to the goal: metres weighted up near obstacles.
            "cost_to_go": float(self.prev_ctg[i]),
            "outcome": self.outcome[i],
            "collision": self.collision[i].to_dict() if self.collision[i] else None,
        }


def _route_lookahead(planner: GridPlanner, goal: np.ndarray, lookahead_m: float) -> np.ndarray:
    """(H*W, 2) for every cell, the point `lookahead_m` of route ahead towards `goal`.

    One Dijkstra from the goal gives each cell its next cell towards the goal;
    following those pointers until the accumulated length reaches the
    lookahead (vectorised over all cells) gives the point. Cells within the
    lookahead of the goal get the goal itself; unreachable cells get NaN.
    """
    grid = planner.grid
    n = planner.free.size
    try:
        cost, pred = planner.cost_from(tuple(goal))
    except ValueError:  # goal off the floor plan's free space: no route
        return np.full((n, 2), np.nan)
    reach = np.isfinite(cost.ravel())
    nxt = np.where(pred >= 0, pred, np.arange(n))
    iy, ix = np.divmod(np.arange(n), planner.free.shape[1])
    xs, ys = grid.cell_to_world(iy, ix)
    cells_xy = np.stack([xs, ys], axis=1)
    at = np.arange(n)
    travelled = np.zeros(n)
    for _ in range(int(np.ceil(lookahead_m / grid.resolution_m)) + 1):
        move = travelled < lookahead_m
        if not move.any():
            break
        to = np.where(move, nxt[at], at)
        travelled += np.linalg.norm(cells_xy[to] - cells_xy[at], axis=1)
        at = to
    out = cells_xy[at].copy()
    goal_cell = planner.snap(tuple(goal))
    if goal_cell is not None:
        out[at == planner._flat(goal_cell)] = goal
    out[~reach] = np.nan
    return out


def _fill_from_nearest(field: np.ndarray) -> np.ndarray:
    """Copy of `field` whose non-finite cells hold the nearest finite value."""
    from scipy import ndimage

    bad = ~np.isfinite(field)
    if not bad.any() or bad.all():
        return np.where(bad, 0.0, field)
    idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    return field[tuple(idx)]


def sample_start_goal(
    world: World,
    config: SimConfig,
    rng: np.random.Generator,
    tries: int = 20,
    start_xy: Sequence[float] | None = None,
    goal_xy: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A start/goal pair whose path cost lies in the configured range.

    Either end may be given; the other is drawn among cells with the
    configured clearance. If no pair fits the range, the longest reachable
    one found is returned.

    Returns:
        (start_xy, goal_xy, cost_to_go field of the goal).
    """
    ep = config.episode
    clearance = config.robot.radius_m + ep.start_clearance_m
    free = world.grid.free_mask(clearance) & world.planner.free
    ys, xs = np.nonzero(free)
    if len(ys) == 0:
        raise ValueError(f"{world.building.building_id}: no free cell with {clearance} m clearance")
    best: tuple | None = None
    for _ in range(1 if (start_xy is not None or goal_xy is not None) else tries):
        if start_xy is not None:
            anchor = np.asarray(start_xy, float)  # the graph is symmetric: cost from start
        elif goal_xy is not None:
            anchor = np.asarray(goal_xy, float)
        else:
            k = int(rng.integers(len(ys)))
            anchor = np.array(world.grid.cell_to_world(ys[k], xs[k]))
        field = world.planner.cost_to_go(tuple(anchor))
        c = field[ys, xs]
        ok = np.flatnonzero((c >= ep.min_start_goal_path_m) & (c <= ep.max_start_goal_path_m))
        if len(ok):
            j = int(ok[rng.integers(len(ok))])
        else:
            reach = np.flatnonzero(np.isfinite(c) & (c > 0))
            if not len(reach) or (best is not None and c[reach].max() <= best[3]):
                continue
            j = int(reach[np.argmax(c[reach])])
        other = np.array(world.grid.cell_to_world(ys[j], xs[j]))
        if start_xy is not None:
            pair = (anchor, other, world.planner.cost_to_go(tuple(other)), c[j])
        else:
            pair = (other, anchor, field, c[j])
        if len(ok):
            return pair[0], pair[1], pair[2]
        best = pair
    if best is None:
        raise ValueError(f"{world.building.building_id}: could not sample a start/goal pair")
    return best[0], best[1], best[2]


def _initial_heading(world: World, ctg: np.ndarray, start: np.ndarray,
                     rng: np.random.Generator) -> float:
    """Roughly along the downhill direction of the cost-to-go, with noise."""
    grid = world.grid
    iy, ix = grid.world_to_cell(*start)
    r = max(1, round(1.0 / grid.resolution_m))
    win = ctg[max(iy - r, 0): iy + r + 1, max(ix - r, 0): ix + r + 1]
    if np.isfinite(win).any():
        jy, jx = np.unravel_index(np.nanargmin(np.where(np.isfinite(win), win, np.nan)),
                                  win.shape)
        tx, ty = grid.cell_to_world(jy + max(iy - r, 0), jx + max(ix - r, 0))
        base = math.atan2(ty - start[1], tx - start[0])
    else:
        base = float(rng.uniform(-math.pi, math.pi))
    return float(np.mod(base + rng.normal(0, 0.6) + math.pi, 2 * math.pi) - math.pi)


def _observation_space(config: SimConfig, batch: tuple[int, ...] = ()) -> spaces.Dict:
    cam, rob, ob = config.camera, config.robot, config.observation
    hw = (*batch, cam.height_px, cam.width_px)
    d: dict[str, spaces.Space] = {
        "image": spaces.Box(0, 255, (*hw, 3), np.uint8),
        "velocity": spaces.Box(
            np.broadcast_to(np.array([rob.min_speed_mps, -rob.max_turn_rate_radps], np.float32),
                            (*batch, 2)),
            np.broadcast_to(np.array([rob.max_speed_mps, rob.max_turn_rate_radps], np.float32),
                            (*batch, 2)),
            dtype=np.float32),
        "goal": spaces.Box(-200.0, 200.0, (*batch, 2), np.float32),
    }
    if ob.route == "obs":
        d["route"] = spaces.Box(-200.0, 200.0, (*batch, 2), np.float32)
    if ob.depth == "obs":
        d["depth"] = spaces.Box(0.0, np.inf, hw, np.float32)
    if ob.semantic == "obs":
        d["semantic"] = spaces.Box(0, max(SEMANTIC_CLASSES), hw, np.uint8)
    if ob.instance == "obs":
        d["instance"] = spaces.Box(0, 65535, hw, np.uint16)
    return spaces.Dict(d)


def _action_space(config: SimConfig) -> spaces.Box:
    rob = config.robot
    hi = np.array([rob.max_accel_mps2, rob.max_turn_rate_radps], np.float32)
    return spaces.Box(-hi, hi, dtype=np.float32)


def resolve_config(config: SimConfig | dict | str | None) -> SimConfig:
    """Accept a SimConfig, a dict of (dotted) overrides, a YAML path, or None."""
    if config is None:
        return SimConfig()
    if isinstance(config, SimConfig):
        return config
    if isinstance(config, dict):
        return load_sim_config(None, config)
    return load_sim_config(config)


class IndoorNavEnv(gym.Env):
    """Single-robot Gymnasium env (see the module docstring).

    Args:
        config: SimConfig, dict of dotted overrides, YAML path, or None.
        render_mode: "rgb_array" returns the camera image from render().
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, config: SimConfig | dict | str | None = None,
                 render_mode: str | None = None) -> None:
        self.config = resolve_config(config)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r} not supported; use 'rgb_array' or None")
        self.render_mode = render_mode
        self.observation_space = _observation_space(self.config)
        self.action_space = _action_space(self.config)
        self.metadata = {**self.metadata, "render_fps": round(1 / self.config.episode.dt_s)}
        self._batch = NavBatch(self.config, 1)
        self._last_obs: dict[str, np.ndarray] | None = None

    # Convenient handles for experts, recorders and tests.
    @property
    def world(self) -> World:
        """The current building and its grid, planner, checker and renderer."""
        w = self._batch.worlds[0]
        if w is None:
            raise RuntimeError("call reset() first")
        return w

    @property
    def state(self) -> np.ndarray:
        """(5,) x_m, y_m, yaw_rad, v_mps, w_radps."""
        return self._batch.state[0].copy()

    @property
    def goal_xy(self) -> np.ndarray:
        """(2,) goal in world coordinates."""
        return self._batch.goal[0].copy()

    @property
    def cost_to_go(self) -> np.ndarray:
        """(H, W) planner cost from each grid cell to the goal."""
        return self._batch.cost_to_go[0]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._batch.reset_robot(0, self.np_random, options)
        return self._observe()

    def step(self, action):
        reward, terminated, truncated = self._batch.step(np.asarray(action)[None])
        obs, info = self._observe()
        return obs, float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def _observe(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        raw = self._batch.observe()
        ob = self.config.observation
        obs = {k: raw[k][0] for k in ("image", "velocity", "goal", "route") if k in raw}
        info = self._batch.info(0)
        for k in ("depth", "semantic", "instance"):
            mode = getattr(ob, k)
            if mode == "obs":
                obs[k] = raw[k][0]
            elif mode == "info":
                info[k] = raw[k][0]
        self._last_obs = obs
        return obs, info

    def render(self):
        if self.render_mode == "rgb_array" and self._last_obs is not None:
            return self._last_obs["image"].copy()
        return None

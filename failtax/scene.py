"""Scene descriptions from a log's depth and RGB channels (and, opt-in, the
simulator's privileged semantic / instance channels).

For each kept frame, `describe_frames` lists the visible objects with their
distance (m), bearing (left / ahead / right and degrees), apparent size and
shape, vertical extent (an object entirely below camera height is "low"),
and how they moved since the previous kept frame (closing in / receding),
plus the robot's own motion from steps.jsonl. Which channels may be used and
whether semantic class names appear are configurable (`SceneConfig`): with
`class_names: false` objects are named by geometry only ("object 3, thin
vertical, 0.4 m ahead, low"), so an evaluation can tell what the pipeline finds
without being handed the answer's vocabulary.

With the ``rgb`` channel allowed, each object also gets appearance cues
measured from the frame's pixels, never from class names: "featureless"
(almost no texture, like a plain wall) or "faint" (its colours barely differ
from its surroundings, like glass).

`summarise_facts` turns the scene descriptions of the last frames into a
trajectory and a failure reason with no model at all: the honest floor that a
model-written explanation has to beat. Its failure reason is categorical (what
was hit, its shape, height and appearance, how the robot met it: head-on, on
one side, in a narrow gap, after it dropped out of view), so that failures of
one cause read alike and cluster; the measurements go into the trajectory.

Robot-observable by default: with only depth (and RGB), objects are segmented
from the depth image itself (pixels whose 3-D point lies above the floor, split
at depth discontinuities) and tracked from frame to frame by bearing and
distance. The failure summary then states what honest sensors show: a
collision with nothing in depth near the robot ("the depth sensor did not see
it"), an obstacle that appeared in depth only when close, or one that left the
camera's view before contact. Class names appear only with the privileged
`class_names` option or when an episode declares a `detector` channel.

Geometry: pinhole camera with the horizontal field of view of meta.camera,
square pixels; bearing is positive to the left (counter-clockwise, like yaw).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from failtax.config import SceneConfig
from failtax.sources import Episode
from failtax.types import Keyframes

DEFAULT_FOV_DEG = 90.0


@dataclass
class ObjectObs:
    """One object seen in one frame."""

    object_id: int
    label: str  # "glass door (object 5)" or "object 5"
    distance_m: float
    bearing_deg: float  # + left, - right
    width_deg: float
    width_m: float
    height_m: float
    top_above_floor_m: float | None  # None when the camera height is unknown
    image_fraction: float
    shape: str  # "thin vertical", "wide", "compact", ...
    vertical: str  # "low (below camera height)", "spans the view", ...
    side: str = "ahead"  # "left", "ahead" or "right" (within SceneConfig.ahead_half_angle_deg)
    motion: str = ""  # "closing in (1.20→0.60 m)", "receding", "newly visible", ""
    appearance: str = ""  # from the RGB frame: "featureless (uniform colour)", "faint: ..." or ""


@dataclass
class SceneFrame:
    """The description of one kept frame."""

    frame_index: int
    step: int | None
    t_s: float | None
    robot: str  # the robot's own motion
    objects: list[ObjectObs] = field(default_factory=list)
    free_space: dict[str, float] = field(
        default_factory=dict
    )  # left/ahead/right → nearest obstacle (m)
    channels_used: list[str] = field(default_factory=list)
    v_mps: float | None = None
    w_radps: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        """One paragraph for a text model."""
        head = f"[frame {self.frame_index}" + (
            f", t={self.t_s:.2f} s]" if self.t_s is not None else "]"
        )
        parts = [f"{head} Robot: {self.robot}."]
        if not self.channels_used:
            parts.append("No depth or semantic channels recorded.")
        elif self.objects:
            parts.append("Objects: " + "; ".join(_object_text(o) for o in self.objects) + ".")
        else:
            parts.append("No objects in view.")
        if self.free_space:
            parts.append(
                "Nearest obstacle: "
                + ", ".join(f"{k} {v:.2f} m" for k, v in self.free_space.items())
                + "."
            )
        return " ".join(parts)


def _object_text(o: ObjectObs) -> str:
    where = (
        o.side
        if abs(o.bearing_deg) < 0.5
        else f"{o.side} ({abs(o.bearing_deg):.0f}° {'left' if o.bearing_deg > 0 else 'right'})"
    )
    bits = [o.label, f"{o.distance_m:.2f} m", where, o.shape, o.vertical, o.appearance]
    if o.motion:
        bits.append(o.motion)
    return ", ".join(b for b in bits if b)


def _side(bearing_deg: float, ahead_half_angle_deg: float) -> str:
    if abs(bearing_deg) <= ahead_half_angle_deg:
        return "ahead"
    return "left" if bearing_deg > 0 else "right"


def robot_motion_text(step: dict[str, Any] | None) -> str:
    """ "moving forward at 0.42 m/s, turning left 15°/s" from a steps.jsonl record."""
    if not step:
        return "motion not logged"
    v = float(step.get("v_mps") or 0.0)
    w = math.degrees(float(step.get("w_radps") or 0.0))
    if abs(v) < 0.02:
        move = "stopped"
    elif v > 0:
        move = f"moving forward at {v:.2f} m/s"
    else:
        move = f"reversing at {-v:.2f} m/s"
    if abs(w) >= 3.0:
        move += f", turning {'left' if w > 0 else 'right'} {abs(w):.0f}°/s"
    else:
        move += ", heading straight"
    return move


def _moving_step(episode: Episode, frame_index: int) -> dict[str, Any] | None:
    """The step record of a frame, with the velocity it arrived with when the robot
    stopped there (a collision's terminal record has speed 0; the motion into it matters)."""
    step = episode.step_record(frame_index)
    if not step or step.get("action") is not None:
        return step
    number = int(step.get("step", -1))
    if 0 < number <= len(episode.steps) - 1 and abs(float(step.get("v_mps") or 0.0)) < 0.02:
        before = episode.steps[number - 1]
        return {**step, "v_mps": before.get("v_mps"), "w_radps": before.get("w_radps")}
    return step


class SceneDescriber:
    """Builds `SceneFrame`s for an episode's kept frames."""

    def __init__(self, cfg: SceneConfig) -> None:
        self.cfg = cfg

    def describe(self, episode: Episode, keyframes: Keyframes) -> list[SceneFrame]:
        """Scene descriptions of `keyframes.indices`, in order, with motion between them.

        Raises:
            failtax.sources.EpisodeReadError: a channels file is unreadable.
        """
        meta = episode.meta or {}
        camera = meta.get("camera") or {}
        classes = {int(k): str(v) for k, v in (meta.get("semantic_classes") or {}).items()}
        detector = "detector" in (meta.get("channels") or [])
        frames: list[SceneFrame] = []
        previous: dict[int, ObjectObs] = {}
        tracker = _Tracker()
        for idx in keyframes.indices:
            step = _moving_step(episode, idx)
            loaded = episode.load_channels(idx)
            channels = {k: v for k, v in loaded.items() if k in self.cfg.channels}
            if detector and "detector" in loaded and "semantic" not in channels:
                channels["semantic"] = loaded["detector"]  # a real detector's class image
            rgb = None
            if "rgb" in self.cfg.channels and "depth" in channels:
                frame = episode.load_frame(idx)
                rgb = frame if frame.shape[:2] == channels["depth"].shape else None
            scene = self._frame(idx, step, channels, camera, classes, rgb, detector)
            if scene.objects and not {"instance", "semantic"} & set(channels):
                tracker.assign(scene)
            for obj in scene.objects:
                before = previous.get(obj.object_id)
                if before is None:
                    obj.motion = "newly visible" if previous else ""
                else:
                    delta = obj.distance_m - before.distance_m
                    if delta <= -self.cfg.motion_threshold_m:
                        obj.motion = f"closing in ({before.distance_m:.2f}→{obj.distance_m:.2f} m)"
                    elif delta >= self.cfg.motion_threshold_m:
                        obj.motion = f"receding ({before.distance_m:.2f}→{obj.distance_m:.2f} m)"
                    else:
                        obj.motion = "steady distance"
            previous = {o.object_id: o for o in scene.objects} or previous
            frames.append(scene)
        return frames

    def _frame(
        self,
        idx: int,
        step: dict[str, Any] | None,
        channels: dict[str, np.ndarray],
        camera: dict[str, Any],
        classes: dict[int, str],
        rgb: np.ndarray | None = None,
        detector: bool = False,
    ) -> SceneFrame:
        scene = SceneFrame(
            frame_index=idx,
            step=int(step["step"]) if step and "step" in step else None,
            t_s=float(step["t_s"]) if step and "t_s" in step else None,
            robot=robot_motion_text(step),
            channels_used=sorted(channels),
            v_mps=float(step.get("v_mps") or 0.0) if step else None,
            w_radps=float(step.get("w_radps") or 0.0) if step else None,
        )
        depth = channels.get("depth")
        if depth is None:
            return scene  # without depth there is no distance to speak of
        depth = depth.astype(np.float32)
        h, w = depth.shape
        fov = math.radians(float(camera.get("fov_deg") or DEFAULT_FOV_DEG))
        focal = (w / 2) / math.tan(fov / 2)
        horizon_row = h / 2 + focal * math.tan(math.radians(float(camera.get("pitch_deg") or 0.0)))
        cam_h = camera.get("height_m")
        use_names = self.cfg.class_names or detector
        names = classes if use_names else {}
        semantic = channels.get("semantic") if use_names else None
        instance = channels.get("instance")
        ignore_ids = {cid for cid, name in classes.items() if name in self.cfg.ignore_classes}

        # Object masks: instances when logged; otherwise semantic classes as objects.
        if instance is not None:
            ids = instance.astype(np.int64)
            ids = (
                np.where(np.isin(semantic, list(ignore_ids)), 0, ids)
                if semantic is not None
                else ids
            )
        elif semantic is not None:
            ids = np.where(np.isin(semantic, list(ignore_ids)), 0, semantic.astype(np.int64))
        else:
            ids = None
        finite = np.isfinite(depth) & (depth > 0)
        if ids is None and cam_h is not None:
            ids = depth_segments(depth, finite, focal, camera, float(cam_h), self.cfg)
        cols = (np.arange(w) + 0.5 - w / 2) / focal  # tan of the angle, + right in the image
        if ids is not None:
            scene.objects = self._objects(
                ids,
                depth,
                finite,
                semantic,
                names,
                instance is not None or semantic is None,
                focal,
                horizon_row,
                cols,
                cam_h,
                h,
                w,
                rgb,
            )
            obstacle = (ids > 0) & finite
        else:
            band = slice(max(0, int(horizon_row - 0.1 * h)), min(h, int(horizon_row + 0.1 * h) + 1))
            obstacle = np.zeros_like(finite)
            obstacle[band] = finite[band]
        scene.free_space = self._free_space(depth, obstacle, cols)
        return scene

    def _objects(
        self,
        ids,
        depth,
        finite,
        semantic,
        names,
        is_instance,
        focal,
        horizon_row,
        cols,
        cam_h,
        h,
        w,
        rgb=None,
    ):
        cfg = self.cfg
        luma = (
            rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            if rgb is not None
            else None
        )
        min_pixels = max(1, int(cfg.min_object_fraction * h * w))
        found: list[ObjectObs] = []
        for oid in np.unique(ids):
            if oid == 0:
                continue
            mask = (ids == oid) & finite
            n = int(mask.sum())
            if n < min_pixels:
                continue
            rows, cs = np.nonzero(mask)
            dist = float(np.percentile(depth[mask], 10))  # nearest surface matters for contact
            left_tan, right_tan = cols[cs.min()] - 0.5 / focal, cols[cs.max()] + 0.5 / focal
            mid_tan = float(np.median(cols[cs]))
            bearing = -math.degrees(math.atan(mid_tan))
            width_deg = math.degrees(math.atan(right_tan) - math.atan(left_tan))
            width_m = dist * (right_tan - left_tan)
            top, bottom = int(rows.min()), int(rows.max())
            height_m = dist * (bottom - top + 1) / focal
            top_above = None
            if cam_h is not None:
                top_above = float(cam_h) + dist * (horizon_row - top) / focal
            label = self._label(int(oid), mask, semantic, names, is_instance)
            found.append(
                ObjectObs(
                    object_id=int(oid),
                    label=label,
                    distance_m=round(dist, 2),
                    bearing_deg=round(bearing, 1),
                    width_deg=round(width_deg, 1),
                    width_m=round(width_m, 2),
                    height_m=round(height_m, 2),
                    top_above_floor_m=None if top_above is None else round(top_above, 2),
                    image_fraction=round(n / (h * w), 4),
                    shape=_shape(width_m, height_m, width_deg, top == 0 or bottom == h - 1),
                    vertical=_vertical(top, bottom, h, horizon_row, top_above),
                    side=_side(bearing, cfg.ahead_half_angle_deg),
                    appearance="" if rgb is None else appearance(mask, rgb, luma, cfg),
                )
            )
        found.sort(key=lambda o: o.distance_m)
        return found[: cfg.max_objects]

    @staticmethod
    def _label(oid: int, mask, semantic, names: dict[int, str], is_instance: bool) -> str:
        if not names:
            return f"object {oid}"
        if is_instance and semantic is not None:
            cls = int(np.bincount(semantic[mask].astype(np.int64)).argmax())
        else:
            cls = oid
        name = names.get(cls)
        if name is None:
            return f"object {oid}"
        return f"{name.replace('_', ' ')} (object {oid})" if is_instance else name.replace("_", " ")

    def _free_space(self, depth, obstacle, cols) -> dict[str, float]:
        half = math.tan(math.radians(self.cfg.ahead_half_angle_deg))
        sectors = {"left": cols < -half, "ahead": np.abs(cols) <= half, "right": cols > half}
        out: dict[str, float] = {}
        for name, col_mask in sectors.items():
            m = obstacle & col_mask[None, :]
            if m.any():
                out[name] = round(float(depth[m].min()), 2)
        return out


def depth_segments(
    depth: np.ndarray, finite: np.ndarray, focal: float, camera: dict[str, Any], cam_h: float,
    cfg: SceneConfig,
) -> np.ndarray:
    """(H, W) object ids from a depth image alone (0 = floor, ceiling, nothing).

    A pixel is an obstacle where its 3-D point lies between `obstacle_min_height_m`
    and `obstacle_max_height_m` above the floor (depth is the forward distance, so
    height = camera height + depth * the row's line-of-sight slope). Obstacle pixels
    are grouped into 4-connected segments after dropping the farther pixel of every
    neighbour pair whose depths jump by more than `depth_jump_ratio`, so a pole in
    front of a wall is its own object.
    """
    from scipy import ndimage

    h = depth.shape[0]
    pitch = math.radians(float(camera.get("pitch_deg") or 0.0))
    slope = np.tan(pitch + np.arctan((h / 2 - np.arange(h) - 0.5) / focal))
    d = np.where(finite, depth, np.inf)
    with np.errstate(invalid="ignore"):
        z = cam_h + d * slope[:, None]
    mask = finite & (z >= cfg.obstacle_min_height_m) & (z <= cfg.obstacle_max_height_m)
    edge = np.zeros_like(mask)
    for axis in (0, 1):
        a = d[:-1, :] if axis == 0 else d[:, :-1]
        b = d[1:, :] if axis == 0 else d[:, 1:]
        with np.errstate(invalid="ignore"):
            jump = np.abs(a - b) > cfg.depth_jump_ratio * np.minimum(a, b)
        far_a, far_b = jump & (a > b), jump & (b > a)
        if axis == 0:
            edge[:-1, :] |= far_a
            edge[1:, :] |= far_b
        else:
            edge[:, :-1] |= far_a
            edge[:, 1:] |= far_b
    labels, _ = ndimage.label(mask & ~edge)
    return labels.astype(np.int64)


class _Tracker:
    """Stable object ids for depth segments: each is matched to the nearest object of
    the previous frame in bearing and distance, else it gets a new id."""

    def __init__(self, max_bearing_deg: float = 12.0, max_distance_m: float = 1.0) -> None:
        self.prev: list[ObjectObs] = []
        self.next_id = 1
        self.max_bearing_deg, self.max_distance_m = max_bearing_deg, max_distance_m

    def assign(self, scene: SceneFrame) -> None:
        taken: set[int] = set()
        for o in scene.objects:
            best, cost = None, float("inf")
            for p in self.prev:
                if p.object_id in taken:
                    continue
                db = abs(o.bearing_deg - p.bearing_deg)
                dd = abs(o.distance_m - p.distance_m)
                if db <= self.max_bearing_deg and dd <= self.max_distance_m:
                    c = db / self.max_bearing_deg + dd / self.max_distance_m
                    if c < cost:
                        best, cost = p, c
            if best is None:
                o.object_id, self.next_id = self.next_id, self.next_id + 1
            else:
                o.object_id = best.object_id
            taken.add(o.object_id)
            o.label = f"object {o.object_id}"
        self.prev = list(scene.objects)


def appearance(mask: np.ndarray, rgb: np.ndarray, luma: np.ndarray, cfg: SceneConfig) -> str:
    """How an object looks in the RGB frame, for cues that geometry lacks.

    A surface with (almost) no luminance texture is "featureless" (a plain wall
    gives a camera-based policy nothing to track); one whose mean colour barely
    differs from the pixels around it is "faint" (glass, which shows what is
    behind it). Both come from pixels, never from class names.
    """
    from scipy import ndimage

    inner = ndimage.binary_erosion(mask, iterations=1)
    ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
    if inner.sum() < 6 or ring.sum() < 6:
        return ""
    texture = float(luma[inner].std())
    contrast = float(np.abs(rgb[mask].mean(axis=0) - rgb[ring].mean(axis=0)).mean())
    if texture < cfg.featureless_texture_max:
        return "featureless (uniform colour)"
    if contrast < cfg.faint_contrast_max:
        return "faint: its colours barely differ from its surroundings"
    return ""


def _shape(width_m: float, height_m: float, width_deg: float, clipped: bool) -> str:
    if width_m < 0.2 and height_m > 3 * width_m:
        return "thin vertical"
    if width_deg > 45 or width_m > 1.5:
        return "wide"
    if height_m < 0.6 * width_m:
        return "flat, wider than tall"
    return "tall" if height_m > 1.5 * width_m else "compact"


def _vertical(top: int, bottom: int, h: int, horizon_row: float, top_above: float | None) -> str:
    if top > horizon_row + 1:
        if top_above is not None:
            return f"low: top {max(top_above, 0.0):.2f} m above floor, below camera height"
        return "low in view (below camera height)"
    if top <= 0 and bottom >= h - 1:
        return "fills the view top to bottom"
    if bottom < horizon_row - 1:
        return "high in view (above camera height)"
    return "spans camera height"


# --------------------------------------------------------------------------- facts (no model)


def summarise_facts(
    episode: Episode, scenes: list[SceneFrame], cfg: SceneConfig
) -> tuple[str, str]:
    """Trajectory and failure reason written by code from the logs and scene descriptions.

    The failure reason is categorical — what was hit, as the sensors saw it — so that
    explanations of the same cause read alike and cluster; how the robot met it
    (`cfg.facts_reason: hazard`, the default) and the measurements (speeds, distances)
    go into the trajectory.

    Returns:
        (trajectory, failure_reason), each one to three plain sentences.
    """
    reason, measured = _failure_facts(episode, scenes, cfg)
    trajectory = _trajectory_facts(episode, scenes)
    hazard, sep, approach = reason.partition(": ")
    if cfg.facts_reason == "hazard" and sep:
        reason = hazard + "."
        trajectory += f" {approach[0].upper()}{approach[1:]}"
    return (f"{trajectory} {measured}" if measured else trajectory), reason


def _trajectory_facts(episode: Episode, scenes: list[SceneFrame]) -> str:
    steps = episode.steps
    if len(steps) >= 2 and all("x_m" in s and "y_m" in s for s in steps):
        xy = np.array([[float(s["x_m"]), float(s["y_m"])] for s in steps])
        length = float(np.linalg.norm(np.diff(xy, axis=0), axis=1).sum())
        t0, t1 = float(steps[0].get("t_s", 0.0)), float(steps[-1].get("t_s", 0.0))
        yaw = np.unwrap([float(s.get("yaw_rad", 0.0)) for s in steps])
        turn = math.degrees(float(yaw[-1] - yaw[0]))
        text = f"The robot drove {length:.1f} m in {t1 - t0:.1f} s"
        if t1 > t0:
            text += f" (mean {length / (t1 - t0):.2f} m/s)"
        if abs(turn) >= 15:
            text += f", turning {abs(turn):.0f}° {'left' if turn > 0 else 'right'} overall"
        text += "."
        goal = steps[-1].get("goal")
        if isinstance(goal, (list, tuple)) and len(goal) == 2:
            gap = math.hypot(float(goal[0]) - xy[-1, 0], float(goal[1]) - xy[-1, 1])
            text += f" It ended {gap:.1f} m from its goal."
        if scenes:
            text += f" At the end it was {scenes[-1].robot}."
        return text
    if scenes and any(s.v_mps is not None for s in scenes):
        return f"Motion at the kept frames: {'; '.join(s.robot for s in scenes)}."
    return f"{episode.num_frames} camera frames; the robot's motion was not logged."


def _failure_facts(episode: Episode, scenes: list[SceneFrame], cfg: SceneConfig) -> tuple[str, str]:
    """(categorical failure reason, measurements for the trajectory)."""
    outcome = str((episode.meta or {}).get("outcome") or "failure")
    if outcome == "timeout":
        return _timeout_facts(episode, scenes), ""
    what = {"collision": "Collision"}.get(outcome, "Failure")
    if not scenes:
        return f"{what} at the last frame; no scene information.", ""
    fail = next((s for s in scenes if s.frame_index == episode.failure_index), scenes[-1])
    if not fail.channels_used:
        return (
            f"{what} at the last frame; no depth or semantic channels were logged to say what was hit.",
            "",
        )
    culprit, vanished = _culprit(fail, scenes, cfg)
    low_gone = bool(vanished) and culprit is not None and _last_look(culprit, scenes).vertical.startswith("low")
    side_near = min(fail.free_space.get("left", math.inf), fail.free_space.get("right", math.inf))
    if outcome == "collision" and "depth" in fail.channels_used and not low_gone and (
        fail.free_space.get("ahead", math.inf) > cfg.depth_miss_m and side_near > cfg.side_contact_m
    ):
        return _depth_miss_facts(fail)
    if culprit is None:
        return f"{what} with nothing recognised in view.", ""
    seen = [o for s in scenes for o in s.objects if o.object_id == culprit.object_id]
    # At contact everything "fills the view": describe the object as it looked from about
    # a metre away, where its shape and height are measurable.
    look = min(seen, key=lambda o: abs(math.log(max(o.distance_m, 0.05) / 1.0)))
    shape = look.shape
    if vanished and _depth_only(fail):
        # A depth segment met only in passing: its outline is unreliable; keep what tells.
        shape = shape if shape == "thin vertical" else ""
    text = f"{what} with {_hazard_phrase(look, shape)}"
    side = culprit.side
    if vanished:
        where = (
            "below the camera" if look.vertical.startswith("low") else "out of the camera's view"
        )
        text += f": it dropped {where} as the robot closed in, before contact"
    elif side == "ahead":
        text += ": hit head-on while driving toward it"
    else:
        text += f": hit on the robot's {side} side"
    first = seen[0]
    # Depth-only tracks: an obstacle absent from the first kept frame that first showed up
    # near (thin objects drop out of depth at range; furniture or walls do not).
    late = (
        _depth_only(fail)
        and all(o.object_id != culprit.object_id for o in scenes[0].objects)
        and first.distance_m < cfg.late_appearance_m
    )
    if late:
        text += ", after it appeared in depth only when close"
    others = [
        o
        for o in fail.objects
        if o is not culprit and o.distance_m < 1.0 and o.side not in (side, "ahead")
    ]
    if others:
        text += (
            f", while passing close to {_plain_label(others[0])} on the other side (a narrow gap)"
        )
    text += "."
    measured = f"The object it hit was {culprit.distance_m:.2f} m {side}"
    if vanished:
        measured = f"The object it hit was {vanished}"
    recent = [
        o
        for s in scenes[-cfg.facts_last_frames :]
        for o in s.objects
        if o.object_id == culprit.object_id
    ]
    if len(recent) >= 2 and recent[0].distance_m - recent[-1].distance_m >= cfg.motion_threshold_m:
        measured += f", closing in from {recent[0].distance_m:.2f} m over the last {len(recent)} kept frames"
    if late:
        measured += f"; it first appeared in depth {first.distance_m:.1f} m away"
    return text, measured + "."


def _last_look(culprit: ObjectObs, scenes: list[SceneFrame]) -> ObjectObs:
    """The culprit as seen from about a metre away (where shape and height are measurable)."""
    seen = [o for s in scenes for o in s.objects if o.object_id == culprit.object_id]
    return min(seen, key=lambda o: abs(math.log(max(o.distance_m, 0.05) / 1.0)))


def _depth_only(scene: SceneFrame) -> bool:
    """Objects came from depth segments (no privileged instance / class channel)."""
    return not {"instance", "semantic"} & set(scene.channels_used)


def _depth_miss_facts(fail: SceneFrame) -> tuple[str, str]:
    """A collision with nothing in depth near the robot: the depth sensor did not see it
    (a transparent or very thin surface, or one outside the depth camera's view)."""
    ahead = fail.free_space.get("ahead")
    text = (
        "Collision with something the depth sensor did not see: depth reported free space "
        "ahead at contact"
    )
    if ahead is None:
        measured = "At contact depth reported no obstacle ahead within range"
    else:
        measured = f"At contact depth reported free space {ahead:.1f} m ahead"
    if any(o.appearance.startswith("faint") for o in fail.objects):
        measured += "; a surface in view looked faint in RGB"
    return text + ".", measured + "."


# What an unnamed obstacle's height and look add to its noun phrase: the observation's
# prefix → (adjective, detail in brackets).
_HEIGHT_TRAITS = {"low": ("low", "below camera height"), "high": ("overhanging", "above camera height")}
_LOOK_TRAITS = {"featureless": ("featureless", "uniform colour"),
                "faint": ("faint", "its colours barely differ from its surroundings")}


def _hazard_phrase(o: ObjectObs, shape: str) -> str:
    """What was hit as a noun phrase that leads with what tells it apart.

    Named (a class name the log really has): "the glass door (wide, faint: …)". Unnamed
    (depth segments): the traits become adjectives, "a low, featureless obstacle (below
    camera height, uniform colour)", so that explanations of one kind of hazard share
    their opening words and those of different kinds do not.
    """
    if not o.label.startswith("object "):
        traits = ", ".join(t for t in (shape, _vertical_trait(o), o.appearance) if t)
        return _plain_label(o) + (f" ({traits})" if traits else "")
    adjectives = [shape.split(",")[0]] if shape else []  # "flat, wider than tall" → "flat"
    details = []
    for observed, traits in ((o.vertical, _HEIGHT_TRAITS), (o.appearance, _LOOK_TRAITS)):
        for prefix, (adjective, detail) in traits.items():
            if observed.startswith(prefix):
                adjectives.append(adjective)
                details.append(detail)
                break
    article = "an" if adjectives and adjectives[0][0] in "aeiou" else "a"
    phrase = f"{article} {', '.join(adjectives)} obstacle" if adjectives else "an obstacle"
    return phrase + (f" ({', '.join(details)})" if details else "")


def _vertical_trait(o: ObjectObs) -> str:
    # Only what tells objects apart: low obstacles and overhangs; "spans camera height" is the norm.
    if o.vertical.startswith("low"):
        return "low, below camera height"
    if o.vertical.startswith("high"):
        return "high, above camera height"
    return ""


def _culprit(
    fail: SceneFrame, scenes: list[SceneFrame], cfg: SceneConfig
) -> tuple[ObjectObs | None, str]:
    """The object most likely hit, and a note when it had left the view before the end.

    Near and close to the heading wins (a side object only when much nearer). An object
    seen closing in over the last kept frames but gone at the failure frame (a low box
    drops out below the camera at close range) competes with its distance extrapolated
    by the robot's speed.
    """

    def score(distance_m: float, o: ObjectObs) -> float:
        return max(distance_m, 0.0) * (1.0 + abs(o.bearing_deg) / 45.0)

    best, best_score, note = None, float("inf"), ""
    for o in fail.objects:
        if score(o.distance_m, o) < best_score:
            best, best_score, note = o, score(o.distance_m, o), ""
    visible = {o.object_id for o in fail.objects}
    for s in scenes[-cfg.facts_last_frames :]:
        if s is fail or s.t_s is None or fail.t_s is None:
            continue
        for o in s.objects:
            if o.object_id in visible:
                continue
            travelled = max(fail.t_s - s.t_s, 0.0) * max(s.v_mps or 0.0, 0.0)
            estimate = o.distance_m - travelled * math.cos(math.radians(o.bearing_deg))
            if estimate < 0.5 and score(estimate, o) < best_score:
                best, best_score = o, score(estimate, o)
                note = f"last seen {o.distance_m:.2f} m {o.side} {fail.t_s - s.t_s:.1f} s before the end"
    return best, note


def _plain_label(o: ObjectObs) -> str:
    """A name that means the same across episodes: the class, or the shape when unnamed
    (instance ids differ from one log to the next and only add noise to text clustering)."""
    if o.label.startswith("object "):
        return "an obstacle"  # geometry only: instance ids differ from one log to the next
    return "the " + o.label.split(" (object")[0]


def _timeout_facts(episode: Episode, scenes: list[SceneFrame], recent_s: float = 10.0) -> str:
    """Why a timeout: progress in the last seconds (stuck, spinning, oscillating)."""
    steps = episode.steps
    text = "Timed out"
    if len(steps) >= 2 and all("x_m" in st for st in steps):
        t_end = float(steps[-1].get("t_s", 0.0))
        recent = [st for st in steps if float(st.get("t_s", 0.0)) >= t_end - recent_s]
        xy = np.array([[float(st["x_m"]), float(st["y_m"])] for st in recent])
        moved = float(np.linalg.norm(np.diff(xy, axis=0), axis=1).sum()) if len(xy) > 1 else 0.0
        net = float(np.linalg.norm(xy[-1] - xy[0])) if len(xy) > 1 else 0.0
        yaw = np.unwrap([float(st.get("yaw_rad", 0.0)) for st in recent])
        turned = math.degrees(float(np.abs(np.diff(yaw)).sum())) if len(yaw) > 1 else 0.0
        if moved < 0.2 and turned > 90:
            how = "turning in place"
        elif moved < 0.2:
            how = "stuck, barely moving"
        elif net < 0.3 * moved:
            how = "moving back and forth without progress"
        else:
            how = "still moving but too slowly to arrive"
        text += (
            f" after {t_end:.1f} s: in its last {recent_s:.0f} s it travelled {moved:.1f} m "
            f"(net {net:.1f} m) and turned {turned:.0f}°, {how}"
        )
        goal = steps[-1].get("goal")
        if isinstance(goal, (list, tuple)) and len(goal) == 2:
            gap = math.hypot(float(goal[0]) - xy[-1, 0], float(goal[1]) - xy[-1, 1])
            text += f", {gap:.1f} m from its goal"
    text += "."
    last = scenes[-1] if scenes else None
    if last is not None and last.objects:
        o = last.objects[0]
        text += f" Nearest object in view: {o.label}, {o.shape}, {o.distance_m:.2f} m {o.side}."
    return text

"""What a monitor sees at each decision: the robot-observable scene descriptions of
its latest decision steps (failtax.scene: objects segmented from depth, their
distance, bearing, size, motion; the robot's speed and turn rate) plus where the
goal lies, as text. No class names, no ground truth: the same inputs as discovery.

The monitor decides at logged frames whose step is a multiple of
`decision_every_steps`, strictly before a failure's collision step (a verdict at the
moment of contact warns nobody), and, with `horizon_s`, only within the last
`horizon_s` seconds of the episode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from failtax.config import SceneConfig
from failtax.monitor.config import MonitorConfig
from failtax.scene import SceneDescriber
from failtax.sources import Episode
from failtax.types import Keyframes


@dataclass
class DecisionPoint:
    """One step at which the monitor decides."""

    frame_index: int  # position in the episode's frame list
    step: int
    t_s: float
    text: str = ""  # this step's scene description (with the goal)


def end_time_s(episode: Episode) -> float:
    """The failure's time for a collision, the last step's time otherwise."""
    meta = episode.meta or {}
    dt = float(meta.get("dt_s") or 0.1)
    failure_step = meta.get("failure_step")
    if failure_step is not None:
        return float(failure_step) * dt
    if episode.steps:
        return float(episode.steps[-1].get("t_s", (len(episode.steps) - 1) * dt))
    return (episode.num_frames - 1) * dt


def decision_points(episode: Episode, cfg: MonitorConfig) -> list[DecisionPoint]:
    """The decision steps of `episode` under `cfg` (text not filled in)."""
    meta = episode.meta or {}
    dt = float(meta.get("dt_s") or 0.1)
    failure_step = meta.get("failure_step")
    t_end = end_time_s(episode)
    points = []
    for i, step in enumerate(episode.frame_steps):
        if step is None or step % cfg.decision_every_steps:
            continue
        if failure_step is not None and step >= failure_step:
            continue
        t = float(episode.steps[step].get("t_s", step * dt)) if step < len(episode.steps) else step * dt
        if cfg.horizon_s is not None and t < t_end - cfg.horizon_s - 1e-9:
            continue
        points.append(DecisionPoint(i, step, t))
    return points


def goal_text(step: dict[str, Any] | None) -> str:
    """"Goal 4.2 m away, 30° left." from a step record (pose and goal in the world frame)."""
    if not step or step.get("goal") is None:
        return "Goal not logged."
    gx, gy = step["goal"]
    dx, dy = gx - step["x_m"], gy - step["y_m"]
    yaw = step["yaw_rad"]
    fwd = math.cos(yaw) * dx + math.sin(yaw) * dy
    left = -math.sin(yaw) * dx + math.cos(yaw) * dy
    bearing = math.degrees(math.atan2(left, fwd))
    side = "ahead" if abs(bearing) < 5 else f"{abs(bearing):.0f}° {'left' if bearing > 0 else 'right'}"
    return f"Goal {math.hypot(dx, dy):.1f} m away, {side}."


def describe_points(episode: Episode, points: list[DecisionPoint], scene: SceneConfig) -> None:
    """Fill each point's `text` with its scene description (objects tracked from one
    decision step to the next, as the robot would have seen them)."""
    if not points:
        return
    keyframes = Keyframes(episode.episode_id, [p.frame_index for p in points],
                          episode.failure_index, "monitor")
    scenes = SceneDescriber(scene).describe(episode, keyframes)
    for point, frame in zip(points, scenes):
        step = episode.steps[point.step] if point.step < len(episode.steps) else None
        point.text = f"{frame.to_text()} {goal_text(step)}"


def window_text(points: list[DecisionPoint], index: int, window: int) -> str:
    """The descriptions of the `window` latest decision steps up to `index`, oldest first."""
    return "\n".join(p.text for p in points[max(0, index - window + 1): index + 1])

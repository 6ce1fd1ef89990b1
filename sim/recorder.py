"""Write episodes in the failtax episode format (docs/EPISODE_FORMAT.md).

Step record k holds the state after k actions, the frame seen there and the
action taken from it; the last record holds the terminal state with
``action: null``. On a collision `failure_step` is the index of the first
record in contact, which is also `ground_truth.collision.step`.

An episode is buffered in memory as the typed records of `common.episode`
and written in one go by `common.episode.write_episode` (built in
``<id>.tmp/`` and renamed), so a killed run never leaves something that looks
like an episode.

Example (writer fed per step):
    >>> rec = EpisodeRecorder("episodes", robot="scripted-goal-seeker")
    >>> obs, info = env.reset(seed=3)
    >>> rec.start("ep-000003", obs, info, seed=3, config=env.unwrapped.config)
    >>> while True:
    ...     action = policy(obs)
    ...     obs, r, term, trunc, info = env.step(action)
    ...     rec.step(action, obs, info)
    ...     if term or trunc:
    ...         break
    >>> rec.finish()

Or wrap the env: ``RecordEpisodes(env, "episodes", robot="cnn@ckpt3")``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from common.episode import (
    CHANNEL_DTYPES,
    META_FILE,
    CameraMeta,
    CollisionTruth,
    EpisodeMeta,
    GroundTruth,
    StepRecord,
    check_episode_id,
    encode_frame,
    frame_name,
    write_episode,
)
from sim.building import SEMANTIC_CLASSES
from sim.config import SimConfig

SOURCE = "failtax-sim"
CHANNELS = tuple(CHANNEL_DTYPES)  # depth, semantic, instance


@dataclass
class _Pending:
    episode_id: str
    seed: int | None
    config: SimConfig
    info0: dict[str, Any]
    records: list[StepRecord] = field(default_factory=list)
    frames: dict[int, bytes] = field(default_factory=dict)
    channels: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    last_info: dict[str, Any] = field(default_factory=dict)


class EpisodeRecorder:
    """Collects one episode at a time and writes it atomically.

    Args:
        root: folder that holds episode folders.
        robot: robot / policy description stored in meta.json.
        source: producer name stored in meta.json.
        env_id: env id stored in meta.json.
        frame_stride: keep a frame (and channels) every this many steps; the
            terminal state's frame is always kept.
        channels: which of depth/semantic/instance to store when the obs or
            info carries them.
        overwrite: replace an existing episode folder of the same id.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        robot: str = "unknown",
        source: str = SOURCE,
        env_id: str | None = "failtax/IndoorNav-v1",
        frame_stride: int = 1,
        channels: tuple[str, ...] = CHANNELS,
        overwrite: bool = False,
    ) -> None:
        if frame_stride < 1:
            raise ValueError("frame_stride must be >= 1")
        bad = set(channels) - set(CHANNELS)
        if bad:
            raise ValueError(f"unknown channels {sorted(bad)}; choose from {CHANNELS}")
        self.root = Path(root)
        self.robot = robot
        self.source = source
        self.env_id = env_id
        self.frame_stride = frame_stride
        self.channels = tuple(channels)
        self.overwrite = overwrite
        self._ep: _Pending | None = None

    def exists(self, episode_id: str) -> bool:
        """True when a complete episode with this id is already on disk."""
        return (self.root / episode_id / META_FILE).is_file()

    @property
    def active(self) -> bool:
        """An episode has been started and not finished."""
        return self._ep is not None

    def start(self, episode_id: str, obs: dict[str, Any], info: dict[str, Any], *,
              seed: int | None, config: SimConfig) -> None:
        """Begin an episode from the observation/info returned by reset()."""
        check_episode_id(episode_id)
        self._ep = _Pending(episode_id, seed, config, dict(info))
        self._add_state(obs, info)

    def step(self, action: Any, obs: dict[str, Any], info: dict[str, Any]) -> None:
        """Record the action taken from the last state and the state it led to."""
        if self._ep is None:
            raise RuntimeError("call start() before step()")
        self._ep.records[-1].action = [float(a) for a in np.asarray(action).ravel()]
        self._add_state(obs, info)

    def discard(self) -> None:
        """Drop the episode in progress (nothing is written)."""
        self._ep = None

    def finish(self) -> Path:
        """Write the episode (atomically) and return its folder."""
        ep = self._ep
        if ep is None:
            raise RuntimeError("no episode in progress")
        self._ep = None
        info = ep.last_info
        outcome = info.get("outcome") or "timeout"
        collision = info.get("collision")
        failure_step = collision["step"] if (outcome == "collision" and collision) else None
        if outcome == "collision" and failure_step is None:
            failure_step = len(ep.records) - 1
        cam = ep.config.camera
        stored = sorted({k for chans in ep.channels.values() for k in chans})
        meta = EpisodeMeta(
            episode_id=ep.episode_id,
            source=self.source,
            robot=self.robot,
            env_id=self.env_id,
            building_id=ep.info0.get("building_id"),
            building_family=ep.info0.get("building_family"),
            seed=ep.seed,
            dt_s=ep.config.episode.dt_s,
            frame_stride=self.frame_stride,
            num_steps=len(ep.records),
            camera=CameraMeta(fov_deg=cam.fov_deg, height_m=cam.height_m, width=cam.width_px,
                              height=cam.height_px, pitch_deg=cam.pitch_deg),
            outcome=outcome,
            failure_step=failure_step,
            channels=stored,
            semantic_classes=({str(k): v for k, v in SEMANTIC_CLASSES.items()}
                              if "semantic" in stored else {}),
        )
        truth = GroundTruth(outcome=outcome)
        if outcome == "collision" and collision:
            truth.collision = CollisionTruth(**{k: collision[k] for k in (
                "object_id", "object_class", "material", "contact_point", "step", "part")})
            truth.cause_class = collision["cause_class"]
        return write_episode(self.root, meta, ep.records, ep.frames, channels=ep.channels,
                             ground_truth=truth, overwrite=self.overwrite)

    # ------------------------------------------------------------------ internals
    def _add_state(self, obs: dict[str, Any], info: dict[str, Any]) -> None:
        ep = self._ep
        k = len(ep.records)
        terminal = info.get("outcome") is not None
        keep = k % self.frame_stride == 0 or terminal
        x, y, yaw = info["pose"]
        vel = np.asarray(obs["velocity"], float)
        rec = StepRecord(
            step=k,
            t_s=round(k * ep.config.episode.dt_s, 6),
            x_m=float(x), y_m=float(y), yaw_rad=float(yaw),
            v_mps=float(vel[0]), w_radps=float(vel[1]),
            action=None,
            goal=[float(g) for g in info["goal_xy"]],
            frame=frame_name(k) if keep else None,
        )
        ep.records.append(rec)
        ep.last_info = info
        if not keep:
            return
        ep.frames[k] = encode_frame(obs["image"])
        arrays = {}
        for name in self.channels:
            src = obs.get(name) if name in obs else info.get(name)
            if src is None:
                continue
            arrays[name] = np.asarray(src).astype(CHANNEL_DTYPES[name])
        if arrays:
            ep.channels[k] = arrays


class RecordEpisodes(gym.Wrapper):
    """Record every finished episode of an IndoorNav env.

    Args:
        env: the env (its unwrapped config is stored in meta.json).
        root: episodes folder.
        robot: robot / policy description.
        episode_id_fn: maps (reset seed, episode counter) to an id; default
            "ep-{counter:06d}-s{seed}".
        **recorder_kwargs: passed to EpisodeRecorder.

    An episode cut short by a new reset() is discarded, never written.
    """

    def __init__(self, env: gym.Env, root: str | os.PathLike, *, robot: str = "unknown",
                 episode_id_fn: Callable[[int | None, int], str] | None = None,
                 **recorder_kwargs: Any) -> None:
        super().__init__(env)
        self.recorder = EpisodeRecorder(root, robot=robot, **recorder_kwargs)
        self.episode_id_fn = episode_id_fn or (lambda seed, n: f"ep-{n:06d}-s{seed}")
        self.episode_count = 0
        self.written: list[Path] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if self.recorder.active:
            self.recorder.discard()
        eid = self.episode_id_fn(seed, self.episode_count)
        self.episode_count += 1
        self.recorder.start(eid, obs, info, seed=seed, config=self.env.unwrapped.config)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.recorder.active:
            self.recorder.step(action, obs, info)
            if terminated or truncated:
                self.written.append(self.recorder.finish())
        return obs, reward, terminated, truncated, info

"""Write episodes in the failtax episode format (docs/EPISODE_FORMAT.md).

Step record k holds the state after k actions, the frame seen there and the
action taken from it; the last record holds the terminal state with
``action: null``. On a collision `failure_step` is the index of the first
record in contact, which is also `ground_truth.collision.step`.

An episode is buffered in memory and written in one go through
`common.atomic_dir` (built in ``<id>.tmp/`` and renamed), so a killed
run never leaves something that looks like an episode.

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

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image

from common import atomic_dir
from sim.building import SEMANTIC_CLASSES
from sim.config import SimConfig

SCHEMA_VERSION = 1
SOURCE = "failtax-sim"
CHANNELS = ("depth", "semantic", "instance")


@dataclass
class _Pending:
    episode_id: str
    seed: int | None
    config: SimConfig
    info0: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
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
        env_id: str | None = "failtax/IndoorNav-v0",
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
        return (self.root / episode_id / "meta.json").is_file()

    @property
    def active(self) -> bool:
        """An episode has been started and not finished."""
        return self._ep is not None

    def start(self, episode_id: str, obs: dict[str, Any], info: dict[str, Any], *,
              seed: int | None, config: SimConfig) -> None:
        """Begin an episode from the observation/info returned by reset()."""
        if not episode_id or "/" in episode_id or episode_id.endswith(".tmp"):
            raise ValueError(f"bad episode id {episode_id!r}: no '/', must not end in .tmp")
        self._ep = _Pending(episode_id, seed, config, dict(info))
        self._add_state(obs, info)

    def step(self, action: Any, obs: dict[str, Any], info: dict[str, Any]) -> None:
        """Record the action taken from the last state and the state it led to."""
        if self._ep is None:
            raise RuntimeError("call start() before step()")
        self._ep.records[-1]["action"] = [float(a) for a in np.asarray(action).ravel()]
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
        meta = {
            "schema_version": SCHEMA_VERSION,
            "episode_id": ep.episode_id,
            "source": self.source,
            "robot": self.robot,
            "env_id": self.env_id,
            "building_id": ep.info0.get("building_id"),
            "building_family": ep.info0.get("building_family"),
            "seed": ep.seed,
            "dt_s": ep.config.episode.dt_s,
            "frame_stride": self.frame_stride,
            "num_steps": len(ep.records),
            "camera": {"fov_deg": cam.fov_deg, "height_m": cam.height_m, "width": cam.width_px,
                       "height": cam.height_px, "pitch_deg": cam.pitch_deg},
            "outcome": outcome,
            "failure_step": failure_step,
            "channels": stored,
            "semantic_classes": ({str(k): v for k, v in SEMANTIC_CLASSES.items()}
                                 if "semantic" in stored else {}),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        truth = {
            "schema_version": SCHEMA_VERSION,
            "outcome": outcome,
            "collision": None,
            "cause_class": None,
        }
        if outcome == "collision" and collision:
            truth["collision"] = {k: collision[k] for k in (
                "object_id", "object_class", "material", "contact_point", "step", "part")}
            truth["cause_class"] = collision["cause_class"]
        final = self.root / ep.episode_id
        with atomic_dir(final, overwrite=self.overwrite) as tmp:
            (tmp / "frames").mkdir()
            for k, png in ep.frames.items():
                (tmp / "frames" / f"{k:06d}.png").write_bytes(png)
            if ep.channels:
                (tmp / "channels").mkdir()
                for k, arrays in ep.channels.items():
                    np.savez_compressed(tmp / "channels" / f"{k:06d}.npz", **arrays)
            lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in ep.records)
            (tmp / "steps.jsonl").write_text(lines)
            (tmp / "ground_truth.json").write_text(json.dumps(truth, sort_keys=True, indent=2))
            # meta.json last: a folder without it is not an episode.
            (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True, indent=2))
        return final

    # ------------------------------------------------------------------ internals
    def _add_state(self, obs: dict[str, Any], info: dict[str, Any]) -> None:
        ep = self._ep
        k = len(ep.records)
        terminal = info.get("outcome") is not None
        keep = k % self.frame_stride == 0 or terminal
        x, y, yaw = info["pose"]
        vel = np.asarray(obs["velocity"], float)
        rec = {
            "step": k,
            "t_s": round(k * ep.config.episode.dt_s, 6),
            "x_m": float(x), "y_m": float(y), "yaw_rad": float(yaw),
            "v_mps": float(vel[0]), "w_radps": float(vel[1]),
            "action": None,
            "goal": [float(g) for g in info["goal_xy"]],
            "frame": f"frames/{k:06d}.png" if keep else None,
        }
        ep.records.append(rec)
        ep.last_info = info
        if not keep:
            return
        buf = io.BytesIO()
        Image.fromarray(np.asarray(obs["image"], np.uint8)).save(buf, format="PNG")
        ep.frames[k] = buf.getvalue()
        arrays = {}
        for name in self.channels:
            src = obs.get(name) if name in obs else info.get(name)
            if src is None:
                continue
            if name == "depth":
                arrays[name] = np.asarray(src).astype(np.float16)
            elif name == "semantic":
                arrays[name] = np.asarray(src).astype(np.uint8)
            else:
                arrays[name] = np.asarray(src).astype(np.uint16)
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

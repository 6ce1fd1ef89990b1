"""The episode-source seam: `Episode`, the skip record `SourceError`, and the Protocols.

Every reader (failtax.sources and its submodules) yields `Episode`s or
`SourceError`s through `EpisodeSource.scan`. An episode's frames are read on
demand: from image files, from frames a reader decoded up front, or through a
reader's `frame_loader` (a video segment or a bag's image messages decoded on
first use), so a scan over a large dataset holds no frames.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from failtax.types import Explanation

# What an episode's robot did, picking the reasoning prompt pack (ReasoningConfig.domain).
DOMAINS = ("navigation", "manipulation", "driving")


class EpisodeReadError(RuntimeError):
    """An episode's files could not be read (corrupt frame, bad npz, ...)."""

    def __init__(self, episode_id: str, kind: str, message: str) -> None:
        super().__init__(f"{episode_id}: {message}")
        self.episode_id = episode_id
        self.kind = kind
        self.message = message


@dataclass
class SourceError:
    """A skipped input, as written to errors.jsonl."""

    episode_id: str
    kind: str  # "missing_meta", "bad_meta", "bad_steps", "zero_steps", "no_frames", ...
    message: str
    path: str = ""
    stage: str = "source"

    def to_record(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "episode_id": self.episode_id,
            "kind": self.kind,
            "message": self.message,
            "path": self.path,
        }


@dataclass
class Episode:
    """One failure trajectory, with frames loaded on demand.

    `frame_steps[i]` is the step index of frame i (None when the source has no
    step log); `failure_index` is the frame of the failure. Frame indices in
    keyframes.jsonl are positions in this frame list.
    """

    episode_id: str
    kind: str
    path: Path
    num_frames: int
    failure_index: int
    meta: dict[str, Any] = field(default_factory=dict)  # a validated EpisodeMeta, as a dict
    steps: list[dict[str, Any]] = field(default_factory=list)  # validated StepRecords, as dicts
    frame_steps: list[int | None] = field(default_factory=list)
    frame_paths: list[Path] = field(default_factory=list)  # empty for video
    channel_paths: list[Path | None] = field(default_factory=list)  # per frame, episode format only
    _video_frames: list[np.ndarray] | None = None  # decoded frames of a video source
    # frames decoded on demand by the reader (video segments, bag messages): index -> RGB
    frame_loader: Callable[[int], np.ndarray] | None = field(default=None, repr=False)
    # the prompt pack this episode's reasoning uses under reasoning.domain=auto (DOMAINS)
    domain: str = "navigation"

    def load_frame(self, index: int) -> np.ndarray:
        """RGB frame `index` as an (H, W, 3) uint8 array."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"{self.episode_id}: frame {index} outside 0..{self.num_frames - 1}")
        if self._video_frames is not None:
            return self._video_frames[index]
        if self.frame_loader is not None:
            try:
                return self.frame_loader(index)
            except EpisodeReadError:
                raise
            except Exception as e:
                raise EpisodeReadError(
                    self.episode_id, "unreadable_frame", f"cannot decode frame {index}: {e}"
                ) from e
        path = self.frame_paths[index]
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
        except Exception as e:
            raise EpisodeReadError(
                self.episode_id, "unreadable_frame", f"cannot read {path.name}: {e}"
            ) from e

    def frame_png(self, index: int) -> bytes:
        """Frame `index` encoded as PNG (what a vision model receives)."""
        buf = io.BytesIO()
        Image.fromarray(self.load_frame(index)).save(buf, format="PNG")
        return buf.getvalue()

    def load_channels(self, index: int) -> dict[str, np.ndarray]:
        """The channel arrays (depth, semantic, instance...) of frame `index`; {} when absent."""
        if index >= len(self.channel_paths) or self.channel_paths[index] is None:
            return {}
        path = self.channel_paths[index]
        try:
            with np.load(path) as npz:
                return {name: npz[name] for name in npz.files}
        except Exception as e:
            raise EpisodeReadError(
                self.episode_id, "unreadable_channels", f"cannot read {path.name}: {e}"
            ) from e

    def step_record(self, frame_index: int) -> dict[str, Any] | None:
        """The steps.jsonl record of frame `frame_index`, when there is a step log."""
        if frame_index >= len(self.frame_steps):
            return None
        step = self.frame_steps[frame_index]
        if step is None or not 0 <= step < len(self.steps):
            return None
        return self.steps[step]


@runtime_checkable
class EpisodeSource(Protocol):
    """Yields episodes (or the reason one was skipped), in a stable order."""

    kind: str

    def scan(self) -> Iterator[Episode | SourceError]: ...


@runtime_checkable
class ExplanationSource(Protocol):
    """Yields ready-made explanations (a run over it starts at discovery)."""

    kind: str

    def scan(self) -> Iterator[Explanation | SourceError]: ...




def _failure_frame(failure_step: int | None, frame_steps: list[int | None]) -> int:
    """The last frame at or before the failure step (last frame when unknown)."""
    last = len(frame_steps) - 1
    if failure_step is None:
        return last
    best = None
    for i, step in enumerate(frame_steps):
        if step is not None and step <= failure_step:
            best = i
    return last if best is None else best


def failure_frame_at(failure_t_s: float | None, frame_times_s: list[float]) -> int:
    """The last frame at or before `failure_t_s` (the last frame when None or later)."""
    last = len(frame_times_s) - 1
    if failure_t_s is None:
        return last
    best = 0
    for i, t in enumerate(frame_times_s):
        if t <= failure_t_s + 1e-6:
            best = i
    return best


def sample_times(times_s: list[float], sample_fps_hz: float, max_frames: int,
                 end_s: float | None = None) -> list[int]:
    """Indices into `times_s` (ascending) kept at `sample_fps_hz` (0 keeps all), up to
    `end_s`, the last `max_frames` of them (the failure is at the end)."""
    keep: list[int] = []
    next_t = -float("inf")
    for i, t in enumerate(times_s):
        if end_s is not None and t > end_s + 1e-6:
            break
        if sample_fps_hz > 0 and t + 1e-3 < next_t:  # 1 ms: float32 timestamps jitter
            continue
        keep.append(i)
        next_t = t + (1.0 / sample_fps_hz if sample_fps_hz > 0 else 0.0)
    return keep[-max_frames:] if max_frames > 0 else keep

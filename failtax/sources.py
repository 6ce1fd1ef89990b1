"""Episode sources: where failure logs come from.

Four kinds behind one seam, picked by `SourceConfig.kind` (or guessed from the
path with "auto"):

- ``episodes``: the episode format of docs/EPISODE_FORMAT.md (meta.json,
  steps.jsonl, frames/, optional channels/). Written by the bundled simulator
  or by a user's converter; read here as files only.
- ``image_folders``: one folder of images per trajectory, sorted by file name,
  the failure at the last frame (the format of the paper's datasets).
- ``video``: one video file per trajectory (decoded with PyAV), failure at the
  last frame.
- ``explanations``: a CSV or JSONL of ready-made failure explanations; a run
  over it starts at discovery.

A bad episode (no meta.json, unreadable meta or steps, zero steps, no frames,
an undecodable video) becomes a `SourceError` record and the scan goes on;
frames that turn out unreadable later raise `EpisodeReadError`, which the
pipeline records and skips. No reader here ever opens ``ground_truth.json``:
that file is for evaluation code only (tests/failtax/test_ground_truth_hidden.py).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from failtax.types import Explanation

if TYPE_CHECKING:
    from failtax.config import SourceConfig

SOURCE_KINDS = ("auto", "episodes", "image_folders", "video", "explanations")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


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
    meta: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    frame_steps: list[int | None] = field(default_factory=list)
    frame_paths: list[Path] = field(default_factory=list)  # empty for video
    channel_paths: list[Path | None] = field(default_factory=list)  # per frame, episode format only
    _video_frames: list[np.ndarray] | None = None  # decoded frames of a video source

    def load_frame(self, index: int) -> np.ndarray:
        """RGB frame `index` as an (H, W, 3) uint8 array."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"{self.episode_id}: frame {index} outside 0..{self.num_frames - 1}")
        if self._video_frames is not None:
            return self._video_frames[index]
        path = self.frame_paths[index]
        try:
            from PIL import Image

            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
        except Exception as e:
            raise EpisodeReadError(
                self.episode_id, "unreadable_frame", f"cannot read {path.name}: {e}"
            ) from e

    def frame_png(self, index: int) -> bytes:
        """Frame `index` encoded as PNG (what a vision model receives)."""
        from PIL import Image

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


# --------------------------------------------------------------------------- episode format


class EpisodeFolderSource:
    """Episodes in the failtax episode format (docs/EPISODE_FORMAT.md)."""

    kind = "episodes"

    def __init__(self, root: Path, outcomes: list[str]) -> None:
        self.root = root
        self.outcomes = outcomes

    def scan(self) -> Iterator[Episode | SourceError]:
        if (self.root / "meta.json").is_file():  # the path is one episode, not a folder of them
            item = self._read(self.root)
            if item is not None:
                yield item
            return
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if folder.name.endswith(".tmp"):
                yield SourceError(
                    folder.name[:-4],
                    "incomplete",
                    "episode still being written (.tmp folder)",
                    str(folder),
                )
                continue
            item = self._read(folder)
            if item is not None:
                yield item

    def _read(self, folder: Path) -> Episode | SourceError | None:
        eid = folder.name
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            if not ((folder / "steps.jsonl").exists() or (folder / "frames").is_dir()):
                return None  # an unrelated folder (e.g. maps/ next to the episodes)
            return SourceError(eid, "missing_meta", "no meta.json: not an episode", str(folder))
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict):
                raise TypeError("top level is not an object")
        except (OSError, ValueError, TypeError) as e:
            return SourceError(eid, "bad_meta", f"meta.json unreadable: {e}", str(meta_path))
        outcome = meta.get("outcome")
        if self.outcomes and outcome not in self.outcomes:
            return SourceError(
                eid, "skipped_outcome", f"outcome {outcome!r} not in {self.outcomes}", str(folder)
            )
        steps: list[dict[str, Any]] = []
        steps_path = folder / "steps.jsonl"
        if steps_path.is_file():
            try:
                for n, line in enumerate(steps_path.read_text().splitlines()):
                    if line.strip():
                        rec = json.loads(line)
                        if not isinstance(rec, dict):
                            raise TypeError(f"line {n + 1} is not an object")
                        steps.append(rec)
            except (OSError, ValueError, TypeError) as e:
                return SourceError(
                    eid, "bad_steps", f"steps.jsonl unreadable: {e}", str(steps_path)
                )
            if not steps:
                return SourceError(eid, "zero_steps", "steps.jsonl has no steps", str(steps_path))
        frame_paths, frame_steps = self._frames(folder, steps)
        if not frame_paths:
            return SourceError(eid, "no_frames", "no frames/*.png", str(folder / "frames"))
        channels_dir = folder / "channels"
        channel_paths = [
            (channels_dir / (fp.stem + ".npz"))
            if (channels_dir / (fp.stem + ".npz")).is_file()
            else None
            for fp in frame_paths
        ]
        failure_index = _failure_frame(meta.get("failure_step"), frame_steps)
        return Episode(
            episode_id=str(meta.get("episode_id") or eid),
            kind=self.kind,
            path=folder,
            num_frames=len(frame_paths),
            failure_index=failure_index,
            meta=meta,
            steps=steps,
            frame_steps=frame_steps,
            frame_paths=frame_paths,
            channel_paths=channel_paths,
        )

    @staticmethod
    def _frames(folder: Path, steps: list[dict[str, Any]]) -> tuple[list[Path], list[int | None]]:
        # Prefer the step log's frame references (they carry the step index);
        # fall back to the frames folder for converters that write no steps.
        paths: list[Path] = []
        frame_steps: list[int | None] = []
        for i, rec in enumerate(steps):
            rel = rec.get("frame")
            if rel and (folder / rel).is_file():
                paths.append(folder / rel)
                frame_steps.append(int(rec.get("step", i)))
        if paths:
            return paths, frame_steps
        frames_dir = folder / "frames"
        if frames_dir.is_dir():
            paths = sorted(p for p in frames_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            for p in paths:
                frame_steps.append(
                    int(p.stem) if p.stem.isdigit() and int(p.stem) < len(steps) else None
                )
        return paths, frame_steps


def _failure_frame(failure_step: Any, frame_steps: list[int | None]) -> int:
    """The last frame at or before the failure step (last frame when unknown)."""
    last = len(frame_steps) - 1
    if failure_step is None or not isinstance(failure_step, (int, float)):
        return last
    best = None
    for i, step in enumerate(frame_steps):
        if step is not None and step <= failure_step:
            best = i
    return last if best is None else best


# --------------------------------------------------------------------------- image folders


class ImageFolderSource:
    """One folder of images per trajectory; the failure is the last image."""

    kind = "image_folders"

    def __init__(self, root: Path) -> None:
        self.root = root

    def scan(self) -> Iterator[Episode | SourceError]:
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                yield SourceError(folder.name, "no_frames", "folder holds no images", str(folder))
                continue
            yield Episode(
                episode_id=folder.name,
                kind=self.kind,
                path=folder,
                num_frames=len(images),
                failure_index=len(images) - 1,
                frame_paths=images,
                frame_steps=[None] * len(images),
            )


# --------------------------------------------------------------------------- video


class VideoSource:
    """One video file per trajectory (PyAV); the failure is the last frame.

    Frames are decoded once, resampled to at most `sample_fps_hz`, and kept in
    memory for the episode, so very long videos should be cut around the
    failure first.
    """

    kind = "video"

    def __init__(self, root: Path, sample_fps_hz: float, max_frames: int) -> None:
        self.root = root
        self.sample_fps_hz = sample_fps_hz
        self.max_frames = max_frames

    def scan(self) -> Iterator[Episode | SourceError]:
        files = (
            [self.root]
            if self.root.is_file()
            else sorted(
                p for p in self.root.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
            )
        )
        for path in files:
            try:
                frames = self._decode(path)
            except Exception as e:  # noqa: BLE001 - PyAV/FFmpeg raise many types for corrupt files
                yield SourceError(path.stem, "unreadable_video", f"cannot decode: {e}", str(path))
                continue
            if not frames:
                yield SourceError(path.stem, "no_frames", "video holds no frames", str(path))
                continue
            yield Episode(
                episode_id=path.stem,
                kind=self.kind,
                path=path,
                num_frames=len(frames),
                failure_index=len(frames) - 1,
                frame_steps=[None] * len(frames),
                _video_frames=frames,
            )

    def _decode(self, path: Path) -> list[np.ndarray]:
        import av

        frames: list[np.ndarray] = []
        next_t = 0.0
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else next_t
                if self.sample_fps_hz > 0 and t + 1e-9 < next_t:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                next_t = t + (1.0 / self.sample_fps_hz if self.sample_fps_hz > 0 else 0.0)
        # The failure is at the end: keep the last frames when the video is long.
        return frames[-self.max_frames :] if self.max_frames > 0 else frames


# --------------------------------------------------------------------------- ready-made explanations


class GivenExplanationSource:
    """A CSV (header row) or JSONL with episode_id, failure_reason and optionally trajectory."""

    kind = "explanations"

    def __init__(self, path: Path) -> None:
        self.path = path

    def scan(self) -> Iterator[Explanation | SourceError]:
        rows = self._rows()
        for n, row in enumerate(rows):
            if isinstance(row, SourceError):
                yield row
                continue
            eid = str(row.get("episode_id") or "").strip()
            reason = str(row.get("failure_reason") or "").strip()
            if not eid or not reason:
                yield SourceError(
                    eid or f"row-{n + 1}",
                    "bad_row",
                    "row needs non-empty episode_id and failure_reason",
                    f"{self.path}:{n + 2 if self.path.suffix.lower() == '.csv' else n + 1}",
                )
                continue
            yield Explanation(
                episode_id=eid,
                trajectory=str(row.get("trajectory") or "").strip(),
                failure_reason=reason,
                input_mode="given",
                model=None,
            )

    def _rows(self) -> list[dict[str, Any] | SourceError]:
        if self.path.suffix.lower() == ".csv":
            with open(self.path, newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        rows: list[dict[str, Any] | SourceError] = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise TypeError("not an object")
                rows.append(rec)
            except (ValueError, TypeError) as e:
                rows.append(
                    SourceError(
                        f"line-{n + 1}",
                        "bad_row",
                        f"not a JSON object: {e}",
                        f"{self.path}:{n + 1}",
                    )
                )
        return rows


# --------------------------------------------------------------------------- factory


def detect_kind(path: Path) -> str:
    """Guess the source kind of `path` (what "auto" resolves to)."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".csv", ".jsonl"):
            return "explanations"
        if suffix in VIDEO_SUFFIXES:
            return "video"
        raise ValueError(f"{path}: cannot tell the source kind from {suffix!r}; set source.kind")
    if not path.is_dir():
        raise ValueError(
            f"{path} does not exist; pass a folder of episodes, videos or image folders, or a CSV/JSONL"
        )
    children = list(path.iterdir())
    if (path / "meta.json").is_file():
        return "episodes"
    if any((c / "meta.json").is_file() for c in children if c.is_dir()):
        return "episodes"
    if any(c.is_file() and c.suffix.lower() in VIDEO_SUFFIXES for c in children):
        return "video"
    return "image_folders"


def make_source(
    cfg: SourceConfig, path: str | os.PathLike | None = None
) -> EpisodeSource | ExplanationSource:
    """Build the source named by `cfg.kind` over `path` (default `cfg.path`).

    Raises:
        ValueError: unknown kind (lists the valid ones) or a missing path.
    """
    if cfg.kind not in SOURCE_KINDS:
        raise ValueError(f"unknown source kind {cfg.kind!r}; valid: {', '.join(SOURCE_KINDS)}")
    raw = path if path is not None else cfg.path
    if not raw:
        raise ValueError("no episodes path: pass EPISODES on the command line or set source.path")
    root = Path(raw).expanduser()
    if not root.exists():
        raise ValueError(f"{root} does not exist")
    kind = detect_kind(root) if cfg.kind == "auto" else cfg.kind
    if kind == "episodes":
        return EpisodeFolderSource(root, list(cfg.outcomes))
    if kind == "image_folders":
        return ImageFolderSource(root)
    if kind == "video":
        return VideoSource(root, cfg.video_sample_fps_hz, cfg.video_max_frames)
    return GivenExplanationSource(root)

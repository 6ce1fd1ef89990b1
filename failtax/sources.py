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

Episode-format folders are read through `common.episode`, the one reader of
that format: it checks `schema_version` and refuses any frame or channels file
that lies outside its episode folder (an absolute path, a ``..``, a symlink
out), so an episode can never make the pipeline read an image from elsewhere.

A bad episode (no meta.json, unreadable or unsupported meta, bad steps, zero
steps, no frames, a frame path outside the episode, an undecodable video)
becomes a `SourceError` record and the scan goes on; frames that turn out
unreadable later raise `EpisodeReadError`, which the pipeline records and
skips. No reader here ever opens ``ground_truth.json``: that file is for
evaluation code only (tests/failtax/test_ground_truth_hidden.py).

Auto-detection ("auto") fails early, naming what it found and the inputs it
supports, when a path holds nothing a source can read.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from common.episode import (
    FRAMES_DIR,
    IMAGE_SUFFIXES,
    META_FILE,
    STEPS_FILE,
    TMP_SUFFIX,
    EpisodeFormatError,
    episode_frames,
    is_incomplete,
    read_meta,
    read_steps,
)
from failtax.config import SourceConfig
from failtax.types import Explanation

SOURCE_KINDS = ("auto", "episodes", "image_folders", "video", "explanations")
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
    meta: dict[str, Any] = field(default_factory=dict)  # a validated EpisodeMeta, as a dict
    steps: list[dict[str, Any]] = field(default_factory=list)  # validated StepRecords, as dicts
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


# --------------------------------------------------------------------------- episode format


class EpisodeFolderSource:
    """Episodes in the failtax episode format (docs/EPISODE_FORMAT.md), read by common.episode."""

    kind = "episodes"

    def __init__(self, root: Path, outcomes: list[str]) -> None:
        self.root = root
        self.outcomes = outcomes

    def scan(self) -> Iterator[Episode | SourceError]:
        if (self.root / META_FILE).is_file():  # the path is one episode, not a folder of them
            item = self._read(self.root)
            if item is not None:
                yield item
            return
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if is_incomplete(folder):
                yield SourceError(
                    folder.name[: -len(TMP_SUFFIX)],
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
        if not (folder / META_FILE).is_file() and not (
            (folder / STEPS_FILE).exists() or (folder / FRAMES_DIR).is_dir()
        ):
            return None  # an unrelated folder (e.g. maps/ next to the episodes)
        try:
            meta = read_meta(folder)
            if self.outcomes and meta.outcome not in self.outcomes:
                return SourceError(
                    eid,
                    "skipped_outcome",
                    f"outcome {meta.outcome!r} not in {self.outcomes}",
                    str(folder),
                )
            steps = read_steps(folder)
            frames = episode_frames(folder, steps)
        except EpisodeFormatError as e:
            return SourceError(eid, e.kind, e.message, str(e.path))
        if not frames:
            return SourceError(eid, "no_frames", "no frames/*.png", str(folder / FRAMES_DIR))
        frame_steps = [f.step for f in frames]
        return Episode(
            episode_id=meta.episode_id,
            kind=self.kind,
            path=folder,
            num_frames=len(frames),
            failure_index=_failure_frame(meta.failure_step, frame_steps),
            meta=meta.model_dump(),
            steps=[s.model_dump() for s in steps],
            frame_steps=frame_steps,
            frame_paths=[f.path for f in frames],
            channel_paths=[f.channels_path for f in frames],
        )


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
    """A CSV (header row) or JSONL with episode_id, failure_reason and optionally trajectory
    and a writer column (`writer_column`: who wrote the report)."""

    kind = "explanations"

    def __init__(self, path: Path, writer_column: str | None = None) -> None:
        self.path = path
        self.writer_column = writer_column

    def scan(self) -> Iterator[Explanation | SourceError]:
        rows = self._rows()
        if self.writer_column is not None and not any(
            isinstance(r, dict) and self.writer_column in r for r in rows
        ):
            columns = sorted({k for r in rows if isinstance(r, dict) for k in r})
            raise ValueError(
                f"{self.path}: no row has the writer column {self.writer_column!r} "
                f"(source.writer_column); columns: {', '.join(columns) or 'none'}"
            )
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
                writer=self._writer(row),
            )

    def _writer(self, row: dict[str, Any]) -> str | None:
        """The row's writer; None without a writer column, or where the row leaves it empty."""
        if self.writer_column is None:
            return None
        return str(row.get(self.writer_column) or "").strip() or None

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


SUPPORTED_INPUTS = (
    "a folder of episodes (each a folder with meta.json, docs/EPISODE_FORMAT.md) or one episode "
    f"folder; a folder of videos ({', '.join(VIDEO_SUFFIXES)}) or one video; a folder with one "
    f"subfolder of images ({', '.join(IMAGE_SUFFIXES)}) per trajectory; or a CSV/JSONL of "
    "explanations"
)


def detect_kind(path: Path) -> str:
    """Guess the source kind of `path` (what "auto" resolves to).

    Raises:
        ValueError: the path holds no input any source reads (an empty folder, a
            folder of unsupported files); the message says what was found and
            which inputs are supported.
    """
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".csv", ".jsonl"):
            return "explanations"
        if suffix in VIDEO_SUFFIXES:
            return "video"
        raise ValueError(
            f"{path}: cannot tell the source kind from {suffix!r}; supported inputs: "
            f"{SUPPORTED_INPUTS}. Or set source.kind"
        )
    if not path.is_dir():
        raise ValueError(
            f"{path} does not exist; pass a folder of episodes, videos or image folders, or a CSV/JSONL"
        )
    children = sorted(path.iterdir())
    if (path / META_FILE).is_file():
        return "episodes"
    folders = [c for c in children if c.is_dir()]
    files = [c for c in children if c.is_file()]
    if any((c / META_FILE).is_file() for c in folders):
        return "episodes"
    if any(c.suffix.lower() in VIDEO_SUFFIXES for c in files):
        return "video"
    if any(_holds_images(c) for c in folders):
        return "image_folders"
    raise ValueError(
        f"{path}: cannot tell the source kind: {_describe(files, folders)}. Supported inputs: "
        f"{SUPPORTED_INPUTS}. Or set source.kind"
    )


def _holds_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def _describe(files: list[Path], folders: list[Path]) -> str:
    """What a folder holds, for an error: "the folder is empty", "2 files (.log, .txt) and ..."."""
    if not files and not folders:
        return "the folder is empty"
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if images and len(images) == len(files) and not folders:
        return (
            f"found {len(images)} images directly in the folder (one trajectory?); an image "
            "source wants one subfolder of images per trajectory, so put them in a subfolder"
        )
    parts = []
    if files:
        suffixes = sorted({f.suffix.lower() or "no suffix" for f in files})
        parts.append(f"{len(files)} file(s) ({', '.join(suffixes)})")
    if folders:
        parts.append(f"{len(folders)} folder(s) without meta.json or images")
    return "found " + " and ".join(parts)


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
    return GivenExplanationSource(root, cfg.writer_column)

"""Episode sources: where failure logs come from.

Kinds behind one seam (`failtax.sources.base`), picked by `SourceConfig.kind` (or
guessed from the path with "auto"); docs/INPUTS.md has a worked example of each:

- ``episodes``: the episode format of docs/EPISODE_FORMAT.md (meta.json,
  steps.jsonl, frames/, optional channels/). Written by the bundled simulator
  or by a user's converter; read here as files only.
- ``image_folders``: one folder of images per trajectory, sorted by file name,
  the failure at the last frame (the format of the paper's datasets).
- ``video`` / ``dashcam``: one video file per trajectory (decoded with PyAV), failure
  at the last frame or a labelled time; dashcam clips get the driving prompt pack.
- ``manipulation``: an image sequence per run with task.txt and the executed plan
  (failtax.sources.manipulation).
- ``lerobot``: a LeRobot v2.1 / v3.0 dataset folder (failtax.sources.lerobot).
- ``mcap``: ROS 2 bags in MCAP (failtax.sources.rosbag).
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
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

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
from failtax.sources.base import (
    DOMAINS,
    Episode,
    EpisodeReadError,
    EpisodeSource,
    ExplanationSource,
    SourceError,
    _failure_frame,
    failure_frame_at,
    sample_times,
)
from failtax.sources.labels import FailureLabel, lookup, read_labels
from failtax.sources.lerobot import LeRobotSource, is_lerobot_dataset
from failtax.sources.manipulation import ManipulationRunSource, is_manipulation_run
from failtax.sources.rosbag import McapSource, find_bags
from failtax.sources.video import FrameCache, SegmentDecoder
from failtax.types import Explanation

SOURCE_KINDS = (
    "auto", "episodes", "image_folders", "video", "dashcam", "manipulation", "lerobot", "mcap",
    "explanations",
)
# with a labelled failure time, frames this long after it are kept too (the downsampler's window)
AFTER_FAILURE_S = 1.0
# SourceConfig options that only some kinds read: setting one for another kind is an error
KIND_OPTIONS = {
    "labels_path": ("lerobot", "mcap", "video", "dashcam", "manipulation"),
    "success_column": ("lerobot",),
    "camera_key": ("lerobot",),
    "image_topic": ("mcap",),
    "odom_topic": ("mcap",),
    "failure_topic": ("mcap",),
}
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


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
        if steps:
            failure = _failure_frame(meta.failure_step, frame_steps)
        else:  # a frames-only episode (a converted log): failure_step counts frames
            last = len(frames) - 1
            failure = last if meta.failure_step is None else min(max(meta.failure_step, 0), last)
        domain = getattr(meta, "domain", None)  # converters record the source's domain
        return Episode(
            episode_id=meta.episode_id,
            kind=self.kind,
            path=folder,
            num_frames=len(frames),
            failure_index=failure,
            domain=domain if domain in DOMAINS else "navigation",
            meta=meta.model_dump(),
            steps=[s.model_dump() for s in steps],
            frame_steps=frame_steps,
            frame_paths=[f.path for f in frames],
            channel_paths=[f.channels_path for f in frames],
        )


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
    """One video file per trajectory (PyAV); the failure is at the end of the clip, or at
    the time (or frame) a labels CSV gives (`source.labels_path`).

    The scan reads packet times only (no decoding): frames are resampled to at most
    `sample_fps_hz`, cut `AFTER_FAILURE_S` after a labelled failure, the last
    `max_frames` kept, and decoded when a stage first reads the episode (the last
    two episodes' frames stay cached). A file that cannot be opened is a
    `SourceError`; one that breaks off mid-way an `EpisodeReadError` when read.
    """

    kind = "video"
    domain = "navigation"

    def __init__(self, root: Path, sample_fps_hz: float, max_frames: int,
                 labels_path: str | None = None) -> None:
        self.root = root
        self.sample_fps_hz = sample_fps_hz
        self.max_frames = max_frames
        self.labels: dict[str, FailureLabel] = read_labels(labels_path) if labels_path else {}
        self._decoder = SegmentDecoder()
        self._frames = FrameCache(2)

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
                times = self._packet_times(path)
            except Exception as e:  # noqa: BLE001 - PyAV/FFmpeg raise many types for corrupt files
                yield SourceError(path.stem, "unreadable_video", f"cannot decode: {e}", str(path))
                continue
            if not times:
                yield SourceError(path.stem, "no_frames", "video holds no frames", str(path))
                continue
            yield self._episode(path, times)

    def _episode(self, path: Path, times: list[float]) -> Episode | SourceError:
        label = lookup(self.labels, path.name)
        if label is not None and not label.failed:
            return SourceError(path.stem, "skipped_outcome", "labelled success", str(path))
        fail_t = None
        if label is not None and label.failure_frame is not None:
            fail_t = times[min(max(label.failure_frame, 0), len(times) - 1)]
        elif label is not None:
            fail_t = None if label.failure_time_s is None else times[0] + label.failure_time_s
        end = None if fail_t is None else fail_t + AFTER_FAILURE_S
        keep = sample_times(times, self.sample_fps_hz, self.max_frames, end)
        kept = [times[i] for i in keep]
        key = str(path)

        def load(i: int) -> np.ndarray:
            return self._frames.get(key, lambda: self._decoder.frames_at(path, kept))[i]

        return Episode(
            episode_id=path.stem,
            kind=self.kind,
            path=path,
            num_frames=len(kept),
            failure_index=failure_frame_at(fail_t, kept),
            meta={
                "episode_id": path.stem,
                "source": f"{self.kind} {path.suffix.lstrip('.')}",
                "outcome": label.outcome if label is not None else "failure",
                "domain": self.domain,
                "frame_times_s": [round(t - times[0], 4) for t in kept],
            },
            frame_steps=[None] * len(kept),
            frame_loader=load,
            domain=self.domain,
        )

    @staticmethod
    def _packet_times(path: Path) -> list[float]:
        """Presentation times (s) of the video packets, sorted, read without decoding."""
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            base = stream.time_base
            times = sorted(
                float(p.pts * base) for p in container.demux(stream) if p.pts is not None and p.size
            )
        return times


class DashcamSource(VideoSource):
    """Dashcam clips (a folder of videos), explained with the driving prompt pack."""

    kind = "dashcam"
    domain = "driving"


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
    f"subfolder of images ({', '.join(IMAGE_SUFFIXES)}) per trajectory (with task.txt/plan.txt: "
    "manipulation runs); a LeRobot v2.1/v3 dataset folder (meta/info.json); ROS 2 bags "
    "(*.mcap files or rosbag2 folders); or a CSV/JSONL of explanations (docs/INPUTS.md)"
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
        if suffix == ".mcap":
            return "mcap"
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
    if is_lerobot_dataset(path):
        return "lerobot"
    if (path / "metadata.yaml").is_file() and any(path.glob("*.mcap")):
        return "mcap"
    if is_manipulation_run(path):
        return "manipulation"
    folders = [c for c in children if c.is_dir()]
    files = [c for c in children if c.is_file()]
    if any((c / META_FILE).is_file() for c in folders):
        return "episodes"
    if any(c.suffix.lower() in VIDEO_SUFFIXES for c in files):
        return "video"
    if find_bags(path):
        return "mcap"
    if any(is_manipulation_run(c) and _holds_images(c / FRAMES_DIR if (c / FRAMES_DIR).is_dir()
                                                    else c) for c in folders):
        return "manipulation"
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
    unused = [k for k, kinds in KIND_OPTIONS.items() if getattr(cfg, k) is not None and kind not in kinds]
    if unused:
        uses = "; ".join(f"source.{k} is for {', '.join(KIND_OPTIONS[k])}" for k in unused)
        raise ValueError(f"{root} is read as source kind {kind!r}, which does not use {uses}. "
                         "Remove the option, or set source.kind if the guess is wrong")
    if kind == "episodes":
        return EpisodeFolderSource(root, list(cfg.outcomes))
    if kind == "image_folders":
        return ImageFolderSource(root)
    if kind in ("video", "dashcam"):
        cls = DashcamSource if kind == "dashcam" else VideoSource
        return cls(root, cfg.video_sample_fps_hz, cfg.video_max_frames, cfg.labels_path)
    if kind == "manipulation":
        return ManipulationRunSource(root, cfg.labels_path)
    if kind == "lerobot":
        return LeRobotSource(
            root,
            camera_key=cfg.camera_key,
            success_column=cfg.success_column,
            labels_path=cfg.labels_path,
            sample_fps_hz=cfg.video_sample_fps_hz,
            max_frames=cfg.video_max_frames,
        )
    if kind == "mcap":
        return McapSource(
            root,
            image_topic=cfg.image_topic,
            odom_topic=cfg.odom_topic,
            failure_topic=cfg.failure_topic,
            labels_path=cfg.labels_path,
            sample_fps_hz=cfg.video_sample_fps_hz,
            max_frames=cfg.video_max_frames,
        )
    return GivenExplanationSource(root, cfg.writer_column)


__all__ = [
    "DOMAINS",
    "SOURCE_KINDS",
    "DashcamSource",
    "Episode",
    "EpisodeFolderSource",
    "EpisodeReadError",
    "EpisodeSource",
    "ExplanationSource",
    "GivenExplanationSource",
    "ImageFolderSource",
    "LeRobotSource",
    "ManipulationRunSource",
    "McapSource",
    "SourceError",
    "VideoSource",
    "detect_kind",
    "make_source",
]

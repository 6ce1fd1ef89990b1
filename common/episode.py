"""The episode format (docs/EPISODE_FORMAT.md): its typed records, one writer, one reader.

Every producer (the simulator's recorder, a user's converter, test fixtures)
writes episodes with `write_episode`, and every consumer (the failure-analysis
sources, the closed loop's region mapping) reads them with `read_meta`,
`read_steps` and `episode_frames`. Nothing else parses these files.

Layout::

    <episodes>/<episode_id>/
      meta.json            EpisodeMeta
      steps.jsonl          one StepRecord per line
      frames/000000.png    RGB, one per logged step (every meta.frame_stride steps)
      channels/000000.npz  optional arrays named in meta.channels
      ground_truth.json    GroundTruth, HIDDEN: evaluation code only

Checks on read: `meta.json` must carry a supported `schema_version`, and every
file an episode points at (a step's ``frame``, the frames and channels found
in its folders) must lie inside the episode folder once symlinks are resolved:
an absolute path, a ``..`` or a link that leaves the folder is rejected, so an
episode cannot make the pipeline read (and send to a model, or put in a
report) an image from elsewhere on the machine. `read_meta`, `read_steps` and
`episode_frames` never open ``ground_truth.json``; evaluation code reads it
with `read_ground_truth`, the only function here that does.

Example:
    >>> folder = write_episode("episodes", meta, steps, frames={0: rgb0, 5: rgb5})
    >>> meta = read_meta(folder)
    >>> frames = episode_frames(folder, read_steps(folder))
    >>> frames[-1].path.name
    '000005.png'
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from common.fileio import atomic_dir

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
META_FILE = "meta.json"
STEPS_FILE = "steps.jsonl"
FRAMES_DIR = "frames"
CHANNELS_DIR = "channels"
GROUND_TRUTH_FILE = "ground_truth.json"
TMP_SUFFIX = ".tmp"  # an episode still being written; never read
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# The arrays a channels/*.npz may hold, with the dtype each is stored in.
CHANNEL_DTYPES: dict[str, type[np.generic]] = {
    "depth": np.float16,
    "semantic": np.uint8,
    "instance": np.uint16,
}
# "failure": a converted log's failure of no more specific kind (a dropped object, a crash)
Outcome = Literal["collision", "success", "timeout", "failure"]


# --------------------------------------------------------------------------- records


class _Record(BaseModel):
    # A converter may add keys of its own: they are kept and ignored.
    model_config = ConfigDict(extra="allow")


class CameraMeta(_Record):
    """The front camera that took the frames."""

    fov_deg: float | None  # horizontal field of view; null = not calibrated (a converted log)
    height_m: float | None  # above the floor; null = unknown
    width: int  # pixels
    height: int  # pixels
    pitch_deg: float = 0.0  # negative looks down


class EpisodeMeta(_Record):
    """meta.json: what the episode is, who produced it and how it ended."""

    schema_version: int = SCHEMA_VERSION
    episode_id: str  # equals the folder name
    source: str = "unknown"  # producer, e.g. "failtax-sim" or "my-robot-logs"
    robot: str = "unknown"  # robot / policy description
    env_id: str | None = None
    building_id: str | None = None
    building_family: str | None = None
    seed: int | None = None  # reset seed
    dt_s: float  # seconds between steps
    frame_stride: int = 1  # a frame is stored every this many steps
    num_steps: int  # lines in steps.jsonl
    camera: CameraMeta
    outcome: Outcome
    failure_step: int | None = None  # step of the failure; None on success
    channels: list[str] = []  # array names in each channels/*.npz
    semantic_classes: dict[str, str] = {}  # class id (as a string) -> class name
    created_at: str | None = None  # ISO-8601 UTC; write_episode stamps it when None

    @field_validator("episode_id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        check_episode_id(value)
        return value


class StepRecord(_Record):
    """One line of steps.jsonl: the state after `step` actions and the action taken there."""

    step: int
    t_s: float
    x_m: float  # pose in the building's world frame
    y_m: float
    yaw_rad: float  # 0 along +x, counter-clockwise positive
    v_mps: float
    w_radps: float
    action: list[float] | None = None  # None on the terminal record
    goal: list[float] | None = None  # [x_m, y_m]
    frame: str | None = None  # "frames/000012.png", relative to the episode folder


class CollisionTruth(_Record):
    """What the robot hit, as only the simulator knows it."""

    object_id: int
    object_class: str
    material: str
    contact_point: list[float]  # [x_m, y_m]
    step: int
    part: str | None = None  # the object's part that was touched, e.g. "leg"


class GroundTruth(_Record):
    """ground_truth.json: the hidden label. Only evaluation code reads it."""

    schema_version: int = SCHEMA_VERSION
    outcome: Outcome
    collision: CollisionTruth | None = None
    cause_class: str | None = None  # hazard class held responsible, e.g. "glass"


@dataclass(frozen=True)
class EpisodeFrame:
    """One stored frame of an episode, with its files resolved inside the episode folder."""

    path: Path
    step: int | None  # index into steps.jsonl; None when the episode logs no steps for it
    channels_path: Path | None  # channels/<same name>.npz, when stored


class EpisodeFormatError(ValueError):
    """An episode folder breaks the format; `kind` names the check that failed.

    Kinds: "missing_meta", "bad_meta", "unsupported_schema", "bad_steps",
    "zero_steps", "unsafe_path", "bad_ground_truth".
    """

    def __init__(self, kind: str, message: str, path: str | os.PathLike) -> None:
        super().__init__(f"{path}: {message}")
        self.kind = kind
        self.message = message
        self.path = Path(path)


def check_episode_id(episode_id: str) -> None:
    """Raise ValueError unless `episode_id` can name an episode folder."""
    if (
        not episode_id
        or "/" in episode_id
        or "\\" in episode_id
        or episode_id in (".", "..")
        or episode_id.endswith(TMP_SUFFIX)
    ):
        raise ValueError(
            f"bad episode id {episode_id!r}: it names a folder, so no '/' or '\\', "
            f"not '.' or '..', and it must not end in {TMP_SUFFIX}"
        )


def frame_name(step: int) -> str:
    """The frame file of a step, relative to the episode folder: "frames/000012.png"."""
    return f"{FRAMES_DIR}/{step:06d}.png"


def is_incomplete(folder: str | os.PathLike) -> bool:
    """True for a folder an episode is still being written into (`<id>.tmp`)."""
    return Path(folder).name.endswith(TMP_SUFFIX)


# --------------------------------------------------------------------------- writer


def write_episode(
    root: str | os.PathLike,
    meta: EpisodeMeta,
    steps: Sequence[StepRecord],
    frames: Mapping[int, bytes | np.ndarray],
    *,
    channels: Mapping[int, Mapping[str, np.ndarray]] | None = None,
    ground_truth: GroundTruth | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one episode into `root/<meta.episode_id>/`, atomically.

    The folder is built as `<id>.tmp/` and renamed when complete, with
    meta.json written last, so a killed writer never leaves an episode.

    Args:
        root: the episodes folder.
        meta: meta.json; `created_at` is stamped now when None.
        steps: one record per step, `step` counting from 0; a record's
            `frame` is `frame_name(step)` when that step's frame is stored. Empty
            for a frames-only episode (a log without poses): no steps.jsonl is
            written, `meta.num_steps` is 0 and `meta.failure_step` counts frames.
        frames: step -> RGB frame, as PNG bytes or an (H, W, 3) uint8 array
            (frame index -> frame in a frames-only episode).
        channels: step -> {channel name: (H, W) array}; names must be listed in
            `meta.channels`, and each is stored in its CHANNEL_DTYPES dtype.
        ground_truth: the hidden label (simulators only).
        overwrite: replace an existing episode of the same id.

    Returns:
        The episode folder.

    Raises:
        ValueError: the records disagree (step count, frame references, channels).
        FileExistsError: the episode exists and `overwrite` is False.
    """
    channels = channels or {}
    _check_consistent(meta, steps, frames, channels)
    if meta.created_at is None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        meta = meta.model_copy(update={"created_at": stamp})
    final = Path(root) / meta.episode_id
    with atomic_dir(final, overwrite=overwrite) as tmp:
        (tmp / FRAMES_DIR).mkdir()
        for step, frame in frames.items():
            (tmp / frame_name(step)).write_bytes(encode_frame(frame))
        if channels:
            (tmp / CHANNELS_DIR).mkdir()
            for step, arrays in channels.items():
                stored = {name: np.asarray(a).astype(CHANNEL_DTYPES[name], copy=False)
                          for name, a in arrays.items()}
                np.savez_compressed(tmp / CHANNELS_DIR / f"{step:06d}.npz", **stored)
        if steps:
            lines = "".join(json.dumps(s.model_dump(mode="json"), sort_keys=True) + "\n"
                            for s in steps)
            (tmp / STEPS_FILE).write_text(lines)
        if ground_truth is not None:
            (tmp / GROUND_TRUTH_FILE).write_text(_json(ground_truth))
        # meta.json last: a folder without it is not an episode.
        (tmp / META_FILE).write_text(_json(meta))
    return final


def _check_consistent(meta: EpisodeMeta, steps: Sequence[StepRecord],
                      frames: Mapping[int, Any], channels: Mapping[int, Mapping[str, Any]]) -> None:
    eid = meta.episode_id
    if meta.num_steps != len(steps):
        raise ValueError(f"{eid}: meta.num_steps is {meta.num_steps} but {len(steps)} steps given")
    for i, s in enumerate(steps):
        if s.step != i:
            raise ValueError(f"{eid}: step record {i} has step {s.step}; steps count from 0 in order")
        if s.frame is not None and (s.frame != frame_name(i) or i not in frames):
            raise ValueError(f"{eid}: step {i} names frame {s.frame!r}; expected "
                             f"{frame_name(i)!r} with frames[{i}] given")
    referenced = {s.step for s in steps if s.frame is not None}
    if not steps and set(frames) != set(range(len(frames))):
        raise ValueError(f"{eid}: a frames-only episode (no steps) numbers its frames 0..n-1")
    if steps and set(frames) != referenced:
        raise ValueError(f"{eid}: frames given for steps {sorted(set(frames) - referenced)} "
                         "that no step record names; set their `frame`")
    unknown = set(meta.channels) - set(CHANNEL_DTYPES)
    if unknown:
        raise ValueError(f"{eid}: unknown channels {sorted(unknown)} in meta.channels; "
                         f"choose from {sorted(CHANNEL_DTYPES)}")
    unlisted = {n for arrays in channels.values() for n in arrays} - set(meta.channels)
    if unlisted:
        raise ValueError(f"{eid}: channel arrays {sorted(unlisted)} are not listed in "
                         f"meta.channels {meta.channels}")
    if set(channels) - set(frames):
        raise ValueError(f"{eid}: channels given for steps {sorted(set(channels) - set(frames))} "
                         "that have no frame")


def encode_frame(frame: bytes | np.ndarray) -> bytes:
    """A frame as stored in frames/: PNG bytes (bytes are taken as already encoded)."""
    if isinstance(frame, bytes):
        return frame
    buf = io.BytesIO()
    Image.fromarray(np.asarray(frame, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _json(record: BaseModel) -> str:
    return json.dumps(record.model_dump(mode="json"), sort_keys=True, indent=2)


# --------------------------------------------------------------------------- reader


def read_meta(folder: str | os.PathLike) -> EpisodeMeta:
    """meta.json of one episode folder, its schema_version checked.

    Raises:
        EpisodeFormatError: "missing_meta", "bad_meta" (not JSON, or keys of the
            wrong type / missing) or "unsupported_schema".
    """
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise EpisodeFormatError("missing_meta", f"no {META_FILE}: not an episode", folder)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EpisodeFormatError("bad_meta", f"{META_FILE} unreadable: {e}", path) from None
    if not isinstance(raw, dict):
        raise EpisodeFormatError("bad_meta", f"{META_FILE} unreadable: top level is not an object",
                                 path)
    _check_schema_version(raw, path)
    try:
        return EpisodeMeta.model_validate(raw)
    except ValidationError as e:
        raise EpisodeFormatError("bad_meta", f"{META_FILE} does not follow the episode format "
                                 f"(docs/EPISODE_FORMAT.md): {_errors(e)}", path) from None


def read_steps(folder: str | os.PathLike) -> list[StepRecord]:
    """steps.jsonl of one episode folder; [] when the episode has none (frames only).

    Raises:
        EpisodeFormatError: "bad_steps" (a line is not a step record) or
            "zero_steps" (the file holds no record).
    """
    path = Path(folder) / STEPS_FILE
    if not path.is_file():
        return []
    steps: list[StepRecord] = []
    try:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                steps.append(StepRecord.model_validate_json(line))
            except ValidationError as e:
                raise EpisodeFormatError(
                    "bad_steps", f"{STEPS_FILE} unreadable: line {n}: {_errors(e)}", path
                ) from None
    except OSError as e:
        raise EpisodeFormatError("bad_steps", f"{STEPS_FILE} unreadable: {e}", path) from None
    if not steps:
        raise EpisodeFormatError("zero_steps", f"{STEPS_FILE} has no steps", path)
    return steps


def resolve_in_episode(folder: str | os.PathLike, relpath: str) -> Path:
    """`folder/relpath`, refused unless it stays inside the episode folder.

    Args:
        folder: the episode folder.
        relpath: a path relative to it, e.g. a step's "frames/000012.png".

    Raises:
        EpisodeFormatError: "unsafe_path" for an absolute path, a ".." part, or
            a path whose symlinks resolve outside the folder.
    """
    folder = Path(folder)
    posix = PurePosixPath(relpath.replace("\\", "/"))
    if posix.is_absolute() or Path(relpath).is_absolute() or ".." in posix.parts:
        raise EpisodeFormatError(
            "unsafe_path",
            f"path {relpath!r} is absolute or climbs out with '..'; files of an episode are "
            f"named relative to its folder, like {frame_name(0)!r}",
            folder,
        )
    path = folder / posix
    _check_inside(folder, path, relpath)
    return path


def episode_frames(folder: str | os.PathLike, steps: Sequence[StepRecord]) -> list[EpisodeFrame]:
    """The stored frames of an episode, in order, each resolved inside the folder.

    The step log's `frame` references come first (they carry the step index; a
    reference to a missing file is skipped); an episode whose steps name no
    frame falls back to the images in frames/, sorted by name.

    Raises:
        EpisodeFormatError: "unsafe_path" when a frame or channels file lies
            outside the episode folder (see `resolve_in_episode`).
    """
    folder = Path(folder)
    found: list[tuple[Path, int | None]] = []
    for rec in steps:
        if rec.frame:
            path = resolve_in_episode(folder, rec.frame)
            if path.is_file():
                found.append((path, rec.step))
    if not found and (folder / FRAMES_DIR).is_dir():
        for path in sorted((folder / FRAMES_DIR).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                _check_inside(folder, path, f"{FRAMES_DIR}/{path.name}")
                step = int(path.stem) if path.stem.isdigit() and int(path.stem) < len(steps) else None
                found.append((path, step))
    out = []
    for path, step in found:
        npz = folder / CHANNELS_DIR / f"{path.stem}.npz"
        if npz.is_file():
            _check_inside(folder, npz, f"{CHANNELS_DIR}/{npz.name}")
        else:
            npz = None
        out.append(EpisodeFrame(path, step, npz))
    return out


def read_ground_truth(folder: str | os.PathLike) -> GroundTruth | None:
    """ground_truth.json of one episode folder, or None when it has none.

    For evaluation code only: the pipeline's readers never open this file
    (tests/failtax/test_ground_truth_hidden.py).

    Raises:
        EpisodeFormatError: "bad_ground_truth" (unreadable or not the format) or
            "unsupported_schema".
    """
    path = Path(folder) / GROUND_TRUTH_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EpisodeFormatError("bad_ground_truth", f"{GROUND_TRUTH_FILE} unreadable: {e}",
                                 path) from None
    if not isinstance(raw, dict):
        raise EpisodeFormatError("bad_ground_truth", "top level is not an object", path)
    _check_schema_version(raw, path)
    try:
        return GroundTruth.model_validate(raw)
    except ValidationError as e:
        raise EpisodeFormatError("bad_ground_truth", _errors(e), path) from None


def _check_inside(folder: Path, path: Path, shown: str) -> None:
    root = folder.resolve()
    if not path.resolve().is_relative_to(root):
        raise EpisodeFormatError(
            "unsafe_path",
            f"{shown!r} resolves to {path.resolve()}, outside the episode folder (a symlink "
            "out of it?); an episode may only point at files inside its own folder",
            folder,
        )


def _check_schema_version(raw: dict[str, Any], path: Path) -> None:
    version = raw.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS or isinstance(version, bool):
        supported = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
        found = "no schema_version" if version is None else f"schema_version {version!r}"
        raise EpisodeFormatError(
            "unsupported_schema",
            f"{path.name} has {found}; this reader supports schema_version {supported} "
            "(docs/EPISODE_FORMAT.md). Rewrite the episode with a matching converter",
            path,
        )


def _errors(e: ValidationError) -> str:
    """A pydantic error as one line: "camera.fov_deg: Field required; outcome: ..."."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'record'}: {err['msg']}" for err in e.errors()
    )

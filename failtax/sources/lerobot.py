"""LeRobot datasets (codebase v2.1 and v3.0), read from a local folder with pyarrow and PyAV.

Layouts (the `data_path` / `video_path` templates of meta/info.json are used as given):

- v3.0: meta/episodes/chunk-*/file-*.parquet (one row per episode: length, tasks,
  data file, dataset_from_index/to_index, and per camera its video file and
  from_timestamp/to_timestamp); data/chunk-*/file-*.parquet hold many episodes;
  videos/<camera>/chunk-*/file-*.mp4 hold many episodes back to back.
  A camera of dtype "image" stores encoded images ({bytes, path}) in the data
  parquet instead; both are read.
- v2.1: meta/episodes.jsonl (episode_index, tasks, length); one data parquet and one
  mp4 per camera per episode.

Streaming: episode metadata is read batch by batch, a data file's few scalar
columns (episode_index, frame_index, timestamp and the success column) are held
for the file in use only, and frames are decoded per episode when a stage asks
for them (`failtax.sources.video`). Nothing downloads: the folder is the dataset.

Failures: the labels CSV (`source.labels_path`, failtax.sources.labels) decides
for the episodes it lists; otherwise an episode failed unless
`source.success_column` is true on any of its rows; with labels and no success
column, episodes the CSV does not list are taken as successes (LeRobot datasets
are mostly successful demonstrations). One of the two is required. The failure is at the labelled time or frame, else the last frame.
Each episode's task strings become its task instruction.

Bad input costs the episode only: an unreadable data file, rows that break the
episode (missing or non-increasing timestamps, frame_index not 0..n-1, fewer rows
than `length`), or a camera video missing from the metadata give a `SourceError`;
a video that breaks off (truncated file) gives an `EpisodeReadError` when its
frames are read.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from failtax.sources.base import (
    Episode,
    SourceError,
    failure_frame_at,
    sample_times,
)
from failtax.sources.labels import FailureLabel, lookup, read_labels
from failtax.sources.video import FrameCache, SegmentDecoder

INFO_FILE = Path("meta") / "info.json"
# with a failure time, frames this long after it are kept too (the downsampler's window)
AFTER_FAILURE_S = 1.0
V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V3_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def is_lerobot_dataset(path: Path) -> bool:
    """True for a folder with meta/info.json naming a LeRobot codebase version."""
    info = path / INFO_FILE
    if not info.is_file():
        return False
    try:
        return "codebase_version" in json.loads(info.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def episode_id_of(index: int) -> str:
    """The failtax episode id of LeRobot episode `index`: "episode_000003"."""
    return f"episode_{index:06d}"


class LeRobotSource:
    """A LeRobot v2.1 or v3.0 dataset folder; one episode per LeRobot episode."""

    kind = "lerobot"
    domain = "manipulation"

    def __init__(
        self,
        root: Path,
        *,
        camera_key: str | None = None,
        success_column: str | None = None,
        labels_path: str | None = None,
        sample_fps_hz: float = 5.0,
        max_frames: int = 600,
    ) -> None:
        """Read meta/info.json and check the options against it.

        Raises:
            ValueError: not a LeRobot folder, an unsupported version, an unknown camera
                key, or neither `success_column` nor `labels_path` given.
        """
        self.root = root
        try:
            self.info: dict[str, Any] = json.loads((root / INFO_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{root}: meta/info.json unreadable ({e}); is it a LeRobot dataset?")
        self.version = str(self.info.get("codebase_version", ""))
        if not self.version.startswith(("v2.", "v3.")):
            raise ValueError(
                f"{root}: LeRobot codebase_version {self.version!r} is not supported; "
                "this reader reads v2.1 and v3.0 (convert older ones with lerobot's tools)"
            )
        self.v3 = self.version.startswith("v3.")
        self.fps = float(self.info.get("fps") or 30.0)
        features = self.info.get("features") or {}
        cameras = [k for k, v in features.items()
                   if isinstance(v, dict) and v.get("dtype") in ("video", "image")]
        if not cameras:
            raise ValueError(
                f"{root}: no camera feature (dtype video or image) in meta/info.json; failtax "
                "reads the camera frames of an episode"
            )
        self.camera_key = camera_key or cameras[0]
        if self.camera_key not in cameras:
            raise ValueError(
                f"source.camera_key {self.camera_key!r} is not a camera of {root}; "
                f"cameras: {', '.join(cameras)}"
            )
        # "image" cameras store encoded images ({bytes, path}) in the data parquet itself
        self.camera_is_video = features[self.camera_key].get("dtype") == "video"
        if success_column is None and labels_path is None:
            raise ValueError(
                f"{root}: say which LeRobot episodes failed: set source.success_column (a data "
                "column true on success, e.g. next.success) or source.labels_path (a CSV of "
                "episode_id,outcome[,failure_time_s]; docs/INPUTS.md)"
            )
        if success_column is not None and success_column not in features:
            raise ValueError(
                f"source.success_column {success_column!r} is not a feature of {root}; "
                f"features: {', '.join(sorted(features))}"
            )
        self.success_column = success_column
        self.labels: dict[str, FailureLabel] = read_labels(labels_path) if labels_path else {}
        self.sample_fps_hz = sample_fps_hz
        self.max_frames = max_frames
        self.chunks_size = int(self.info.get("chunks_size") or 1000)
        self.data_path = str(self.info.get("data_path") or (V3_DATA_PATH if self.v3 else V21_DATA_PATH))
        self.video_path = str(
            self.info.get("video_path") or (V3_VIDEO_PATH if self.v3 else V21_VIDEO_PATH)
        )
        shape = (features[self.camera_key].get("shape") or [0, 0, 3])
        names = features[self.camera_key].get("names") or ["height", "width", "channels"]
        dims = dict(zip(names, shape)) if len(names) == len(shape) else {}
        self.camera = {"width": dims.get("width"), "height": dims.get("height")}
        self.robot = str(self.info.get("robot_type") or "unknown")
        self.tasks = self._task_table()
        self._decoder = SegmentDecoder()
        self._frames = FrameCache(2)
        self._data: tuple[Path, dict[str, np.ndarray] | Exception] | None = None

    # ----------------------------------------------------------------- metadata

    def _task_table(self) -> dict[int, str]:
        """task_index -> task string (tasks.parquet in v3, tasks.jsonl in v2.1)."""
        meta = self.root / "meta"
        if (meta / "tasks.parquet").is_file():
            import pyarrow.parquet as pq

            table = pq.read_table(meta / "tasks.parquet").to_pydict()
            tasks = table.get("task") or table.get("__index_level_0__") or []
            return {int(i): str(t) for i, t in zip(table.get("task_index", []), tasks)}
        if (meta / "tasks.jsonl").is_file():
            out = {}
            for line in (meta / "tasks.jsonl").read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    out[int(rec["task_index"])] = str(rec["task"])
            return out
        return {}

    def _episode_records(self) -> Iterator[dict[str, Any] | SourceError]:
        """One metadata record per episode, in index order, batch by batch."""
        if not self.v3:
            path = self.root / "meta" / "episodes.jsonl"
            if not path.is_file():
                raise ValueError(f"{self.root}: no meta/episodes.jsonl (LeRobot v2.1)")
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                        int(rec["episode_index"])
                    except (ValueError, KeyError, TypeError) as e:
                        yield SourceError(f"episodes.jsonl:{n}", "bad_meta",
                                          f"not an episode record: {e!r}", f"{path}:{n}")
                        continue
                    yield rec
            return
        import pyarrow.parquet as pq

        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise ValueError(f"{self.root}: no meta/episodes/chunk-*/file-*.parquet (LeRobot v3)")
        cam = f"videos/{self.camera_key}/"
        for path in files:
            try:
                pf = pq.ParquetFile(path)
                columns = [c for c in pf.schema_arrow.names
                           if not c.startswith(("stats/", "videos/")) or c.startswith(cam)]
                for batch in pf.iter_batches(batch_size=1024, columns=columns):
                    yield from batch.to_pylist()
            except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
                yield SourceError(path.name, "unreadable_meta",
                                  f"episode metadata unreadable: {e}", str(path))

    def _data_columns(self, path: Path) -> dict[str, np.ndarray]:
        """The scalar columns of one data file (cached while episodes use the same file)."""
        if self._data is not None and self._data[0] == path:
            cached = self._data[1]
            if isinstance(cached, Exception):
                raise cached
            return cached
        import pyarrow.parquet as pq

        want = ["episode_index", "frame_index", "timestamp"]
        if self.success_column:
            want.append(self.success_column)
        try:
            table = pq.read_table(path, columns=want)
            cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in want}
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
            err = ValueError(f"data file {path.name} unreadable: {e}")
            self._data = (path, err)
            raise err from None
        self._data = (path, cols)
        return cols

    # ----------------------------------------------------------------- episodes

    def scan(self) -> Iterator[Episode | SourceError]:
        for rec in self._episode_records():
            if isinstance(rec, SourceError):
                yield rec
                continue
            yield self._episode(rec)

    def episode(self, episode_id: str) -> Episode | SourceError | None:
        """One episode by id ("episode_000003"), reading the episode table only up to it
        (a report's thumbnails need a few episodes, not a scan of every data file)."""
        try:
            index = int(episode_id.rsplit("_", 1)[-1])
        except ValueError:
            return None
        for rec in self._episode_records():
            if not isinstance(rec, SourceError) and int(rec["episode_index"]) == index:
                return self._episode(rec)
        return None

    def _paths(self, rec: dict[str, Any], index: int) -> tuple[Path, Path | None, float]:
        """(data file, video file (None for an image camera), the episode's start time in it)."""
        if self.v3:
            data = self.data_path.format(
                chunk_index=int(rec["data/chunk_index"]), file_index=int(rec["data/file_index"])
            )
            if not self.camera_is_video:
                return self.root / data, None, 0.0
            cam = f"videos/{self.camera_key}/"
            if rec.get(cam + "chunk_index") is None:
                raise KeyError(f"no {cam}chunk_index in the episode metadata")
            video = self.video_path.format(
                video_key=self.camera_key,
                chunk_index=int(rec[cam + "chunk_index"]),
                file_index=int(rec[cam + "file_index"]),
            )
            return self.root / data, self.root / video, float(rec.get(cam + "from_timestamp") or 0.0)
        chunk = index // self.chunks_size
        data = self.data_path.format(episode_chunk=chunk, episode_index=index)
        if not self.camera_is_video:
            return self.root / data, None, 0.0
        video = self.video_path.format(
            episode_chunk=chunk, episode_index=index, video_key=self.camera_key
        )
        return self.root / data, self.root / video, 0.0

    def _episode(self, rec: dict[str, Any]) -> Episode | SourceError:
        index = int(rec["episode_index"])
        eid = episode_id_of(index)
        try:
            data_file, video_file, video_t0 = self._paths(rec, index)
        except (KeyError, TypeError, ValueError) as e:
            return SourceError(eid, "bad_meta", f"episode metadata incomplete: {e}", str(self.root))
        if not data_file.is_file():
            return SourceError(eid, "missing_data", f"no data file {data_file.name}", str(data_file))
        if video_file is not None and not video_file.is_file():
            return SourceError(eid, "missing_video", f"no {self.camera_key} video {video_file.name}",
                               str(video_file))
        try:
            rows = self._rows(data_file, index, int(rec.get("length") or 0))
        except ValueError as e:
            return SourceError(eid, "bad_rows", str(e), str(data_file))
        times, success = rows
        label = lookup(self.labels, eid, str(index))
        if label is not None:
            failed, why = label.failed, "labelled success"
        elif self.success_column:
            failed, why = not success, f"{self.success_column} is true"
        else:  # a labels CSV alone lists the failures; the rest are demonstrations
            failed, why = False, "not in the labels CSV"
        if not failed:
            return SourceError(eid, "skipped_outcome", f"not a failure ({why})", str(data_file))
        outcome = label.outcome if label is not None else "failure"
        fail_t = None
        if label is not None and label.failure_frame is not None:
            fail_t = times[min(max(label.failure_frame, 0), len(times) - 1)]
        elif label is not None and label.failure_time_s is not None:
            fail_t = label.failure_time_s
        end = None if fail_t is None else fail_t + AFTER_FAILURE_S
        keep = sample_times(times, self.sample_fps_hz, self.max_frames, end)
        kept_t = [times[i] for i in keep]
        video_times = [video_t0 + t for t in kept_t]
        tasks = rec.get("tasks") or []
        if isinstance(tasks, str):
            tasks = [tasks]
        key = f"{video_file or data_file}:{video_t0}:{eid}"

        def decode() -> list[np.ndarray]:
            if video_file is None:
                return self._images(data_file, index, keep)
            return self._decoder.frames_at(video_file, video_times)

        def load(i: int) -> np.ndarray:
            return self._frames.get(key, decode)[i]

        return Episode(
            episode_id=eid,
            kind=self.kind,
            path=video_file or data_file,
            num_frames=len(keep),
            failure_index=failure_frame_at(fail_t, kept_t),
            meta={
                "episode_id": eid,
                "source": f"lerobot {self.version}",
                "robot": self.robot,
                "outcome": outcome,
                "task": "; ".join(str(t) for t in tasks) or None,
                "domain": self.domain,
                "dt_s": 1.0 / self.fps,
                "camera_key": self.camera_key,
                "camera": dict(self.camera),
                "frame_times_s": [round(t, 4) for t in kept_t],
            },
            frame_steps=[None] * len(keep),
            frame_loader=load,
            domain=self.domain,
        )

    def _images(self, data_file: Path, index: int, rows: list[int]) -> list[np.ndarray]:
        """The image camera's frames at `rows` (positions within episode `index`'s rows).

        Raises:
            ValueError: a row holds no image bytes (a path-only image) or bad bytes.
        """
        import pyarrow.parquet as pq

        table = pq.read_table(data_file, columns=[self.camera_key],
                              filters=[("episode_index", "=", index)])
        cells = table.column(self.camera_key).to_pylist()
        out = []
        for r in rows:
            cell = cells[r]
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            if not data:
                raise ValueError(f"frame {r} of episode {index} has no image bytes in "
                                 f"{data_file.name} (images stored only as paths are not read)")
            with Image.open(io.BytesIO(data)) as img:
                out.append(np.asarray(img.convert("RGB")))
        return out

    def _rows(self, data_file: Path, index: int, length: int) -> tuple[list[float], bool]:
        """(frame timestamps, any success row) of episode `index`, its rows checked.

        Raises:
            ValueError: the data file is unreadable or the episode's rows are broken.
        """
        cols = self._data_columns(data_file)
        where = np.flatnonzero(cols["episode_index"] == index)
        if where.size == 0:
            raise ValueError(f"no rows of episode {index} in {data_file.name}")
        ts = cols["timestamp"][where]
        fi = cols["frame_index"][where]
        for n, (t, f) in enumerate(zip(ts, fi)):
            if t is None or f is None or not math.isfinite(float(t)):
                raise ValueError(f"row {int(where[n])} of {data_file.name}: timestamp or "
                                 f"frame_index missing ({t!r}, {f!r})")
            if int(f) != n:
                raise ValueError(f"row {int(where[n])} of {data_file.name}: frame_index {f} "
                                 f"where {n} was expected (rows missing or out of order)")
            if n and float(t) <= float(ts[n - 1]):
                raise ValueError(f"row {int(where[n])} of {data_file.name}: timestamp {t} does "
                                 f"not increase (previous {ts[n - 1]})")
        if length and where.size != length:
            raise ValueError(f"episode {index} has {where.size} rows in {data_file.name} but "
                             f"its metadata says length {length}")
        success = False
        if self.success_column:
            col = cols[self.success_column][where]
            success = bool(np.any([bool(v) for v in col if v is not None]))
        return [float(t) for t in ts], success

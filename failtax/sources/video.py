"""Frames of video files at given times, decoded with PyAV, for the readers that keep
many episodes in one file (LeRobot v3) or one episode per file (LeRobot v2.1).

`SegmentDecoder.frames_at` seeks to the first wanted time and decodes forward,
taking for each wanted time the first frame at or after it (within half a frame
period), so an episode costs one seek and the decode of its own segment; the
last container stays open for the next episode of the same file. `FrameCache`
keeps the decoded frames of the last few episodes, so a stage that reads an
episode's frames one by one decodes its segment once and memory stays bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class SegmentDecoder:
    """Decodes frames at given times from video files (one container open at a time)."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._container: Any = None

    def _open(self, path: Path) -> Any:
        import av

        if self._path != path:
            self.close()
            self._container = av.open(str(path))
            self._path = path
        return self._container

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._path = None, None

    def frames_at(self, path: Path, times_s: list[float]) -> list[np.ndarray]:
        """RGB frames of `path` at `times_s` (ascending, seconds from the file's start).

        Raises:
            ValueError: the file cannot be opened or decoded, or it ends (breaks off)
                before the last wanted time; the message names the file and the time.
        """
        if not times_s:
            return []
        last_t = None
        try:
            container = self._open(path)
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 30)
            tol = 0.5 / rate
            start = max(times_s[0] - tol, 0.0)
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
            out: list[np.ndarray] = []
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                last_t = float(frame.time)
                if last_t < times_s[len(out)] - tol:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                while len(out) < len(times_s) and last_t >= times_s[len(out)] - tol:
                    out.append(rgb)
                if len(out) == len(times_s):
                    return out
        except Exception as e:
            self.close()  # a broken container is not reused
            where = "opening it" if last_t is None else f"{last_t:.2f} s"
            raise ValueError(
                f"{path.name}: decoding failed at {where} ({e}); the file is corrupt or "
                "truncated"
            ) from e
        ends = "holds no frame there" if last_t is None else f"ends at {last_t:.2f} s"
        raise ValueError(
            f"{path.name} {ends}, before the frame at {times_s[len(out)]:.2f} s "
            "(truncated or partial video?)"
        )


class FrameCache:
    """The decoded frames of the last `size` episodes, by key."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._items: OrderedDict[str, list[np.ndarray]] = OrderedDict()

    def get(self, key: str, decode: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        frames = decode()
        self._items[key] = frames
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return frames

"""ROS 2 bags in MCAP, read with `mcap` and `mcap-ros2-support` (no ROS install needed).

One episode per bag: a ``*.mcap`` file, or a rosbag2 folder (metadata.yaml and its
``*.mcap`` splits, read in name order). What is read, all of it robot-observable:

- the camera: `source.image_topic` (sensor_msgs/msg/Image in rgb8, bgr8, rgba8,
  bgra8 or mono8, or sensor_msgs/msg/CompressedImage in jpeg/png); the first image
  topic of the bag when unset. Frames are sampled at `source.video_sample_fps_hz`
  and decoded only when a stage reads them.
- the motion: `source.odom_topic` (nav_msgs/msg/Odometry; the first one when unset):
  pose, heading and body velocities at each kept frame become the episode's steps.
- the failure: the first message on `source.failure_topic` (a bumper, an e-stop, a
  monitor's fault topic), else a time from the labels CSV (`source.labels_path`,
  seconds from the bag's first message), else the end of the bag.

A bag without the named image or failure topic, one without any image topic, and
an unreadable (truncated, not MCAP) file each give a `SourceError` for that bag;
the scan goes on with the next.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from failtax.sources.base import Episode, SourceError, failure_frame_at, sample_times
from failtax.sources.labels import FailureLabel, lookup, read_labels
from failtax.sources.video import FrameCache

IMAGE_SCHEMAS = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ODOM_SCHEMA = "nav_msgs/msg/Odometry"
# with a failure time, frames this long after it are kept too (the downsampler's window)
AFTER_FAILURE_S = 1.0
NS = 1e9


def bag_files(path: Path) -> list[Path]:
    """The MCAP files of one episode: the file itself, or a rosbag2 folder's splits."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix == ".mcap")


def find_bags(root: Path) -> list[Path]:
    """Episodes under `root`: *.mcap files and folders holding *.mcap files, by name."""
    if root.is_file() or (root / "metadata.yaml").is_file():
        return [root]
    return sorted(
        p for p in root.iterdir()
        if (p.is_file() and p.suffix == ".mcap") or (p.is_dir() and any(p.glob("*.mcap")))
    )


class McapSource:
    """A folder of ROS 2 bags (MCAP), or one bag; one episode per bag."""

    kind = "mcap"
    domain = "navigation"

    def __init__(
        self,
        root: Path,
        *,
        image_topic: str | None = None,
        odom_topic: str | None = None,
        failure_topic: str | None = None,
        labels_path: str | None = None,
        sample_fps_hz: float = 5.0,
        max_frames: int = 600,
    ) -> None:
        self.root = root
        self.image_topic = image_topic
        self.odom_topic = odom_topic
        self.failure_topic = failure_topic
        self.labels: dict[str, FailureLabel] = read_labels(labels_path) if labels_path else {}
        self.sample_fps_hz = sample_fps_hz
        self.max_frames = max_frames
        self._frames = FrameCache(2)

    def scan(self) -> Iterator[Episode | SourceError]:
        for bag in find_bags(self.root):
            eid = bag.stem if bag.is_file() else bag.name
            try:
                yield self._episode(eid, bag)
            except Exception as e:  # noqa: BLE001 - the mcap readers raise many types
                yield SourceError(eid, "unreadable_bag", f"cannot read the bag: {e!r}", str(bag))

    def episode(self, episode_id: str) -> Episode | SourceError | None:
        """One bag's episode by id (the bag's file stem or folder name), or None."""
        for bag in find_bags(self.root):
            if (bag.stem if bag.is_file() else bag.name) == episode_id:
                try:
                    return self._episode(episode_id, bag)
                except Exception as e:  # noqa: BLE001 - the mcap readers raise many types
                    return SourceError(episode_id, "unreadable_bag", f"cannot read the bag: {e!r}",
                                       str(bag))
        return None

    # ----------------------------------------------------------------- reading

    def _messages(self, bag: Path, topics: list[str], decode: bool = False,
                  start_ns: int | None = None, end_ns: int | None = None) -> Iterator[Any]:
        """(channel topic, log_time ns, message or None) over the bag's files, in time order,
        from `start_ns` (inclusive) to `end_ns` (exclusive)."""
        from mcap.reader import make_reader
        from mcap_ros2.decoder import DecoderFactory

        for path in bag_files(bag):
            with open(path, "rb") as f:
                reader = make_reader(f, decoder_factories=[DecoderFactory()])
                if decode:
                    for _, channel, message, ros in reader.iter_decoded_messages(
                        topics=topics, starting_at=start_ns, ending_before=end_ns
                    ):
                        yield channel.topic, message.log_time, ros
                else:
                    for _, channel, message in reader.iter_messages(
                        topics=topics, starting_at=start_ns, ending_before=end_ns
                    ):
                        yield channel.topic, message.log_time, None

    def _topics(self, bag: Path) -> tuple[dict[str, str], int | None]:
        """topic -> schema name over the bag's files, and the bag's first message time (ns)."""
        from mcap.reader import make_reader

        topics: dict[str, str] = {}
        start: int | None = None
        for path in bag_files(bag):
            with open(path, "rb") as f:
                summary = make_reader(f).get_summary()
                if summary is None:
                    raise ValueError(f"{path.name} has no summary section (truncated or still "
                                     "being recorded?); re-index it with `mcap recover`")
                for channel in summary.channels.values():
                    schema = summary.schemas.get(channel.schema_id)
                    topics[channel.topic] = schema.name if schema is not None else ""
                if summary.statistics is not None and summary.statistics.message_count:
                    t = summary.statistics.message_start_time
                    start = t if start is None else min(start, t)
        return topics, start

    def _episode(self, eid: str, bag: Path) -> Episode | SourceError:
        topics, start_ns = self._topics(bag)
        listing = ", ".join(f"{t} ({s})" for t, s in sorted(topics.items())) or "none"
        image_topic = self.image_topic or next(
            (t for t, s in sorted(topics.items()) if s in IMAGE_SCHEMAS), None
        )
        if image_topic is None or image_topic not in topics:
            what = f"no topic {self.image_topic}" if self.image_topic else "no image topic"
            return SourceError(eid, "missing_topic", f"{what} (source.image_topic); topics: "
                               f"{listing}", str(bag))
        if topics[image_topic] not in IMAGE_SCHEMAS:
            return SourceError(eid, "bad_topic", f"{image_topic} is {topics[image_topic]}, not "
                               f"one of {', '.join(IMAGE_SCHEMAS)}", str(bag))
        if self.failure_topic is not None and self.failure_topic not in topics:
            return SourceError(eid, "missing_topic", f"no failure topic {self.failure_topic} "
                               f"(source.failure_topic); topics: {listing}", str(bag))
        odom_topic = self.odom_topic or next(
            (t for t, s in sorted(topics.items()) if s == ODOM_SCHEMA), None
        )
        if self.odom_topic is not None and self.odom_topic not in topics:
            return SourceError(eid, "missing_topic", f"no odometry topic {self.odom_topic} "
                               f"(source.odom_topic); topics: {listing}", str(bag))
        image_ns = [t for _, t, _ in self._messages(bag, [image_topic])]
        if not image_ns:
            return SourceError(eid, "no_frames", f"{image_topic} holds no message", str(bag))
        t0 = start_ns if start_ns is not None else image_ns[0]
        fail_ns = self._failure_ns(eid, bag, t0)
        times = [(t - t0) / NS for t in image_ns]
        fail_t = None if fail_ns is None else (fail_ns - t0) / NS
        end = None if fail_t is None else fail_t + AFTER_FAILURE_S
        keep = sample_times(times, self.sample_fps_hz, self.max_frames, end)
        kept_ns = [image_ns[i] for i in keep]
        kept_t = [times[i] for i in keep]
        steps = self._steps(bag, odom_topic, kept_ns, t0) if odom_topic else []
        key = f"{bag}:{image_topic}"

        def load(i: int) -> np.ndarray:
            return self._frames.get(key, lambda: self._decode(bag, image_topic, kept_ns))[i]

        return Episode(
            episode_id=eid,
            kind=self.kind,
            path=bag,
            num_frames=len(keep),
            failure_index=failure_frame_at(fail_t, kept_t),
            meta={
                "episode_id": eid,
                "source": "ros2 mcap",
                "outcome": "failure",
                "domain": self.domain,
                "image_topic": image_topic,
                "odom_topic": odom_topic,
                "failure_topic": self.failure_topic,
                "frame_times_s": [round(t, 4) for t in kept_t],
                "dt_s": (kept_t[-1] - kept_t[0]) / max(len(kept_t) - 1, 1),
            },
            steps=steps,
            frame_steps=list(range(len(keep))) if steps else [None] * len(keep),
            frame_loader=load,
            domain=self.domain,
        )

    def _failure_ns(self, eid: str, bag: Path, t0: int) -> int | None:
        if self.failure_topic is not None:
            first = next(iter(self._messages(bag, [self.failure_topic])), None)
            return None if first is None else first[1]
        label = lookup(self.labels, eid)
        if label is not None and label.failure_time_s is not None:
            return t0 + int(label.failure_time_s * NS)
        return None

    def _steps(self, bag: Path, topic: str, kept_ns: list[int], t0: int) -> list[dict[str, Any]]:
        """One step record per kept frame from the nearest odometry message before it."""
        odom = [(t, msg) for _, t, msg in self._messages(bag, [topic], decode=True)]
        if not odom:
            return []
        stamps = np.array([t for t, _ in odom])
        steps = []
        for n, t in enumerate(kept_ns):
            j = max(int(np.searchsorted(stamps, t, side="right")) - 1, 0)
            msg = odom[j][1]
            p, q = msg.pose.pose.position, msg.pose.pose.orientation
            yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))
            tw = msg.twist.twist
            steps.append({
                "step": n, "t_s": round((t - t0) / NS, 4), "x_m": float(p.x), "y_m": float(p.y),
                "yaw_rad": yaw, "v_mps": float(tw.linear.x), "w_radps": float(tw.angular.z),
                "action": None, "goal": None, "frame": None,
            })
        return steps

    def _decode(self, bag: Path, topic: str, kept_ns: list[int]) -> list[np.ndarray]:
        wanted = set(kept_ns)
        by_time: dict[int, np.ndarray] = {}
        for _, t, msg in self._messages(bag, [topic], decode=True, start_ns=kept_ns[0],
                                        end_ns=kept_ns[-1] + 1):
            if t in wanted and t not in by_time:
                by_time[t] = image_message_rgb(msg)
        missing = [t for t in kept_ns if t not in by_time]
        if missing:
            raise ValueError(f"{len(missing)} image messages could not be read back")
        return [by_time[t] for t in kept_ns]


def image_message_rgb(msg: Any) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a decoded sensor_msgs Image or CompressedImage.

    Raises:
        ValueError: an encoding this reader does not know (the message names them).
    """
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):  # CompressedImage
        with Image.open(io.BytesIO(bytes(msg.data))) as img:
            return np.asarray(img.convert("RGB"))
    enc = str(msg.encoding).lower()
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
    if enc not in channels:
        raise ValueError(f"image encoding {msg.encoding!r} not supported; use one of "
                         f"{', '.join(channels)} or CompressedImage")
    h, w, c = int(msg.height), int(msg.width), channels[enc]
    step = int(msg.step) or w * c
    buf = np.frombuffer(bytes(msg.data), np.uint8)
    arr = buf[: h * step].reshape(h, step)[:, : w * c].reshape(h, w, c)
    if enc == "mono8":
        return np.repeat(arr, 3, axis=2)
    if enc.startswith("bgr"):
        arr = arr[:, :, 2::-1]
    return np.ascontiguousarray(arr[:, :, :3])

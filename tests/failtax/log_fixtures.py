"""Small real robot logs of the formats failtax reads, written with the formats' own libraries.

- `write_mp4`: an H.264 video (PyAV), short GOP like LeRobot's encoder.
- `write_lerobot`: a LeRobot dataset, v3.0 (many episodes per data parquet and per
  mp4, meta/episodes parquet with video offsets) or v2.1 (one parquet and mp4 per
  episode, meta/episodes.jsonl), with a `next.success` column.
- `write_bag`: a ROS 2 bag in MCAP (mcap-ros2-support writer, CDR encoding) with an
  image (raw rgb8 or CompressedImage png) topic, odometry and a bumper topic.
- `write_manipulation_run`: images + task.txt + plan.txt.

Frames are drawn so episodes and frames differ (a bright square that moves and grows
towards the end). Tests import these as `from log_fixtures import ...` (pytest puts
this folder on the path); benchmarks/convert_bench.py puts it there itself.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

CAMERA = "observation.images.front"


def draw(episode: int, frame: int, n: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """An RGB frame: a background tinted per episode and a square growing to the end."""
    h, w = size
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (40 + (episode * 37) % 120, 60, 90 + (episode * 11) % 100)
    side = 4 + int((h // 2) * frame / max(n - 1, 1))
    x = (5 * frame) % max(w - side, 1)
    img[h // 2 - side // 2: h // 2 + side // 2, x: x + side] = (230, 220, 40)
    return img


def write_mp4(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """Encode RGB frames as H.264 (yuv420p, keyframe every 2 frames) at `fps`, index first
    (faststart), so a cut-off file still plays up to the cut."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps, options={"g": "2", "preset": "ultrafast"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode(None))


def _info(version: str, fps: int, total: int, size: tuple[int, int], images: bool) -> dict:
    feats = {
        CAMERA: {"dtype": "image" if images else "video", "shape": [size[0], size[1], 3],
                 "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": [2], "names": None},
        "action": {"dtype": "float32", "shape": [2], "names": None},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    info = {"codebase_version": version, "robot_type": "so100", "fps": fps,
            "total_episodes": total, "chunks_size": 1000, "features": feats}
    if version.startswith("v3"):
        info["data_path"] = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    else:
        info["data_path"] = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
        info["video_path"] = ("videos/chunk-{episode_chunk:03d}/{video_key}/"
                              "episode_{episode_index:06d}.mp4")
    return info


def _rows(ep: int, n: int, fps: int, start_index: int, task_index: int, success: bool) -> dict:
    return {
        "index": list(range(start_index, start_index + n)),
        "episode_index": [ep] * n,
        "frame_index": list(range(n)),
        "timestamp": [np.float32(i / fps) for i in range(n)],
        "task_index": [task_index] * n,
        "observation.state": [[math.sin(i / 5), float(ep)] for i in range(n)],
        "action": [[0.1 * i, -0.1 * i] for i in range(n)],
        "next.success": [success and i == n - 1 for i in range(n)],
    }


def _png(rgb: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def write_lerobot(root: Path, episodes: list[tuple[int, str, bool]], *, version: str = "v3.0",
                  fps: int = 10, episodes_per_file: int = 1000,
                  size: tuple[int, int] = (48, 64), images: bool = False) -> Path:
    """A LeRobot dataset with one camera; `episodes` lists (length, task, success).
    `images`: the camera is of dtype "image" (PNG bytes in the data parquet), not mp4.

    Returns:
        `root`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    tasks = sorted({t for _, t, _ in episodes})
    task_index = {t: i for i, t in enumerate(tasks)}
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "info.json").write_text(
        json.dumps(_info(version, fps, len(episodes), size, images), indent=2))
    if not version.startswith("v3"):
        lines = [json.dumps({"episode_index": i, "tasks": [t], "length": n})
                 for i, (n, t, _) in enumerate(episodes)]
        (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
        (root / "meta" / "tasks.jsonl").write_text(
            "\n".join(json.dumps({"task_index": i, "task": t}) for i, t in enumerate(tasks)) + "\n")
        start = 0
        for i, (n, t, ok) in enumerate(episodes):
            data = root / f"data/chunk-000/episode_{i:06d}.parquet"
            data.parent.mkdir(parents=True, exist_ok=True)
            rows = _rows(i, n, fps, start, task_index[t], ok)
            frames = [draw(i, f, n, size) for f in range(n)]
            if images:
                rows[CAMERA] = [_png(f) for f in frames]
            else:
                write_mp4(root / f"videos/chunk-000/{CAMERA}/episode_{i:06d}.mp4", frames, fps)
            pq.write_table(pa.table(rows), data)
            start += n
        return root
    pq.write_table(pa.table({"task_index": list(range(len(tasks))), "task": tasks}),
                   root / "meta" / "tasks.parquet")
    meta_rows: list[dict] = []
    start = 0
    for file_index, lo in enumerate(range(0, len(episodes), episodes_per_file)):
        batch = episodes[lo: lo + episodes_per_file]
        columns: dict[str, list] = {}
        frames: list[np.ndarray] = []
        t0 = 0.0
        for k, (n, t, ok) in enumerate(batch):
            ep = lo + k
            for key, values in _rows(ep, n, fps, start, task_index[t], ok).items():
                columns.setdefault(key, []).extend(values)
            frames.extend(draw(ep, f, n, size) for f in range(n))
            meta_rows.append({
                "episode_index": ep, "tasks": [t], "length": n,
                "data/chunk_index": 0, "data/file_index": file_index,
                "dataset_from_index": start, "dataset_to_index": start + n,
                f"videos/{CAMERA}/chunk_index": 0, f"videos/{CAMERA}/file_index": file_index,
                f"videos/{CAMERA}/from_timestamp": t0, f"videos/{CAMERA}/to_timestamp": t0 + n / fps,
            })
            start += n
            t0 += n / fps
        data = root / f"data/chunk-000/file-{file_index:03d}.parquet"
        data.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), data)
        write_mp4(root / f"videos/{CAMERA}/chunk-000/file-{file_index:03d}.mp4", frames, fps)
    episodes_file = root / "meta/episodes/chunk-000/file-000.parquet"
    episodes_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(meta_rows), episodes_file)
    return root


# ROS 2 message definitions (ros2msg text with dependencies, as rosbag2 stores them)
_HEADER = "MSG: std_msgs/Header\nbuiltin_interfaces/Time stamp\nstring frame_id\n"
_SEP = "=" * 80 + "\n"
IMAGE_MSGDEF = ("std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n"
                "uint8 is_bigendian\nuint32 step\nuint8[] data\n" + _SEP + _HEADER)
COMPRESSED_MSGDEF = "std_msgs/Header header\nstring format\nuint8[] data\n" + _SEP + _HEADER
ODOM_MSGDEF = (
    "std_msgs/Header header\nstring child_frame_id\ngeometry_msgs/PoseWithCovariance pose\n"
    "geometry_msgs/TwistWithCovariance twist\n" + _SEP + _HEADER
    + _SEP + "MSG: geometry_msgs/PoseWithCovariance\nPose pose\nfloat64[36] covariance\n"
    + _SEP + "MSG: geometry_msgs/Pose\nPoint position\nQuaternion orientation\n"
    + _SEP + "MSG: geometry_msgs/Point\nfloat64 x\nfloat64 y\nfloat64 z\n"
    + _SEP + "MSG: geometry_msgs/Quaternion\nfloat64 x\nfloat64 y\nfloat64 z\nfloat64 w\n"
    + _SEP + "MSG: geometry_msgs/TwistWithCovariance\nTwist twist\nfloat64[36] covariance\n"
    + _SEP + "MSG: geometry_msgs/Twist\nVector3 linear\nVector3 angular\n"
    + _SEP + "MSG: geometry_msgs/Vector3\nfloat64 x\nfloat64 y\nfloat64 z\n"
)
BOOL_MSGDEF = "bool data\n"
T0_NS = 1_700_000_000_000_000_000


def write_bag(path: Path, n_frames: int = 30, *, fps: int = 10, compressed: bool = False,
              bump_at: int | None = None, odom: bool = True, seed: int = 0) -> Path:
    """A ROS 2 bag in MCAP: /camera/image (rgb8 or png CompressedImage), /odom at 2x the
    camera rate (driving forward at 0.5 m/s, slowing after a bump), /bumper (Bool) at
    frame `bump_at` when given."""
    from mcap_ros2.writer import Writer

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        writer = Writer(f)
        if compressed:
            img_schema = writer.register_msgdef("sensor_msgs/msg/CompressedImage", COMPRESSED_MSGDEF)
        else:
            img_schema = writer.register_msgdef("sensor_msgs/msg/Image", IMAGE_MSGDEF)
        odom_schema = writer.register_msgdef("nav_msgs/msg/Odometry", ODOM_MSGDEF)
        bool_schema = writer.register_msgdef("std_msgs/msg/Bool", BOOL_MSGDEF)
        dt_ns = int(1e9 / fps)
        for i in range(n_frames):
            t = T0_NS + i * dt_ns
            header = {"stamp": {"sec": t // 10**9, "nanosec": t % 10**9}, "frame_id": "camera"}
            rgb = draw(seed, i, n_frames)
            if compressed:
                buf = io.BytesIO()
                Image.fromarray(rgb).save(buf, format="PNG")
                msg = {"header": header, "format": "png", "data": buf.getvalue()}
            else:
                h, w = rgb.shape[:2]
                msg = {"header": header, "height": h, "width": w, "encoding": "rgb8",
                       "is_bigendian": 0, "step": w * 3, "data": rgb.tobytes()}
            writer.write_message("/camera/image", img_schema, msg, log_time=t, publish_time=t)
            if odom:
                for k in range(2):
                    to = t + k * dt_ns // 2
                    s = (to - T0_NS) / 1e9
                    hit = bump_at is not None and i >= bump_at
                    v = 0.0 if hit else 0.5
                    yaw = 0.05 * s
                    writer.write_message("/odom", odom_schema, {
                        "header": {**header, "frame_id": "odom"}, "child_frame_id": "base_link",
                        "pose": {"pose": {"position": {"x": 0.5 * s, "y": 0.0, "z": 0.0},
                                          "orientation": {"x": 0.0, "y": 0.0,
                                                          "z": math.sin(yaw / 2),
                                                          "w": math.cos(yaw / 2)}},
                                 "covariance": [0.0] * 36},
                        "twist": {"twist": {"linear": {"x": v, "y": 0.0, "z": 0.0},
                                            "angular": {"x": 0.0, "y": 0.0, "z": 0.05}},
                                  "covariance": [0.0] * 36},
                    }, log_time=to, publish_time=to)
            if bump_at is not None and i == bump_at:
                writer.write_message("/bumper", bool_schema, {"data": True},
                                     log_time=t + 1, publish_time=t + 1)
        writer.finish()
    return path


def write_manipulation_run(root: Path, run_id: str, n: int, task: str, plan: list[str],
                           seed: int = 0) -> Path:
    """A run folder: frames/000000.png..., task.txt, plan.txt."""
    run = root / run_id
    (run / "frames").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(draw(seed, i, n)).save(run / "frames" / f"{i:06d}.png")
    (run / "task.txt").write_text(task + "\n")
    (run / "plan.txt").write_text("\n".join(plan) + "\n")
    return run

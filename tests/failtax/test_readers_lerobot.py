"""LeRobot v3.0 and v2.1 datasets, written in the test with pyarrow and PyAV, read by
failtax.sources.lerobot and run through `failtax discover` to a report."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from log_fixtures import CAMERA, draw, write_lerobot
from readers_util import discover, error_kinds

from failtax.config import SourceConfig
from failtax.sources import Episode, EpisodeReadError, SourceError, detect_kind, make_source

EPISODES = [  # (length, task, success)
    (20, "pick up the red cube", False),
    (16, "pick up the red cube", True),
    (24, "open the top drawer", False),
    (18, "open the top drawer", False),
    (12, "stack the cups", True),
]


def scan(path, **kw):
    items = list(make_source(SourceConfig(path=str(path), **kw)).scan())
    return ([i for i in items if isinstance(i, Episode)],
            [i for i in items if isinstance(i, SourceError)])


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_episodes_tasks_and_frames_come_from_the_dataset(tmp_path, version):
    root = write_lerobot(tmp_path / "ds", EPISODES, version=version, episodes_per_file=2)
    assert detect_kind(root) == "lerobot"
    episodes, skipped = scan(root, success_column="next.success", video_sample_fps_hz=0)
    assert [e.episode_id for e in episodes] == ["episode_000000", "episode_000002",
                                                "episode_000003"]
    assert {s.episode_id: s.kind for s in skipped} == {
        "episode_000001": "skipped_outcome", "episode_000004": "skipped_outcome"}
    ep = episodes[1]
    assert ep.kind == "lerobot" and ep.domain == "manipulation"
    assert ep.meta["task"] == "open the top drawer" and ep.meta["camera_key"] == CAMERA
    assert ep.num_frames == 24 and ep.failure_index == 23  # every frame at fps 0, end = failure
    # the decoded frames are the frames written for this episode (H.264 is lossy)
    for i in (0, 12, 23):
        assert np.abs(ep.load_frame(i).astype(int) - draw(2, i, 24)).mean() < 6


def test_labels_csv_picks_failures_and_failure_times(tmp_path):
    root = write_lerobot(tmp_path / "ds", EPISODES, episodes_per_file=3)
    labels = tmp_path / "labels.csv"
    labels.write_text("episode_id,outcome,failure_time_s\n"
                      "episode_000000,success,\n1,drop,0.8\n4,,\n")
    episodes, skipped = scan(root, labels_path=str(labels), video_sample_fps_hz=5)
    by_id = {e.episode_id: e for e in episodes}
    assert set(by_id) == {"episode_000001", "episode_000004"}  # unlisted ones: demonstrations
    assert {s.episode_id: s.kind for s in skipped} == {
        "episode_000000": "skipped_outcome", "episode_000002": "skipped_outcome",
        "episode_000003": "skipped_outcome"}
    dropped = by_id["episode_000001"]
    assert dropped.meta["outcome"] == "drop"
    # 5 Hz from 10 fps, kept up to 1 s after the failure at 0.8 s or the end (1.5 s)
    assert dropped.meta["frame_times_s"][dropped.failure_index] == pytest.approx(0.8, abs=0.01)
    assert dropped.meta["frame_times_s"][-1] == pytest.approx(1.4, abs=0.01)
    assert by_id["episode_000004"].failure_index == by_id["episode_000004"].num_frames - 1


def test_options_are_checked_against_the_dataset(tmp_path):
    root = write_lerobot(tmp_path / "ds", EPISODES[:2])
    with pytest.raises(ValueError, match="success_column.*labels_path"):
        make_source(SourceConfig(path=str(root)))
    with pytest.raises(ValueError, match="cameras: observation.images.front"):
        make_source(SourceConfig(path=str(root), camera_key="wrist", success_column="next.success"))
    with pytest.raises(ValueError, match="features:"):
        make_source(SourceConfig(path=str(root), success_column="is_success"))


def test_bad_rows_a_broken_data_file_and_a_truncated_video_cost_their_episodes(tmp_path):
    root = write_lerobot(tmp_path / "ds", EPISODES, episodes_per_file=2)
    # file-000 (episodes 0, 1): a timestamp of episode 0 goes missing
    data = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(data).to_pydict()
    table["timestamp"][5] = None
    pq.write_table(pa.table(table), data)
    # file-001 (episodes 2, 3): the video breaks off in episode 3
    video = root / f"videos/{CAMERA}/chunk-000/file-001.mp4"
    video.write_bytes(video.read_bytes()[: int(video.stat().st_size * 0.6)])
    # file-002 (episode 4): not parquet at all
    (root / "data/chunk-000/file-002.parquet").write_bytes(b"PAR1 garbage")
    episodes, skipped = scan(root, success_column="next.success")
    kinds = {s.episode_id: s.kind for s in skipped}
    assert kinds["episode_000000"] == "bad_rows" and kinds["episode_000004"] == "bad_rows"
    assert "timestamp or frame_index missing" in next(
        s.message for s in skipped if s.episode_id == "episode_000000")
    assert "unreadable" in next(s.message for s in skipped if s.episode_id == "episode_000004")
    by_id = {e.episode_id: e for e in episodes}
    by_id["episode_000002"].load_frame(by_id["episode_000002"].num_frames - 1)
    late = by_id["episode_000003"]
    with pytest.raises(EpisodeReadError, match="truncated|decode"):
        late.load_frame(late.num_frames - 1)


def test_discover_runs_to_a_report_and_records_each_bad_episode(tmp_path):
    root = write_lerobot(tmp_path / "ds", EPISODES, episodes_per_file=2)
    video = root / f"videos/{CAMERA}/chunk-000/file-001.mp4"
    video.write_bytes(video.read_bytes()[: int(video.stat().st_size * 0.6)])
    out = discover(root, tmp_path / "run", "source.success_column=next.success")
    assert [k["episode_id"] for k in out["keyframes"]] == ["episode_000000", "episode_000002"]
    assert len(out["explanations"]) == 2 and len(out["assignments"]) == 2
    kinds = error_kinds(out["errors"])
    assert kinds["episode_000003"] in ("unreadable_frame",)
    assert kinds["episode_000001"] == "skipped_outcome"
    doc = json.loads((tmp_path / "run" / "taxonomy.json").read_text())
    assert doc["modes"]


def test_one_episode_is_found_without_a_full_scan(tmp_path, monkeypatch):
    root = write_lerobot(tmp_path / "ds", EPISODES, episodes_per_file=2)
    source = make_source(SourceConfig(path=str(root), success_column="next.success"))
    read = []
    real = source._data_columns
    monkeypatch.setattr(source, "_data_columns", lambda p: read.append(p.name) or real(p))
    ep = source.episode("episode_000002")
    assert ep.episode_id == "episode_000002" and ep.meta["task"] == "open the top drawer"
    assert read == ["file-001.parquet"]  # only its own data file
    assert source.episode("episode_000099") is None


def test_image_cameras_are_read_from_the_data_parquet(tmp_path):
    root = write_lerobot(tmp_path / "ds", EPISODES[:3], version="v2.1", images=True)
    assert not (root / "videos").exists()
    episodes, _ = scan(root, success_column="next.success", video_sample_fps_hz=5)
    ep = episodes[1]
    assert ep.episode_id == "episode_000002" and ep.num_frames == 12
    assert (ep.load_frame(11) == draw(2, 22, 24)).all()  # lossless, the frame at 2.2 s

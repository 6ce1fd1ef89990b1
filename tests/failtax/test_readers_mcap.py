"""ROS 2 bags in MCAP, written in the test with the mcap-ros2 writer (CDR), read by
failtax.sources.rosbag and run through `failtax discover` to a report."""

from __future__ import annotations

import numpy as np
import pytest
from log_fixtures import draw, write_bag
from readers_util import discover, error_kinds

from failtax.config import SourceConfig
from failtax.sources import Episode, SourceError, detect_kind, make_source


def scan(path, **kw):
    items = list(make_source(SourceConfig(path=str(path), **kw)).scan())
    return ([i for i in items if isinstance(i, Episode)],
            [i for i in items if isinstance(i, SourceError)])


@pytest.mark.parametrize("compressed", [False, True])
def test_images_odometry_and_the_failure_topic(tmp_path, compressed):
    write_bag(tmp_path / "bags" / "run_a.mcap", 30, compressed=compressed, bump_at=20)
    assert detect_kind(tmp_path / "bags") == "mcap"
    [ep], errors = scan(tmp_path / "bags", failure_topic="/bumper", video_sample_fps_hz=0)
    assert errors == [] and ep.kind == "mcap" and ep.domain == "navigation"
    # every frame up to 1 s after the bump at 2.0 s; the failure at the bump's frame
    assert ep.num_frames == 30 and ep.failure_index == 20
    assert ep.meta["frame_times_s"][20] == pytest.approx(2.0)
    assert np.abs(ep.load_frame(20).astype(int) - draw(0, 20, 30)).max() == 0  # lossless
    # odometry → one step per frame: pose, heading and velocity
    step = ep.step_record(10)
    assert step["x_m"] == pytest.approx(0.5) and step["v_mps"] == pytest.approx(0.5)
    assert step["yaw_rad"] == pytest.approx(0.05, abs=1e-6)
    assert ep.step_record(25)["v_mps"] == 0.0


def test_a_time_list_gives_failures_and_missing_topics_are_per_bag_errors(tmp_path):
    bags = tmp_path / "bags"
    write_bag(bags / "a.mcap", 30)
    write_bag(bags / "b.mcap", 30, odom=False)
    cut = write_bag(bags / "c.mcap", 30)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # recording cut off
    (bags / "d.mcap").write_bytes(b"not an mcap file")
    labels = tmp_path / "labels.csv"
    labels.write_text("episode_id,failure_time_s\na,1.5\n")
    episodes, errors = scan(bags, labels_path=str(labels), video_sample_fps_hz=0)
    [a, b] = episodes
    assert a.failure_index == 15 and a.num_frames == 26  # to 1 s after 1.5 s
    assert b.failure_index == b.num_frames - 1 and b.steps == []  # no odometry: no steps
    assert {e.episode_id: e.kind for e in errors} == {"c": "unreadable_bag", "d": "unreadable_bag"}
    episodes, errors = scan(bags, failure_topic="/estop")
    assert episodes == []
    missing = [e for e in errors if e.kind == "missing_topic"]
    assert {e.episode_id for e in missing} == {"a", "b"}
    assert "no failure topic /estop" in missing[0].message and "/camera/image" in missing[0].message
    _, errors = scan(bags / "a.mcap", image_topic="/front/image")
    assert errors[0].kind == "missing_topic" and "/front/image" in errors[0].message


def test_discover_runs_to_a_report_and_records_each_bad_bag(tmp_path):
    bags = tmp_path / "bags"
    for i, bump in enumerate((12, 18, 25)):
        write_bag(bags / f"run_{i}.mcap", 30, bump_at=bump, seed=i)
    write_bag(bags / "no_bumper.mcap", 30)
    out = discover(bags, tmp_path / "run", "source.failure_topic=/bumper")
    assert sorted(k["episode_id"] for k in out["keyframes"]) == ["run_0", "run_1", "run_2"]
    assert len(out["explanations"]) == 3 and len(out["assignments"]) == 3
    assert error_kinds(out["errors"]) == {"no_bumper": "missing_topic"}
    # the odometry reached the explanation: the robot's logged motion, no ground truth
    assert all("motion was not logged" not in e["trajectory"] for e in out["explanations"])


def test_one_bag_is_found_by_id(tmp_path):
    write_bag(tmp_path / "a.mcap", 10)
    write_bag(tmp_path / "b.mcap", 12)
    source = make_source(SourceConfig(path=str(tmp_path)))
    assert source.episode("b").num_frames == 6 and source.episode("zz") is None


def test_an_option_of_another_kind_is_a_clear_error(tmp_path):
    write_bag(tmp_path / "a.mcap", 10)
    with pytest.raises(ValueError, match="source.success_column is for lerobot"):
        make_source(SourceConfig(path=str(tmp_path), success_column="next.success"))

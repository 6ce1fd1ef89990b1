"""Dashcam video folders (failure from a labels CSV or the end of the clip) and
manipulation runs (images + task + executed plan), through `failtax discover`."""

from __future__ import annotations

import pytest
from log_fixtures import draw, write_manipulation_run, write_mp4
from readers_util import discover, error_kinds

from failtax.config import SourceConfig
from failtax.sources import Episode, SourceError, detect_kind, make_source


def scan(path, **kw):
    items = list(make_source(SourceConfig(path=str(path), **kw)).scan())
    return ([i for i in items if isinstance(i, Episode)],
            [i for i in items if isinstance(i, SourceError)])


def clips(folder, n=4, frames=40, fps=10):
    for i in range(n):
        write_mp4(folder / f"clip_{i}.mp4", [draw(i, f, frames) for f in range(frames)], fps)
    return folder


def test_dashcam_failure_time_from_labels_or_the_end_of_the_clip(tmp_path):
    folder = clips(tmp_path / "clips")
    labels = tmp_path / "crashes.csv"
    labels.write_text("episode_id,outcome,failure_time_s,failure_frame\n"
                      "clip_0.mp4,crash,2.0,\nclip_1,success,,\nclip_2,,,30\n")
    episodes, errors = scan(folder, kind="dashcam", labels_path=str(labels),
                            video_sample_fps_hz=5)
    by_id = {e.episode_id: e for e in episodes}
    assert {e.episode_id: e.kind for e in errors} == {"clip_1": "skipped_outcome"}
    c0 = by_id["clip_0"]
    assert c0.kind == "dashcam" and c0.domain == "driving" and c0.meta["outcome"] == "crash"
    assert c0.meta["frame_times_s"][c0.failure_index] == pytest.approx(2.0)
    assert c0.meta["frame_times_s"][-1] == pytest.approx(3.0)  # 1 s after the crash
    assert by_id["clip_2"].meta["frame_times_s"][by_id["clip_2"].failure_index] == pytest.approx(3.0)
    c3 = by_id["clip_3"]  # unlabelled: the crash is the end of the clip
    assert c3.failure_index == c3.num_frames - 1 and c3.meta["frame_times_s"][-1] == pytest.approx(3.8)
    assert c3.load_frame(c3.failure_index).shape == (48, 64, 3)


def test_a_truncated_clip_is_an_episode_error_and_the_run_goes_on(tmp_path):
    folder = clips(tmp_path / "clips")
    cut = folder / "clip_3.mp4"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (folder / "clip_9.mp4").write_bytes(b"\x00" * 64)
    assert detect_kind(folder) == "video"
    out = discover(folder, tmp_path / "run", "source.kind=dashcam")
    assert sorted(k["episode_id"] for k in out["keyframes"]) == ["clip_0", "clip_1", "clip_2"]
    kinds = error_kinds(out["errors"])
    assert kinds == {"clip_3": "unreadable_frame", "clip_9": "unreadable_video"}
    assert "truncated" in next(r["message"] for r in out["errors"] if r["episode_id"] == "clip_3")


def test_manipulation_runs_carry_task_and_plan(tmp_path):
    runs = tmp_path / "runs"
    write_manipulation_run(runs, "r1", 8, "put the red cup in the sink",
                           ["move_to(red_cup)", "pick(red_cup)", "move_to(sink)", "place(sink)"])
    write_manipulation_run(runs, "r2", 6, "open the drawer", ["move_to(handle)", "pull(handle)"])
    (runs / "r3").mkdir()
    (runs / "r3" / "task.txt").write_text("wipe the table\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("episode_id,failure_frame\nr1,5\n")
    assert detect_kind(runs) == "manipulation"
    episodes, errors = scan(runs, labels_path=str(labels))
    r1, r2 = episodes
    assert r1.domain == "manipulation" and r1.failure_index == 5 and r2.failure_index == 5
    assert r1.meta["task"] == "put the red cup in the sink"
    assert r1.meta["plan"][1] == "pick(red_cup)"
    assert [(e.episode_id, e.kind) for e in errors] == [("r3", "no_frames")]


def test_manipulation_runs_discover_to_a_report(tmp_path):
    runs = tmp_path / "runs"
    for i in range(3):
        write_manipulation_run(runs, f"run_{i}", 6 + i, "stack the blocks",
                               ["pick(block_a)", "place(block_b)"], seed=i)
    (runs / "run_9").mkdir()
    out = discover(runs, tmp_path / "run")
    assert len(out["explanations"]) == 3
    assert error_kinds(out["errors"]) == {"run_9": "no_frames"}


def test_a_bad_labels_file_is_a_clear_early_error(tmp_path):
    folder = clips(tmp_path / "clips", n=1, frames=10)
    bad = tmp_path / "labels.csv"
    bad.write_text("clip,time\nclip_0,2\n")
    with pytest.raises(ValueError, match="needs an episode_id column"):
        make_source(SourceConfig(path=str(folder), labels_path=str(bad)))
    bad.write_text("episode_id,failure_time_s\nclip_0,two seconds\n")
    with pytest.raises(ValueError, match="labels.csv:2: failure_time_s must be seconds"):
        make_source(SourceConfig(path=str(folder), labels_path=str(bad)))
    with pytest.raises(ValueError, match="does not exist"):
        make_source(SourceConfig(path=str(folder), labels_path=str(tmp_path / "nope.csv")))

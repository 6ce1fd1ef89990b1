"""The episode format's one module: typed records, the atomic writer, the checked reader."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from common.episode import (
    GROUND_TRUTH_FILE,
    CameraMeta,
    CollisionTruth,
    EpisodeFormatError,
    EpisodeMeta,
    GroundTruth,
    StepRecord,
    episode_frames,
    frame_name,
    read_ground_truth,
    read_meta,
    read_steps,
    resolve_in_episode,
    write_episode,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "EPISODE_FORMAT.md"


def _episode(n_steps: int = 4, stride: int = 2, eid: str = "ep-1", **meta_kw):
    steps = [StepRecord(step=k, t_s=0.1 * k, x_m=0.1 * k, y_m=0.0, yaw_rad=0.0, v_mps=1.0,
                        w_radps=0.0, action=[1.0, 0.0] if k < n_steps - 1 else None,
                        goal=[5.0, 0.0],
                        frame=frame_name(k) if k % stride == 0 or k == n_steps - 1 else None)
             for k in range(n_steps)]
    frames = {s.step: np.full((6, 8, 3), 10 * s.step, np.uint8) for s in steps if s.frame}
    channels = {k: {"depth": np.full((6, 8), 1.5, np.float32),
                    "semantic": np.full((6, 8), 3, np.int64)} for k in frames}
    meta = EpisodeMeta(episode_id=eid, dt_s=0.1, num_steps=n_steps, frame_stride=stride,
                       camera=CameraMeta(fov_deg=90.0, height_m=0.5, width=8, height=6),
                       outcome="collision", failure_step=n_steps - 1,
                       channels=["depth", "semantic"], **meta_kw)
    return meta, steps, frames, channels


def test_write_then_read_round_trips(tmp_path):
    meta, steps, frames, channels = _episode(n_steps=5, stride=2)
    truth = GroundTruth(outcome="collision", cause_class="glass", collision=CollisionTruth(
        object_id=3, object_class="glass_door", material="glass", contact_point=[1.0, 0.0],
        step=4, part="leaf"))
    folder = write_episode(tmp_path, meta, steps, frames, channels=channels, ground_truth=truth)
    assert folder == tmp_path / "ep-1" and not (tmp_path / "ep-1.tmp").exists()
    read = read_meta(folder)
    assert read.created_at is not None  # stamped by the writer
    assert read.model_copy(update={"created_at": None}) == meta
    assert read_steps(folder) == steps
    found = episode_frames(folder, read_steps(folder))
    assert [(f.path.name, f.step) for f in found] == [
        ("000000.png", 0), ("000002.png", 2), ("000004.png", 4)]
    with np.load(found[1].channels_path) as npz:
        assert npz["depth"].dtype == np.float16 and npz["semantic"].dtype == np.uint8
    assert read_ground_truth(folder) == truth
    # on disk: the documented keys, sorted
    raw = json.loads((folder / "meta.json").read_text())
    assert list(raw) == sorted(raw) and set(raw) == set(EpisodeMeta.model_fields)


def test_writer_refuses_records_that_disagree(tmp_path):
    meta, steps, frames, channels = _episode()
    with pytest.raises(ValueError, match="num_steps"):
        write_episode(tmp_path, meta.model_copy(update={"num_steps": 9}), steps, frames)
    with pytest.raises(ValueError, match="names frame"):
        write_episode(tmp_path, meta, steps, {k: v for k, v in frames.items() if k})
    with pytest.raises(ValueError, match="not listed in meta.channels"):
        write_episode(tmp_path, meta.model_copy(update={"channels": ["depth"]}), steps, frames,
                      channels=channels)
    for bad_id in ("../escape", "a/b", "half.tmp", ".."):
        with pytest.raises(ValueError, match="bad episode id"):
            _episode(eid=bad_id)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("version", "found"), [(2, "schema_version 2"),
                                                (None, "no schema_version")])
def test_reader_names_the_schema_version_found_and_supported(tmp_path, version, found):
    folder = write_episode(tmp_path, *_episode()[:3])
    raw = json.loads((folder / "meta.json").read_text())
    raw["schema_version"] = version
    (folder / "meta.json").write_text(json.dumps(raw))
    with pytest.raises(EpisodeFormatError) as err:
        read_meta(folder)
    assert err.value.kind == "unsupported_schema"
    assert found in str(err.value) and "supports schema_version 1" in str(err.value)


def test_reader_names_a_missing_or_mistyped_key(tmp_path):
    folder = write_episode(tmp_path, *_episode()[:3])
    raw = json.loads((folder / "meta.json").read_text())
    del raw["camera"]["fov_deg"]
    raw["outcome"] = "exploded"
    (folder / "meta.json").write_text(json.dumps(raw))
    with pytest.raises(EpisodeFormatError) as err:
        read_meta(folder)
    assert err.value.kind == "bad_meta"
    assert "camera.fov_deg" in err.value.message and "outcome" in err.value.message
    (folder / "steps.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(EpisodeFormatError, match="line 1: t_s") as err:
        read_steps(folder)
    assert err.value.kind == "bad_steps"


def test_paths_must_stay_inside_the_episode(tmp_path):
    folder = write_episode(tmp_path, *_episode()[:3])
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    assert resolve_in_episode(folder, "frames/000000.png") == folder / "frames" / "000000.png"
    for rel in ("../outside.png", str(outside), "frames/../../outside.png", "/etc/passwd"):
        with pytest.raises(EpisodeFormatError, match="absolute or climbs out") as err:
            resolve_in_episode(folder, rel)
        assert err.value.kind == "unsafe_path"
    (folder / "frames" / "escape.png").symlink_to(outside)
    with pytest.raises(EpisodeFormatError, match="outside the episode folder"):
        resolve_in_episode(folder, "frames/escape.png")
    # A link that stays inside the episode is fine.
    (folder / "frames" / "again.png").symlink_to(folder / "frames" / "000000.png")
    assert resolve_in_episode(folder, "frames/again.png").is_file()


def test_channels_link_out_of_the_episode_is_refused(tmp_path):
    meta, steps, frames, channels = _episode()
    folder = write_episode(tmp_path, meta, steps, frames, channels=channels)
    elsewhere = tmp_path / "elsewhere.npz"
    (folder / "channels" / "000000.npz").rename(elsewhere)
    (folder / "channels" / "000000.npz").symlink_to(elsewhere)
    with pytest.raises(EpisodeFormatError, match="outside the episode folder"):
        episode_frames(folder, read_steps(folder))


def test_frames_without_a_step_log_are_listed_from_the_frames_folder(tmp_path):
    folder = write_episode(tmp_path, *_episode(n_steps=3, stride=1)[:3])
    (folder / "steps.jsonl").unlink()
    assert read_steps(folder) == []
    found = episode_frames(folder, [])
    assert [(f.path.name, f.step, f.channels_path) for f in found] == [
        ("000000.png", None, None), ("000001.png", None, None), ("000002.png", None, None)]


def test_ground_truth_only_through_its_own_function(tmp_path):
    folder = write_episode(tmp_path, *_episode()[:3])
    assert read_ground_truth(folder) is None
    (folder / GROUND_TRUTH_FILE).write_text("{oops")
    with pytest.raises(EpisodeFormatError) as err:
        read_ground_truth(folder)
    assert err.value.kind == "bad_ground_truth"
    read_meta(folder), episode_frames(folder, read_steps(folder))  # unaffected by it


def test_the_format_document_lists_the_model_keys():
    text = DOC.read_text()
    meta_section = text.split("## meta.json", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", meta_section, re.MULTILINE))
    assert documented == set(EpisodeMeta.model_fields)
    steps_section = text.split("## steps.jsonl", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r'"(\w+)":', steps_section))
    assert documented == set(StepRecord.model_fields)

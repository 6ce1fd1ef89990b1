"""Episode files follow docs/EPISODE_FORMAT.md and are written atomically."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sim_scenes import GLASS

from common import read_jsonl
from sim.config import SimConfig
from sim.env import IndoorNavEnv
from sim.recorder import EpisodeRecorder, RecordEpisodes

META_KEYS = {"schema_version", "episode_id", "source", "robot", "env_id", "building_id",
             "building_family", "seed", "dt_s", "frame_stride", "num_steps", "camera", "outcome",
             "failure_step", "channels", "semantic_classes", "created_at"}
STEP_KEYS = {"step", "t_s", "x_m", "y_m", "yaw_rad", "v_mps", "w_radps", "action", "goal",
             "frame"}


def _channels_config() -> SimConfig:
    return SimConfig.model_validate({"observation": {"depth": "info", "semantic": "info",
                                                     "instance": "info"}})


def test_collision_episode_has_every_file_and_key(tmp_path, room_with):
    env = RecordEpisodes(IndoorNavEnv(_channels_config()), tmp_path, robot="test-robot",
                         episode_id_fn=lambda seed, n: f"glass-{n}")
    env.reset(seed=4, options={"building": room_with(GLASS), "start_xy": [2.0, 2.0],
                               "start_yaw": 0.0, "goal_xy": [7.5, 2.0]})
    while True:
        _, _, term, trunc, info = env.step(np.array([1.5, 0.0]))
        if term or trunc:
            break
    ep = tmp_path / "glass-0"
    assert env.written == [ep]
    meta = json.loads((ep / "meta.json").read_text())
    assert set(meta) == META_KEYS
    assert meta["outcome"] == "collision" and meta["episode_id"] == "glass-0"
    assert meta["channels"] == ["depth", "instance", "semantic"]
    assert meta["semantic_classes"]["5"] == "glass_partition"
    assert meta["camera"] == {"fov_deg": 60.0, "height_m": 0.6, "width": 64, "height": 64,
                              "pitch_deg": -3.0}
    steps = read_jsonl(ep / "steps.jsonl")
    assert len(steps) == meta["num_steps"] == info["step"] + 1
    assert all(set(s) == STEP_KEYS for s in steps)
    assert steps[-1]["action"] is None and steps[0]["action"] == [1.5, 0.0]
    assert [s["step"] for s in steps] == list(range(len(steps)))
    assert meta["failure_step"] == len(steps) - 1
    truth = json.loads((ep / "ground_truth.json").read_text())
    assert truth["cause_class"] == "glass" and truth["collision"]["object_id"] == 5
    assert truth["collision"]["step"] == meta["failure_step"]
    frame = Image.open(ep / steps[3]["frame"])
    assert frame.size == (64, 64) and frame.mode == "RGB"
    arrays = np.load(ep / "channels" / "000003.npz")
    assert arrays["depth"].dtype == np.float16 and arrays["semantic"].dtype == np.uint8
    assert arrays["instance"].dtype == np.uint16 and arrays["depth"].shape == (64, 64)


def test_frame_stride_keeps_terminal_frame(tmp_path):
    env = IndoorNavEnv(SimConfig.model_validate({"episode": {"time_limit_s": 1.05}}))
    rec = EpisodeRecorder(tmp_path, frame_stride=4, channels=())
    obs, info = env.reset(seed=0)
    rec.start("ep", obs, info, seed=0, config=env.config)
    while True:
        obs, _, term, trunc, info = env.step(np.zeros(2))
        rec.step(np.zeros(2), obs, info)
        if term or trunc:
            break
    ep = rec.finish()
    steps = read_jsonl(ep / "steps.jsonl")
    frames = [s["frame"] for s in steps if s["frame"]]
    assert frames == [f"frames/{k:06d}.png" for k in (0, 4, 8, 11)]
    assert sorted(p.name for p in (ep / "frames").iterdir()) == [f.split("/")[1] for f in frames]
    meta = json.loads((ep / "meta.json").read_text())
    assert meta["outcome"] == "timeout" and meta["failure_step"] is None
    assert meta["channels"] == [] and meta["semantic_classes"] == {}
    assert not (ep / "channels").exists()


def test_crash_while_writing_leaves_no_episode(tmp_path, monkeypatch):
    env = IndoorNavEnv(_channels_config())
    rec = EpisodeRecorder(tmp_path)
    obs, info = env.reset(seed=1)
    rec.start("ep-crash", obs, info, seed=1, config=env.config)
    obs, _, _, _, info = env.step(np.zeros(2))
    rec.step(np.zeros(2), obs, info)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError):
        rec.finish()
    assert list(tmp_path.iterdir()) == []  # neither ep-crash/ nor ep-crash.tmp/
    assert not rec.exists("ep-crash")


def test_tmp_folder_is_not_an_episode_and_reset_discards_partial(tmp_path):
    (tmp_path / "half.tmp").mkdir()
    (tmp_path / "half.tmp" / "steps.jsonl").write_text("{}\n")
    rec = EpisodeRecorder(tmp_path)
    assert not rec.exists("half") and not rec.exists("half.tmp")
    with pytest.raises(ValueError, match=".tmp"):
        rec.start("x.tmp", {}, {}, seed=0, config=SimConfig())
    env = RecordEpisodes(IndoorNavEnv(), tmp_path)
    env.reset(seed=0)
    env.step(np.zeros(2))
    env.reset(seed=1)  # the first episode never ended: nothing written
    assert env.written == [] and sorted(p.name for p in tmp_path.iterdir()) == ["half.tmp"]


def test_existing_episode_is_not_overwritten(tmp_path):
    (tmp_path / "ep").mkdir()
    (tmp_path / "ep" / "meta.json").write_text("{}")
    env = IndoorNavEnv(SimConfig.model_validate({"episode": {"time_limit_s": 0.2}}))
    rec = EpisodeRecorder(tmp_path)
    obs, info = env.reset(seed=0)
    rec.start("ep", obs, info, seed=0, config=env.config)
    obs, _, _, _, info = env.step(np.zeros(2))
    rec.step(np.zeros(2), obs, info)
    with pytest.raises(FileExistsError):
        rec.finish()
    assert (tmp_path / "ep" / "meta.json").read_text() == "{}"

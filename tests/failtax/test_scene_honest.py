"""Robot-observable descriptions: no class names by default, the depth-miss cue for a
collision the depth sensor did not see, and a privileged run says so."""

from __future__ import annotations

import json

import numpy as np
import pytest

from failtax.config import SceneConfig, SourceConfig, load_config
from failtax.pipeline import Run
from failtax.scene import SceneDescriber, summarise_facts
from failtax.sources import make_source
from failtax.types import Keyframes

CLASS_WORDS = ("glass", "door", "pole", "box", "wall", "partition")


def _episode(tmp_path, factory, hazard, monkeypatch=None, honest_depth=False):
    if honest_depth:  # a realistic depth sensor: the ray passes the pane, sees the wall
        render = factory.__globals__["render"]

        def honest(distance_m, hz, rng):
            rgb, chans = render(distance_m, hz, rng)
            depth = chans["depth"].astype(np.float32)
            depth[chans["instance"] == factory.__globals__["HAZARD_INSTANCE"]] = (
                factory.__globals__["FAR_WALL_M"]
            )
            return rgb, {**chans, "depth": depth.astype(np.float16)}

        monkeypatch.setitem(factory.__globals__, "render", honest)
    factory(tmp_path, f"ep-{hazard}", hazard=hazard, n_steps=12)
    return next(make_source(SourceConfig(path=str(tmp_path))).scan())


def _facts(ep, cfg):
    kf = Keyframes(ep.episode_id, [0, 4, 8, ep.failure_index], ep.failure_index, "test")
    scenes = SceneDescriber(cfg).describe(ep, kf)
    return scenes, summarise_facts(ep, scenes, cfg)


def test_defaults_are_robot_observable():
    cfg = SceneConfig()
    assert cfg.class_names is False and set(cfg.channels) == {"depth", "rgb"}
    assert cfg.privileged == []
    pipeline = load_config(None)
    assert pipeline.scene.privileged == []


@pytest.mark.parametrize("hazard", ["glass_door", "pole", "box", "plain_wall"])
def test_default_descriptions_have_no_class_names_or_ids(tmp_path, episode_factory, hazard):
    ep = _episode(tmp_path, episode_factory, hazard)
    scenes, (trajectory, reason) = _facts(ep, SceneConfig())
    text = " ".join([trajectory, reason, *(s.to_text() for s in scenes)]).lower()
    for word in CLASS_WORDS:
        assert word not in text, (word, text)
    assert "object 5" not in reason and "obstacle" in reason  # no simulator object ids


def test_glass_collision_the_depth_sensor_missed(tmp_path, episode_factory, monkeypatch):
    ep = _episode(tmp_path, episode_factory, "glass_door", monkeypatch, honest_depth=True)
    _, (trajectory, reason) = _facts(ep, SceneConfig())
    assert reason == "Collision with something the depth sensor did not see."
    assert "Depth reported free space ahead at contact." in trajectory  # how it was met
    assert "depth reported free space 6.0 m ahead" in trajectory  # the measurement
    assert "glass" not in (trajectory + reason).lower()


def test_privileged_run_is_labelled(tmp_path, tiny_episodes):
    summaries = {}
    for name, overrides in {
        "robot": {},
        "sim": {"scene.class_names": True,
                "scene.channels": ["depth", "semantic", "instance", "rgb"]},
    }.items():
        cfg = load_config(None, {"stages": ["downsample", "reason"], **overrides})
        summaries[name] = Run(cfg, tmp_path / name, episodes=tiny_episodes,
                              progress=False).run()
        logged = (tmp_path / name / "stages.jsonl").read_text()
        assert ("privileged_simulator_channels_used" in logged) == (name == "sim")
    assert "privileged_simulator_channels_used" not in summaries["robot"]["stages"]["reason"]
    assert summaries["sim"]["stages"]["reason"]["privileged_simulator_channels_used"] == [
        "semantic", "instance", "class_names"]


def test_a_declared_detector_channel_brings_class_names(tmp_path, episode_factory):
    folder = episode_factory(tmp_path, "ep-det", hazard="pole", n_steps=12)
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["channels"] = ["depth", "detector"]  # a real detector's class image, no sim labels
    meta_path.write_text(json.dumps(meta))
    for npz in (folder / "channels").glob("*.npz"):
        with np.load(npz) as f:
            arrays = {"depth": f["depth"], "detector": f["semantic"]}
        np.savez_compressed(npz, **arrays)
    ep = next(make_source(SourceConfig(path=str(tmp_path))).scan())
    scenes, (_, reason) = _facts(ep, SceneConfig())
    assert "pole" in reason
    assert "pole" in " ".join(s.to_text() for s in scenes)


def _contact(free_space, objects):
    from types import SimpleNamespace

    from failtax.scene import SceneFrame

    frame = SceneFrame(frame_index=9, step=9, t_s=0.9, robot="moving", objects=objects,
                       free_space=free_space, channels_used=["depth", "rgb"], v_mps=0.5)
    episode = SimpleNamespace(meta={"outcome": "collision"}, failure_index=9, steps=[])
    return " ".join(summarise_facts(episode, [frame], SceneConfig())[::-1])  # reason, then the rest


def test_a_side_contact_is_not_a_depth_miss():
    """Free space ahead but an obstacle 0.2 m to the side: the robot clipped what depth saw
    (a corner, a narrow passage), not something invisible to depth."""
    from failtax.scene import ObjectObs

    post = ObjectObs(object_id=3, label="object 3", distance_m=0.2, bearing_deg=-40.0, width_deg=20.0,
                     width_m=0.1, height_m=1.0, top_above_floor_m=1.0, image_fraction=0.1,
                     shape="thin vertical", vertical="spans camera height", side="right")
    clipped = _contact({"left": 2.0, "ahead": 3.0, "right": 0.2}, [post])
    assert clipped.startswith("Collision with a thin vertical obstacle") and "right side" in clipped
    missed = _contact({"left": 2.0, "ahead": 3.0, "right": 1.5}, [])
    assert missed.startswith("Collision with something the depth sensor did not see")

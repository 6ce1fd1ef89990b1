"""Scene descriptions from channels, and the facts summary."""

from __future__ import annotations

from failtax.config import SceneConfig, SourceConfig
from failtax.scene import SceneDescriber, summarise_facts
from failtax.sources import make_source
from failtax.types import Keyframes

# The simulator's privileged inputs (opt-in): the tests that check class names use them.
PRIVILEGED = SceneConfig(class_names=True, channels=["depth", "semantic", "instance", "rgb"])


def episode(tmp_path, factory, hazard, **kw):
    factory(tmp_path, f"ep-{hazard}", hazard=hazard, **kw)
    return next(make_source(SourceConfig(path=str(tmp_path))).scan())


def describe(ep, cfg=None, indices=None):
    cfg = cfg or PRIVILEGED
    kf = Keyframes(
        ep.episode_id,
        indices or [0, ep.num_frames // 2, ep.failure_index],
        ep.failure_index,
        "test",
    )
    return SceneDescriber(cfg).describe(ep, kf)


def test_objects_have_distance_bearing_and_shape(tmp_path, episode_factory):
    ep = episode(tmp_path, episode_factory, "pole", n_steps=12)
    scenes = describe(ep)
    pole = next(o for o in scenes[0].objects if o.object_id == 5)
    # the builder starts the pole 0.15 + 0.5*0.2*11 = 1.25 m ahead, 4° to the left
    assert abs(pole.distance_m - 1.25) < 0.05
    assert 1.0 < pole.bearing_deg < 8.0 and pole.side == "ahead"
    assert pole.shape == "thin vertical" and pole.label == "pole (object 5)"
    last = next(o for o in scenes[-1].objects if o.object_id == 5)
    assert last.motion.startswith("closing in") and last.distance_m < 0.2
    assert "moving forward at 0.50 m/s" in scenes[-1].to_text()


def test_low_object_is_described_as_low(tmp_path, episode_factory):
    ep = episode(tmp_path, episode_factory, "box", n_steps=12)
    box = next(o for o in describe(ep)[0].objects if o.object_id == 5)
    assert box.vertical.startswith("low") and "below camera height" in box.vertical
    assert abs(box.top_above_floor_m - 0.3) < 0.15


def test_geometry_only_has_no_class_names(tmp_path, episode_factory):
    ep = episode(tmp_path, episode_factory, "glass_door", n_steps=10)
    cfg = PRIVILEGED.model_copy(update={"class_names": False})
    text = " ".join(s.to_text() for s in describe(ep, cfg))
    assert "object 5" in text
    for name in ("glass", "door", "wall", "floor", "pole"):
        assert name not in text


def test_depth_only_gives_free_space_and_depth_segments(tmp_path, episode_factory):
    ep = episode(tmp_path, episode_factory, "pole", n_steps=10)
    [scene] = describe(ep, SceneConfig(channels=["depth"]), indices=[ep.failure_index])
    assert scene.free_space["ahead"] < 0.3
    # objects segmented from depth alone (the camera height is in meta.camera), named by id
    nearest = scene.objects[0]
    assert nearest.shape == "thin vertical" and nearest.side == "ahead"
    assert nearest.label.startswith("object ")


def test_facts_name_the_hazard_and_the_approach(tmp_path, episode_factory):
    ep = episode(tmp_path, episode_factory, "glass_door", n_steps=12)
    cfg = PRIVILEGED
    trajectory, reason = summarise_facts(ep, describe(ep, cfg), cfg)
    assert "drove 1.1 m" in trajectory and "closing in from" in trajectory  # numbers go here
    assert reason.startswith("Collision with the glass door (wide") and reason.endswith(").")
    assert "head-on" in trajectory and "head-on" not in reason  # how it was met: trajectory
    assert "object 5" not in reason and " m " not in reason  # ids and distances differ across logs
    both = cfg.model_copy(update={"facts_reason": "hazard_and_approach"})
    _, reason = summarise_facts(ep, describe(ep, both), both)
    assert reason.startswith("Collision with the glass door (wide") and "head-on" in reason


def test_facts_geometry_only_describe_the_shape(tmp_path, episode_factory):
    ep = episode(tmp_path, episode_factory, "box", n_steps=12)
    cfg = SceneConfig(class_names=False)
    _, reason = summarise_facts(ep, describe(ep, cfg), cfg)
    assert reason.startswith("Collision with a low") and "below camera height" in reason
    assert "box" not in reason


def test_facts_without_channels_say_so(tmp_path, episode_factory):
    ep = episode(tmp_path, episode_factory, "pole", n_steps=6, channels=False)
    _, reason = summarise_facts(ep, describe(ep), PRIVILEGED)
    assert "no depth or semantic channels" in reason


def test_appearance_cues_from_pixels():
    import numpy as np

    from failtax.scene import appearance

    rng = np.random.default_rng(0)
    cfg = SceneConfig()
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    background = rng.integers(60, 200, (32, 32, 3)).astype(np.uint8)

    def cue(rgb):
        luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return appearance(mask, rgb, luma, cfg)

    plain = background.copy()
    plain[mask] = (200, 200, 200)
    assert cue(plain) == "featureless (uniform colour)"
    see_through = background.copy()  # the object's pixels look like the background
    assert cue(see_through).startswith("faint")
    distinct = background.copy()
    distinct[mask] = np.clip(background[mask].astype(int) // 4, 0, 255)
    assert cue(distinct) == ""


def test_geometry_only_facts_carry_the_plain_wall_cue(tmp_path, episode_factory):
    ep = episode(tmp_path, episode_factory, "plain_wall", n_steps=12)
    cfg = SceneConfig(class_names=False)
    _, reason = summarise_facts(ep, describe(ep, cfg), cfg)
    assert "featureless" in reason and "wall" not in reason

"""The realistic depth sensor: glass and distant thin poles give no return; RGB is unchanged."""

from __future__ import annotations

import numpy as np
from sim_scenes import GLASS, LOW_BOX, POLE
from test_render import RED

from sim.config import CameraConfig, DepthSensorConfig, SimConfig, load_sim_config
from sim.geometry import compile_building
from sim.render import Raycaster
from sim.world import simple_room

CAM = CameraConfig(width_px=64, height_px=64, pitch_deg=0.0)
REAL = DepthSensorConfig(mode="realistic")
IDEAL = DepthSensorConfig(mode="ideal")


def _render(*objs, pose=(2.0, 2.0, 0.0), cam=CAM, sensor=None, **kw):
    room = simple_room(8.0, 4.0, objs)
    return Raycaster(compile_building(room), room, cam, sensor).render(np.array([pose]), **kw)


def test_glass_is_transparent_to_realistic_depth_but_visible_in_rgb_and_labels():
    real = _render(RED, GLASS, sensor=REAL, depth=True, semantic=True)
    ideal = _render(RED, GLASS, sensor=IDEAL, depth=True, semantic=True)
    assert np.allclose(ideal.depth[0, 32, 32], 3.0, atol=0.05)  # the pane
    assert np.allclose(real.depth[0, 32, 32], 5.0, atol=0.05)  # the red wall behind it
    assert (real.rgb == ideal.rgb).all()  # the camera image does not change
    assert (real.semantic == ideal.semantic).all()  # the (hidden) labels neither
    assert not (_render(RED, sensor=REAL).rgb == real.rgb).all()  # the pane shows faintly in RGB


def test_thin_pole_drops_out_of_depth_beyond_range_only():
    def pole_cols(x_robot: float, sensor: DepthSensorConfig) -> np.ndarray:
        pose = (x_robot, 2.0, 0.0)
        with_pole = _render(RED, POLE, pose=pose, sensor=sensor, depth=True).depth[0]
        without = _render(RED, pose=pose, sensor=sensor, depth=True).depth[0]
        return np.flatnonzero((with_pole != without).any(axis=0))

    assert len(pole_cols(3.5, REAL)) >= 1  # 1.5 m: returns
    assert len(pole_cols(1.8, REAL)) == 0  # 3.2 m: beyond thin_max_range_m (2.5 m), no return
    assert len(pole_cols(1.8, IDEAL)) >= 1  # the ideal channel still sees it
    rgb = _render(RED, POLE, pose=(1.0, 2.0, 0.0), sensor=REAL).rgb
    assert not (rgb == _render(RED, pose=(1.0, 2.0, 0.0), sensor=REAL).rgb).all()  # RGB does


def test_wide_objects_and_low_box_unchanged():
    for obj, pose in ((LOW_BOX, (4.0, 2.0, 0.0)), (RED, (2.0, 2.0, 0.0))):
        a = _render(obj, pose=pose, cam=CameraConfig(), sensor=REAL, depth=True).depth
        b = _render(obj, pose=pose, cam=CameraConfig(), sensor=IDEAL, depth=True).depth
        assert np.array_equal(a, b)


def test_ideal_mode_equals_the_default_raycaster_channel():
    objs = (RED, GLASS, POLE, LOW_BOX)
    a = _render(*objs, pose=(1.0, 2.2, 0.1), depth=True, semantic=True, instance=True)
    b = _render(*objs, pose=(1.0, 2.2, 0.1), sensor=IDEAL, depth=True, semantic=True,
                instance=True)
    for k in ("rgb", "depth", "semantic", "instance"):
        assert np.array_equal(getattr(a, k), getattr(b, k))


def test_config_default_is_realistic_and_env_versions_differ():
    import gymnasium as gym

    import sim

    assert SimConfig().depth_sensor.mode == "realistic"
    assert load_sim_config("default").depth_sensor == SimConfig().depth_sensor
    assert sim.ENV_ID.endswith("v1")
    v0 = gym.make(sim.LEGACY_ENV_ID).unwrapped
    assert v0.config.depth_sensor.mode == "ideal"


def test_env_channel_follows_the_config():
    from sim.env import IndoorNavEnv

    room = simple_room(8.0, 4.0, (RED, GLASS))
    depth = {}
    for mode in ("realistic", "ideal"):
        env = IndoorNavEnv({"observation.depth": "info", "depth_sensor.mode": mode})
        _, info = env.reset(seed=0, options={"building": room, "start_xy": (2.0, 2.0),
                                             "start_yaw": 0.0, "goal_xy": (1.0, 3.0)})
        depth[mode] = info["depth"][32, 32]
    assert abs(depth["ideal"] - 3.0) < 0.05 and abs(depth["realistic"] - 5.0) < 0.05

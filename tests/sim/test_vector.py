"""Vector envs: same robots as single envs, across processes too."""

from __future__ import annotations

import numpy as np
import pytest

from sim.config import SimConfig
from sim.env import IndoorNavEnv
from sim.vector import IndoorNavVectorEnv, ProcessVectorEnv, make_vector_env

CFG = {"world.num_buildings": 3, "episode.time_limit_s": 3.0}


def _actions(obs: dict) -> np.ndarray:
    g = obs["goal"]
    return np.stack([np.ones(len(g)), np.clip(2 * np.arctan2(g[:, 1], g[:, 0]), -1.5, 1.5)], 1)


def test_vector_robot_matches_single_env():
    vec = IndoorNavVectorEnv(3, CFG)
    vobs, infos = vec.reset(seed=10)
    assert vobs["image"].shape == (3, 64, 64, 3)
    assert vec.observation_space.contains(vobs)
    single = IndoorNavEnv(CFG)
    for i in range(3):
        sobs, sinfo = single.reset(seed=10 + i)
        np.testing.assert_array_equal(sobs["image"], vobs["image"][i])
        assert infos["building_id"][i] == sinfo["building_id"]
    a = _actions(vobs)
    vobs2, *_ = vec.step(a)
    sobs2, *_ = single.step(a[2])
    np.testing.assert_array_equal(sobs2["image"], vobs2["image"][2])


def test_autoreset_next_step():
    vec = IndoorNavVectorEnv(2, CFG)
    obs, _ = vec.reset(seed=0)
    done_at = None
    for t in range(40):
        obs, rew, term, trunc, info = vec.step(_actions(obs))
        if done_at is None and (term | trunc)[0]:
            done_at = t
            assert info["outcome"][0] in ("collision", "success", "timeout")
        elif done_at is not None and t == done_at + 1:
            assert rew[0] == 0 and not term[0] and not trunc[0]
            assert info["step"][0] == 0  # fresh episode
            break
    assert done_at is not None


def test_process_vector_env_equals_in_process():
    cfg = SimConfig.model_validate({"world": {"num_buildings": 2},
                                    "episode": {"time_limit_s": 3.0}})
    local = make_vector_env(4, num_workers=1, config=cfg)
    remote = ProcessVectorEnv(4, 2, cfg)
    try:
        lo, _ = local.reset(seed=3)
        ro, _ = remote.reset(seed=3)
        for _ in range(5):
            a = _actions(lo)
            lo, lr, lt, _, _ = local.step(a)
            ro, rr, rt, _, _ = remote.step(a)
            np.testing.assert_array_equal(lt, rt)
        for k in lo:
            np.testing.assert_array_equal(lo[k], ro[k])
        np.testing.assert_array_equal(lr, rr)
    finally:
        remote.close()


def test_dead_worker_is_a_clear_error():
    vec = ProcessVectorEnv(2, 2, CFG)
    try:
        vec.reset(seed=0)
        vec._procs[1].kill()
        vec._procs[1].join()
        with pytest.raises(RuntimeError, match="worker 1"):
            vec.step(np.zeros((2, 2)))
    finally:
        vec.close()

"""The safeguard wrapper: hand-over on alarm, return after the takeover, paired runs."""

from __future__ import annotations

import numpy as np
import pytest

from failtax.monitor.llm import Decision
from loop.safeguard import SafeguardedPolicy, run_safeguard


class _Tag:
    def __init__(self, value):
        self.value, self.resets = value, 0

    def reset(self, env, rng):
        self.resets += 1

    def act(self, obs):
        return np.array([self.value, 0.0])


class _AlwaysUnsafe:
    def decide_frame(self, rgb, step, t_s):
        return Decision(step, t_s, "UNSAFE", mode="Thin pole", source="cnn", p_unsafe=1.0)


def test_alarm_hands_control_to_the_safeguard_for_the_takeover_then_back():
    policy, guard = _Tag(1.0), _Tag(2.0)
    sp = SafeguardedPolicy(policy, guard, _AlwaysUnsafe(), k_consecutive=2,
                           decision_every_steps=1, takeover_steps=3, dt_s=0.1)
    sp.reset(env=None, rng=np.random.default_rng(0))
    who = [sp.act({"image": np.zeros((8, 8, 3), np.uint8)})[0] for _ in range(8)]
    # decisions at steps 0, 1 -> alarm at step 1: the safeguard drives steps 1-3,
    # the policy (re-planned) steps 4; decisions resume at 4 (rule reset) -> alarm at 5
    assert who == [1.0, 2.0, 2.0, 2.0, 1.0, 2.0, 2.0, 2.0]
    assert sp.trace.alarms == 2 and sp.trace.safeguard_steps == 6
    # re-planned at each hand-over: the safeguard twice, the policy at the start and twice
    assert guard.resets == 2 and policy.resets == 3
    assert sp.trace.modes == ["Thin pole", "Thin pole"]


@pytest.mark.slow
def test_run_safeguard_pairs_the_same_seeds(tmp_path):
    pytest.importorskip("torch")
    from failtax.monitor.cnn import supervised_frames, train_cnn
    from failtax.monitor.config import CNNConfig, MonitorConfig
    from failtax.monitor.evaluate import select_episodes
    from loop.monitor_sets import make_monitor_sets

    sets = make_monitor_sets(tmp_path, train=3, sets=("train",), progress=False)
    assert sets["train"]["episodes"] <= 3
    root = tmp_path / "train"
    cfg = MonitorConfig(kind="cnn", decision_every_steps=5, k_consecutive=1,
                        checkpoint_path=str(tmp_path / "m.pt"),
                        cnn=CNNConfig(image_px=32, epochs=1, channels=[4, 4, 4], threshold=0.01))
    eps, _ = select_episodes(root, cfg)
    train_cnn(supervised_frames(eps, cfg), cfg.cnn, tmp_path / "m.pt", kind="supervised",
              progress=False)
    r = run_safeguard(cfg, episodes=2, seed=7, takeover_s=1.0, progress=False)
    assert len(r["pairs"]) == 2 and [p["alone"]["seed"] for p in r["pairs"]] == [7, 8]
    assert all(p["alone"]["safeguard_steps"] == 0 for p in r["pairs"])
    # threshold 0.01: (nearly) every decision is UNSAFE, so the safeguard drives often
    assert r["share_of_time_under_safeguard"] > 0.3
    assert r["monitor"]["latency_s_per_decision"] > 0
    assert r["failure_rate_alone"]["n"] == 2


def test_monitor_command_help_lists_its_subcommands():
    from click.testing import CliRunner

    from loop.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["monitor", "--help"])
    assert out.exit_code == 0
    for sub in ("evaluate", "train", "sets", "safeguard"):
        assert sub in out.output
    out = runner.invoke(main, ["monitor", "evaluate", "--help"])
    assert out.exit_code == 0 and "Wilson" in out.output and "--episodes" in out.output


def test_safeguard_refuses_a_model_monitor(tmp_path):
    from click.testing import CliRunner

    from loop.cli import main

    out = CliRunner().invoke(main, ["monitor", "safeguard", "--config", "taxonomy", "--out",
                                    str(tmp_path), "--episodes", "1"])
    assert out.exit_code != 0 and "kind: cnn" in out.output

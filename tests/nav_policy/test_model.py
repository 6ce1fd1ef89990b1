"""The CNN and the command <-> action mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nav_policy.config import ModelConfig
from nav_policy.model import (
    VECTOR_FEATURES,
    NavPolicyNet,
    RobotLimits,
    action_to_command,
    command_targets,
    command_to_action,
    load_checkpoint,
    net_command,
    net_targets,
    outputs_to_command,
    pursuit_command,
    save_checkpoint,
    vector_features,
)

LIMITS = RobotLimits(0.0, 1.0, 1.5, 1.5, 0.1)


def test_command_scaling_round_trips():
    cmd = np.array([[0.0, -1.5], [0.5, 0.0], [1.0, 1.2]])
    np.testing.assert_allclose(outputs_to_command(command_targets(cmd, LIMITS), LIMITS), cmd,
                               atol=1e-6)


def test_route_pursuit_prior_learns_only_the_correction():
    cfg = ModelConfig(prior="route_pursuit", prior_speed_mps=0.8)
    route = np.array([[0.75, 0.0], [0.5, 0.5], [-0.3, 0.1]])
    prior = pursuit_command(route, 0.8, LIMITS)
    # straight ahead: cruise; 45 deg left: slower and turning left; behind: stop, turn
    assert np.allclose(prior[0], [0.8, 0.0])
    assert 0 < prior[1, 0] < 0.8 and prior[1, 1] > 0
    assert prior[2, 0] == 0 and prior[2, 1] == LIMITS.max_turn_rate_radps
    # the expert doing what the follower does is a zero target
    assert np.allclose(net_targets(prior, route, cfg, LIMITS), 0.0, atol=1e-6)
    expert = np.array([[0.4, -0.6], [0.9, 1.0], [0.0, -1.5]])
    targets = net_targets(expert, route, cfg, LIMITS)
    assert np.abs(targets).max() <= 1
    np.testing.assert_allclose(net_command(targets, route, cfg, LIMITS), expert, atol=1e-6)
    # without a prior the targets are the absolute command
    np.testing.assert_allclose(net_targets(expert, route, ModelConfig(), LIMITS),
                               command_targets(expert, LIMITS))


def test_route_pursuit_prior_needs_the_route():
    import pytest

    with pytest.raises(ValueError, match="target_input"):
        ModelConfig(prior="route_pursuit", target_input="goal")


def test_action_command_round_trip_within_limits():
    rng = np.random.default_rng(0)
    vel = np.stack([rng.uniform(0.2, 0.8, 50), rng.uniform(-1, 1, 50)], 1)
    act = np.stack([rng.uniform(-1.5, 1.5, 50), rng.uniform(-1.5, 1.5, 50)], 1)
    back = command_to_action(vel, action_to_command(vel, act, LIMITS), LIMITS)
    np.testing.assert_allclose(back, act, atol=1e-9)


def test_ego_inputs_are_masked():
    f = vector_features(np.array([[0.5, 1.0]]), np.array([[3.0, 4.0]]), LIMITS, 10.0, "none")
    assert f.shape == (1, VECTOR_FEATURES)
    assert f[0, 0] == 0 and f[0, 1] == 0
    assert np.isclose(f[0, 2], 0.5) and np.isclose(f[0, 3], 0.6) and np.isclose(f[0, 4], 0.8)
    g = vector_features(np.array([[0.5, 1.5]]), np.array([[3.0, 4.0]]), LIMITS, 10.0, "speed_turn")
    assert np.isclose(g[0, 0], 0.5) and np.isclose(g[0, 1], 1.0)


def test_any_image_size_and_checkpoint_round_trip(tmp_path):
    for hw in ((64, 64), (48, 80)):
        net = NavPolicyNet(ModelConfig(), hw, LIMITS)
        out = net(torch.zeros(3, 3, *hw), torch.zeros(3, VECTOR_FEATURES))
        assert out.shape == (3, 2) and out.abs().max() <= 1
    save_checkpoint(tmp_path / "m.pt", net, {"note": 1})
    net2, extra = load_checkpoint(tmp_path / "m.pt")
    assert extra == {"note": 1} and net2.image_hw == (48, 80) and net2.limits == LIMITS
    x, v = torch.rand(2, 3, 48, 80), torch.rand(2, VECTOR_FEATURES)
    net.eval()
    assert torch.equal(net(x, v), net2(x, v))


class _RunsCode:
    """Unpickling this runs code: what a tampered checkpoint could carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_checkpoint_carrying_code_is_refused(tmp_path):
    net = NavPolicyNet(ModelConfig(), (32, 32), LIMITS)
    save_checkpoint(tmp_path / "good.pt", net, {"note": 1})
    blob = torch.load(tmp_path / "good.pt", weights_only=True)  # plain data only
    marker = tmp_path / "ran"
    blob["extra"] = {"payload": _RunsCode(marker)}
    torch.save(blob, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refus"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()

"""The camera policy: a small CNN from (RGB image, ego velocity, goal) to a command.

The network outputs a velocity command (forward speed, turn rate) for the next
step; `command_to_action` turns it into the env's action (acceleration, turn
rate) with a one-step speed controller. Predicting the commanded speed rather
than the raw acceleration gives smoother targets: the expert's acceleration
flips sign often, the speed it asks for does not.

Example:
    >>> limits = RobotLimits(0.0, 1.0, 1.5, 1.5, 0.1)
    >>> net = NavPolicyNet(ModelConfig(), (64, 64), limits)
    >>> out = net(torch.zeros(2, 3, 64, 64), torch.zeros(2, VECTOR_FEATURES))
    >>> out.shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nav_policy.config import ModelConfig

# [v / v_max, w / w_max, goal distance / range (clipped at 1), cos(bearing), sin(bearing)]
VECTOR_FEATURES = 5


@dataclass(frozen=True)
class RobotLimits:
    """The robot's limits the command is scaled to (stored in every checkpoint)."""

    min_speed_mps: float
    max_speed_mps: float
    max_accel_mps2: float
    max_turn_rate_radps: float
    dt_s: float

    @classmethod
    def from_sim(cls, sim_config) -> RobotLimits:
        r = sim_config.robot
        return cls(r.min_speed_mps, r.max_speed_mps, r.max_accel_mps2, r.max_turn_rate_radps,
                   sim_config.episode.dt_s)

    def to_dict(self) -> dict:
        return asdict(self)


def vector_features(velocity: np.ndarray, goal_robot: np.ndarray, limits: RobotLimits,
                    goal_range_m: float, ego_inputs: str = "speed") -> np.ndarray:
    """Non-image inputs of the network, from the env's `velocity` and `goal` observations.

    Args:
        velocity: (..., 2) [v_mps, w_radps].
        goal_robot: (..., 2) goal in the robot frame [forward_m, left_m].
        limits: robot limits used for scaling.
        goal_range_m: distance scale; farther goals saturate at 1.
        ego_inputs: "speed_turn", "speed" (turn rate zeroed) or "none" (both zeroed).

    Returns:
        (..., VECTOR_FEATURES) float32.
    """
    velocity = np.asarray(velocity, np.float64)
    goal_robot = np.asarray(goal_robot, np.float64)
    dist = np.hypot(goal_robot[..., 0], goal_robot[..., 1])
    bearing = np.arctan2(goal_robot[..., 1], goal_robot[..., 0])
    feats = np.stack([
        velocity[..., 0] / limits.max_speed_mps,
        velocity[..., 1] / limits.max_turn_rate_radps,
        np.minimum(dist / goal_range_m, 1.0),
        np.cos(bearing),
        np.sin(bearing),
    ], axis=-1)
    if ego_inputs in ("speed", "none"):
        feats[..., 1] = 0.0
    if ego_inputs == "none":
        feats[..., 0] = 0.0
    return feats.astype(np.float32)


def command_targets(command: np.ndarray, limits: RobotLimits) -> np.ndarray:
    """Scale (..., 2) [v_cmd, w_cmd] into the network's output range [-1, 1]."""
    command = np.asarray(command, np.float64)
    span = limits.max_speed_mps - limits.min_speed_mps
    v = 2.0 * (command[..., 0] - limits.min_speed_mps) / span - 1.0
    w = command[..., 1] / limits.max_turn_rate_radps
    return np.clip(np.stack([v, w], axis=-1), -1.0, 1.0).astype(np.float32)


def outputs_to_command(outputs: np.ndarray, limits: RobotLimits) -> np.ndarray:
    """Inverse of `command_targets`: network outputs in [-1, 1] -> [v_cmd, w_cmd]."""
    outputs = np.asarray(outputs, np.float64)
    span = limits.max_speed_mps - limits.min_speed_mps
    v = limits.min_speed_mps + (outputs[..., 0] + 1.0) * 0.5 * span
    w = outputs[..., 1] * limits.max_turn_rate_radps
    return np.stack([v, w], axis=-1)


def pursuit_command(route_robot: np.ndarray, speed_mps: float, limits: RobotLimits) -> np.ndarray:
    """Camera-blind route following: (..., 2) route point in the robot frame -> [v_cmd, w_cmd].

    Turns at twice the bearing to the route point and slows with its cosine (stops
    when the point is abeam or behind). The `route_pursuit` prior and the
    `failtax nav baseline` follower.
    """
    route_robot = np.asarray(route_robot, np.float64)
    bearing = np.arctan2(route_robot[..., 1], route_robot[..., 0])
    v = np.clip(speed_mps * np.maximum(0.0, np.cos(bearing)), limits.min_speed_mps,
                limits.max_speed_mps)
    w = np.clip(2.0 * bearing, -limits.max_turn_rate_radps, limits.max_turn_rate_radps)
    return np.stack([v, w], axis=-1)


def _residual_scale(limits: RobotLimits) -> np.ndarray:
    # A correction may span the whole command range in either direction.
    return np.array([limits.max_speed_mps - limits.min_speed_mps,
                     2.0 * limits.max_turn_rate_radps])


def prior_command(target: np.ndarray, config: ModelConfig, limits: RobotLimits) -> np.ndarray | None:
    """The command the net's output corrects (None when `config.prior` is "none")."""
    if config.prior == "route_pursuit":
        return pursuit_command(target, config.prior_speed_mps, limits)
    return None


def net_targets(command: np.ndarray, target: np.ndarray, config: ModelConfig,
                limits: RobotLimits) -> np.ndarray:
    """Training targets in [-1, 1] for expert commands (..., 2), given the steering target."""
    prior = prior_command(target, config, limits)
    if prior is None:
        return command_targets(command, limits)
    residual = (np.asarray(command, np.float64) - prior) / _residual_scale(limits)
    return np.clip(residual, -1.0, 1.0).astype(np.float32)


def net_command(outputs: np.ndarray, target: np.ndarray, config: ModelConfig,
                limits: RobotLimits) -> np.ndarray:
    """Inverse of `net_targets`: net outputs -> [v_cmd, w_cmd] within the robot's limits."""
    prior = prior_command(target, config, limits)
    if prior is None:
        return outputs_to_command(outputs, limits)
    cmd = prior + np.asarray(outputs, np.float64) * _residual_scale(limits)
    return np.stack([
        np.clip(cmd[..., 0], limits.min_speed_mps, limits.max_speed_mps),
        np.clip(cmd[..., 1], -limits.max_turn_rate_radps, limits.max_turn_rate_radps),
    ], axis=-1)


def action_to_command(velocity: np.ndarray, action: np.ndarray, limits: RobotLimits) -> np.ndarray:
    """The command an action realises: speed after one step of acceleration, and turn rate."""
    velocity = np.asarray(velocity, np.float64)
    action = np.asarray(action, np.float64)
    a = np.clip(action[..., 0], -limits.max_accel_mps2, limits.max_accel_mps2)
    v = np.clip(velocity[..., 0] + a * limits.dt_s, limits.min_speed_mps, limits.max_speed_mps)
    w = np.clip(action[..., 1], -limits.max_turn_rate_radps, limits.max_turn_rate_radps)
    return np.stack([v, w], axis=-1)


def command_to_action(velocity: np.ndarray, command: np.ndarray, limits: RobotLimits) -> np.ndarray:
    """One-step speed controller: the acceleration that reaches v_cmd, within limits."""
    velocity = np.asarray(velocity, np.float64)
    command = np.asarray(command, np.float64)
    a = np.clip((command[..., 0] - velocity[..., 0]) / limits.dt_s,
                -limits.max_accel_mps2, limits.max_accel_mps2)
    w = np.clip(command[..., 1], -limits.max_turn_rate_radps, limits.max_turn_rate_radps)
    return np.stack([a, w], axis=-1)


class NavPolicyNet(nn.Module):
    """Conv stack over the image, fused with the vector features by an MLP.

    Each conv block is conv(3x3, stride 2) + ReLU (the first uses a 5x5
    kernel); the flattened size is found with a dummy forward, so any image
    size works.

    Args:
        config: channels and widths.
        image_hw: (height, width) of the camera image.
        limits: robot limits (kept for checkpoints and command scaling).
    """

    def __init__(self, config: ModelConfig, image_hw: tuple[int, int], limits: RobotLimits) -> None:
        super().__init__()
        self.config = config
        self.image_hw = tuple(int(v) for v in image_hw)
        self.limits = limits
        layers: list[nn.Module] = []
        in_ch = 3
        for i, ch in enumerate(config.channels):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(in_ch, ch, k, stride=2, padding=k // 2), nn.ReLU()]
            in_ch = ch
        self.conv = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, 3, *self.image_hw)).shape[1]
        h = config.hidden_units
        self.image_head = nn.Sequential(nn.Linear(flat, h), nn.ReLU())
        self.vector_head = nn.Sequential(nn.Linear(VECTOR_FEATURES, 32), nn.ReLU())
        self.fuse = nn.Sequential(
            nn.Linear(h + 32, h), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(h, 2)
        )

    def forward(self, image: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float images in [0, 1] and (B, 5) features -> (B, 2) outputs in [-1, 1]."""
        z = torch.cat([self.image_head(self.conv(image)), self.vector_head(vector)], dim=1)
        return torch.tanh(self.fuse(z))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def images_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def save_checkpoint(path, net: NavPolicyNet, extra: dict | None = None) -> None:
    """Write weights plus everything needed to rebuild the net (atomically)."""
    import io

    from common import atomic_write_bytes

    buf = io.BytesIO()
    torch.save({
        "schema_version": 1,
        "model_config": net.config.model_dump(mode="json"),
        "image_hw": list(net.image_hw),
        "limits": net.limits.to_dict(),
        "state_dict": net.state_dict(),
        "extra": extra or {},
    }, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_tensors(path, device: torch.device | str = "cpu") -> Any:
    """`torch.load` that unpickles tensors and plain data only (`weights_only=True`).

    Checkpoints hold configs as plain dicts, so nothing else is needed; a file that
    carries any other object (which could run code while unpickling) is refused.

    Raises:
        ValueError: corrupt or truncated file, or objects other than tensors and plain data.
    """
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"refusing to load {path}: it holds objects other than tensors and plain data, "
            f"which could run code when unpickled ({str(e).splitlines()[0]}). "
            "Use checkpoints written by this project, or delete it to retrain."
        ) from None
    except Exception as e:  # corrupt or truncated file
        raise ValueError(f"cannot read checkpoint {path}: {e}") from e


def load_checkpoint(path, device: torch.device | str = "cpu") -> tuple[NavPolicyNet, dict]:
    """Rebuild a NavPolicyNet from `save_checkpoint` output; returns (net, extra)."""
    blob = load_tensors(path, device)
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise ValueError(f"{path} is not a nav policy checkpoint (no state_dict)")
    # Checkpoints from before `target_input` existed steered by the goal.
    model_cfg = {"target_input": "goal", **blob["model_config"]}
    net = NavPolicyNet(ModelConfig.model_validate(model_cfg), tuple(blob["image_hw"]),
                       RobotLimits(**blob["limits"]))
    net.load_state_dict(blob["state_dict"])
    net.to(device)
    net.eval()
    return net, blob.get("extra", {})


class PolicyRunner:
    """Turns env observations into actions with a trained net (batched or single).

    Args:
        net: the policy network.
        device: inference device.
    """

    def __init__(self, net: NavPolicyNet, device: torch.device | str = "cpu") -> None:
        self.net = net.to(device).eval()
        self.device = device
        self.limits = net.limits

    @torch.no_grad()
    def act_batch(self, images: np.ndarray, velocity: np.ndarray, target: np.ndarray) -> np.ndarray:
        """(B, H, W, 3), (B, 2), (B, 2) -> (B, 2) actions [accel, turn rate].

        `target` is the observation named by the net's `target_input` (see `target_of`).
        """
        feats = vector_features(velocity, target, self.limits, self.net.config.goal_range_m,
                                self.net.config.ego_inputs)
        out = self.net(images_to_tensor(images, self.device),
                       torch.from_numpy(feats).to(self.device)).cpu().numpy()
        command = net_command(out, target, self.net.config, self.limits)
        return command_to_action(velocity, command, self.limits)

    def act(self, obs: dict) -> np.ndarray:
        """One env observation dict -> (2,) action."""
        return self.act_batch(obs["image"][None], obs["velocity"][None],
                              target_of(obs, self.net.config.target_input)[None])[0]


def target_of(obs: dict, target_input: str) -> np.ndarray:
    """The observation array a net with this `target_input` steers towards."""
    if target_input not in obs:
        raise KeyError(f"the policy steers by {target_input!r} but the observation has only "
                       f"{sorted(obs)}; set the sim's observation.route: obs")
    return obs[target_input]


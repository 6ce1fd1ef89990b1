"""Shared fixtures of the nav_policy tests (tiny configs, small synthetic datasets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nav_policy.config import load_nav_config
from nav_policy.dataset import Shard, write_manifest, write_shard

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "nav" / "tiny.yaml"


@pytest.fixture
def tiny_cfg():
    """The CI-sized nav config (short episodes, tiny budgets)."""
    return load_nav_config(TINY)


@pytest.fixture
def synthetic_dataset():
    """Factory: synthetic_dataset(root, num_samples=256, seed=0) -> dataset folder."""
    return _make_synthetic_dataset


def _make_synthetic_dataset(root: Path, num_samples: int = 256, seed: int = 0,
                           image_hw: tuple[int, int] = (64, 64)) -> Path:
    """A dataset folder with random images whose commands depend on the inputs."""
    rng = np.random.default_rng(seed)
    n = num_samples
    image = rng.integers(0, 255, size=(n, *image_hw, 3), dtype=np.uint8)
    velocity = np.stack([rng.uniform(0, 1, n), rng.uniform(-1.5, 1.5, n)], 1).astype(np.float32)
    goal = rng.normal(0, 4, size=(n, 2)).astype(np.float32)
    command = np.stack([np.clip(image[:, 32, 32, 0] / 255.0, 0, 1),
                        np.clip(goal[:, 1] / 4, -1.5, 1.5)], 1).astype(np.float32)
    action = np.stack([(command[:, 0] - velocity[:, 0]) / 0.1, command[:, 1]], 1).astype(np.float32)
    arrays = {"image": image, "velocity": velocity, "goal": goal, "route": goal, "action": action,
              "command": command, "pose": np.zeros((n, 3), np.float32),
              "episode": (np.arange(n) // 16).astype(np.int32),
              "step": (np.arange(n) % 16).astype(np.int32)}
    write_shard(root, Shard(0, arrays, [{"seed": 0}], "synthetic"))
    write_manifest(root, {"arm": "synthetic", "fingerprint": "synthetic"}, {0: n}, n)
    return root

"""Shared fixtures: hand-made rooms, small configs."""

from __future__ import annotations

import pytest

from sim.config import SimConfig
from sim.world import simple_room


@pytest.fixture
def room_with():
    """room_with(obj) -> an 8 m x 4 m room containing obj."""
    return lambda *objs: simple_room(8.0, 4.0, objs)


@pytest.fixture
def small_config() -> SimConfig:
    """Default config with a short time limit (fast tests)."""
    return SimConfig.model_validate({"episode": {"time_limit_s": 20.0}})

"""The privileged expert: global path on the true map plus a tracking controller.

`make_expert(expert_config, sim_config)` returns an `Expert`; call
`reset(world, goal_xy)` at the start of an episode and `act(state)` at every
step. The global path comes from the simulator's grid planner (`sim.planning`)
on its inflated occupancy grid; the controller is the CasADi MPC of
`nav_policy.expert.mpc` (or pure pursuit).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from nav_policy.config import ExpertConfig
from nav_policy.expert.expert import ExpertStep, MapExpert


class Expert(Protocol):
    """What collection and evaluation need from an expert."""

    def reset(self, world, goal_xy: np.ndarray) -> None:
        """Start an episode in `world` (a sim.env.World) towards `goal_xy`."""

    def act(self, state: np.ndarray) -> ExpertStep:
        """The action for the (5,) sim state [x, y, yaw, v, w]."""


EXPERT_KINDS = ("mpc", "pure_pursuit")


def make_expert(config: ExpertConfig, sim_config) -> Expert:
    """Build the expert named by `config.kind` (one of EXPERT_KINDS)."""
    if config.kind not in EXPERT_KINDS:
        raise ValueError(f"unknown expert kind {config.kind!r}; valid: {', '.join(EXPERT_KINDS)}")
    if config.kind == "mpc":
        try:
            import casadi  # noqa: F401
        except ImportError as e:
            raise ImportError("the MPC expert needs casadi: pip install 'casadi>=3.6'") from e
    return MapExpert(config, sim_config)


__all__ = ["EXPERT_KINDS", "Expert", "ExpertStep", "MapExpert", "make_expert"]

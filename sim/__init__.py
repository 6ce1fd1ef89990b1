"""failtax's bundled indoor-navigation simulator.

Importing `sim` registers the Gymnasium id ``failtax/IndoorNav-v1`` (cheap:
nothing is generated or rendered at import). The main names are re-exported
lazily (`from sim import IndoorNavEnv` imports sim.env on first use); the full
list of entry points is at the top of docs/SIM.md:

* ``sim.building``: ``Building``, ``WorldObject``, ``Part``, ``SEMANTIC_CLASSES``,
  ``CAUSE_CLASSES``
* ``sim.world``: ``generate_building``
* ``sim.grid``: ``OccupancyGrid``
* ``sim.planning``: ``GridPlanner``, ``plan_path``, ``shortcut_path``
* ``sim.env``: ``IndoorNavEnv``, ``NavBatch``, ``load_world``, ``World``
* ``sim.config``: ``SimConfig``, ``load_sim_config``

Bump the version in ENV_ID when dynamics or rendering change. v1: the depth
channel comes from a realistic depth sensor by default (glass transparent to
depth, thin objects lost beyond a range); ``failtax/IndoorNav-v0`` stays
registered with the ideal depth channel it had (RGB and dynamics are the same).
"""

import importlib
from typing import Any

import gymnasium

ENV_ID = "failtax/IndoorNav-v1"
LEGACY_ENV_ID = "failtax/IndoorNav-v0"  # ideal depth channel

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="sim.env:IndoorNavEnv")
if LEGACY_ENV_ID not in gymnasium.registry:
    gymnasium.register(id=LEGACY_ENV_ID, entry_point="sim.env:IndoorNavEnv",
                       kwargs={"config": {"depth_sensor.mode": "ideal"}})

_LAZY = {
    "IndoorNavEnv": "sim.env", "NavBatch": "sim.env", "World": "sim.env", "load_world": "sim.env",
    "SimConfig": "sim.config", "load_sim_config": "sim.config",
    "Building": "sim.building", "WorldObject": "sim.building", "Part": "sim.building",
    "generate_building": "sim.world", "SEMANTIC_CLASSES": "sim.building",
    "CAUSE_CLASSES": "sim.building", "OccupancyGrid": "sim.grid", "GridPlanner": "sim.planning",
    "MapQuery": "sim.query", "EpisodeRecorder": "sim.recorder", "Region": "sim.topdown",
    "render_topdown": "sim.topdown", "make_vector_env": "sim.vector",
}

__all__ = [  # noqa: RUF022  (ENV_ID first, then the lazy names in _LAZY order)
    "ENV_ID", "IndoorNavEnv", "NavBatch", "World", "load_world", "SimConfig", "load_sim_config",
    "Building", "WorldObject", "Part", "generate_building", "SEMANTIC_CLASSES", "CAUSE_CLASSES",
    "OccupancyGrid", "GridPlanner", "MapQuery", "EpisodeRecorder", "Region", "render_topdown",
    "make_vector_env",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")

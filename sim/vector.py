"""Vectorised IndoorNav: many robots per process, several processes per machine.

* `IndoorNavVectorEnv(num_envs, config)`: a `gymnasium.vector.VectorEnv` that
  steps `num_envs` robots in this process with one batched renderer call per
  building (NavBatch).
* `ProcessVectorEnv(num_envs, num_workers, config)`: the same interface,
  with the robots split over worker processes (rendering is CPU-bound numpy,
  so throughput scales with processes, not with larger numpy batches).
* `make_vector_env(num_envs, num_workers=..., config=...)` picks one.

Both autoreset in gymnasium's NEXT_STEP mode: after an episode ends, the
next `step()` resets that robot (its action is ignored, reward 0) and returns
the first observation of the new episode. `reset(seed=s)` seeds robot i with
s + i; later resets continue each robot's own generator, so a run is
reproducible from one seed regardless of the number of workers.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from sim.config import SimConfig
from sim.env import NavBatch, _action_space, _observation_space, resolve_config

_CHANNELS = ("depth", "semantic", "instance")


class IndoorNavVectorEnv(VectorEnv):
    """`num_envs` robots in one process.

    Args:
        num_envs: number of robots.
        config: SimConfig, dict of dotted overrides, YAML path, or None.
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.NEXT_STEP,
                                          "render_modes": []}

    def __init__(self, num_envs: int, config: SimConfig | dict | str | None = None) -> None:
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        self.config = resolve_config(config)
        self.num_envs = num_envs
        self.single_observation_space = _observation_space(self.config)
        self.single_action_space = _action_space(self.config)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._batch = NavBatch(self.config, num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._needs_reset = np.zeros(num_envs, bool)

    @property
    def batch(self) -> NavBatch:
        """The underlying robots (worlds, states, goals)."""
        return self._batch

    def reset(self, *, seed: int | Sequence[int] | None = None,
              options: dict | Sequence[dict | None] | None = None):
        obs, infos = self.reset_raw(seed=seed, options=options)
        return obs, self._vector_infos(infos)

    def step(self, actions):
        obs, rew, term, trunc, infos = self.step_raw(actions)
        return obs, rew, term, trunc, self._vector_infos(infos)

    # Raw variants return a list of per-robot info dicts (used by ProcessVectorEnv).
    def reset_raw(self, *, seed: int | Sequence[int] | None = None,
                  options: dict | Sequence[dict | None] | None = None):
        if seed is None:
            seeds = list(np.random.SeedSequence().generate_state(self.num_envs))
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        if options is None or isinstance(options, dict):
            per_env = [options] * self.num_envs
        else:
            per_env = list(options)
            if len(per_env) != self.num_envs:
                raise ValueError(f"got {len(per_env)} option dicts for {self.num_envs} envs")
        for i in range(self.num_envs):
            self._rngs[i] = np.random.default_rng(int(seeds[i]))
            self._batch.reset_robot(i, self._rngs[i], per_env[i])
        self._needs_reset[:] = False
        return self._observe()

    def step_raw(self, actions):
        actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, 2)
        resetting = self._needs_reset.copy()
        for i in np.flatnonzero(resetting):
            self._batch.reset_robot(i, self._rngs[i], None)
        reward, term, trunc = self._batch.step(actions, active=~resetting)
        reward[resetting] = 0.0
        term[resetting] = False
        trunc[resetting] = False
        self._needs_reset = term | trunc
        obs, infos = self._observe()
        return obs, reward, term, trunc, infos

    def _observe(self) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        raw = self._batch.observe()
        ob = self.config.observation
        obs = {k: raw[k] for k in ("image", "velocity", "goal", "route") if k in raw}
        infos = [self._batch.info(i) for i in range(self.num_envs)]
        for k in _CHANNELS:
            mode = getattr(ob, k)
            if mode == "obs":
                obs[k] = raw[k]
            elif mode == "info":
                for i in range(self.num_envs):
                    infos[i][k] = raw[k][i]
        return obs, infos

    def _vector_infos(self, infos: list[dict[str, Any]]) -> dict[str, Any]:
        return _to_vector_infos(self, infos)


def _to_vector_infos(env: VectorEnv, infos: list[dict[str, Any]]) -> dict[str, Any]:
    """Gymnasium's vector info layout (key -> array, "_key" -> mask).

    Keys whose value is None (no outcome yet, no collision) are left out for
    that robot, so the mask says which robots have them.
    """
    out: dict[str, Any] = {}
    for i, info in enumerate(infos):
        out = env._add_info(out, {k: v for k, v in info.items() if v is not None}, i)
    return out


def _worker(conn, num_envs: int, config_json: dict) -> None:
    env = IndoorNavVectorEnv(num_envs, SimConfig.model_validate(config_json))
    try:
        while True:
            cmd, payload = conn.recv()
            if cmd == "reset":
                conn.send(("ok", env.reset_raw(**payload)))
            elif cmd == "step":
                conn.send(("ok", env.step_raw(payload)))
            elif cmd == "close":
                conn.send(("ok", None))
                break
            else:
                conn.send(("error", f"unknown command {cmd!r}"))
    except Exception as e:  # noqa: BLE001  (any failure goes back to the parent as text)
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


class ProcessVectorEnv(VectorEnv):
    """Robots split over worker processes, each an IndoorNavVectorEnv.

    Args:
        num_envs: total robots.
        num_workers: processes (robots are split as evenly as possible).
        config: SimConfig, dict of dotted overrides, YAML path, or None.
        context: multiprocessing start method ("spawn" is safe everywhere).
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.NEXT_STEP,
                                          "render_modes": []}

    def __init__(self, num_envs: int, num_workers: int,
                 config: SimConfig | dict | str | None = None, context: str = "spawn") -> None:
        if not 1 <= num_workers <= num_envs:
            raise ValueError("need 1 <= num_workers <= num_envs")
        self.config = resolve_config(config)
        self.num_envs = num_envs
        self.single_observation_space = _observation_space(self.config)
        self.single_action_space = _action_space(self.config)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        sizes = [num_envs // num_workers + (1 if i < num_envs % num_workers else 0)
                 for i in range(num_workers)]
        self._offsets = np.cumsum([0, *sizes])
        ctx = mp.get_context(context)
        self._conns, self._procs = [], []
        # One BLAS/OpenMP thread per worker: workers already fill the cores.
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                "MKL_NUM_THREADS")}
        try:
            for k in saved:
                os.environ[k] = "1"
            for n in sizes:
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker, args=(child, n, self.config.model_dump(mode="json")),
                                daemon=True)
                p.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(p)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _call(self, cmds: list[tuple[str, Any]]) -> list[Any]:
        for w, (conn, cmd) in enumerate(zip(self._conns, cmds)):
            try:
                conn.send(cmd)
            except (BrokenPipeError, ConnectionResetError):
                raise RuntimeError(f"simulator worker {w} is gone (exit code "
                                   f"{self._procs[w].exitcode})") from None
        results = []
        for w, conn in enumerate(self._conns):
            try:
                status, payload = conn.recv()
            except (EOFError, ConnectionResetError):
                code = self._procs[w].exitcode
                raise RuntimeError(f"simulator worker {w} exited unexpectedly (exit code "
                                   f"{code}); see its stderr above") from None
            if status != "ok":
                raise RuntimeError(f"simulator worker failed: {payload}")
            results.append(payload)
        return results

    def _merge(self, parts: list[tuple]) -> tuple:
        obs = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
        rest = [np.concatenate([p[j] for p in parts]) for j in range(1, len(parts[0]) - 1)]
        infos = [info for p in parts for info in p[-1]]
        return (obs, *rest, _to_vector_infos(self, infos))

    def reset(self, *, seed: int | Sequence[int] | None = None,
              options: dict | Sequence[dict | None] | None = None):
        if seed is None:
            seeds = [int(s) for s in np.random.SeedSequence().generate_state(self.num_envs)]
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = [int(s) for s in seed]
        if options is None or isinstance(options, dict):
            opts = [options] * self.num_envs
        else:
            opts = list(options)
        cmds = []
        for w in range(len(self._conns)):
            a, b = self._offsets[w], self._offsets[w + 1]
            cmds.append(("reset", {"seed": seeds[a:b], "options": opts[a:b]}))
        return self._merge(self._call(cmds))

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, 2)
        cmds = [("step", actions[self._offsets[w]: self._offsets[w + 1]])
                for w in range(len(self._conns))]
        return self._merge(self._call(cmds))

    def close_extras(self, **kwargs: Any) -> None:
        for conn in self._conns:
            try:
                conn.send(("close", None))
                conn.recv()
            except (OSError, EOFError):
                pass
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()


def make_vector_env(num_envs: int, *, num_workers: int | None = None,
                    config: SimConfig | dict | str | None = None) -> VectorEnv:
    """IndoorNav vector env; `num_workers` > 1 uses worker processes.

    Args:
        num_envs: total robots.
        num_workers: processes; None = min(cpu count, num_envs); 1 = in-process.
        config: SimConfig, dict of dotted overrides, YAML path, or None.
    """
    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, num_envs)
    if num_workers <= 1:
        return IndoorNavVectorEnv(num_envs, config)
    return ProcessVectorEnv(num_envs, num_workers, config)

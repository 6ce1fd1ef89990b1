"""CasADi MPC that tracks a reference path with the unicycle's dynamics and limits.

Formulation (horizon N steps of the sim's dt):

* state  x_k = (x, y, yaw, v, w_prev) — w_prev is the turn rate applied at the
  previous step, kept as a state so the turn-rate change cost stays local to
  one stage (fatrop exploits that stage structure);
* control u_k = (a, w, s): acceleration, turn rate, and a slack s >= 0 on the
  obstacle constraints of that stage;
* dynamics: v' = v + a dt, then a straight move at v' along yaw + w dt / 2
  (the midpoint rule of the sim's exact arc), yaw' = yaw + w dt;
* cost: tracking of the reference points and headings, effort, turn-rate
  change, heavy L1 + L2 penalty on the slack;
* constraints: |a| <= a_max, |w| <= w_max, v_min <= v <= v_max, and for every
  stage k >= 1 and each of the M nearest surfaces a half-plane
  n_kj . (p_k - q_kj) >= r + margin - s_k, where q_kj is the nearest surface
  point to the stage's predicted position and n_kj the unit normal towards it.

The problem is built once per (solver, N, M) and re-solved with new
parameters, warm-started from the shifted previous solution. `fatrop` (bundled
with casadi 3.8) is used with automatic structure detection; IPOPT is the
fallback when it fails.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from nav_policy.config import MPCConfig
from nav_policy.model import RobotLimits

NX, NU = 5, 3


@dataclass
class MPCResult:
    """One MPC solve.

    Attributes:
        action: (2,) [accel, turn rate] to apply now (clipped to the limits).
        ok: the solver reported success.
        solver: which solver produced `action`.
        solve_time_s: wall time of the solve(s), including a fallback.
        predicted_xy: (N+1, 2) predicted positions (for warm starts and plots).
        max_slack_m: largest obstacle-constraint violation in the plan.
    """

    action: np.ndarray
    ok: bool
    solver: str
    solve_time_s: float
    predicted_xy: np.ndarray
    max_slack_m: float


class _Problem:
    """One compiled NLP for a given solver."""

    def __init__(self, cfg: MPCConfig, limits: RobotLimits, solver: str) -> None:
        import casadi as ca

        n, m, dt = cfg.horizon_steps, cfg.obstacles_per_stage, limits.dt_s
        self.n, self.m = n, m
        xs = [ca.SX.sym(f"x{k}", NX) for k in range(n + 1)]
        us = [ca.SX.sym(f"u{k}", NU) for k in range(n)]
        p_x0 = ca.SX.sym("x0", NX)
        p_ref = ca.SX.sym("ref", 3, n)  # rows: x, y, yaw of the reference at stages 1..N
        p_q = ca.SX.sym("q", 2, m * n)  # nearest surface points, stage-major (stage 0 unused)
        p_nrm = ca.SX.sym("nrm", 2, m * n)  # unit normals from the surface towards the robot
        p_dsafe = ca.SX.sym("dsafe")
        params = ca.vertcat(p_x0, ca.vec(p_ref), ca.vec(p_q), ca.vec(p_nrm), p_dsafe)

        w, lbw, ubw, g, lbg, ubg, eq = [], [], [], [], [], [], []
        cost = 0
        big = 1e3
        for k in range(n + 1):
            x = xs[k]
            w.append(x)
            lbw += [-big, -big, -big, limits.min_speed_mps, -limits.max_turn_rate_radps]
            ubw += [big, big, big, limits.max_speed_mps, limits.max_turn_rate_radps]
            if k == 0:
                g.append(x - p_x0)
                lbg += [0.0] * NX
                ubg += [0.0] * NX
                eq += [True] * NX
            else:
                ref = p_ref[:, k - 1]
                wt = cfg.track_weight + (cfg.terminal_weight if k == n else 0.0)
                cost += wt * ((x[0] - ref[0]) ** 2 + (x[1] - ref[1]) ** 2)
                cost += cfg.heading_weight * (1 - ca.cos(x[2] - ref[2]))
            if k == n:
                break
            u = us[k]
            w.append(u)
            lbw += [-limits.max_accel_mps2, -limits.max_turn_rate_radps, 0.0]
            ubw += [limits.max_accel_mps2, limits.max_turn_rate_radps, big]
            cost += cfg.accel_weight * u[0] ** 2 + cfg.turn_weight * u[1] ** 2
            cost += cfg.turn_change_weight * (u[1] - x[4]) ** 2
            cost += cfg.slack_weight * u[2] + 10 * cfg.slack_weight * u[2] ** 2
            # Dynamics (gap-closing constraint), then this stage's path constraints.
            v1 = x[3] + u[0] * dt
            head = x[2] + u[1] * dt / 2
            nxt = ca.vertcat(x[0] + v1 * ca.cos(head) * dt, x[1] + v1 * ca.sin(head) * dt,
                             x[2] + u[1] * dt, v1, u[1])
            g.append(xs[k + 1] - nxt)
            lbg += [0.0] * NX
            ubg += [0.0] * NX
            eq += [True] * NX
            if k >= 1:
                for j in range(m):
                    c = k * m + j
                    dist = p_nrm[0, c] * (x[0] - p_q[0, c]) + p_nrm[1, c] * (x[1] - p_q[1, c])
                    g.append(dist + u[2] - p_dsafe)
                    lbg.append(0.0)
                    ubg.append(ca.inf)
                    eq.append(False)
        nlp = {"x": ca.vertcat(*w), "f": cost, "g": ca.vertcat(*g), "p": params}
        if solver == "fatrop":
            opts = {"structure_detection": "auto", "equality": eq, "print_time": False,
                    "fatrop": {"print_level": 0, "max_iter": cfg.max_iterations,
                               "tol": cfg.tolerance, "mu_init": 1e-1}}
        elif solver == "ipopt":
            opts = {"print_time": False,
                    "ipopt": {"print_level": 0, "sb": "yes", "max_iter": cfg.max_iterations,
                              "tol": cfg.tolerance, "warm_start_init_point": "yes"}}
        else:
            raise ValueError(f"unknown MPC solver {solver!r}; valid: fatrop, ipopt")
        self.solver = ca.nlpsol(f"mpc_{solver}", solver, nlp, opts)
        self.lbw, self.ubw = np.asarray(lbw), np.asarray(ubw)
        self.lbg, self.ubg = np.asarray(lbg, float), np.asarray(ubg, float)
        self.num_w = len(lbw)

    def solve(self, p: np.ndarray, w0: np.ndarray) -> tuple[np.ndarray, bool]:
        sol = self.solver(x0=w0, p=p, lbx=self.lbw, ubx=self.ubw, lbg=self.lbg, ubg=self.ubg)
        ok = bool(self.solver.stats().get("success", False))
        wopt = np.asarray(sol["x"]).ravel()
        return wopt, ok and bool(np.all(np.isfinite(wopt)))


class MPCTracker:
    """Receding-horizon tracker; call `solve` once per control step.

    Args:
        cfg: MPC settings.
        limits: robot limits and dt.
        radius_m: robot body radius (obstacle distance is radius + margin).
    """

    def __init__(self, cfg: MPCConfig, limits: RobotLimits, radius_m: float) -> None:
        self.cfg = cfg
        self.limits = limits
        self.radius_m = radius_m
        self._problems: dict[str, _Problem] = {}
        self._w_prev: np.ndarray | None = None
        self.solvers_tried = [cfg.solver] + ([cfg.fallback] if cfg.fallback in ("fatrop", "ipopt")
                                             else [])
        self.problem(cfg.solver)  # build the primary now, so a broken install fails early

    def problem(self, solver: str) -> _Problem:
        if solver not in self._problems:
            self._problems[solver] = _Problem(self.cfg, self.limits, solver)
        return self._problems[solver]

    def reset(self) -> None:
        """Forget the warm start (new episode)."""
        self._w_prev = None

    def _initial_guess(self, state: np.ndarray, ref: np.ndarray) -> np.ndarray:
        n = self.cfg.horizon_steps
        per = NX + NU
        if self._w_prev is not None:
            # Shift the previous plan by one stage and repeat the last one.
            w = self._w_prev
            xs = [w[k * per: k * per + NX] for k in range(n + 1)]
            us = [w[k * per + NX: k * per + per] for k in range(n)]
            xs = xs[1:] + [xs[-1]]
            us = us[1:] + [us[-1]]
            xs[0] = state.copy()
        else:
            xs = [state.copy()] + [np.array([ref[0, k], ref[1, k], ref[2, k], state[3], 0.0])
                                   for k in range(n)]
            us = [np.zeros(NU) for _ in range(n)]
        parts = []
        for k in range(n):
            parts += [xs[k], us[k]]
        parts.append(xs[n])
        return np.concatenate(parts)

    def predicted_positions(self, state: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """(N+1, 2) positions the next plan is expected to pass (for obstacle selection)."""
        w0 = self._initial_guess(np.asarray(state, float), ref)
        per = NX + NU
        return np.stack([w0[k * per: k * per + 2] for k in range(self.cfg.horizon_steps + 1)])

    def solve(self, state: np.ndarray, ref: np.ndarray, obs_q: np.ndarray,
              obs_n: np.ndarray) -> MPCResult:
        """Plan from `state` along the reference, away from the given surfaces.

        Args:
            state: (5,) x, y, yaw, v, w (the sim's state).
            ref: (3, N) reference x, y, yaw for stages 1..N.
            obs_q: (N+1, M, 2) nearest surface points per stage (row 0 unused).
            obs_n: (N+1, M, 2) unit normals pointing from the surface to the robot.
        """
        cfg, n, m = self.cfg, self.cfg.horizon_steps, self.cfg.obstacles_per_stage
        state = np.asarray(state, float).copy()
        ref = np.asarray(ref, float).copy()
        # Unwrap yaws so the heading error never jumps by 2*pi.
        ref[2] = state[2] + np.unwrap(np.mod(ref[2] - state[2] + math.pi, 2 * math.pi) - math.pi)
        q = np.asarray(obs_q, float)[:n].reshape(n * m, 2).T
        nrm = np.asarray(obs_n, float)[:n].reshape(n * m, 2).T
        p = np.concatenate([state, ref.ravel(order="F"), q.ravel(order="F"),
                            nrm.ravel(order="F"), [self.radius_m + cfg.safety_margin_m]])
        w0 = self._initial_guess(state, ref)
        t0 = time.perf_counter()
        wopt, ok, used = None, False, cfg.solver
        for solver in self.solvers_tried:
            used = solver
            wopt, ok = self.problem(solver).solve(p, w0)
            if ok:
                break
        elapsed = time.perf_counter() - t0
        per = NX + NU
        xs = np.stack([wopt[k * per: k * per + NX] for k in range(n + 1)])
        us = np.stack([wopt[k * per + NX: k * per + per] for k in range(n)])
        if ok:
            self._w_prev = wopt
        else:
            self._w_prev = None
        act = np.clip(us[0, :2], [-self.limits.max_accel_mps2, -self.limits.max_turn_rate_radps],
                      [self.limits.max_accel_mps2, self.limits.max_turn_rate_radps])
        return MPCResult(act, ok, used, elapsed, xs[:, :2], float(us[:, 2].max()))

"""The runtime monitor in the simulator's control loop, and the `failtax monitor`
command with the bundled robot's additions (`sets`, `safeguard`).

`SafeguardedPolicy` runs a policy and a monitor together: every
`decision_every_steps` control steps the monitor judges the camera image; after
`k_consecutive` UNSAFE decisions (failtax.monitor.rules) control passes to a
safeguard for `takeover_s` seconds and then returns to the policy. The safeguard is
the map-based planner (`path_follower`: pure pursuit along a grid path planned from
the robot's current pose on the full map; it sees the glass and poles the policy
misses), re-planned at every takeover.

`run_safeguard` runs the same reset seeds twice, the policy alone and safeguarded,
and pairs them: failure rates with Wilson intervals, the discordant pairs with an
exact McNemar test, the share of control time under the safeguard, the mission time
of pairs where both reached the goal (what false alarms cost), and the monitor's
real latency per decision beside the control period (sim time waits for the monitor,
so a slow monitor shows there, not in the outcomes).

Only public APIs of `sim` are used (IndoorNavEnv, load_sim_config, make_policy).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from common import atomic_write_json, atomic_write_text, parse_sets
from failtax.monitor.cli import monitor as _pipeline_monitor
from failtax.monitor.metrics import rate
from failtax.monitor.rules import AlarmRule


@dataclass
class EpisodeTrace:
    """One episode of the policy alone or safeguarded."""

    seed: int
    outcome: str
    steps: int
    t_s: float
    cause: str | None = None
    alarms: int = 0
    safeguard_steps: int = 0
    decisions: int = 0
    monitor_s: float = 0.0  # wall time spent in the monitor
    modes: list[str] = field(default_factory=list)  # the modes named at alarms


class SafeguardedPolicy:
    """A policy with a monitor; on alarm a safeguard drives for `takeover_steps`."""

    def __init__(self, policy: Any, safeguard: Any, monitor: Any, *, k_consecutive: int,
                 decision_every_steps: int, takeover_steps: int, dt_s: float) -> None:
        self.policy, self.safeguard, self.monitor = policy, safeguard, monitor
        self.rule = AlarmRule(k_consecutive)
        self.every = decision_every_steps
        self.takeover_steps = takeover_steps
        self.dt_s = dt_s

    def reset(self, env: Any, rng: np.random.Generator) -> None:
        self.env, self.rng = env, rng
        self.policy.reset(env, rng)
        self.rule.reset()
        self.step_index = 0
        self.left = 0  # steps the safeguard still drives
        self.trace = EpisodeTrace(seed=-1, outcome="", steps=0, t_s=0.0)

    def act(self, obs: dict) -> np.ndarray:
        k = self.step_index
        self.step_index += 1
        if self.left == 0 and k % self.every == 0:
            start = time.perf_counter()
            decision = self.monitor.decide_frame(obs["image"], k, k * self.dt_s)
            self.trace.monitor_s += time.perf_counter() - start
            self.trace.decisions += 1
            if self.rule.update(decision.unsafe):
                self.trace.alarms += 1
                if decision.mode:
                    self.trace.modes.append(decision.mode)
                self.left = self.takeover_steps
                self.safeguard.reset(self.env, self.rng)  # plan from here
                self.rule.reset()
        if self.left > 0:
            self.left -= 1
            self.trace.safeguard_steps += 1
            action = self.safeguard.act(obs)
            if self.left == 0:
                self.policy.reset(self.env, self.rng)  # the policy resumes from here
            return action
        return self.policy.act(obs)


def _run(env: Any, actor: Any, seed: int) -> EpisodeTrace:
    obs, info = env.reset(seed=seed)
    actor.reset(env, np.random.default_rng(seed))
    steps = 0
    while True:
        obs, _, term, trunc, info = env.step(actor.act(obs))
        steps += 1
        if term or trunc:
            break
    trace = getattr(actor, "trace", None) or EpisodeTrace(seed, "", 0, 0.0)
    col = info.get("collision")
    trace.seed, trace.outcome, trace.steps = seed, info.get("outcome") or "timeout", steps
    trace.t_s = steps * env.config.episode.dt_s
    trace.cause = col["cause_class"] if col else None
    return trace


def run_safeguard(monitor_cfg: Any, *, sim_preset: str = "default", episodes: int = 100,
                  seed: int = 300_000, policy: str = "blind_follower",
                  safeguard: str = "path_follower", takeover_s: float = 3.0,
                  progress: bool = True) -> dict[str, Any]:
    """Paired runs of `policy` alone and safeguarded by the monitor of `monitor_cfg`
    (a frame-classifier monitor: it must keep up with the control loop) on reset seeds
    seed, seed+1, ...; returns the comparison (see module docstring)."""
    from scipy.stats import binomtest
    from tqdm import tqdm

    from failtax.monitor.cnn import CNNMonitor
    from sim.config import load_sim_config
    from sim.env import IndoorNavEnv
    from sim.policies import make_policy

    if monitor_cfg.kind != "cnn":
        raise ValueError("the safeguard runs a frame-classifier monitor online (kind: cnn); a "
                         "model monitor is too slow for the control loop on CPU (docs/MONITOR.md)")
    cfg = load_sim_config(sim_preset)
    env = IndoorNavEnv(cfg)
    dt = cfg.episode.dt_s
    mon = CNNMonitor(monitor_cfg)
    guarded = SafeguardedPolicy(make_policy(policy), make_policy(safeguard), mon,
                                k_consecutive=monitor_cfg.k_consecutive,
                                decision_every_steps=monitor_cfg.decision_every_steps,
                                takeover_steps=max(1, round(takeover_s / dt)), dt_s=dt)
    alone_policy = make_policy(policy)
    pairs = []
    for i in tqdm(range(episodes), desc="safeguard pairs", unit="pair", disable=not progress):
        a = _run(env, alone_policy, seed + i)
        b = _run(env, guarded, seed + i)
        pairs.append((a, b))
    fail_a = [a.outcome == "collision" for a, _ in pairs]
    fail_b = [b.outcome == "collision" for _, b in pairs]
    only_a = sum(x and not y for x, y in zip(fail_a, fail_b))
    only_b = sum(y and not x for x, y in zip(fail_a, fail_b))
    discordant = only_a + only_b
    p_mcnemar = binomtest(only_a, discordant).pvalue if discordant else 1.0
    both_ok = [(a, b) for a, b in pairs if a.outcome == "success" and b.outcome == "success"]
    alarms_ok = [(a, b) for a, b in both_ok if b.alarms]
    steps_b = sum(b.steps for _, b in pairs)
    decisions = sum(b.decisions for _, b in pairs)
    monitor_s = sum(b.monitor_s for _, b in pairs)
    return {
        "episodes": episodes, "sim_preset": sim_preset, "family": cfg.world.family,
        "policy": policy, "safeguard": safeguard, "takeover_s": takeover_s,
        "monitor": {"name": monitor_cfg.label, "model": mon.model,
                    "k_consecutive": monitor_cfg.k_consecutive,
                    "decision_every_steps": monitor_cfg.decision_every_steps,
                    "control_period_s": dt,
                    "decision_period_s": dt * monitor_cfg.decision_every_steps,
                    "latency_s_per_decision": monitor_s / decisions if decisions else None,
                    "decisions": decisions},
        "failure_rate_alone": rate(sum(fail_a), episodes),
        "failure_rate_safeguarded": rate(sum(fail_b), episodes),
        "paired": {"only_alone_failed": only_a, "only_safeguarded_failed": only_b,
                   "both_failed": sum(x and y for x, y in zip(fail_a, fail_b)),
                   "mcnemar_exact_p": p_mcnemar},
        "timeouts": {"alone": sum(a.outcome == "timeout" for a, _ in pairs),
                     "safeguarded": sum(b.outcome == "timeout" for _, b in pairs)},
        "share_of_time_under_safeguard": sum(b.safeguard_steps for _, b in pairs) / steps_b,
        "alarms_per_episode": sum(b.alarms for _, b in pairs) / episodes,
        "mission_time_s_both_succeeded": {
            "pairs": len(both_ok),
            "alone_mean": float(np.mean([a.t_s for a, _ in both_ok])) if both_ok else None,
            "safeguarded_mean": float(np.mean([b.t_s for _, b in both_ok])) if both_ok else None,
            # success episodes with an alarm: the alarms were false, their cost is the extra time
            "with_false_alarms": len(alarms_ok),
            "false_alarm_extra_s_mean": float(np.mean([b.t_s - a.t_s for a, b in alarms_ok]))
            if alarms_ok else None,
        },
        "pairs": [{"alone": asdict(a), "safeguarded": asdict(b)} for a, b in pairs],
    }


def summary_text(r: dict[str, Any]) -> str:
    fa, fb = r["failure_rate_alone"], r["failure_rate_safeguarded"]
    m, mt = r["monitor"], r["mission_time_s_both_succeeded"]

    def pct(x: dict[str, Any]) -> str:
        return f"{100 * x['value']:.1f} % [{100 * x['ci95'][0]:.1f}–{100 * x['ci95'][1]:.1f}]"

    lat = m["latency_s_per_decision"]
    return "\n".join([
        f"# Safeguard: {r['policy']} + monitor {m['name']} → {r['safeguard']} for {r['takeover_s']} s",
        "",
        f"- {r['episodes']} paired episodes ({r['family']}, same reset seeds)",
        f"- failure rate alone {pct(fa)}; safeguarded {pct(fb)}",
        (f"- paired: only alone failed {r['paired']['only_alone_failed']}, only safeguarded failed "
        f"{r['paired']['only_safeguarded_failed']}, both {r['paired']['both_failed']}; exact "
        f"McNemar p = {r['paired']['mcnemar_exact_p']:.3g}"),
        f"- timeouts: alone {r['timeouts']['alone']}, safeguarded {r['timeouts']['safeguarded']}",
        (f"- share of control time under the safeguard {100 * r['share_of_time_under_safeguard']:.1f} %; "
        f"{r['alarms_per_episode']:.2f} alarms per episode"),
        (f"- mission time where both succeeded ({mt['pairs']} pairs): alone "
        f"{mt['alone_mean'] or float('nan'):.1f} s, safeguarded {mt['safeguarded_mean'] or float('nan'):.1f} s; "
        f"{mt['with_false_alarms']} of them had (false) alarms costing "
        f"{mt['false_alarm_extra_s_mean'] or 0.0:+.1f} s on average"),
        f"- monitor latency {1000 * lat:.2f} ms per decision (one CPU thread) vs a decision "
        f"period of {m['decision_period_s']:.2f} s and a control period of {m['control_period_s']:.2f} s"
        if lat is not None else "- no monitor decisions",
        "",
    ])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def monitor() -> None:
    """Runtime failure monitor: a model reads what the robot logs, with the failure
    taxonomy in its prompt, and says SAFE/UNSAFE (and which mode is coming) every few
    control steps; an alarm fires after k consecutive UNSAFE. `evaluate` scores
    monitors on episode folders, `train` fits the frame-classifier monitors, `sets`
    records in- and out-of-distribution episode sets with the bundled simulator, and
    `safeguard` runs a monitor online that hands control to the map planner on alarm.
    See docs/MONITOR.md."""


for _name, _command in _pipeline_monitor.commands.items():
    monitor.add_command(_command, _name)


@monitor.command("sets")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Parent folder of the sets (train/, id/, ood/).")
@click.option("--per-set", type=int, default=250, show_default=True, help="Episodes in id and in ood.")
@click.option("--train", "train_n", type=int, default=300, show_default=True, help="Training episodes.")
@click.option("--frame-stride", type=int, default=5, show_default=True,
              help="A frame every this many control steps (the monitor's finest decision period).")
@click.option("--workers", type=int, default=1, show_default=True, help="Recording processes.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def sets(out, per_set, train_n, frame_stride, workers, no_progress) -> None:
    """Record failure and success episodes: train (office_a), id (office_a, other seeds),
    ood (the held-out office_b family). Resumable."""
    from loop.monitor_sets import make_monitor_sets

    summary = make_monitor_sets(out, per_set=per_set, train=train_n, frame_stride=frame_stride,
                                workers=workers, progress=not no_progress)
    for name, s in summary.items():
        click.echo(f"{name}: {s['episodes']} episodes {s['outcomes']} ({s['family']})")


@monitor.command("safeguard")
@click.option("--config", required=True, help="Monitor YAML (kind: cnn) or preset name.")
@click.option("--checkpoint", default=None, help="The monitor's checkpoint (overrides the config).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Folder for safeguard.json and safeguard.md.")
@click.option("--episodes", type=int, default=100, show_default=True, help="Paired episodes.")
@click.option("--sim", "sim_preset", default="default", show_default=True,
              help="Simulator preset (default: office_a, office_b: held out).")
@click.option("--seed", type=int, default=300_000, show_default=True, help="First reset seed.")
@click.option("--takeover-s", type=float, default=3.0, show_default=True,
              help="Seconds the safeguard drives after an alarm.")
@click.option("--set", "sets_", multiple=True, metavar="KEY=VALUE", help="Override a monitor config value.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def safeguard(config, checkpoint, out, episodes, sim_preset, seed, takeover_s, sets_, no_progress) -> None:
    """Policy alone vs policy + monitor + safeguard on the same seeds (paired)."""
    from failtax.monitor.config import load_monitor_config

    overrides = parse_sets(sets_)
    if checkpoint:
        overrides["checkpoint_path"] = checkpoint
    try:
        cfg = load_monitor_config(config, overrides)
        result = run_safeguard(cfg, sim_preset=sim_preset, episodes=episodes, seed=seed,
                               takeover_s=takeover_s, progress=not no_progress)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "safeguard.json", result)
    text = summary_text(result)
    atomic_write_text(out / "safeguard.md", text)
    click.echo(text)

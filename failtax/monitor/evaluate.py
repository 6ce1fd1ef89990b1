"""`failtax monitor evaluate`: run monitors over episode folders with known outcomes
and score them (failtax.monitor.metrics).

For each (episode set, monitor) the driver writes `<out>/<set>/<monitor>/decisions.jsonl`,
one line per episode with every decision, the alarm (k-consecutive rule) and the
time spent; an episode already there under the same monitor fingerprint is not redone
(and model calls are cached by content hash besides, so a rerun makes no model call).
`results.json`, `summary.md` and a self-contained `report.html` with per-episode
timelines sit at the top of `<out>`.

Ground truth (`ground_truth.json`) is read here, by evaluation code only, for the
per-cause detection rates; the monitors never see it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import append_jsonl, atomic_write_json, read_jsonl, stable_hash
from common.episode import read_ground_truth
from failtax.monitor.config import MonitorConfig
from failtax.monitor.llm import Decision, Monitor
from failtax.monitor.metrics import EpisodeOutcome, alarm_score, episode_auroc, monitor_metrics
from failtax.monitor.observe import decision_points, describe_points, end_time_s
from failtax.monitor.rules import first_alarm
from failtax.sources import Episode, EpisodeFolderSource, SourceError

log = logging.getLogger(__name__)

DECISIONS_FILE = "decisions.jsonl"
RESULTS_FILE = "results.json"
RETRYABLE = "fallback:backend_error"  # a decision no model made because the backend failed


@dataclass
class EpisodeRun:
    """One monitor on one episode (a line of decisions.jsonl)."""

    episode_id: str
    fingerprint: str
    outcome: str
    failure: bool
    end_t_s: float  # failure time (collisions) or last step's time
    cause: str | None
    decisions: list[Decision] = field(default_factory=list)
    alarm_index: int | None = None
    wall_s: float = 0.0  # wall time of this episode's decisions (descriptions included)
    cpu_s: float = 0.0  # this process's CPU time for them
    describe_s: float = 0.0  # of which building the scene descriptions took

    @property
    def alarm(self) -> Decision | None:
        return None if self.alarm_index is None else self.decisions[self.alarm_index]

    def outcome_record(self) -> EpisodeOutcome:
        alarm = self.alarm
        return EpisodeOutcome(self.episode_id, self.failure,
                              self.end_t_s if self.failure else None,
                              alarm.t_s if alarm else None, self.cause,
                              alarm.mode if alarm else None)

    def to_dict(self) -> dict[str, Any]:
        return {"episode_id": self.episode_id, "fingerprint": self.fingerprint,
                "outcome": self.outcome, "failure": self.failure, "end_t_s": self.end_t_s,
                "cause": self.cause, "alarm_index": self.alarm_index, "wall_s": self.wall_s,
                "cpu_s": self.cpu_s, "describe_s": self.describe_s,
                "decisions": [d.to_dict() for d in self.decisions]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpisodeRun:
        d = dict(d)
        d["decisions"] = [Decision.from_dict(x) for x in d["decisions"]]
        return cls(**d)


def select_episodes(root: str | Path, cfg: MonitorConfig) -> tuple[list[Episode], list[SourceError]]:
    """Failure and success episodes of `root` (other outcomes are skipped), in name
    order; with `max_episodes`, taken alternately from failures and successes."""
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"episode folder {root} does not exist")
    episodes, errors = [], []
    for item in EpisodeFolderSource(path, cfg.failure_outcomes + cfg.success_outcomes).scan():
        (errors if isinstance(item, SourceError) else episodes).append(item)
    if cfg.max_episodes and len(episodes) > cfg.max_episodes:
        fails = [e for e in episodes if e.meta["outcome"] in cfg.failure_outcomes]
        oks = [e for e in episodes if e.meta["outcome"] not in cfg.failure_outcomes]
        mixed = [e for pair in zip(fails, oks) for e in pair]
        longer = fails if len(fails) > len(oks) else oks
        mixed += longer[min(len(fails), len(oks)):]
        episodes = sorted(mixed[: cfg.max_episodes], key=lambda e: e.episode_id)
    return episodes, errors


def fingerprint(cfg: MonitorConfig, monitor: Monitor, extra: Any = None) -> str:
    """What determines a monitor's decisions (config, model, taxonomy), hashed."""
    relevant = cfg.model_dump(mode="json", exclude={"max_episodes", "name", "backend"})
    # the prompt's text, not only its file name: an edited prompt makes new decisions
    return stable_hash([relevant, monitor.model, getattr(monitor, "prompt", None), extra])


async def run_episode(monitor: Monitor, episode: Episode, cfg: MonitorConfig, fp: str
                      ) -> EpisodeRun:
    """All decisions of `monitor` on `episode` and the alarm they raise."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    points = decision_points(episode, cfg)
    describe_s = 0.0
    if getattr(monitor, "needs_text", True):
        describe_points(episode, points, cfg.scene)
        describe_s = time.perf_counter() - wall0
    decisions = await monitor.decide_episode(episode, points)
    outcome = str(episode.meta["outcome"])
    failure = outcome in cfg.failure_outcomes
    truth = read_ground_truth(episode.path) if episode.path else None
    return EpisodeRun(
        episode.episode_id, fp, outcome, failure, end_time_s(episode),
        truth.cause_class if (truth and failure) else None, decisions,
        first_alarm((d.unsafe for d in decisions), cfg.k_consecutive),
        time.perf_counter() - wall0, time.process_time() - cpu0, describe_s)


async def evaluate_monitor(monitor: Monitor, episodes: list[Episode], cfg: MonitorConfig,
                           out_dir: str | Path, *, fp: str, progress: bool = True,
                           concurrency: int = 4) -> list[EpisodeRun]:
    """Run `monitor` on `episodes` (skipping those already in `out_dir/decisions.jsonl`
    with fingerprint `fp`) and return every episode's run, in episode order."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # an episode whose model calls failed at the transport (dead or overloaded server) is
    # redone by a rerun; answers the model gave come back from the call cache
    done = {r["episode_id"]: EpisodeRun.from_dict(r) for r in read_jsonl(out / DECISIONS_FILE)
            if r.get("fingerprint") == fp
            and not any(d["source"] == RETRYABLE for d in r["decisions"])}
    todo = [e for e in episodes if e.episode_id not in done]
    bar = tqdm(total=len(todo), desc=f"monitor {monitor.name}", unit="ep", disable=not progress)
    gate = asyncio.Semaphore(concurrency)

    async def one(ep: Episode) -> None:
        async with gate:
            run = await run_episode(monitor, ep, cfg, fp)
        append_jsonl(out / DECISIONS_FILE, run.to_dict())
        done[ep.episode_id] = run
        bar.update()

    await asyncio.gather(*(one(e) for e in todo))
    bar.close()
    return [done[e.episode_id] for e in episodes if e.episode_id in done]


def score(runs: list[EpisodeRun], *, seed: int = 0, k: int = 3) -> dict[str, Any]:
    """Metrics, throughput and how many decisions a model really made; for monitors
    whose decisions carry P(UNSAFE), the episodes' AUROC under the k-consecutive rule."""
    metrics = monitor_metrics([r.outcome_record() for r in runs], seed=seed)
    if any(d.p_unsafe is not None for r in runs for d in r.decisions):
        metrics["episode_auroc"] = episode_auroc(
            [(r.failure, alarm_score([d.p_unsafe for d in r.decisions], k)) for r in runs])
    decisions = [d for r in runs for d in r.decisions]
    fallbacks: dict[str, int] = {}
    for d in decisions:
        if d.source.startswith("fallback:"):
            fallbacks[d.source] = fallbacks.get(d.source, 0) + 1
    n = len(decisions)
    wall = sum(r.wall_s for r in runs)
    cpu = sum(r.cpu_s for r in runs)
    latencies = sorted(d.latency_s for d in decisions if d.latency_s > 0)
    named = [r for r in runs if r.failure and r.alarm is not None]
    metrics.update(
        decisions=n,
        decisions_by_model=sum(not d.source.startswith("fallback:") for d in decisions),
        fallbacks=fallbacks,
        unsafe_share=sum(d.unsafe for d in decisions) / n if n else None,
        throughput={
            # per episode the decisions run concurrently; these are what this process spent
            "wall_s_per_decision": wall / n if n else None,
            "decisions_per_s": n / wall if wall else None,
            "cpu_s_per_decision": cpu / n if n else None,
            "model_latency_s_median": latencies[len(latencies) // 2] if latencies else None,
            "describe_s_per_decision": sum(r.describe_s for r in runs) / n if n else None,
        },
        modes_at_true_alarms={m: sum(r.alarm.mode == m for r in named)
                              for m in sorted({r.alarm.mode or "none" for r in named})},
    )
    return metrics


def write_results(out_dir: str | Path, results: dict[str, Any], runs: dict[tuple[str, str], list[EpisodeRun]],
                  *, title: str = "Runtime monitor evaluation") -> None:
    """results.json, summary.md and report.html of an evaluation."""
    from failtax.monitor.report import render_report, summary_markdown

    out = Path(out_dir)
    atomic_write_json(out / RESULTS_FILE, results)
    from common import atomic_write_text

    atomic_write_text(out / "summary.md", summary_markdown(results, title=title))
    atomic_write_text(out / "report.html", render_report(results, runs, title=title))

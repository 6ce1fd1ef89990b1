"""The pipeline run: named stages with files in between (docs/RUN_FORMAT.md).

    downsample → reason → discover → assign → report

Each stage's driver lives beside its algorithm (`failtax.downsample.run_stage`,
`failtax.reasoning.run_stage`, `failtax.discovery.run_stage`,
`failtax.assignment.run_stage`, `failtax.report.write_report`); this module
only sequences the typed list `PIPELINE` and writes config.yaml. Each stage
reads the previous stage's file in the run folder and writes its own; it logs
its start and finish (stages.jsonl, common.stages), skips the work already in
its output (episodes in keyframes.jsonl / explanations.jsonl; discover and
assign when their inputs' hash is unchanged and no model call failed), and
writes atomically. Every model call goes through the backend's content-hash
cache, so a killed run, started again, repeats no call that had finished, and a
run whose calls failed (a dead server) retries only those.

    >>> from failtax.config import load_config
    >>> cfg = load_config("configs/pipeline/quick.yaml")
    >>> summary = run_pipeline(cfg, "runs/demo", episodes="episodes/")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

from common import atomic_write_text, read_jsonl
from common.stages import now_iso
from failtax import assignment, discovery, downsample, reasoning
from failtax.config import PipelineConfig
from failtax.reading import reads_reports
from failtax.reasoning import PROMPTS_DIR, prompt_hash
from failtax.report import write_report
from failtax.run_folder import (
    ASSIGNMENTS_FILE,
    CONFIG_FILE,
    ERRORS_FILE,
    EXPLANATIONS_FILE,
    KEYFRAMES_FILE,
    TAXONOMY_FILE,
    RunFolder,
    StageResult,
    backend_stats,
    read_explanations,
    read_taxonomy,
)
from failtax.sources import EpisodeSource, ExplanationSource, make_source
from failtax.types import SCHEMA_VERSION
from serving import make_backend
from serving.protocol import LLMBackend

log = logging.getLogger(__name__)

# Config sections whose change makes earlier per-episode outputs of a run folder stale.
_FROZEN_SECTIONS = ("source", "downsample", "scene", "reasoning")

StageConfig = TypeVar("StageConfig", bound=BaseModel)


class RunConfigMismatch(ValueError):
    """The run folder was started with a different config for its per-episode stages."""


class Run:
    """One run folder and the stages that fill it.

    Args:
        cfg: the resolved PipelineConfig.
        run_dir: the run folder (created when missing).
        episodes: the input path (overrides cfg.source.path).
        backend: an LLMBackend to use instead of building one from cfg.backend
            (tests pass a stub; callers reuse a live server).
        progress: show tqdm progress bars.
    """

    def __init__(
        self,
        cfg: PipelineConfig,
        run_dir: str | os.PathLike,
        *,
        episodes: str | os.PathLike | None = None,
        backend: LLMBackend | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.folder = RunFolder(run_dir, progress=progress)
        self.dir = self.folder.dir
        self.episodes = episodes if episodes is not None else cfg.source.path
        self._backend = backend
        self._owns_backend = backend is None
        self.progress = progress
        self.summary: dict[str, Any] = {"stages": {}}

    def path(self, name: str) -> Path:
        return self.folder.path(name)

    async def backend(self) -> LLMBackend:
        """The model backend, built from cfg.backend on first use (closed when the run ends)."""
        if self._backend is None:
            backend_cfg = self.cfg.backend
            if self.cfg.cache_dir:
                backend_cfg = backend_cfg.model_copy(update={"cache_dir": self.cfg.cache_dir})
            made: Any = make_backend(backend_cfg)
            self._backend = await made if asyncio.iscoroutine(made) else made
        return self._backend

    async def _close_backend(self) -> None:
        if self._owns_backend and self._backend is not None:
            for name in ("aclose", "close"):
                closer = getattr(self._backend, name, None)
                if closer is not None:
                    result = closer()
                    if asyncio.iscoroutine(result):
                        await result
                    break
            self._backend = None

    def seeded(self, stage_cfg: StageConfig) -> StageConfig:
        """A stage config carrying the run's one seed (when the stage has a seed field)."""
        if "seed" in type(stage_cfg).model_fields:
            return stage_cfg.model_copy(update={"seed": self.cfg.seed})
        return stage_cfg

    def source(self) -> EpisodeSource | ExplanationSource:
        """The input, as `cfg.source` and `episodes` name it."""
        return make_source(self.cfg.source, self.episodes)

    # ------------------------------------------------------------------ config.yaml

    def write_config(self) -> None:
        """config.yaml: the resolved config, model ids, prompt hashes; refuses a stale run folder."""
        resolved = self.cfg.model_dump(mode="json")
        resolved["source"]["path"] = str(self.episodes) if self.episodes is not None else None
        path = self.path(CONFIG_FILE)
        per_episode = {"downsample", "reason"} & set(self.cfg.stages)
        if path.exists() and per_episode:
            previous = (yaml.safe_load(path.read_text()) or {}).get("config", {})
            changed = [
                f"{section}.{key}"
                for section in _FROZEN_SECTIONS
                for key in _changed_keys(previous.get(section), resolved.get(section))
            ]
            if changed:
                raise RunConfigMismatch(
                    f"{self.dir} was started with different values of {', '.join(changed)}; "
                    "start a new --run-dir (or delete its keyframes/explanations files to redo them)"
                )
        prompts = {
            p.name: prompt_hash(p.read_text(encoding="utf-8"))
            for p in sorted(PROMPTS_DIR.glob("*.txt"))
        }
        doc = {
            "schema_version": SCHEMA_VERSION,
            "written_at": now_iso(),
            "models": {
                "backend_kind": self.cfg.backend.kind,
                # the served model id once a backend was made (config.yaml is rewritten at the end)
                "backend_model": getattr(self._backend, "model_id", None) or self.cfg.backend.model,
                "reasoning": sorted(
                    {e.model for e in read_explanations(self.dir) if e.model is not None}
                ),
            },
            "prompt_hashes": prompts,
            "config": resolved,
        }
        atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))

    # ------------------------------------------------------------------ driver

    async def arun(self) -> dict[str, Any]:
        """Run the configured stages in order; returns a summary with model-call counts.

        The summary's `fallbacks_from_failed_calls` counts, per stage, results that
        are fallbacks from model calls that failed (server unreachable): facts instead
        of a model's explanation, keyword names instead of a model's, embedding
        assignments instead of a model's. Running the same run again retries them.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        failed: dict[str, int] = {}
        try:
            self.write_config()
            for stage in PIPELINE:
                if stage.name not in self.cfg.stages:
                    continue
                result = await stage.run(self)
                if result is None:
                    continue
                self.summary["stages"][stage.name] = result.summary()
                if result.retryable:
                    failed[stage.name] = result.retryable
            self.write_config()  # now with the model ids that answered
            self.summary["model_calls"] = backend_stats(self._backend)
            self.summary["errors"] = len(read_jsonl(self.path(ERRORS_FILE)))
            self.summary["fallbacks_from_failed_calls"] = failed
            if failed:
                log.warning("%s", failed_calls_message(self.summary, self.dir))
            return self.summary
        finally:
            await self._close_backend()

    def run(self) -> dict[str, Any]:
        """Synchronous `arun`."""
        return asyncio.run(self.arun())


def failed_calls_message(summary: dict[str, Any], run_dir: str | os.PathLike) -> str:
    """What a summary with fallbacks from failed model calls means and how to fix it ("" if none)."""
    failed = summary.get("fallbacks_from_failed_calls") or {}
    if not failed:
        return ""
    what = ", ".join(f"{stage}: {n}" for stage, n in failed.items())
    return (
        f"some results in {run_dir} are fallbacks from model calls that failed "
        f"(server unreachable) — {what}; start the model server and run the same "
        "command again to retry only those calls"
    )


# ---------------------------------------------------------------------- the stages


@dataclass(frozen=True)
class Stage:
    """One named stage of the pipeline: the run-folder files it reads and writes, and
    the call that runs its driver (None when it adds nothing to the summary)."""

    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    run: Callable[[Run], Awaitable[StageResult | None]]


async def _downsample(run: Run) -> StageResult:
    return downsample.run_stage(
        run.folder,
        run.source(),
        run.cfg.downsample,
        max_episodes=run.cfg.source.max_episodes,
    )


async def _reason(run: Run) -> StageResult:
    return await reasoning.run_stage(
        run.folder,
        run.source(),
        run.cfg.reasoning,
        run.cfg.scene,
        run.backend,
        seed=run.cfg.seed,
        read_reports=reads_reports(run.cfg.reasoning, run.cfg.backend),
    )


async def _discover(run: Run) -> StageResult:
    return await discovery.run_stage(
        run.folder,
        read_explanations(run.dir),
        run.seeded(run.cfg.discovery),
        run.backend,
        backend_model=run.cfg.backend.model,
        seed=run.cfg.seed,
    )


async def _assign(run: Run) -> StageResult:
    return await assignment.run_stage(
        run.folder,
        read_explanations(run.dir),
        read_taxonomy(run.dir),
        run.seeded(run.cfg.assignment),
        run.backend,
        backend_model=run.cfg.backend.model,
    )


async def _report(run: Run) -> None:
    run.folder.log_stage("report", "start")
    write_report(run.dir)
    run.folder.log_stage("report", "finish")


# The stages in order; `PipelineConfig.stages` picks a subset by name (failtax.types.STAGES).
PIPELINE: tuple[Stage, ...] = (
    Stage("downsample", (), (KEYFRAMES_FILE,), _downsample),
    Stage("reason", (KEYFRAMES_FILE,), (EXPLANATIONS_FILE,), _reason),
    Stage("discover", (EXPLANATIONS_FILE,), (TAXONOMY_FILE,), _discover),
    Stage(
        "assign",
        (EXPLANATIONS_FILE, TAXONOMY_FILE),
        (ASSIGNMENTS_FILE, TAXONOMY_FILE),
        _assign,
    ),
    Stage(
        "report",
        (TAXONOMY_FILE, ASSIGNMENTS_FILE, EXPLANATIONS_FILE),
        ("summary.md", "report.html"),
        _report,
    ),
)


def _changed_keys(previous: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value differs; keys the previous config did not have (added
    by a newer version, at their defaults) are not changes."""
    if not isinstance(previous, dict) or not isinstance(current, dict):
        return [] if previous == current else [prefix.rstrip(".") or "(value)"]
    out: list[str] = []
    for key, value in previous.items():
        if key in current:
            out += _changed_keys(value, current[key], f"{prefix}{key}.")
    return out


def run_pipeline(
    cfg: PipelineConfig,
    run_dir: str | os.PathLike,
    *,
    episodes: str | os.PathLike | None = None,
    backend: LLMBackend | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) a pipeline into `run_dir`; see `Run`."""
    return Run(cfg, run_dir, episodes=episodes, backend=backend, progress=progress).run()


__all__ = [
    "PIPELINE",
    "Run",
    "RunConfigMismatch",
    "Stage",
    "failed_calls_message",
    "run_pipeline",
]

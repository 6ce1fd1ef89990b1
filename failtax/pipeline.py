"""The pipeline run: named stages with files in between (docs/RUN_FORMAT.md).

    downsample → reason → discover → assign → report

Each stage reads the previous stage's file in the run folder and writes its
own; it logs its start and finish (stages.jsonl), skips the work already in its
output (episodes in keyframes.jsonl / explanations.jsonl; discover and assign
when their inputs' hash is unchanged), and writes atomically (whole lines
appended with fsync, whole files through a temporary file and rename). Every
model call goes through the backend's content-hash cache, so a killed run,
started again, repeats no call that had finished.

    >>> from failtax.config import load_config
    >>> cfg = load_config("configs/pipeline/quick.yaml")
    >>> summary = run_pipeline(cfg, "runs/demo", episodes="episodes/")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from failtax.reasoning import PROMPTS_DIR, RETRYABLE_FALLBACKS, make_reasoner, prompt_hash
from failtax.types import SCHEMA_VERSION, Assignment, Explanation, Keyframes, Taxonomy
from common import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    stable_hash,
)

log = logging.getLogger(__name__)

STAGES = ("downsample", "reason", "discover", "assign", "report")
MODEL_MODES = ("vision", "scene_text")

CONFIG_FILE = "config.yaml"
KEYFRAMES_FILE = "keyframes.jsonl"
EXPLANATIONS_FILE = "explanations.jsonl"
TAXONOMY_FILE = "taxonomy.json"
ASSIGNMENTS_FILE = "assignments.jsonl"
ERRORS_FILE = "errors.jsonl"
STAGES_FILE = "stages.jsonl"
# Config sections whose change makes earlier per-episode outputs of a run folder stale.
_FROZEN_SECTIONS = ("source", "downsample", "scene", "reasoning")


class RunConfigMismatch(ValueError):
    """The run folder was started with a different config for its per-episode stages."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def latest_by_episode(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Last record per episode_id (a rerun appends a newer line for a retried episode)."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        out[str(r["episode_id"])] = r
    return out


def read_explanations(run_dir: str | os.PathLike) -> list[Explanation]:
    """The run's explanations, one per episode (the latest line wins), sorted by episode id."""
    latest = latest_by_episode(read_jsonl(Path(run_dir) / EXPLANATIONS_FILE))
    return [Explanation.from_dict(latest[k]) for k in sorted(latest)]


def read_keyframes(run_dir: str | os.PathLike) -> dict[str, Keyframes]:
    """Keyframes per episode id."""
    latest = latest_by_episode(read_jsonl(Path(run_dir) / KEYFRAMES_FILE))
    return {k: Keyframes.from_dict(v) for k, v in latest.items()}


def read_taxonomy(run_dir: str | os.PathLike) -> Taxonomy:
    """taxonomy.json of a run."""
    import json

    path = Path(run_dir) / TAXONOMY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `failtax discover` first")
    return Taxonomy.from_dict(json.loads(path.read_text(encoding="utf-8")))


def read_assignments(run_dir: str | os.PathLike) -> list[Assignment]:
    """assignments.jsonl of a run."""
    return [Assignment.from_dict(r) for r in read_jsonl(Path(run_dir) / ASSIGNMENTS_FILE)]


def backend_stats(backend: Any) -> dict[str, int]:
    """Calls that reached a model vs answers from the cache, when the backend counts them."""
    stats = getattr(backend, "stats", None)
    if stats is None:
        return {}
    return {k: int(getattr(stats, k)) for k in ("calls", "hits") if hasattr(stats, k)}


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
        cfg: Any,
        run_dir: str | os.PathLike,
        *,
        episodes: str | os.PathLike | None = None,
        backend: Any = None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.episodes = episodes if episodes is not None else cfg.source.path
        self._backend = backend
        self._owns_backend = backend is None
        self.progress = progress
        self.summary: dict[str, Any] = {"stages": {}}
        self._error_keys: set[tuple[str, str, str]] | None = None

    # ------------------------------------------------------------------ helpers

    def path(self, name: str) -> Path:
        return self.dir / name

    def record_errors(self, records: list[dict[str, Any]]) -> None:
        """Append error records, skipping ones this run folder already holds (resume)."""
        if self._error_keys is None:
            self._error_keys = {self._error_key(r) for r in read_jsonl(self.path(ERRORS_FILE))}
        new = []
        for r in records:
            key = self._error_key(r)
            if key in self._error_keys and r.get("stage") == "source":
                continue  # a rescan finds the same bad inputs again
            self._error_keys.add(key)
            new.append({"time": _now(), **r})
        append_jsonl(self.path(ERRORS_FILE), new)

    @staticmethod
    def _error_key(r: dict[str, Any]) -> tuple[str, str, str]:
        return (str(r.get("stage")), str(r.get("episode_id")), str(r.get("kind")))

    def _log_stage(self, stage: str, event: str, **fields: Any) -> None:
        rec = {"stage": stage, "event": event, "time": _now(), **fields}
        append_jsonl(self.path(STAGES_FILE), rec)
        if event == "skip":
            self.summary["stages"][stage] = {"skipped": fields.get("reason", "")}
        log.info(
            "stage %s %s %s", stage, event, {k: v for k, v in fields.items() if k != "input_hash"}
        )

    def _stage_done(self, stage: str, input_hash: str, output: str) -> bool:
        if not self.path(output).exists():
            return False
        finished = [r for r in read_jsonl(self.path(STAGES_FILE)) if r.get("stage") == stage]
        finished = [r for r in finished if r.get("event") == "finish"]
        return bool(finished) and finished[-1].get("input_hash") == input_hash

    def _bar(self, iterable=None, **kw):
        return tqdm(iterable, disable=not self.progress, leave=False, **kw)

    async def backend(self) -> Any:
        """The model backend, built from cfg.backend on first use (closed when the run ends)."""
        if self._backend is None:
            from serving import make_backend

            backend_cfg = self.cfg.backend
            if self.cfg.cache_dir:
                backend_cfg = backend_cfg.model_copy(update={"cache_dir": self.cfg.cache_dir})
            made = make_backend(backend_cfg)
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

    def _seeded(self, stage_cfg: Any) -> Any:
        """A stage config carrying the run's one seed (when the stage has a seed field)."""
        if "seed" in type(stage_cfg).model_fields:
            return stage_cfg.model_copy(update={"seed": self.cfg.seed})
        return stage_cfg

    def _source(self):
        from failtax.sources import make_source

        return make_source(self.cfg.source, self.episodes)

    # ------------------------------------------------------------------ config.yaml

    def write_config(self) -> None:
        """config.yaml: the resolved config, model ids, prompt hashes; refuses a stale run folder."""
        import yaml

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
            "written_at": _now(),
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

    # ------------------------------------------------------------------ stages

    def stage_downsample(self) -> None:
        """Kept frames per episode → keyframes.jsonl."""
        from failtax.downsample import Downsampler
        from failtax.sources import EpisodeReadError, SourceError

        source = self._source()
        if source.kind == "explanations":
            self._log_stage("downsample", "skip", reason="source gives explanations; no frames")
            return
        done = set(read_keyframes(self.dir))
        self._log_stage("downsample", "start", already_done=len(done))
        sampler = Downsampler(self.cfg.downsample)
        new = skipped = 0
        limit = self.cfg.source.max_episodes
        seen = 0
        for item in self._bar(source.scan(), desc="downsample", unit="ep"):
            if isinstance(item, SourceError):
                self.record_errors([item.to_record()])
                continue
            seen += 1
            if limit and seen > limit:
                break
            if item.episode_id in done:
                continue
            try:
                kf = sampler.keyframes(item)
            except EpisodeReadError as e:
                self.record_errors(
                    [
                        {
                            "stage": "downsample",
                            "episode_id": e.episode_id,
                            "kind": e.kind,
                            "message": e.message,
                            "path": str(item.path),
                        }
                    ]
                )
                skipped += 1
                continue
            append_jsonl(self.path(KEYFRAMES_FILE), kf.to_dict())
            new += 1
        self._log_stage(
            "downsample",
            "finish",
            new=new,
            skipped=skipped,
            total=len(done) + new,
            embedder=getattr(sampler.embedder, "name", None) or "fixed-rate",
        )
        self.summary["stages"]["downsample"] = {
            "new": new,
            "skipped": skipped,
            "total": len(done) + new,
        }

    async def stage_reason(self) -> None:
        """Explanations per episode → explanations.jsonl (model calls run concurrently)."""
        source = self._source()
        existing = latest_by_episode(read_jsonl(self.path(EXPLANATIONS_FILE)))
        done = {
            k for k, v in existing.items() if not RETRYABLE_FALLBACKS & set(v.get("degenerate", []))
        }
        if source.kind == "explanations":
            await self._reason_given(source, done)
            return
        keyframes = read_keyframes(self.dir)
        pending_ids = sorted(set(keyframes) - done)
        self._log_stage(
            "reason",
            "start",
            already_done=len(done),
            pending=len(pending_ids),
            input_mode=self.cfg.reasoning.input_mode,
        )
        if not pending_ids:
            self._log_stage("reason", "finish", new=0, total=len(done))
            self.summary["stages"]["reason"] = {"new": 0, "total": len(done)}
            return
        mode = self.cfg.reasoning.input_mode
        if mode == "given":
            raise ValueError("reasoning.input_mode=given needs a CSV/JSONL source of explanations")
        if mode in MODEL_MODES:
            await self._reason_episodes(keyframes, pending_ids, await self.backend())
        else:
            await self._reason_episodes(keyframes, pending_ids, None)

    async def _reason_given(self, source, done: set[str]) -> None:
        from failtax.sources import SourceError

        self._log_stage("reason", "start", input_mode="given", already_done=len(done))
        new = []
        for item in source.scan():
            if isinstance(item, SourceError):
                self.record_errors([item.to_record()])
            elif item.episode_id not in done:
                new.append(item.to_dict())
                done.add(item.episode_id)
        append_jsonl(self.path(EXPLANATIONS_FILE), new)
        self._log_stage("reason", "finish", new=len(new), total=len(done))
        self.summary["stages"]["reason"] = {"new": len(new), "total": len(done)}

    async def _reason_episodes(
        self, keyframes: dict[str, Keyframes], pending_ids: list[str], backend: Any
    ) -> None:
        from failtax.scene import SceneDescriber
        from failtax.sources import Episode, EpisodeReadError

        reasoner = make_reasoner(self.cfg.reasoning, self.cfg.scene, backend, seed=self.cfg.seed)
        describer = SceneDescriber(self.cfg.scene)
        pending = set(pending_ids)
        episodes = [
            e for e in self._source().scan() if isinstance(e, Episode) and e.episode_id in pending
        ]
        missing = pending - {e.episode_id for e in episodes}
        if missing:
            self.record_errors(
                [
                    {
                        "stage": "reason",
                        "episode_id": eid,
                        "kind": "episode_gone",
                        "message": "in keyframes.jsonl but no longer readable from the source",
                    }
                    for eid in sorted(missing)
                ]
            )
        semaphore = asyncio.Semaphore(self.cfg.reasoning.concurrency)
        # Model modes fall back to facts on a bad answer, and facts need the scene descriptions.
        with_scenes = reasoner.needs_scenes or self.cfg.reasoning.input_mode in MODEL_MODES

        async def one(ep: Episode):
            async with semaphore:
                kf = keyframes[ep.episode_id]
                try:
                    scenes = describer.describe(ep, kf) if with_scenes else []
                except EpisodeReadError as e:
                    return ep, None, e
                except (ValueError, IndexError, KeyError, TypeError) as e:
                    # Odd channel arrays (wrong shapes, unexpected ids) cost this episode only.
                    return (
                        ep,
                        None,
                        EpisodeReadError(ep.episode_id, "bad_channels", f"scene: {e!r}"),
                    )
                try:
                    return ep, await reasoner.explain(ep, kf, scenes), None
                except EpisodeReadError as e:
                    return ep, None, e

        new = fallbacks = degenerate = 0
        tasks = [asyncio.create_task(one(ep)) for ep in episodes]
        bar = self._bar(
            total=len(tasks), desc=f"reason ({self.cfg.reasoning.input_mode})", unit="ep"
        )
        try:
            for fut in asyncio.as_completed(tasks):
                ep, outcome, read_error = await fut
                bar.update(1)
                if read_error is not None:
                    self.record_errors(
                        [
                            {
                                "stage": "reason",
                                "episode_id": ep.episode_id,
                                "kind": read_error.kind,
                                "message": read_error.message,
                                "path": str(ep.path),
                            }
                        ]
                    )
                    continue
                if outcome.errors:
                    self.record_errors(outcome.errors)
                    fallbacks += 1
                if any(not f.startswith("fallback:") for f in outcome.explanation.degenerate):
                    degenerate += 1
                append_jsonl(self.path(EXPLANATIONS_FILE), outcome.explanation.to_dict())
                new += 1
        finally:
            bar.close()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        total = len(read_explanations(self.dir))
        self._log_stage(
            "reason",
            "finish",
            new=new,
            fallbacks=fallbacks,
            degenerate=degenerate,
            total=total,
            **backend_stats(backend),
        )
        self.summary["stages"]["reason"] = {
            "new": new,
            "fallbacks": fallbacks,
            "degenerate": degenerate,
            "total": total,
        }

    async def stage_discover(self) -> None:
        """Taxonomy from all explanations → taxonomy.json."""
        from failtax.discovery import make_strategy

        explanations = read_explanations(self.dir)
        if not explanations:
            raise ValueError(
                f"{self.dir / EXPLANATIONS_FILE} holds no explanations; nothing to discover from"
            )
        discovery_cfg = self._seeded(self.cfg.discovery)
        input_hash = stable_hash(
            [
                [e.to_dict() for e in explanations],
                discovery_cfg.model_dump(mode="json"),
                self.cfg.backend.model,
                self.cfg.seed,
            ]
        )
        if self._stage_done("discover", input_hash, TAXONOMY_FILE):
            self._log_stage("discover", "skip", reason="taxonomy.json is up to date")
            return
        self._log_stage(
            "discover",
            "start",
            explanations=len(explanations),
            strategy=self.cfg.discovery.strategy,
        )
        # Cluster-then-name without model names needs no model: do not start a server for it.
        needs_model = discovery_cfg.strategy != "cluster-then-name" or discovery_cfg.use_model_names
        backend = await self.backend() if needs_model else None
        strategy = make_strategy(discovery_cfg)
        taxonomy = await strategy.discover(explanations, backend)
        atomic_write_json(self.path(TAXONOMY_FILE), taxonomy.to_dict())
        self._log_stage(
            "discover",
            "finish",
            modes=len(taxonomy.modes),
            input_hash=input_hash,
            **backend_stats(backend),
        )
        self.summary["stages"]["discover"] = {"modes": len(taxonomy.modes)}

    async def stage_assign(self) -> None:
        """Each explanation → modes (assignments.jsonl); assigned frequencies back into taxonomy.json."""
        from failtax.assignment import assign, update_frequencies

        explanations = read_explanations(self.dir)
        taxonomy = read_taxonomy(self.dir)
        assignment_cfg = self._seeded(self.cfg.assignment)
        mode_keys = [(m.name, m.description, m.keywords) for m in taxonomy.modes]
        input_hash = stable_hash(
            [
                [e.to_dict() for e in explanations],
                mode_keys,
                assignment_cfg.model_dump(mode="json"),
                self.cfg.backend.model,
            ]
        )
        if self._stage_done("assign", input_hash, ASSIGNMENTS_FILE):
            self._log_stage("assign", "skip", reason="assignments.jsonl is up to date")
            return
        self._log_stage(
            "assign", "start", explanations=len(explanations), modes=len(taxonomy.modes)
        )
        # Only the llm method calls a model; the others must not start a server.
        backend = await self.backend() if assignment_cfg.method == "llm" else None
        assignments = await assign(explanations, taxonomy, backend, assignment_cfg)
        lines = "".join(
            _json_line(a.to_dict()) for a in sorted(assignments, key=lambda a: a.episode_id)
        )
        atomic_write_text(self.path(ASSIGNMENTS_FILE), lines)
        update_frequencies(taxonomy, assignments)  # the counts follow the file, whatever assign did
        atomic_write_json(self.path(TAXONOMY_FILE), taxonomy.to_dict())
        self._log_stage(
            "assign",
            "finish",
            assigned=len(assignments),
            outliers=taxonomy.outlier_count,
            input_hash=input_hash,
            **backend_stats(backend),
        )
        self.summary["stages"]["assign"] = {
            "assigned": len(assignments),
            "outliers": taxonomy.outlier_count,
        }

    def stage_report(self) -> None:
        """summary.md and report.html (failtax.report)."""
        from failtax.report import write_report

        self._log_stage("report", "start")
        write_report(self.dir)
        self._log_stage("report", "finish")

    # ------------------------------------------------------------------ driver

    async def arun(self) -> dict[str, Any]:
        """Run the configured stages in order; returns a summary with model-call counts."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self.write_config()
            for stage in STAGES:
                if stage not in self.cfg.stages:
                    continue
                result = getattr(self, f"stage_{stage}")()
                if asyncio.iscoroutine(result):
                    await result
            self.write_config()  # now with the model ids that answered
            self.summary["model_calls"] = backend_stats(self._backend)
            self.summary["errors"] = len(read_jsonl(self.path(ERRORS_FILE)))
            return self.summary
        finally:
            await self._close_backend()

    def run(self) -> dict[str, Any]:
        """Synchronous `arun`."""
        return asyncio.run(self.arun())


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


def _json_line(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"


def run_pipeline(
    cfg: Any,
    run_dir: str | os.PathLike,
    *,
    episodes: str | os.PathLike | None = None,
    backend: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) a pipeline into `run_dir`; see `Run`."""
    return Run(cfg, run_dir, episodes=episodes, backend=backend, progress=progress).run()

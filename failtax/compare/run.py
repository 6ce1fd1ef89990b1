"""Run several reasoners on the same failures and compare them (`failtax compare`).

    <run>/
      compare.yaml            base config, every reasoner's file and resolved config, settings
      shared/                 one pipeline run with the downsample stage only: the key
                              frames every reasoner reads (keyframes.jsonl, errors.jsonl)
      reasoners/<name>/       a pipeline sub-run per reasoner (reason → discover → assign →
                              report), resumable like `failtax discover`'s, plus
                              usage.jsonl (one line per model call: tokens, latency, cache)
                              and timing.json (wall time per stage)
      comparison.json         every number of the comparison
      comparison.md, comparison.html

Key frames are selected once and copied into each sub-run, so differences
between reasoners are differences of reasoning, not of sampling. All
reasoners share the call cache: a rerun (or a resumed run) makes no call that
has finished, and a reasoner whose backend and settings equal another's costs
nothing twice. Usage is read back from usage.jsonl, so the cost table of a
rerun still shows what the work cost when it was done.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    stable_hash,
)
from failtax.compare.config import (
    CompareConfig,
    ReasonerConfig,
    load_reasoner,
    missing_api_keys,
    resolve_pipeline_config,
)
from failtax.compare.metrics import (
    CostRecord,
    RunView,
    assignment_agreement,
    cost_summary,
    explanation_agreement,
    match_modes,
    taxonomy_similarity,
)
from failtax.compare.report import render_html, render_markdown
from failtax.config import PipelineConfig
from failtax.embedding import EmbeddingConfig, make_text_embedder
from failtax.evaluation import EvaluationConfig, evaluate_run
from failtax.pipeline import Run
from failtax.run_folder import ERRORS_FILE, KEYFRAMES_FILE
from failtax.types import OUTLIER
from serving import make_backend
from serving.config import BackendConfig
from serving.protocol import BackendError, CallResult

log = logging.getLogger(__name__)

# 2: a pair's taxonomy scores are failtax.metrics.alignment_scores (cp, tc, sas, cp_soft, ...)
COMPARE_SCHEMA_VERSION = 2
SHARED_DIR = "shared"
REASONERS_DIR = "reasoners"
USAGE_FILE = "usage.jsonl"
TIMING_FILE = "timing.json"
REASONER_STAGES = ("reason", "discover", "assign", "report")


class MissingApiKey(ValueError):
    """A reasoner's API-key environment variable is unset."""


# ----------------------------------------------------------------------------- metering


class MeteredBackend:
    """Records every answered call of one reasoner; builds its backend on first use.

    One line per call in `usage.jsonl`: stage, method, call id, whether the
    cache answered, tokens, latency (as first measured: a cached answer keeps
    the latency and usage of the call that produced it), and the parse error,
    if any. A BackendError (no answer at all) is recorded too, then re-raised.
    The backend is built lazily, so a rerun whose stages are all up to date
    starts no server.

    Args:
        get_backend: async () -> LLMBackend, called on the first model call.
        model_id: the model's name before the backend exists.
        usage_path: the sub-run's usage.jsonl.
    """

    def __init__(self, get_backend: Callable[[], Any], model_id: str, usage_path: Path) -> None:
        self._get_backend = get_backend
        self._inner: Any = None
        self.model_id = model_id
        self.usage_path = usage_path
        self.stage = "reason"
        self.fresh_calls = 0  # calls a model answered in this invocation
        self.invocation = f"{time.time():.3f}"  # tags this invocation's lines in usage.jsonl
        self.build_s = 0.0  # time spent building the backend (starting a server), not reasoning
        self._build_lock = asyncio.Lock()

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("_inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    async def _backend(self) -> Any:
        if self._inner is None:
            async with self._build_lock:  # concurrent first calls build one backend
                if self._inner is None:
                    start = time.perf_counter()
                    self._inner = await self._get_backend()
                    self.build_s += time.perf_counter() - start
                    self.model_id = self._inner.model_id
        return self._inner

    def _record(self, method: str, result: CallResult) -> CallResult:
        if not result.cached:
            self.fresh_calls += 1
        append_jsonl(
            self.usage_path,
            {
                "stage": self.stage,
                "method": method,
                "call_id": result.call_id,
                "cached": bool(result.cached),
                "prompt_tokens": result.usage.prompt_tokens,
                "completion_tokens": result.usage.completion_tokens,
                "latency_s": round(float(result.latency_s), 4),
                "attempts": result.attempts,
                "parse_error": result.error if method != "complete" else None,
                "finish_reason": result.finish_reason,
                "invocation": self.invocation,
                "time": time.time(),
            },
        )
        return result

    async def _call(self, method: str, *args: Any, **kw: Any) -> CallResult:
        backend = await self._backend()
        try:
            result = await getattr(backend, method)(*args, **kw)
        except BackendError as e:
            append_jsonl(
                self.usage_path,
                {
                    "stage": self.stage,
                    "method": method,
                    "backend_error": str(e)[:500],
                    "invocation": self.invocation,
                    "time": time.time(),
                },
            )
            raise
        return self._record(method, result)

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=0) -> CallResult:
        return await self._call(
            "complete", messages, max_tokens=max_tokens, temperature=temperature, seed=seed
        )

    async def complete_json(
        self, messages, schema, *, max_tokens, temperature=0.0, seed=0
    ) -> CallResult:
        return await self._call(
            "complete_json",
            messages,
            schema,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
        )

    async def complete_choice(self, messages, choices, *, temperature=0.0, seed=0) -> CallResult:
        return await self._call(
            "complete_choice", messages, choices, temperature=temperature, seed=seed
        )


def read_usage(sub_run: Path) -> dict[str, Any]:
    """Usage of one sub-run from its usage.jsonl, each distinct call counted once.

    A call seen again (a resumed run asking the cache, or the same request
    twice) counts once: the totals are what the work costs from scratch.

    Backend errors (calls that got no answer) count for the latest invocation
    only: a rerun retries them, and what it answers is then counted as calls.

    Returns:
        calls, prompt/completion tokens, model time, parse failures and
        backend errors, in total and per stage.
    """
    records = read_jsonl(sub_run / USAGE_FILE)
    latest = max((str(r.get("invocation", "")) for r in records), default="")
    seen: set[str] = set()
    total = {
        "calls": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "model_time_s": 0.0,
        "parse_failures": 0,
        "backend_errors": 0,
    }
    per_stage: dict[str, dict[str, Any]] = {}
    for r in records:
        stage = per_stage.setdefault(r.get("stage", "?"), {k: 0 for k in total})
        if "backend_error" in r:
            if str(r.get("invocation", "")) == latest:
                total["backend_errors"] += 1
                stage["backend_errors"] += 1
            continue
        key = f"{r.get('stage')}:{r.get('call_id')}"
        if key in seen:
            continue
        seen.add(key)
        for bucket in (total, stage):
            bucket["calls"] += 1
            bucket["prompt_tokens"] += int(r.get("prompt_tokens") or 0)
            bucket["completion_tokens"] += int(r.get("completion_tokens") or 0)
            bucket["model_time_s"] += float(r.get("latency_s") or 0.0)
            bucket["parse_failures"] += bool(r.get("parse_error"))
    return {**total, "stages": per_stage}


# ----------------------------------------------------------------------------- the comparison run


@dataclass
class ReasonerSpec:
    """One reasoner: its file, overrides and resolved pipeline config."""

    name: str
    path: str
    reasoner: ReasonerConfig
    cfg: PipelineConfig

    @property
    def dir_name(self) -> str:
        return self.name


@dataclass
class CompareRun:
    """A comparison of reasoners on one set of episodes.

    Args:
        base_cfg: the shared PipelineConfig (source, downsample, scene, cache, seed).
        reasoner_paths: reasoner YAML files (at least two, names unique).
        run_dir: the comparison's folder; an existing one is resumed.
        episodes: the input path (overrides base_cfg.source.path).
        settings: matching threshold and report sizes.
        backend_factory: BackendConfig -> LLMBackend; default `serving.make_backend`.
            Reasoners with equal backend configs share one backend (one server).
        embed: texts -> L2-normalised embeddings; default the pipeline's MiniLM.
        embedder_name: what `embed` is, for the report.
        labels: expert labels (CSV episode_id,label[,reason]) for the ground-truth
            metrics; default the episodes folder's ground_truth.json files, if any.
        progress: tqdm progress bars.
    """

    base_cfg: PipelineConfig
    reasoner_paths: list[str | Path]
    run_dir: Path
    episodes: str | Path | None = None
    settings: CompareConfig = field(default_factory=CompareConfig)
    backend_factory: Callable[[BackendConfig], Any] | None = None
    embed: Callable | None = None
    embedder_name: str = ""
    labels: str | Path | None = None
    progress: bool = True
    specs: list[ReasonerSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.specs = self._load_specs()

    # -- checks before any work ------------------------------------------------------------

    def _load_specs(self) -> list[ReasonerSpec]:
        if len(self.reasoner_paths) < 2:
            raise ValueError(
                "compare needs at least two reasoners: pass --reasoner A.yaml --reasoner B.yaml"
            )
        specs = []
        for path in self.reasoner_paths:
            reasoner = load_reasoner(path)
            cfg = resolve_pipeline_config(self.base_cfg, reasoner, source=str(path))
            specs.append(ReasonerSpec(reasoner.name, str(path), reasoner, cfg))
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"reasoner names must be unique, {dupes} repeats; set `name:` in the YAML files"
            )
        missing = missing_api_keys({s.name: s.cfg for s in specs})
        if missing:
            lines = "; ".join(
                f"reasoner {n} ({_spec(specs, n).path}) reads its API key from ${v}"
                for n, v in missing
            )
            raise MissingApiKey(
                f"{lines}, which is not set. Export it (e.g. `export {missing[0][1]}=...`) "
                "or drop that reasoner; "
                "nothing was run."
            )
        return specs

    # -- paths ------------------------------------------------------------------------------

    @property
    def shared_dir(self) -> Path:
        return self.run_dir / SHARED_DIR

    def sub_run(self, spec: ReasonerSpec) -> Path:
        return self.run_dir / REASONERS_DIR / spec.dir_name

    # -- stages -----------------------------------------------------------------------------

    def write_manifest(self) -> None:
        """compare.yaml: what was compared, with which settings.

        Raises:
            ValueError: a reasoner of this folder now names another model; its sub-run
                would mix two models' explanations.
        """
        import yaml

        path = self.run_dir / "compare.yaml"
        if path.is_file():
            before = {
                r.get("name"): r.get("model_identity")
                for r in (yaml.safe_load(path.read_text()) or {}).get("reasoners", [])
            }
            for spec in self.specs:
                now = _model_identity(spec.cfg)
                if before.get(spec.name) not in (None, now):
                    raise ValueError(
                        f"reasoner {spec.name} ran with {before[spec.name]} in {self.run_dir}, "
                        f"now {now}; use a new --run-dir or give the reasoner another name"
                    )
        doc = {
            "schema_version": COMPARE_SCHEMA_VERSION,
            "episodes": str(self.episodes)
            if self.episodes is not None
            else self.base_cfg.source.path,
            "settings": self.settings.model_dump(mode="json"),
            "base_config": self.base_cfg.model_dump(mode="json"),
            "reasoners": [
                {
                    "name": s.name,
                    "file": s.path,
                    "overrides": s.reasoner.overrides(),
                    "description": s.reasoner.description,
                    "config_hash": stable_hash(s.cfg.model_dump(mode="json")),
                    "model_identity": _model_identity(s.cfg),
                }
                for s in self.specs
            ],
        }
        atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))

    async def downsample(self) -> None:
        """Select key frames once, in shared/ (resumable like any run)."""
        cfg = self.base_cfg.model_copy(update={"stages": ["downsample"]})
        await Run(cfg, self.shared_dir, episodes=self.episodes, progress=self.progress).arun()

    def _share_keyframes(self, spec: ReasonerSpec) -> None:
        sub = self.sub_run(spec)
        sub.mkdir(parents=True, exist_ok=True)
        src = self.shared_dir / KEYFRAMES_FILE
        if src.exists():
            data = src.read_bytes()
            dst = sub / KEYFRAMES_FILE
            if not dst.exists() or dst.read_bytes() != data:
                atomic_write_bytes(dst, data)
        # skipped inputs are the same for every reasoner: show them in each sub-run's report too
        errors = read_jsonl(self.shared_dir / ERRORS_FILE)
        if errors and not (sub / ERRORS_FILE).exists():
            append_jsonl(sub / ERRORS_FILE, errors)

    async def _run_reasoner(self, spec: ReasonerSpec, pool: dict[str, Any]) -> int:
        """Reason → discover → assign → report for one reasoner, stage by stage, metered.

        Returns the model calls made (not answered from the cache) in this invocation.
        """
        sub = self.sub_run(spec)
        self._share_keyframes(spec)
        metered = MeteredBackend(
            lambda: self._backend_for(spec, pool),
            spec.cfg.backend.model or spec.cfg.backend.kind,
            sub / USAGE_FILE,
        )
        timing = _read_json(sub / TIMING_FILE) or {}
        timing["_this_invocation"] = {}
        for stage in REASONER_STAGES:
            if stage not in spec.cfg.stages:
                continue
            if stage == "report" and importlib.util.find_spec("failtax.report") is None:
                log.warning(
                    "failtax.report is not installed; %s gets no summary.md/report.html", spec.name
                )
                continue
            metered.stage = stage
            before, built_before = metered.fresh_calls, metered.build_s
            cfg = spec.cfg.model_copy(update={"stages": [stage]})
            start = time.perf_counter()
            await Run(
                cfg, sub, episodes=self.episodes, backend=metered, progress=self.progress
            ).arun()
            # starting a server is not the reasoner's cost: it is reported apart (backend_start_s)
            wall = time.perf_counter() - start - (metered.build_s - built_before)
            fresh = metered.fresh_calls - before
            # the wall time of the invocation that finished the stage; a rerun served from the
            # cache and the stage's up-to-date outputs is not a cost, so it does not overwrite it
            if stage not in timing or fresh > 0:
                timing[stage] = {"wall_s": round(wall, 3), "fresh_calls": fresh}
            timing["_this_invocation"][stage] = {
                "wall_s": round(wall, 3),
                "fresh_calls": fresh,
            }
            atomic_write_json(sub / TIMING_FILE, timing)
        if metered.build_s:
            timing["_this_invocation"]["backend_start_s"] = round(metered.build_s, 3)
            atomic_write_json(sub / TIMING_FILE, timing)
        return metered.fresh_calls

    async def _backend_for(self, spec: ReasonerSpec, pool: dict[str, Any]) -> Any:
        """The reasoner's backend; reasoners with equal backend configs share one (one server)."""
        backend_cfg = spec.cfg.backend
        if spec.cfg.cache_dir:  # as the pipeline does: the run's cache folder wins
            backend_cfg = backend_cfg.model_copy(update={"cache_dir": spec.cfg.cache_dir})
        key = stable_hash(backend_cfg.model_dump(mode="json"))
        if key not in pool:
            factory = self.backend_factory or make_backend
            made = factory(backend_cfg)
            pool[key] = await made if asyncio.iscoroutine(made) else made
        return pool[key]

    async def arun_reasoners(self) -> dict[str, int]:
        """Every reasoner's sub-run; returns the model calls each made in this invocation."""
        pool: dict[str, Any] = {}
        fresh: dict[str, int] = {}
        try:
            for spec in self.specs:
                log.info("compare: reasoner %s", spec.name)
                fresh[spec.name] = await self._run_reasoner(spec, pool)
        finally:
            if self.backend_factory is None:  # we made them, we close them
                for backend in pool.values():
                    await _close(backend)
        return fresh

    # -- the comparison ---------------------------------------------------------------------

    def compare(self) -> dict[str, Any]:
        """Read every sub-run, compute the comparison, write comparison.json/.md/.html."""
        embed, embedder_name = self._embedder()
        views = {s.name: RunView.load(s.name, self.sub_run(s)) for s in self.specs}
        reasoners = [self._reasoner_summary(s, views[s.name]) for s in self.specs]
        pairs = []
        for i, a in enumerate(self.specs):
            for b in self.specs[i + 1 :]:
                pairs.append(self._pair(views[a.name], views[b.name], embed))
        shared_kf = read_jsonl(self.shared_dir / "keyframes.jsonl")
        notes = _notes(reasoners, views)
        comparison = {
            "schema_version": COMPARE_SCHEMA_VERSION,
            "settings": {**self.settings.model_dump(mode="json"), "embedder": embedder_name},
            "shared": {
                "episodes": len({r["episode_id"] for r in shared_kf}),
                "source": str(self.episodes)
                if self.episodes is not None
                else self.base_cfg.source.path,
                "keyframe_method": ", ".join(sorted({str(r.get("method")) for r in shared_kf}))
                or None,
                "skipped_inputs": len(read_jsonl(self.shared_dir / "errors.jsonl")),
            },
            "reasoners": reasoners,
            "pairs": pairs,
            "notes": notes,
        }
        atomic_write_json(self.run_dir / "comparison.json", comparison)
        atomic_write_text(self.run_dir / "comparison.md", render_markdown(comparison))
        atomic_write_text(self.run_dir / "comparison.html", render_html(comparison))
        return comparison

    def _pair(self, a: RunView, b: RunView, embed) -> dict[str, Any]:
        out: dict[str, Any] = {"a": a.name, "b": b.name}
        out["explanations"] = explanation_agreement(
            a, b, embed, least_agreeing=self.settings.least_agreeing_episodes
        )
        if a.taxonomy is not None and b.taxonomy is not None:
            sim = taxonomy_similarity(a.taxonomy, b.taxonomy, embed)
            tax = match_modes(
                sim, a.taxonomy.names, b.taxonomy.names, threshold=self.settings.match_threshold
            )
            tax.update(
                modes_a=len(a.taxonomy.modes),
                modes_b=len(b.taxonomy.modes),
                similarity=[[round(float(x), 4) for x in row] for row in sim],
            )
            # how much a missed mode matters: the share of episodes its finder assigned to it
            for key, tx in (("missed_by_b", a.taxonomy), ("missed_by_a", b.taxonomy)):
                freq = {m.name: m.frequency for m in tx.modes}
                for missed in tax[key]:
                    missed["frequency"] = freq.get(missed["mode"])
        else:
            tax = {
                "matched": {},
                "modes_a": 0,
                "modes_b": 0,
                "note": "a taxonomy is missing; run discovery first",
            }
        out["taxonomies"] = tax
        out["assignments"] = assignment_agreement(a, b, tax.get("matched", {}))
        return out

    def _reasoner_summary(self, spec: ReasonerSpec, view: RunView) -> dict[str, Any]:
        sub = self.sub_run(spec)
        usage = read_usage(sub)
        timing = _read_json(sub / TIMING_FILE) or {}
        wall = sum(v.get("wall_s", 0.0) for k, v in timing.items() if not k.startswith("_"))
        record = CostRecord(
            calls=usage["calls"],
            fresh_calls=sum(
                v.get("fresh_calls", 0)
                for v in timing.get("_this_invocation", {}).values()
                if isinstance(v, dict)
            ),
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            model_time_s=usage["model_time_s"],
            wall_time_s=wall,
            parse_failures=usage["parse_failures"],
            episodes=len(view.explanations),
        )
        backend = spec.cfg.backend
        cost = cost_summary(
            record,
            prompt_usd_per_mtok=_price(backend, "price_prompt_usd_per_1m_tokens"),
            completion_usd_per_mtok=_price(backend, "price_completion_usd_per_1m_tokens"),
        )
        cost["backend_errors"] = usage["backend_errors"]
        # starting the model server in this invocation (not part of wall_time_s)
        cost["backend_start_s"] = timing.get("_this_invocation", {}).get("backend_start_s")
        cost["stages"] = {
            s: {**usage["stages"].get(s, {}), "wall_s": timing.get(s, {}).get("wall_s")}
            for s in REASONER_STAGES
            if s in usage["stages"] or s in timing
        }
        models = sorted({e.model for e in view.explanations.values() if e.model})
        modes_of = [e.input_mode for e in view.explanations.values()]
        fallbacks = sum(
            any(str(d).startswith("fallback:") for d in e.degenerate)
            for e in view.explanations.values()
        )
        degenerate = sum(bool(e.degenerate) for e in view.explanations.values())
        outliers = sum(1 for a in view.assignments.values() if not a.modes or a.modes == [OUTLIER])
        return {
            "name": spec.name,
            "description": spec.reasoner.description,
            "file": spec.path,
            "run_dir": str(sub),
            "backend": {"kind": backend.kind, "model": backend.model, "base_url": backend.base_url},
            "model": ", ".join(models) or backend.model or backend.kind,
            "input_mode": max(set(modes_of), key=modes_of.count)
            if modes_of
            else spec.cfg.reasoning.input_mode,
            "temperature": spec.cfg.reasoning.temperature,
            "seed": spec.cfg.seed,
            "modes": view.taxonomy.names if view.taxonomy else [],
            "outlier_share": outliers / len(view.assignments) if view.assignments else None,
            "fallback_explanations": fallbacks,
            "degenerate_explanations": degenerate,
            "cost": cost,
            "evaluation": self._evaluate(spec),
        }

    def _evaluate(self, spec: ReasonerSpec) -> dict[str, Any] | None:
        labels = self.labels or self.episodes or self.base_cfg.source.path
        return evaluate_sub_run(self.sub_run(spec), labels, self.settings.embedding)

    def _embedder(self):
        if self.embed is not None:
            return self.embed, self.embedder_name or "custom embedder"
        return make_embed_fn(self.settings.embedding)

    # -- driver -----------------------------------------------------------------------------

    async def arun(self) -> dict[str, Any]:
        """Downsample once, run each reasoner, compare; returns comparison.json's content."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.write_manifest()
        started = time.perf_counter()
        await self.downsample()
        fresh = await self.arun_reasoners()
        comparison = self.compare()
        comparison["this_invocation"] = {
            "model_calls": fresh,
            "wall_s": round(time.perf_counter() - started, 2),
        }
        atomic_write_json(self.run_dir / "comparison.json", comparison)
        return comparison

    def run(self) -> dict[str, Any]:
        """Synchronous `arun`."""
        return asyncio.run(self.arun())


# ----------------------------------------------------------------------------- helpers


def _model_identity(cfg: PipelineConfig) -> str:
    """Which model a reasoner's explanations come from (not where it is served: ports change)."""
    b = cfg.backend
    return f"{b.kind}:{b.model or b.recipe or 'default'}"


def _spec(specs: list[ReasonerSpec], name: str) -> ReasonerSpec:
    return next(s for s in specs if s.name == name)


def _price(backend: Any, field_name: str) -> float | None:
    value = getattr(backend, field_name, None)
    if value is None and backend.kind in ("embedded", "transformers"):
        return 0.0  # self-hosted: the cost is the machine's time (model_time_s)
    return value


async def _close(backend: Any) -> None:
    for name in ("aclose", "close"):
        closer = getattr(backend, name, None)
        if closer is None:
            continue
        try:
            result = closer()
            if asyncio.iscoroutine(result):
                await result
        except (OSError, RuntimeError, BackendError) as e:  # closing must not hide the result
            log.warning("closing backend failed: %s", e)


def _read_json(path: Path) -> Any:
    import json

    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _notes(reasoners: list[dict[str, Any]], views: dict[str, RunView]) -> list[str]:
    notes = []
    for r in reasoners:
        if r["fallback_explanations"]:
            why = Counter(
                str(d).split(":", 1)[1]
                for e in views[r["name"]].explanations.values()
                for d in e.degenerate
                if str(d).startswith("fallback:")
            )
            reasons = ", ".join(f"{k} ×{n}" for k, n in sorted(why.items()))
            notes.append(
                f"{r['name']}: {r['fallback_explanations']} explanation(s) fell back to "
                f"code-written facts ({reasons}); those episodes compare facts, not the model."
                + (" A rerun retries the backend errors." if "backend_error" in why else "")
            )
        if r["cost"]["usd_per_1k_episodes"] is None and r["cost"]["episodes"]:
            notes.append(
                f"{r['name']}: no per-token prices in its backend config "
                "(price_prompt_usd_per_1m_tokens, price_completion_usd_per_1m_tokens); "
                "money not computed."
            )
        if r["cost"].get("backend_errors"):
            notes.append(
                f"{r['name']}: {r['cost']['backend_errors']} call(s) got no answer "
                "from the backend "
                "(see usage.jsonl); rerun to retry them."
            )
        if views[r["name"]].taxonomy is None:
            notes.append(f"{r['name']}: no taxonomy (discovery did not run or failed).")
    return notes


# ------------------------------------------------------------------ adapters to the pipeline


def make_embed_fn(cfg: EmbeddingConfig | None = None) -> tuple[Callable, str]:
    """The pipeline's text embedder (local MiniLM by default) as texts -> normalised rows."""
    embedder = make_text_embedder(cfg)

    def embed(texts):
        return np.asarray(embedder.embed(list(texts)), dtype=np.float64)

    return embed, embedder.name


def evaluate_sub_run(
    sub_run: Path, labels_source: str | os.PathLike | None, embedding: Any = None
) -> dict[str, Any] | None:
    """The pipeline's ground-truth metrics of one sub-run (failtax.evaluation), or None.

    None when there is no labels source or no episode of the run has a label;
    the full result is also written to the sub-run's evaluation.json.
    """
    if labels_source is None:
        return None
    cfg = EvaluationConfig(embedding=embedding) if embedding is not None else EvaluationConfig()
    try:
        ev = evaluate_run(sub_run, labels_source, cfg)
    except (ValueError, FileNotFoundError) as e:
        log.info("no ground-truth evaluation for %s: %s", sub_run, e)
        return None
    assignment = ev.get("assignment", {})
    alignment = ev.get("alignment_embedding", {})
    explanations = ev.get("explanations", {})
    return {
        "labelled_episodes": ev.get("labelled_episodes"),
        "nmi": assignment.get("nmi"),
        "ari": assignment.get("ari"),
        "weighted_f1": assignment.get("weighted_f1_hungarian"),
        "weighted_f1_majority": assignment.get("weighted_f1_majority"),
        "purity": assignment.get("purity"),
        "cp": alignment.get("cp"),
        "tc": alignment.get("tc"),
        "sas": alignment.get("sas"),
        "explanation_cosine": explanations.get("cosine_similarity"),
        "explanation_rouge_l": explanations.get("rouge_l"),
        "labels_source": str(labels_source),
    }

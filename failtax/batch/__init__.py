"""Batch runs: a stage's model calls as vLLM batch files, answered offline, imported.

    failtax batch export  → <run>/batch/<stage>/round-NN/requests/shard-*.jsonl
    (failtax batch run | failtax batch slurm | failtax batch ray)
                          → <run>/batch/<stage>/round-NN/results/shard-*.jsonl
    failtax batch import  → answers into the call cache
    failtax batch export  → the next round (re-asks, error lines, unanswered ids) or
                            the next stage, until nothing is left
    failtax batch finish  → the normal pipeline, every call from the cache

Export runs the pipeline's stages in order with `serving.batch.BatchBackend` behind
the call cache: a stage whose calls are all answered runs for real (this is how
the run folder advances), and the first stage with unanswered calls is rolled back
(its fallback outputs are not kept) and its calls are written as batch shards. The
custom_id of each line is the call-cache key, so importing the results makes the
normal pipeline find them: it then finishes with zero live calls and the same
answers an all-live run on the same model, recipe and seed would have got.

Nothing is lost: a result line that is an error, a missing line (a killed task)
and an answer that does not parse (the live client's one re-ask; `finish_reason ==
"length"` counted as truncated) are all exported again in the next round; a prompt
over the model's context is never sent and is listed in `errors.jsonl` with why,
and so is every request still unanswered after `max_error_rounds` error lines. The
pipeline then records those episodes as fallbacks in the run's own errors.jsonl,
with the same why.

Batch folder (default `<run>/batch`):

    manifest.json                      model, cache scope, recipe, token counting
    <stage>/round-NN/requests/shard-00000.jsonl   OpenAI batch request lines
    <stage>/round-NN/meta.jsonl        per custom_id: method, params, episode, attempt
    <stage>/round-NN/results/          result files (vLLM run-batch output lines)
    reasks.jsonl                       first answers that need the re-ask round
    errors.jsonl                       every request without a usable answer, with why
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import append_jsonl, atomic_write_json, read_jsonl
from common.stages import STAGES_FILE, now_iso
from failtax.config import PipelineConfig
from failtax.pipeline import PIPELINE, Run
from failtax.run_folder import ERRORS_FILE, EXPLANATIONS_FILE, KEYFRAMES_FILE, backend_stats
from serving.batch import (
    BATCH_FORMAT,
    BatchBackend,
    BatchIdentity,
    BatchRequest,
    import_result,
    read_jsonl_lines,
    result_parts,
    run_batch_local,
)
from serving.cache import CachedBackend
from serving.embedded import DEFAULT_LOCAL
from serving.recipes import Recipe, get_recipe

# The monitors of `failtax monitor evaluate` (failtax.batch.monitoring): not a pipeline stage.
MONITORING = "monitoring"
# Stage names as the pipeline knows them, and the names users say.
STAGE_ALIASES = {
    "reason": "reason",
    "reasoning": "reason",
    "discover": "discover",
    "naming": "discover",
    "assign": "assign",
    "assignment": "assign",
    "monitoring": MONITORING,
    "monitor": MONITORING,
}
MODEL_STAGES = ("reason", "discover", "assign")
BATCH_STAGES = (*MODEL_STAGES, MONITORING)
# Files a stage appends to (rolled back by truncation) vs rewrites (rolled back by copy).
_APPEND_ONLY = (EXPLANATIONS_FILE, ERRORS_FILE, STAGES_FILE, KEYFRAMES_FILE)
_KEY_IN_MESSAGE = re.compile(r"batch request ([0-9a-f]{32})")


def stage_name(name: str) -> str:
    """The pipeline's name for a stage (`reasoning` → `reason`); ValueError lists valid ones."""
    if name not in STAGE_ALIASES:
        raise ValueError(f"unknown batch stage {name!r}; valid: {', '.join(sorted(STAGE_ALIASES))}")
    return STAGE_ALIASES[name]


def batch_recipe(cfg: PipelineConfig) -> Recipe:
    """The recipe a batch of this run is served with: `backend.recipe`, else the model
    `backend.kind: embedded` serves when no recipe is named (the live run's model)."""
    return get_recipe(cfg.backend.recipe or DEFAULT_LOCAL)


class BatchFolder:
    """The files of one batch folder (see the module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.dir = Path(path)

    def round_dir(self, stage: str, n: int) -> Path:
        return self.dir / stage / f"round-{n:02d}"

    def rounds(self, stage: str | None = None) -> list[Path]:
        """Round folders (of one stage, or all; import does not depend on their order)."""
        stages = [stage] if stage else [s for s in BATCH_STAGES if (self.dir / s).is_dir()]
        out = []
        for s in stages:
            out += sorted((self.dir / s).glob("round-*"))
        return sorted(out, key=lambda p: (p.stat().st_mtime, p.name))

    def manifest(self) -> dict[str, Any]:
        """manifest.json ({} when there is none yet)."""
        path = self.dir / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def latest_round(self) -> Path | None:
        """The round the last `export` wrote (None when there is none)."""
        manifest = self.dir / "manifest.json"
        latest = json.loads(manifest.read_text()).get("latest_round") if manifest.is_file() else None
        return self.dir / latest if latest and (self.dir / latest / "meta.jsonl").is_file() else None

    def next_round(self, stage: str) -> int:
        existing = sorted((self.dir / stage).glob("round-*"))
        return int(existing[-1].name.split("-")[1]) + 1 if existing else 1

    @property
    def errors(self) -> Path:
        return self.dir / "errors.jsonl"

    @property
    def reasks(self) -> Path:
        return self.dir / "reasks.jsonl"

    def shards(self, round_dir: Path) -> list[Path]:
        return sorted((round_dir / "requests").glob("shard-*.jsonl"))

    def result_file(self, round_dir: Path, shard: Path) -> Path:
        return round_dir / "results" / shard.name

    def error_counts(self) -> Counter:
        """custom_id → error lines seen so far."""
        return Counter(r["custom_id"] for r in read_jsonl(self.errors) if r.get("kind") == "error_line")

    def known_errors(self) -> dict[str, str]:
        """custom_id → the latest why it has no answer."""
        return {r["custom_id"]: r["why"] for r in read_jsonl(self.errors) if r.get("custom_id")}

    def reask_map(self) -> dict[str, dict[str, Any]]:
        return {r["custom_id"]: r["first"] for r in read_jsonl(self.reasks)}


def make_batch_backend(
    cfg: PipelineConfig,
    batch_dir: str | os.PathLike,
    *,
    identity: BatchIdentity | None = None,
    recipe: Recipe | None = None,
    max_error_rounds: int = 3,
) -> tuple[CachedBackend, BatchBackend]:
    """The call cache over a `BatchBackend` for this run (answers from the cache only).

    Args:
        cfg: the run's config (backend.recipe, cache_dir).
        batch_dir: the batch folder (its errors and re-asks shape the requests).
        identity: who answers (default: the recipe's weights, as a launched server).
        recipe: the recipe (default `batch_recipe(cfg)`).
        max_error_rounds: error lines after which a request is given up (listed in
            errors.jsonl, no longer exported; the stage falls back for it).
    """
    return batch_backend(BatchFolder(batch_dir), recipe or batch_recipe(cfg), cfg.cache_dir or cfg.backend.cache_dir,
                         identity=identity, max_error_rounds=max_error_rounds)


def batch_backend(
    folder: BatchFolder,
    recipe: Recipe,
    cache_dir: str | os.PathLike | None,
    *,
    identity: BatchIdentity | None = None,
    max_error_rounds: int = 3,
) -> tuple[CachedBackend, BatchBackend]:
    """`make_batch_backend` for any caller of the models (the pipeline, the monitors):
    the call cache in `cache_dir` over a `BatchBackend` shaped by `folder`'s errors and
    re-asks."""
    identity = identity or BatchIdentity.from_recipe(recipe)
    inner = BatchBackend(
        identity,
        recipe=recipe,
        known_errors=folder.known_errors(),
        reasks=folder.reask_map(),
        given_up={k for k, n in folder.error_counts().items() if n >= max_error_rounds},
    )
    return CachedBackend(inner, cache_dir), inner


def write_manifest(folder: BatchFolder, backend: CachedBackend, recorder: BatchBackend, recipe: Recipe,
                   **extra: Any) -> None:
    """manifest.json: who answers (model, cache scope, recipe, context) and where the
    answers go (the cache folder `import` writes to)."""
    folder.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder.dir / "manifest.json", {
        "format": BATCH_FORMAT,
        "model": recorder.model_id,
        "scope": recorder.cache_scope,
        "recipe": recipe.model_dump(mode="json"),
        "max_model_len_tokens": recorder.identity.max_model_len_tokens,
        "token_counting": recorder.counter.how,
        "cache_dir": str(backend.cache_dir),
        **extra,
    })


@dataclass
class ExportResult:
    """What `export` did."""

    stage: str | None  # the stage whose requests were written (None: nothing left to export)
    round_dir: Path | None = None
    requests: int = 0
    shards: list[Path] = field(default_factory=list)
    too_long: int = 0  # prompts over the context: listed in errors.jsonl, never sent
    reasks: int = 0  # of the requests, re-asks after an unparseable answer
    stages_done: list[str] = field(default_factory=list)  # stages that ran from the cache
    token_counting: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "round": self.round_dir.name if self.round_dir else None,
            "requests": self.requests,
            "reasks": self.reasks,
            "too_long": self.too_long,
            "shards": [str(p) for p in self.shards],
            "stages_done": self.stages_done,
            "token_counting": self.token_counting,
        }


class _Snapshot:
    """A run folder's stage outputs before a stage runs, so the stage can be undone."""

    def __init__(self, run_dir: Path, names: tuple[str, ...], store: Path) -> None:
        self.run_dir, self.store = run_dir, store
        self.sizes: dict[str, int | None] = {}
        self.copies: dict[str, Path | None] = {}
        store.mkdir(parents=True, exist_ok=True)
        for name in names:
            path = run_dir / name
            if name in _APPEND_ONLY:
                self.sizes[name] = path.stat().st_size if path.is_file() else None
            elif path.is_file():
                self.copies[name] = store / name
                shutil.copy2(path, store / name)
            else:
                self.copies[name] = None

    def new_lines(self, name: str) -> list[dict[str, Any]]:
        path = self.run_dir / name
        if not path.is_file():
            return []
        with open(path, "rb") as f:
            f.seek(self.sizes.get(name) or 0)
            text = f.read().decode("utf-8", "replace")
        return [json.loads(x) for x in text.splitlines() if x.strip().startswith("{")]

    def restore(self) -> None:
        for name, size in self.sizes.items():
            path = self.run_dir / name
            if size is None:
                path.unlink(missing_ok=True)
            elif path.is_file():
                with open(path, "r+b") as f:
                    f.truncate(size)
        for name, copy in self.copies.items():
            path = self.run_dir / name
            if copy is None:
                path.unlink(missing_ok=True)
            else:
                os.replace(copy, path)
        shutil.rmtree(self.store, ignore_errors=True)


async def export(
    cfg: PipelineConfig,
    run_dir: str | os.PathLike,
    *,
    episodes: str | os.PathLike | None = None,
    batch_dir: str | os.PathLike | None = None,
    stage: str | None = None,
    shard_size: int = 1000,
    identity: BatchIdentity | None = None,
    max_error_rounds: int = 3,
    progress: bool = True,
) -> ExportResult:
    """Write the next batch round: the unanswered calls of the first stage that has any.

    Stages before it run for real from the call cache (zero live calls); stages after
    `stage` (default: the last configured model stage) are not touched.

    Args:
        cfg: the run's config.
        run_dir: the run folder (created when missing).
        episodes: the input (overrides cfg.source.path).
        batch_dir: the batch folder (default `<run_dir>/batch`).
        stage: stop after this stage (reason | discover | assign, or reasoning | naming |
            assignment).
        shard_size: request lines per shard (one shard per array task or GPU).
        identity: who answers (default: the recipe's weights, as a launched server).
        max_error_rounds: error lines after which a request is given up.
        progress: progress bars.
    """
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    last = stage_name(stage) if stage else None
    if last == MONITORING:
        raise ValueError("the monitoring stage is exported by failtax.batch.monitoring.export_monitoring "
                         "(`failtax batch export monitoring --config MONITOR --episodes NAME=DIR`)")
    run_dir = Path(run_dir)
    folder = BatchFolder(batch_dir or run_dir / "batch")
    recipe = batch_recipe(cfg)
    backend, recorder = make_batch_backend(
        cfg, folder.dir, identity=identity, recipe=recipe, max_error_rounds=max_error_rounds
    )
    run = Run(cfg, run_dir, episodes=episodes, backend=backend, progress=progress)
    run.dir.mkdir(parents=True, exist_ok=True)
    write_manifest(folder, backend, recorder, recipe, run_dir=str(run_dir))
    result = ExportResult(stage=None, token_counting=recorder.counter.how)
    run.write_config()
    for st in PIPELINE:
        if st.name not in cfg.stages or st.name == "report":
            continue
        snapshot = _Snapshot(run.dir, (*st.writes, ERRORS_FILE, STAGES_FILE), folder.dir / ".snapshot")
        recorder.recorded.clear()
        recorder.too_long.clear()
        await st.run(run)
        episodes_of = _episodes_by_key(snapshot.new_lines(ERRORS_FILE))
        _list_too_long(folder, st.name, recorder.too_long, episodes_of)
        if recorder.recorded:
            snapshot.restore()
            _write_round(folder, st.name, list(recorder.recorded.values()), episodes_of, shard_size, result)
            return result
        shutil.rmtree(snapshot.store, ignore_errors=True)
        result.stages_done.append(st.name)
        if st.name == last:
            break
    return result


def _episodes_by_key(error_lines: list[dict[str, Any]]) -> dict[str, str]:
    """custom_id → episode id, from the fallback records a stage wrote for its calls."""
    out = {}
    for r in error_lines:
        m = _KEY_IN_MESSAGE.search(str(r.get("message", "")))
        if m and r.get("episode_id"):
            out[m.group(1)] = str(r["episode_id"])
    return out


def _list_too_long(folder: BatchFolder, stage: str, items: dict[str, BatchRequest], episodes_of: dict[str, str]) -> None:
    listed = {r["custom_id"] for r in read_jsonl(folder.errors) if r.get("kind") == "too_long"}
    append_jsonl(folder.errors, [
        {"time": now_iso(), "custom_id": k, "stage": stage, "episode_id": episodes_of.get(k),
         "kind": "too_long", "why": f"not sent: prompt of {item.prompt_tokens} tokens + max_tokens "
         f"{item.body['max_tokens']} exceeds the model's context"}
        for k, item in items.items() if k not in listed
    ])


def _write_round(
    folder: BatchFolder,
    stage: str,
    items: list[BatchRequest],
    episodes_of: dict[str, str],
    shard_size: int,
    result: ExportResult,
) -> None:
    round_dir = folder.round_dir(stage, folder.next_round(stage))
    (round_dir / "requests").mkdir(parents=True, exist_ok=True)
    (round_dir / "results").mkdir(parents=True, exist_ok=True)
    items = sorted(items, key=lambda i: i.custom_id)  # stable shards for a given set of calls
    metas = []
    for i in range(0, len(items), shard_size):
        chunk = items[i : i + shard_size]
        path = round_dir / "requests" / f"shard-{i // shard_size:05d}.jsonl"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(it.line(), ensure_ascii=False) + "\n" for it in chunk), encoding="utf-8")
        os.replace(tmp, path)
        result.shards.append(path)
        for it in chunk:
            it.context = {"episode_id": episodes_of.get(it.custom_id), "shard": path.name}
            metas.append(it.meta())
    tmp = round_dir / "meta.jsonl.tmp"
    tmp.write_text("".join(json.dumps(m, ensure_ascii=False) + "\n" for m in metas), encoding="utf-8")
    os.replace(tmp, round_dir / "meta.jsonl")
    result.stage, result.round_dir = stage, round_dir
    manifest = folder.dir / "manifest.json"
    atomic_write_json(manifest, {**json.loads(manifest.read_text()),
                                 "latest_round": str(round_dir.relative_to(folder.dir))})
    result.requests = len(items)
    result.reasks = sum(it.attempt == 2 for it in items)


@dataclass
class ImportResult:
    """What `import_results` did, counted per kind of result line."""

    answers: int = 0  # cached
    already_cached: int = 0
    reasks: int = 0  # unparseable first answers: re-asked in the next round
    error_lines: int = 0  # error lines (and bad rows): exported again in the next round
    truncated: int = 0  # finish_reason == "length" (also counted under answers or reasks)
    parse_failures: int = 0  # final answers (after the re-ask) that still do not parse: cached as failures
    missing: int = 0  # requests without any result line (a killed task): exported again
    unknown_ids: int = 0  # result lines whose custom_id no round asked for
    unreadable_lines: int = 0  # result lines that are not JSON

    def summary(self) -> dict[str, int]:
        return dict(self.__dict__)


def import_results(
    cfg: PipelineConfig | None,
    batch_dir: str | os.PathLike,
    *,
    identity: BatchIdentity | None = None,
) -> ImportResult:
    """Read every round's result files into the call cache (idempotent).

    Answers are cached under their custom_id in the cache folder the export named
    (manifest.json; `cfg` only for a folder without one); error lines, unparseable
    first answers and requests without a result line are recorded (errors.jsonl,
    reasks.jsonl) and come back in the next `export`.
    """
    folder = BatchFolder(batch_dir)
    manifest = folder.manifest()
    if manifest:  # the answers go where the export looked for them, under its model's scope
        identity = identity or BatchIdentity(manifest["model"], manifest["scope"], manifest["max_model_len_tokens"])
        backend, _ = batch_backend(folder, Recipe.model_validate(manifest["recipe"]), manifest["cache_dir"],
                                   identity=identity)
    elif cfg is not None:
        backend, _ = make_batch_backend(cfg, folder.dir, identity=identity)
    else:
        raise FileNotFoundError(f"{folder.dir} holds no manifest.json; run `failtax batch export` first")
    out = ImportResult()
    reasked = set(folder.reask_map())
    errors: list[dict[str, Any]] = []
    with_error: set[str] = set()
    seen_all: set[str] = set()
    for round_dir in folder.rounds():
        meta_path = round_dir / "meta.jsonl"
        if not meta_path.is_file():
            continue
        stage = round_dir.parent.name
        items = {m["custom_id"]: BatchRequest.from_meta(m) for m in read_jsonl(meta_path)}
        seen: set[str] = set()
        files = [p for shard in folder.shards(round_dir) for p in result_parts(folder.result_file(round_dir, shard))]
        extra = sorted(set((round_dir / "results").glob("*.jsonl")) - set(files))  # other runners' names
        for path in files + [p for p in extra if ".running" not in p.name and ".pending" not in p.name]:
            for _, line, _ in read_jsonl_lines(path):
                if line is None:
                    out.unreadable_lines += 1
                    continue
                cid = str(line.get("custom_id"))
                item = items.get(cid)
                if item is None:
                    out.unknown_ids += 1
                    continue
                if cid in seen:
                    continue
                outcome = import_result(item, line)
                if outcome.kind == "error":  # another part may hold this id's answer
                    if cid not in with_error:
                        errors.append(_error_record(item, stage, round_dir, "error_line", outcome.why))
                        with_error.add(cid)
                    continue
                seen.add(cid)
                seen_all.add(cid)
                if backend.get(cid) is not None:
                    out.already_cached += 1
                    continue
                out.truncated += int(outcome.truncated)
                if outcome.kind == "answer":
                    backend.put(cid, outcome.result, item.request)
                    out.answers += 1
                    out.parse_failures += int(outcome.result.error is not None)
                elif cid not in reasked:
                    append_jsonl(folder.reasks, {"custom_id": cid, "first": outcome.first, "time": now_iso()})
                    reasked.add(cid)
                    out.reasks += 1
        for cid, item in items.items():
            if cid in seen or cid in with_error or backend.get(cid) is not None:
                continue
            out.missing += 1
            errors.append(_error_record(item, stage, round_dir, "no_result",
                                        "no result line (task killed or shard not run); exported again"))
    # error lines whose id later got an answer are not errors any more
    final = [e for e in errors if e["custom_id"] not in seen_all and backend.get(e["custom_id"]) is None]
    out.error_lines = sum(e["kind"] == "error_line" for e in final)
    listed = {(r.get("custom_id"), r.get("kind"), r.get("round")) for r in read_jsonl(folder.errors)}
    append_jsonl(folder.errors, [e for e in final if (e["custom_id"], e["kind"], e["round"]) not in listed])
    return out


def _error_record(item: BatchRequest, stage: str, round_dir: Path, kind: str, why: str) -> dict[str, Any]:
    return {"time": now_iso(), "custom_id": item.custom_id, "stage": stage, "round": round_dir.name,
            "episode_id": (item.context or {}).get("episode_id"), "kind": kind, "why": why}


async def finish(
    cfg: PipelineConfig,
    run_dir: str | os.PathLike,
    *,
    episodes: str | os.PathLike | None = None,
    batch_dir: str | os.PathLike | None = None,
    identity: BatchIdentity | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The normal pipeline over the run, every model call answered from the cache.

    A call without an answer is not made: the stage records its fallback with why
    (the run's errors.jsonl), and the summary's `model_calls.calls` counts them (0
    when the batch answered everything)."""
    run_dir = Path(run_dir)
    backend, recorder = make_batch_backend(cfg, batch_dir or run_dir / "batch", identity=identity)
    run = Run(cfg, run_dir, episodes=episodes, backend=backend, progress=progress)
    summary = await run.arun()
    summary["unanswered_calls"] = len(recorder.recorded) + len(recorder.too_long)
    summary["model_calls"] = backend_stats(backend)
    return summary


async def answer_here(
    cfg: PipelineConfig,
    run_dir: str | os.PathLike,
    *,
    episodes: str | os.PathLike | None = None,
    batch_dir: str | os.PathLike | None = None,
    shard_size: int = 1000,
    server_python: str | None = None,
    max_rounds: int = 12,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Every round on this machine: export → vLLM's batch runner on each shard → import,
    until export has nothing left (then `finish`). What `failtax batch export / run /
    import` do in a loop; returns one record per round (export and import summaries).

    Raises:
        RuntimeError: still requests left after `max_rounds` rounds.
    """
    run_dir = Path(run_dir)
    folder = BatchFolder(batch_dir or run_dir / "batch")
    recipe = batch_recipe(cfg)
    rounds: list[dict[str, Any]] = []
    for _ in range(max_rounds):
        result = await export(cfg, run_dir, episodes=episodes, batch_dir=folder.dir, shard_size=shard_size,
                              progress=progress)
        if result.stage is None:
            return rounds
        for shard in result.shards:
            await asyncio.to_thread(
                run_batch_local, recipe, shard, folder.result_file(result.round_dir, shard), python=server_python,
                log_file=result.round_dir / "logs" / f"{shard.name}.vllm.log")
        imported = import_results(cfg, folder.dir)
        rounds.append({"export": result.summary(), "import": imported.summary()})
    raise RuntimeError(f"batch rounds of {run_dir} did not finish within {max_rounds} rounds")


__all__ = [
    "BATCH_STAGES",
    "MODEL_STAGES",
    "MONITORING",
    "STAGE_ALIASES",
    "BatchFolder",
    "ExportResult",
    "ImportResult",
    "answer_here",
    "batch_backend",
    "batch_recipe",
    "export",
    "finish",
    "import_results",
    "make_batch_backend",
    "stage_name",
    "write_manifest",
]

"""The run folder (docs/RUN_FORMAT.md): its file names, readers, and what every
stage driver shares — the error log, the stage log and progress bars.

Each stage's driver lives beside its algorithm (`downsample.run_stage`,
`reasoning.run_stage`, `discovery.run_stage`, `assignment.run_stage`) and gets a
`RunFolder`; `failtax.pipeline` only sequences them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from common import append_jsonl, read_jsonl
from common.stages import STAGES_FILE, StageLog, now_iso
from failtax.types import Assignment, Explanation, Keyframes, Taxonomy
from serving.protocol import LLMBackend

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
KEYFRAMES_FILE = "keyframes.jsonl"
EXPLANATIONS_FILE = "explanations.jsonl"
TAXONOMY_FILE = "taxonomy.json"
ASSIGNMENTS_FILE = "assignments.jsonl"
ERRORS_FILE = "errors.jsonl"
# A person's edits of the taxonomy, kept with the edited run they made (failtax/edits.py).
EDITS_FILE = "edits.json"

# Builds (or returns) the run's model backend; stages call it only when they need a model,
# so a run that needs none starts no server.
BackendProvider = Callable[[], Awaitable[LLMBackend]]


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
    path = Path(run_dir) / TAXONOMY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `failtax discover` first")
    return Taxonomy.from_dict(json.loads(path.read_text(encoding="utf-8")))


def read_assignments(run_dir: str | os.PathLike) -> list[Assignment]:
    """assignments.jsonl of a run."""
    return [Assignment.from_dict(r) for r in read_jsonl(Path(run_dir) / ASSIGNMENTS_FILE)]


def backend_stats(backend: object) -> dict[str, int]:
    """Calls that reached a model vs answers from the cache, when the backend counts them."""
    stats = getattr(backend, "stats", None)
    if stats is None:
        return {}
    return {k: int(getattr(stats, k)) for k in ("calls", "hits") if hasattr(stats, k)}


class StageResult(Protocol):
    """What a stage driver returns: its counts for the run summary, and how many of its
    results are fallbacks from model calls that failed (a rerun retries those)."""

    retryable: int

    def summary(self) -> dict[str, Any]: ...


@dataclass
class Skipped:
    """A stage that had nothing to do (its output is up to date, or the input has no frames)."""

    reason: str
    retryable: int = 0

    def summary(self) -> dict[str, Any]:
        return {"skipped": self.reason}


class RunFolder:
    """One run folder as the stage drivers see it.

    Args:
        run_dir: the run folder (created when missing).
        progress: show tqdm progress bars.
    """

    def __init__(self, run_dir: str | os.PathLike, *, progress: bool = True) -> None:
        self.dir = Path(run_dir)
        self.progress = progress
        self.stages = StageLog(self.dir)
        self._error_keys: set[tuple[str, str, str]] | None = None

    def path(self, name: str) -> Path:
        """A file of the run folder."""
        return self.dir / name

    def record_errors(self, records: Iterable[dict[str, Any]]) -> None:
        """Append error records, skipping source errors this run folder already holds (resume)."""
        if self._error_keys is None:
            self._error_keys = {_error_key(r) for r in read_jsonl(self.path(ERRORS_FILE))}
        new = []
        for r in records:
            key = _error_key(r)
            if key in self._error_keys and r.get("stage") == "source":
                continue  # a rescan finds the same bad inputs again
            self._error_keys.add(key)
            new.append({"time": now_iso(), **r})
        append_jsonl(self.path(ERRORS_FILE), new)

    def log_stage(self, stage: str, event: str, **fields: Any) -> None:
        """A start / finish / skip line in stages.jsonl (and the log)."""
        self.stages.append(stage, event, **fields)
        log.info(
            "stage %s %s %s", stage, event, {k: v for k, v in fields.items() if k != "input_hash"}
        )

    def is_done(self, stage: str, input_hash: str, output: str) -> bool:
        """The stage's output exists and finished with these inputs and nothing to retry."""
        return self.stages.is_done(stage, input_hash, [self.path(output)])

    def bar(self, iterable: Iterable[Any] | None = None, **kw: Any) -> tqdm:
        """A progress bar that respects `progress` and disappears when done."""
        return tqdm(iterable, disable=not self.progress, leave=False, **kw)

    async def each_done(
        self, coros: Iterable[Awaitable[Any]], handle: Callable[[Any], None], *, desc: str, unit: str
    ) -> None:
        """Run `coros` as tasks and `handle` each result as it finishes, with a progress bar;
        what is still running when `handle` raises (or the run is cancelled) is cancelled."""
        tasks = [asyncio.ensure_future(c) for c in coros]
        bar = self.bar(total=len(tasks), desc=desc, unit=unit)
        try:
            for fut in asyncio.as_completed(tasks):
                result = await fut
                bar.update(1)
                handle(result)
        finally:
            bar.close()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _error_key(r: dict[str, Any]) -> tuple[str, str, str]:
    return (str(r.get("stage")), str(r.get("episode_id")), str(r.get("kind")))


__all__ = [
    "ASSIGNMENTS_FILE",
    "CONFIG_FILE",
    "EDITS_FILE",
    "ERRORS_FILE",
    "EXPLANATIONS_FILE",
    "KEYFRAMES_FILE",
    "STAGES_FILE",
    "TAXONOMY_FILE",
    "BackendProvider",
    "RunFolder",
    "Skipped",
    "StageResult",
    "backend_stats",
    "latest_by_episode",
    "read_assignments",
    "read_explanations",
    "read_keyframes",
    "read_taxonomy",
]

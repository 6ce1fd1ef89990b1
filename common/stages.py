"""Resumable stages: one `stages.jsonl` log per folder, keyed by input hash.

Both the failtax pipeline (a run folder) and the closed loop (a loop folder)
record every stage here, one JSON line per event::

    {"stage": "discover", "event": "start" | "finish" | "skip", "time": ..., ...}

A stage is done, and skipped on resume, when its outputs exist and its last
`finish` line carries the same `input_hash` and no `retryable` failures (model
calls that failed because the server was unreachable: a rerun must try them
again; the calls that had finished come back from the call cache).

    >>> log = StageLog(Path("runs/a"))                        # doctest: +SKIP
    >>> h = stable_hash(["inputs", 1])                        # doctest: +SKIP
    >>> if not log.is_done("discover", h, [Path("runs/a/taxonomy.json")]):
    ...     log.append("discover", "start", input_hash=h)
    ...     log.append("discover", "finish", input_hash=h)
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from common.fileio import append_jsonl, read_jsonl
from common.hashing import stable_hash

log = logging.getLogger(__name__)

STAGES_FILE = "stages.jsonl"


def now_iso() -> str:
    """The current UTC time, ISO-8601 to the second (the `time` of every record)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class StageLog:
    """The stages.jsonl of one folder.

    Args:
        folder: the folder holding stages.jsonl (a pipeline run or a loop folder).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.dir = Path(folder)
        self.path = self.dir / STAGES_FILE

    def append(self, stage: str, event: str, **fields: Any) -> None:
        """Append one event line (whole line, fsynced)."""
        append_jsonl(self.path, {"stage": stage, "event": event, "time": now_iso(), **fields})

    def last_finish(self, stage: str) -> dict[str, Any] | None:
        """The last `finish` line of `stage`, or None."""
        rows = [
            r for r in read_jsonl(self.path) if r.get("stage") == stage and r.get("event") == "finish"
        ]
        return rows[-1] if rows else None

    def is_done(self, stage: str, input_hash: str, outputs: Sequence[Path]) -> bool:
        """True when `outputs` exist and the last finish had `input_hash` and nothing to retry."""
        if not all(Path(p).exists() for p in outputs):
            return False
        last = self.last_finish(stage)
        return last is not None and last.get("input_hash") == input_hash and not last.get(
            "retryable"
        )


@dataclass(frozen=True)
class StageOutcome:
    """What a stage function may return to `StageRunner.run` beyond its files."""

    # results that are fallbacks from failed model calls: the stage is redone on resume
    retryable: int = 0


class StageRunner(StageLog):
    """Runs named stages once: skip when outputs exist and the input hash is unchanged.

    Each `finish` line carries the input hash, wall `seconds` and `cpu_seconds`
    (this process and its finished children), and `retryable` when the stage's
    function returned a `StageOutcome` with failed model calls (a rerun redoes it).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        super().__init__(folder)
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def run(
        self,
        name: str,
        inputs: Any,
        outputs: Sequence[Path],
        fn: Callable[[], object],
        *,
        on_change: Literal["rerun", "refuse"] = "rerun",
    ) -> None:
        """Run `fn` for stage `name` unless it finished with the same inputs.

        Args:
            name: unique stage name, e.g. "cycle0/targeted_semantic/collect".
            inputs: JSON-able description of everything the stage's output depends on.
            outputs: files that must exist for the stage to count as done.
            fn: does the work (itself resumable, or cheap); a `StageOutcome` it returns
                with `retryable` > 0 makes a rerun do the stage again (other results
                are ignored).
            on_change: "rerun" (the stage's own resume logic copes with new inputs)
                or "refuse" (a finished output with other inputs must not be resumed).

        Raises:
            ValueError: on_change="refuse" and the stage finished before with other inputs.
            RuntimeError: `fn` returned without writing every output.
        """
        h = stable_hash(inputs)
        if self.is_done(name, h, outputs):
            self.append(name, "skip", input_hash=h)
            self.skipped.append(name)
            log.info("stage %s: done before, skipped", name)
            return
        last = self.last_finish(name)
        # A folder left by other inputs (outputs or partial state such as checkpoints)
        # must not be resumed; a deleted one is simply redone.
        stale = any(p.parent.exists() for p in outputs)
        if last is not None and last.get("input_hash") != h and on_change == "refuse" and stale:
            where = ", ".join(str(p.parent) for p in outputs)
            raise ValueError(
                f"stage {name} finished before with other inputs (config or "
                f"upstream files changed); delete {where} to redo it, or use a "
                "new output folder"
            )
        self.append(name, "start", input_hash=h)
        log.info("stage %s: start", name)
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        outcome = fn()
        extra = {}
        if isinstance(outcome, StageOutcome) and outcome.retryable:
            extra["retryable"] = outcome.retryable
        seconds = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        missing = [str(p) for p in outputs if not p.exists()]
        if missing:
            raise RuntimeError(f"stage {name} finished without writing {missing}")
        self.append(
            name,
            "finish",
            input_hash=h,
            seconds=round(seconds, 3),
            cpu_seconds=round(cpu, 3),
            **extra,
        )
        self.ran.append(name)
        log.info("stage %s: finished in %.1f s", name, seconds)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (workers, the model server).

    Wall time on a shared machine says little; CPU time says what the stage costs on
    free cores (wall >= cpu / cores).
    """
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def stage_cpu_seconds(folder: str | os.PathLike) -> dict[str, float]:
    """CPU seconds (process + finished children) of each stage's last finished run."""
    out: dict[str, float] = {}
    for r in read_jsonl(Path(folder) / STAGES_FILE):
        if r.get("event") == "finish" and "cpu_seconds" in r:
            out[r["stage"]] = float(r["cpu_seconds"])
    return out


def stage_seconds(folder: str | os.PathLike) -> dict[str, float]:
    """Wall seconds of each stage's last finished run (skips cost nothing and keep it)."""
    out: dict[str, float] = {}
    for r in read_jsonl(Path(folder) / STAGES_FILE):
        if r.get("event") == "finish":
            out[r["stage"]] = float(r.get("seconds", 0.0))
    return out

"""Manipulation runs: an image sequence per run with its task instruction and executed plan.

The input of the method's manipulation domain (a robot arm told a task, running a
plan of skills, failing somewhere). One folder per run::

    runs/<run_id>/
      frames/000000.png ...   the camera images in time order (or images directly
                              in the run folder), sorted by file name
      task.txt                the instruction, e.g. "put the red cup in the sink"
      plan.txt                the executed plan, one step per line ("1. pick(red_cup)");
                              or plan.json: a list of step strings
      timestamps.txt          optional: one time (s) per image, for failure_time_s labels

The failure is at the frame (or time) the labels CSV names (`source.labels_path`),
else the last image; runs labelled success are skipped. A run without images is
a `SourceError`; a run without task.txt or plan still reads, its prompt then says
that no task (or plan) was logged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from common.episode import IMAGE_SUFFIXES
from failtax.sources.base import Episode, SourceError, failure_frame_at
from failtax.sources.labels import FailureLabel, lookup, read_labels

TASK_FILE = "task.txt"
PLAN_FILES = ("plan.txt", "plan.json")
TIMES_FILE = "timestamps.txt"


def is_manipulation_run(folder: Path) -> bool:
    """True for a folder with a task.txt or plan file beside its images."""
    return folder.is_dir() and (
        (folder / TASK_FILE).is_file() or any((folder / p).is_file() for p in PLAN_FILES)
    )


def read_plan(folder: Path) -> list[str]:
    """The executed plan of a run, one string per step ([] when none is logged).

    Raises:
        ValueError: plan.json is not a list of strings.
    """
    if (folder / "plan.txt").is_file():
        lines = (folder / "plan.txt").read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]
    if (folder / "plan.json").is_file():
        plan = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
        if not isinstance(plan, list) or not all(isinstance(s, str) for s in plan):
            raise ValueError("plan.json must be a JSON list of step strings")
        return [s.strip() for s in plan if s.strip()]
    return []


class ManipulationRunSource:
    """A folder of manipulation runs (image sequence + task + plan per run)."""

    kind = "manipulation"
    domain = "manipulation"

    def __init__(self, root: Path, labels_path: str | None = None) -> None:
        self.root = root
        self.labels: dict[str, FailureLabel] = read_labels(labels_path) if labels_path else {}

    def scan(self) -> Iterator[Episode | SourceError]:
        runs = [self.root] if is_manipulation_run(self.root) else sorted(
            p for p in self.root.iterdir() if p.is_dir()
        )
        for run in runs:
            yield self._read(run)

    def _read(self, run: Path) -> Episode | SourceError:
        eid = run.name
        image_dir = run / "frames" if (run / "frames").is_dir() else run
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            return SourceError(eid, "no_frames", f"no images in {image_dir.name}/", str(run))
        try:
            plan = read_plan(run)
            task = (run / TASK_FILE).read_text(encoding="utf-8").strip() if (
                run / TASK_FILE).is_file() else None
            times = self._times(run, len(images))
        except (OSError, ValueError) as e:
            return SourceError(eid, "bad_run", str(e), str(run))
        label = lookup(self.labels, eid)
        if label is not None and not label.failed:
            return SourceError(eid, "skipped_outcome", "labelled success", str(run))
        failure = len(images) - 1
        if label is not None and label.failure_frame is not None:
            failure = min(max(label.failure_frame, 0), len(images) - 1)
        elif label is not None and label.failure_time_s is not None:
            if times is None:
                return SourceError(eid, "bad_label", "failure_time_s needs timestamps.txt in "
                                   "the run folder (or label failure_frame)", str(run))
            failure = failure_frame_at(label.failure_time_s, times)
        return Episode(
            episode_id=eid,
            kind=self.kind,
            path=run,
            num_frames=len(images),
            failure_index=failure,
            meta={
                "episode_id": eid,
                "source": "manipulation run",
                "outcome": label.outcome if label is not None else "failure",
                "task": task or None,
                "plan": plan,
                "domain": self.domain,
                **({"frame_times_s": times} if times is not None else {}),
            },
            frame_paths=images,
            frame_steps=[None] * len(images),
            domain=self.domain,
        )

    @staticmethod
    def _times(run: Path, n: int) -> list[float] | None:
        path = run / TIMES_FILE
        if not path.is_file():
            return None
        times = [float(x) for x in path.read_text(encoding="utf-8").split()]
        if len(times) != n:
            raise ValueError(f"{TIMES_FILE} has {len(times)} times for {n} images")
        return times

"""Failure labels a user gives beside their logs: a CSV of which episodes failed and when.

Columns (header row; only `episode_id` is required)::

    episode_id,outcome,failure_time_s,failure_frame
    episode_000003,failure,4.2,
    run_07,success,,
    crash_12.mp4,,,31

`outcome` is "success" or a failure word (failure, collision, timeout, drop, ...);
empty means failure. `failure_time_s` is seconds from the episode's start (or the
bag's first message), `failure_frame` a frame index; both empty means the end of
the episode. Readers look an episode up by its id, and also by the id without its
file suffix or, for LeRobot, by its bare episode index.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FailureLabel:
    """One row of a labels CSV."""

    outcome: str  # "success" or a failure word ("failure" when the row leaves it empty)
    failure_time_s: float | None = None
    failure_frame: int | None = None

    @property
    def failed(self) -> bool:
        return self.outcome != "success"


def read_labels(path: str | Path) -> dict[str, FailureLabel]:
    """The labels CSV at `path`, by episode id.

    Raises:
        ValueError: no such file, no `episode_id` column, or a bad number (the message
            names the line and the fix).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"labels file {path} does not exist (source.labels_path)")
    labels: dict[str, FailureLabel] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "episode_id" not in (reader.fieldnames or []):
            raise ValueError(
                f"{path}: a labels CSV needs an episode_id column (header row); found "
                f"{', '.join(reader.fieldnames or []) or 'no header'}"
            )
        for n, row in enumerate(reader, start=2):
            eid = (row.get("episode_id") or "").strip()
            if not eid:
                continue
            try:
                t = (row.get("failure_time_s") or "").strip()
                i = (row.get("failure_frame") or "").strip()
                labels[eid] = FailureLabel(
                    outcome=(row.get("outcome") or "").strip().lower() or "failure",
                    failure_time_s=float(t) if t else None,
                    failure_frame=int(i) if i else None,
                )
            except ValueError as e:
                raise ValueError(
                    f"{path}:{n}: failure_time_s must be seconds and failure_frame an integer ({e})"
                ) from None
    return labels


def lookup(labels: dict[str, FailureLabel], *ids: str) -> FailureLabel | None:
    """The label of the first of `ids` (and each id without its file suffix) that has one."""
    for eid in ids:
        for key in (eid, Path(eid).stem):
            if key in labels:
                return labels[key]
    return None

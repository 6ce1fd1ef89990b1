"""A person's edits of a taxonomy: the edits file, its checks, and applying it to a new run.

The report's edit mode (failtax/templates/run_report.html) records a list of
edits and exports them as `edits.json`; `failtax assign RUN --edits FILE --out NEW`
applies them with `apply_edits`. The source run is never changed: NEW gets the
source's per-episode files (config, key frames, explanations, errors, stage log),
the edited taxonomy.json and assignments.jsonl, the edits file (always as JSON),
and a report that shows them. No model is called: the person's decisions are
final, and every mode or episode they did not touch keeps what discovery and
assignment decided.

The edits file (JSON, or YAML for hand-written ones), schema_version 1:

    {"schema_version": 1, "source_run": "run-a", "source_fingerprint": "3f0c...",
     "edits": [
       {"op": "rename", "mode": "glass / door", "name": "glass doors"},
       {"op": "merge", "modes": ["pole", "post"], "name": "thin obstacles"},
       {"op": "split", "mode": "glass doors", "episodes": ["ep-7"], "name": "mirrors"},
       {"op": "move", "episodes": ["ep-3"], "to": "outlier"},
       {"op": "not_a_failure", "mode": "goal reached", "reason": "mislabelled successes"}]}

Edits apply in order, so an edit names modes as the edits before it left them.
`source_fingerprint` (written by the report) ties the file to the taxonomy and
assignments it was made on; applying it to another run is refused.

Provenance: each edited mode is listed in `taxonomy.notes["edits"]["modes"]` with
`edited_by: "person"` and what changed; a renamed, merged-under-a-new-name or split-off
mode has `named_by: "person"`; moved and split episodes have an assignment
`method` starting with "person"; modes marked not a failure leave `modes`, and their
episodes leave assignments.jsonl (they are not failures), both listed in
`notes["edits"]["not_a_failure"]`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError

from common import StrictModel, atomic_dir, atomic_write_json, atomic_write_text, stable_hash
from common.stages import STAGES_FILE, StageLog, now_iso
from failtax.assignment import update_frequencies
from failtax.run_folder import (
    ASSIGNMENTS_FILE,
    CONFIG_FILE,
    EDITS_FILE,
    ERRORS_FILE,
    EXPLANATIONS_FILE,
    KEYFRAMES_FILE,
    TAXONOMY_FILE,
    read_assignments,
    read_explanations,
    read_taxonomy,
)
from failtax.types import OUTLIER, Assignment, Mode, Taxonomy

log = logging.getLogger(__name__)

EDITS_SCHEMA_VERSION = 1
# The run's files the edited run carries over unchanged (the per-episode stages' outputs).
CARRIED_FILES = (CONFIG_FILE, KEYFRAMES_FILE, EXPLANATIONS_FILE, ERRORS_FILE, STAGES_FILE)
# Keywords a merged mode keeps (the union of its parts', in order).
MERGED_KEYWORDS_MAX = 8

_Name = Annotated[str, Field(min_length=1, max_length=200)]


class RenameEdit(StrictModel):
    """Give a mode a new name (and optionally a new description)."""

    op: Literal["rename"]
    mode: _Name  # the mode's current name
    name: _Name  # its new name
    description: str | None = None  # None keeps the description


class MergeEdit(StrictModel):
    """Join several modes into one; their episodes all carry the merged mode."""

    op: Literal["merge"]
    modes: list[_Name] = Field(min_length=2)
    name: _Name  # the merged mode's name (one of `modes` or a new one)
    description: str | None = None  # None: the description of the largest part


class SplitEdit(StrictModel):
    """Move the picked episodes of a mode into a new mode."""

    op: Literal["split"]
    mode: _Name
    episodes: list[_Name] = Field(min_length=1)
    name: _Name  # the new mode's name
    description: str | None = None


class MoveEdit(StrictModel):
    """Put episodes into another mode (or "outlier"), replacing the modes they had."""

    op: Literal["move"]
    episodes: list[_Name] = Field(min_length=1)
    to: _Name


class NotAFailureEdit(StrictModel):
    """Mark a mode as not a failure: it leaves the taxonomy and its episodes leave the counts."""

    op: Literal["not_a_failure"]
    mode: _Name
    reason: str = ""


Edit = Annotated[
    RenameEdit | MergeEdit | SplitEdit | MoveEdit | NotAFailureEdit, Field(discriminator="op")
]


class EditsFile(StrictModel):
    """The edits file a report's edit mode exports (see the module docstring)."""

    schema_version: Literal[1] = EDITS_SCHEMA_VERSION
    source_run: str | None = None  # the run folder's name the edits were made on
    source_fingerprint: str | None = None  # run_fingerprint() of that run; checked when set
    edits: list[Edit] = Field(min_length=1)


class EditsError(ValueError):
    """An edits file that cannot be applied; the message says which edit and why."""


def load_edits(path: str | os.PathLike) -> EditsFile:
    """Read and validate an edits file (.json, or .yaml / .yml).

    Raises:
        EditsError: unreadable file, unknown keys or kinds of edit, missing fields.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        doc = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise EditsError(f"cannot read edits file {path}: {e}") from None
    try:
        return EditsFile.model_validate(doc)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}" for err in e.errors()
        )
        raise EditsError(
            f"{path} is not a valid edits file (schema_version {EDITS_SCHEMA_VERSION}): {problems}"
        ) from None


def run_fingerprint(taxonomy: Taxonomy, assignments: list[Assignment]) -> str:
    """What an edits file was made on: the mode names and each episode's modes."""
    return stable_hash(
        {"modes": taxonomy.names, "assignments": {a.episode_id: sorted(a.modes) for a in assignments}}
    )


def describe(edit: Edit) -> str:
    """One line a person reads in the report."""
    if isinstance(edit, RenameEdit):
        extra = " (new description)" if edit.description is not None else ""
        return f"renamed '{edit.mode}' to '{edit.name}'{extra}"
    if isinstance(edit, MergeEdit):
        return f"merged {', '.join(repr(m) for m in edit.modes)} into '{edit.name}'"
    if isinstance(edit, SplitEdit):
        return (f"split {len(edit.episodes)} episode(s) of '{edit.mode}' into '{edit.name}': "
                f"{_few(edit.episodes)}")
    if isinstance(edit, MoveEdit):
        return f"moved {_few(edit.episodes)} to '{edit.to}'"
    reason = f" ({edit.reason})" if edit.reason else ""
    return f"marked '{edit.mode}' as not a failure{reason}"


def _few(ids: list[str], n: int = 6) -> str:
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


class _State:
    """The taxonomy and every episode's modes while edits apply, with what changed."""

    def __init__(self, taxonomy: Taxonomy, assignments: list[Assignment]) -> None:
        self.modes: list[Mode] = [copy.deepcopy(m) for m in taxonomy.modes]
        self.assignments = {a.episode_id: copy.deepcopy(a) for a in assignments}
        self.changes: dict[str, list[str]] = {}  # mode name -> what a person changed
        self.moved: dict[str, dict[str, list[str]]] = {}  # episode -> {"from", "to"}
        self.not_a_failure: list[dict[str, Any]] = []
        self.dropped_vectors: set[str] = set()  # modes whose discovery vector no longer fits
        self.renamed: dict[str, str] = {}  # old name -> new name, for notes keyed by name

    # -------------------------------------------------------------- lookups
    def names(self) -> list[str]:
        return [m.name for m in self.modes]

    def mode(self, name: str, where: str) -> Mode:
        for m in self.modes:
            if m.name == name:
                return m
        raise EditsError(f"{where}: no mode named {name!r}; modes now: {', '.join(map(repr, self.names()))}")

    def new_name(self, name: str, where: str, allowed: tuple[str, ...] = ()) -> str:
        name = name.strip()
        if not name:
            raise EditsError(f"{where}: the new name is empty")
        if name.lower() == OUTLIER:
            raise EditsError(f"{where}: {OUTLIER!r} is reserved for episodes that fit no mode")
        if name in self.names() and name not in allowed:
            raise EditsError(f"{where}: a mode named {name!r} exists already; merge the two instead")
        return name

    def episode(self, eid: str, where: str) -> Assignment:
        if eid not in self.assignments:
            raise EditsError(f"{where}: episode {eid!r} is not in the run's assignments")
        return self.assignments[eid]

    def members(self, name: str) -> list[str]:
        return [eid for eid, a in self.assignments.items() if name in a.modes]

    def note(self, name: str, change: str) -> None:
        self.changes.setdefault(name, []).append(change)

    def relabel(self, old: str, new: str) -> None:
        for a in self.assignments.values():
            if old in a.modes:
                a.modes = list(dict.fromkeys(new if m == old else m for m in a.modes))
                if old in a.scores:
                    a.scores[new] = max(a.scores.pop(old), a.scores.get(new, float("-inf")))
        if old in self.changes:
            self.changes[new] = self.changes.pop(old) + self.changes.get(new, [])
        for k, v in list(self.renamed.items()):
            if v == old:
                self.renamed[k] = new
        self.renamed.setdefault(old, new)
        if old in self.dropped_vectors:
            self.dropped_vectors.add(new)

    # -------------------------------------------------------------- edits
    def apply(self, i: int, edit: Edit) -> None:
        where = f"edit {i + 1} ({edit.op})"
        if isinstance(edit, RenameEdit):
            self._rename(edit, where)
        elif isinstance(edit, MergeEdit):
            self._merge(edit, where)
        elif isinstance(edit, SplitEdit):
            self._split(edit, where)
        elif isinstance(edit, MoveEdit):
            self._move(edit, where)
        else:
            self._not_a_failure(edit, where)

    def _rename(self, e: RenameEdit, where: str) -> None:
        mode = self.mode(e.mode, where)
        name = self.new_name(e.name, where, allowed=(e.mode,))
        if name == e.mode and e.description is None:
            raise EditsError(f"{where}: {e.mode!r} already has that name; give a new name or a description")
        if name != e.mode:
            mode.name, mode.named_by = name, "person"
            self.relabel(e.mode, name)
            self.note(name, f"renamed from '{e.mode}'")
        if e.description is not None:
            mode.description = e.description
            self.note(name, "description written by a person")

    def _merge(self, e: MergeEdit, where: str) -> None:
        if len(set(e.modes)) != len(e.modes):
            raise EditsError(f"{where}: a mode is listed twice in {e.modes}")
        parts = [self.mode(n, where) for n in e.modes]
        name = self.new_name(e.name, where, allowed=tuple(e.modes))
        largest = max(parts, key=lambda m: (len(self.members(m.name)), -e.modes.index(m.name)))
        keep = next((m for m in parts if m.name == name), parts[0])
        reported = [m.reported_frequency for m in parts]
        keywords = list(dict.fromkeys(k for m in parts for k in m.keywords))[:MERGED_KEYWORDS_MAX]
        merged = Mode(
            name=name,
            description=e.description if e.description is not None else largest.description,
            keywords=keywords,
            reported_frequency=None if None in reported else round(sum(reported), 6),
            named_by=keep.named_by if name in e.modes else "person",
        )
        self.modes[self.modes.index(parts[0])] = merged
        for m in parts[1:]:
            self.modes.remove(m)
        for n in e.modes:
            if n != name:
                self.relabel(n, name)
        self.dropped_vectors.add(name)
        self.note(name, f"merged from {', '.join(repr(n) for n in e.modes)}")

    def _split(self, e: SplitEdit, where: str) -> None:
        mode = self.mode(e.mode, where)
        if len(set(e.episodes)) != len(e.episodes):
            raise EditsError(f"{where}: an episode is listed twice")
        for eid in e.episodes:
            a = self.episode(eid, where)
            if e.mode not in a.modes:
                raise EditsError(f"{where}: episode {eid!r} is not in mode {e.mode!r} (its modes: {a.modes})")
        name = self.new_name(e.name, where)
        left = set(self.members(e.mode)) - set(e.episodes)
        if not left:
            raise EditsError(
                f"{where}: splitting every episode out of {e.mode!r} would leave it empty; rename it instead"
            )
        new = Mode(name=name, description=e.description or f"Split by a person from '{e.mode}'.",
                   keywords=[], reported_frequency=None, named_by="person")
        self.modes.insert(self.modes.index(mode) + 1, new)
        mode.reported_frequency = None  # discovery's share was for the whole mode
        for eid in e.episodes:
            a = self.assignments[eid]
            a.modes = list(dict.fromkeys(name if m == e.mode else m for m in a.modes))
            a.method = "person (split)"
        self.dropped_vectors.update({e.mode, name})
        self.note(name, f"split from '{e.mode}' ({len(e.episodes)} episodes)")
        self.note(e.mode, f"{len(e.episodes)} episodes split off into '{name}'")

    def _move(self, e: MoveEdit, where: str) -> None:
        if e.to != OUTLIER:
            self.mode(e.to, where)
        for eid in e.episodes:
            a = self.episode(eid, where)
            if a.modes == [e.to]:
                raise EditsError(f"{where}: episode {eid!r} is in {e.to!r} already")
            before = self.moved.get(eid, {}).get("from", list(a.modes))
            self.moved[eid] = {"from": before, "to": [e.to]}
            for m in a.modes:
                if m != OUTLIER:
                    self.note(m, f"episode {eid} moved out to '{e.to}'")
            if e.to != OUTLIER:
                self.note(e.to, f"episode {eid} moved in")
            a.modes, a.method = [e.to], "person (moved)"

    def _not_a_failure(self, e: NotAFailureEdit, where: str) -> None:
        mode = self.mode(e.mode, where)
        episodes = sorted(self.members(e.mode))
        for eid in episodes:
            a = self.assignments[eid]
            a.modes = [m for m in a.modes if m != e.mode]
            if not a.modes:  # not a failure at all: it leaves the counts
                del self.assignments[eid]
        self.modes.remove(mode)
        self.changes.pop(e.mode, None)
        self.not_a_failure.append({
            "name": mode.name, "description": mode.description, "keywords": mode.keywords,
            "episodes": episodes, "reason": e.reason,
        })


def edit_taxonomy(
    taxonomy: Taxonomy, assignments: list[Assignment], edits: EditsFile
) -> tuple[Taxonomy, list[Assignment]]:
    """Apply `edits` in order; return the new taxonomy and assignments (inputs untouched).

    Counts and frequencies follow the edited assignments; `notes` keyed by mode name
    (members, exemplars, mode vectors) follow renames and merges, vectors of merged or
    split modes are dropped (a later re-assignment embeds those modes' texts), and
    `notes["edits"]` records what a person changed.

    Raises:
        EditsError: an edit names a mode or episode that is not there (at that point
            of the list), a new name clashes, or a split would empty its mode.
    """
    state = _State(taxonomy, assignments)
    for i, edit in enumerate(edits.edits):
        state.apply(i, edit)
    result = [state.assignments[k] for k in sorted(state.assignments)]
    notes = copy.deepcopy(taxonomy.notes)
    new = Taxonomy(modes=state.modes, strategy=taxonomy.strategy, candidates=copy.deepcopy(taxonomy.candidates),
                   notes=notes, schema_version=taxonomy.schema_version)
    update_frequencies(new, result)
    names = set(new.names)

    def rekey(d: dict[str, Any], merge: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            k = state.renamed.get(k, k)
            if k not in names:
                continue
            out[k] = out[k] + v if merge and k in out else v
        return out

    if "exemplars" in notes:
        notes["exemplars"] = rekey(notes["exemplars"], merge=True)
    if "members" in notes:  # the clusters a later cluster-assignment keeps: the edited ones
        notes["members"] = {m.name: sorted(e for e, a in state.assignments.items() if m.name in a.modes)
                            for m in new.modes}
    vectors = (notes.get("mode_vectors") or {}).get("vectors")
    if isinstance(vectors, dict):
        kept = {k: v for k, v in rekey(vectors, merge=False).items() if k not in state.dropped_vectors}
        notes["mode_vectors"]["vectors"] = kept
    previous = notes.get("edits") or {}
    edited_modes = {n: {"edited_by": "person", "changes": c} for n, c in state.changes.items() if n in names}
    for n, info in (previous.get("modes") or {}).items():  # an edited run edited again
        n = state.renamed.get(n, n)
        if n in names:
            edited_modes[n] = {"edited_by": "person", "changes": info.get("changes", []) + edited_modes.get(
                n, {}).get("changes", [])}
    notes["edits"] = {
        "modes": edited_modes,
        "moved_episodes": {**(previous.get("moved_episodes") or {}), **state.moved},
        "not_a_failure": (previous.get("not_a_failure") or []) + state.not_a_failure,
        "history": previous.get("history") or [],
    }
    notes["edits"]["summary"] = (
        f"{len(edited_modes)} of {len(new.modes)} modes edited, {len(notes['edits']['moved_episodes'])} "
        f"episodes moved, {len(notes['edits']['not_a_failure'])} modes marked not a failure "
        "(edits.json); every other mode and assignment as decided above"
    )
    return new, result


def apply_edits(
    run_dir: str | os.PathLike, edits_path: str | os.PathLike, out_dir: str | os.PathLike
) -> Path:
    """Apply an edits file to the run `run_dir`, writing the edited run to `out_dir`.

    `run_dir` is only read. `out_dir` must not exist, unless it holds the result of
    these same edits on this same run (then it is rewritten). The report of the new
    run is written by the caller (failtax.report.write_report).

    Returns:
        The new run folder.

    Raises:
        EditsError: a bad edits file, edits made on another taxonomy, or edits that do
            not apply (the message names the edit).
        FileExistsError: `out_dir` holds something else.
    """
    run, out = Path(run_dir), Path(out_dir)
    edits = load_edits(edits_path)
    if out.resolve() == run.resolve():
        raise EditsError(f"--out must be a new folder; {run} itself is never changed")
    if not (run / ASSIGNMENTS_FILE).is_file():
        raise EditsError(f"{run} has no {ASSIGNMENTS_FILE}; run `failtax assign {run}` first")
    taxonomy = read_taxonomy(run)
    assignments = read_assignments(run)
    fingerprint = run_fingerprint(taxonomy, assignments)
    if edits.source_fingerprint and edits.source_fingerprint != fingerprint:
        raise EditsError(
            f"these edits were made on another taxonomy (run {edits.source_run!r}, fingerprint "
            f"{edits.source_fingerprint}) than {run}'s ({fingerprint}); export them again from "
            f"{run / 'report.html'}"
        )
    known = {e.episode_id for e in read_explanations(run)}
    missing = sorted({a.episode_id for a in assignments} - known)
    if missing:
        log.warning("%d assigned episodes have no explanation in %s: %s", len(missing), run, missing[:5])
    new_taxonomy, new_assignments = edit_taxonomy(taxonomy, assignments, edits)
    doc = edits.model_dump(mode="json", exclude_none=True)
    edits_hash = stable_hash(doc)
    new_taxonomy.notes["edits"]["history"].append({
        "file": EDITS_FILE, "edits_hash": edits_hash, "source_run": run.name,
        "source_fingerprint": fingerprint, "applied_at": now_iso(), "count": len(edits.edits),
    })
    overwrite = False
    if out.exists():
        kept = out / EDITS_FILE
        try:
            same = stable_hash(json.loads(kept.read_text(encoding="utf-8"))) == edits_hash
        except (OSError, ValueError):
            same = False
        if not same:
            raise FileExistsError(f"{out} exists and is not these edits applied to {run}; pass another --out")
        overwrite = True
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for name in CARRIED_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, tmp / name)
        atomic_write_json(tmp / EDITS_FILE, doc)
        atomic_write_json(tmp / TAXONOMY_FILE, new_taxonomy.to_dict())
        atomic_write_text(tmp / ASSIGNMENTS_FILE, "".join(
            json.dumps(a.to_dict(), sort_keys=True, ensure_ascii=False) + "\n" for a in new_assignments))
        StageLog(tmp).append(
            "edit", "finish", source_run=str(run), edits=len(edits.edits), edits_hash=edits_hash,
            modes=len(new_taxonomy.modes), assigned=len(new_assignments), outliers=new_taxonomy.outlier_count,
        )
    return out


def read_run_edits(run_dir: str | os.PathLike) -> list[str]:
    """The edits kept with a run, one readable line each ([] for an unedited run)."""
    path = Path(run_dir) / EDITS_FILE
    if not path.is_file():
        return []
    try:
        return [describe(e) for e in load_edits(path).edits]
    except EditsError as e:
        log.warning("report: %s", e)
        return [f"(unreadable: {e})"]

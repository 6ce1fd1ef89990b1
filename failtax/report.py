"""A run's human-readable report: summary.md and a self-contained report.html.

The HTML comes from the report kit (common/html.py, template
failtax/templates/run_report.html): inline CSS and every image embedded (PNG
data URIs), so it can be mailed or archived as one file. Contents: modes with
assigned and reported frequencies (bar plot), example episodes per mode with
their key frames, what a model decided versus code, degenerate output and
errors, and the evaluation tables when evaluation.json exists. Reads only the run folder and the episode
frames that keyframes.jsonl points at (never ground truth).

The page also carries the taxonomy editor (docs/BROWSER.md): an inline script
over a JSON block of the modes and every assigned episode, which records a
person's edits and exports edits.json for `failtax assign RUN --edits`. An
edited run's report lists those edits and the modes marked not a failure.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from common import atomic_write_text, read_jsonl
from common.html import png_data_uri, render_page
from failtax.config import SourceConfig
from failtax.discovery.common import clip
from failtax.edits import EDITS_SCHEMA_VERSION, read_run_edits, run_fingerprint
from failtax.sources import make_source
from failtax.types import OUTLIER, Assignment, Explanation, Keyframes, Taxonomy

log = logging.getLogger(__name__)

EXAMPLES_PER_MODE = 3
FRAMES_PER_EXAMPLE = 4
THUMB_PX = 160
# Characters of an explanation the editor shows beside each episode.
EDITOR_REASON_CHARS = 160

def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError) as e:
        log.warning("cannot read %s: %s", path, e)
        return None


def _run_config(run: Path) -> dict[str, Any]:
    path = run / "config.yaml"
    try:
        doc = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except (OSError, yaml.YAMLError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _latest(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if "episode_id" in r:
            out[str(r["episode_id"])] = r
    return out


def frequency_plot(taxonomy: Taxonomy, n_assigned: int) -> str | None:
    """PNG data URI: assigned vs reported share per mode (and the outliers)."""
    if not taxonomy.modes:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m.name for m in taxonomy.modes] + ([OUTLIER] if taxonomy.outlier_count else [])
    assigned = [m.frequency for m in taxonomy.modes]
    reported = [m.reported_frequency or 0.0 for m in taxonomy.modes]
    if taxonomy.outlier_count:
        assigned.append(taxonomy.outlier_count / max(n_assigned, 1))
        reported.append(0.0)
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(names) + 1.2))
    ax.barh(y - 0.2, assigned, height=0.4, label="assigned", color="#3b7dd8")
    ax.barh(y + 0.2, reported, height=0.4, label="reported by discovery", color="#f0a830")
    ax.set_yticks(y, [n if len(n) <= 40 else n[:39] + "…" for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("share of explanations")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    data = png_data_uri(fig)
    plt.close(fig)
    return data


class _Frames:
    """Loads key frames of episodes through the run's episode source (lazily)."""

    def __init__(self, run_config: dict[str, Any]) -> None:
        cfg = run_config.get("config", run_config) if isinstance(run_config, dict) else {}
        self.source_cfg = (cfg or {}).get("source") or {}
        self._source = None
        self._failed: str | None = None
        self._cache: dict[str, Any] = {}

    def _episode(self, episode_id: str):
        if episode_id in self._cache:
            return self._cache[episode_id]
        ep = None
        try:
            if self._source is None and self._failed is None:
                path = self.source_cfg.get("path")
                if not path or not Path(path).exists():
                    raise ValueError(f"episodes folder {path!r} not found")
                fields = {k: v for k, v in self.source_cfg.items() if k in SourceConfig.model_fields}
                self._source = make_source(SourceConfig(**{**fields, "outcomes": []}))
            if self._source is not None:
                folder = getattr(self._source, "root", None)
                reader = getattr(self._source, "_read", None)
                if reader is not None and folder is not None and (Path(folder) / episode_id).is_dir():
                    ep = reader(Path(folder) / episode_id)  # one folder, no full rescan
                else:
                    ep = next((e for e in self._source.scan() if getattr(e, "episode_id", None) == episode_id), None)
        except (OSError, ValueError, RuntimeError) as e:  # a report never fails for missing frames
            self._failed = str(e)
        self._cache[episode_id] = ep if hasattr(ep, "load_frame") else None
        return self._cache[episode_id]

    def thumbs(self, kf: Keyframes | None) -> list[tuple[int, str]]:
        if kf is None:
            return []
        ep = self._episode(kf.episode_id)
        if ep is None:
            return []
        out = []
        for idx in kf.indices[-FRAMES_PER_EXAMPLE:]:
            try:
                img = Image.fromarray(ep.load_frame(idx))
            except (OSError, ValueError, RuntimeError, IndexError) as e:
                log.warning("report: frame %s of %s not shown: %s", idx, kf.episode_id, e)
                continue
            scale = THUMB_PX / max(img.size)
            if scale < 1:
                img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))))
            out.append((idx, png_data_uri(img)))
        return out

    @property
    def problem(self) -> str | None:
        return self._failed


def _examples(taxonomy: Taxonomy, assignments: list[Assignment]) -> dict[str, list[Assignment]]:
    by_mode: dict[str, list[Assignment]] = {m.name: [] for m in taxonomy.modes}
    by_mode[OUTLIER] = []
    for a in assignments:
        for name in a.modes:
            by_mode.setdefault(name, []).append(a)
    for name, items in by_mode.items():
        items.sort(key=lambda a: (-a.scores.get(name, 0.0), a.episode_id))
    return by_mode


# who wrote the explanations of each input mode, as the report says it
_WRITTEN_BY = {
    "facts": "facts (code)",
    "given": "given (people's reports, as written)",
    "report": "report (the model read people's reports)",
}


def _decided(taxonomy: Taxonomy, explanations: list[Explanation]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    modes_by = Counter(_WRITTEN_BY.get(e.input_mode, e.input_mode) for e in explanations)
    models = Counter(e.model or "no model" for e in explanations)
    if explanations:
        rows.append(("explanations", ", ".join(f"{k}: {v}" for k, v in sorted(modes_by.items()))
                     + " — " + ", ".join(f"{k}: {v}" for k, v in sorted(models.items()))))
    for key, value in (taxonomy.notes.get("decided_by") or {}).items():
        rows.append((f"discovery: {key}", str(value)))
    assign_notes = taxonomy.notes.get("assignment") or {}
    if assign_notes:
        rows.append(("assignment", f"{assign_notes.get('method')} — {assign_notes.get('decided_by')}"))
    if (taxonomy.notes.get("edits") or {}).get("summary"):
        rows.append(("edits by a person", str(taxonomy.notes["edits"]["summary"])))
    return rows


def _error_counts(errors: list[dict[str, Any]], taxonomy: Taxonomy, explanations: list[Explanation]) -> Counter:
    counts: Counter = Counter()
    for e in errors:
        counts[(str(e.get("stage", "?")), str(e.get("kind", "?")))] += 1
    for e in taxonomy.notes.get("errors") or []:
        counts[("discover", str(e.get("kind", "?")))] += 1
    for ex in explanations:
        for flag in ex.degenerate:
            counts[("reason (degenerate)", flag)] += 1
    for flag, n in (taxonomy.notes.get("degenerate") or {}).items():
        counts[("discover (degenerate)", flag)] += int(n)
    return counts


def write_report(run_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write `<run>/summary.md` and `<run>/report.html` from the run's files.

    Missing files (a run stopped before assignment, no episodes folder for the
    frames) leave their sections out with a note, never an exception.

    Returns:
        (summary.md path, report.html path).

    Raises:
        ValueError: the folder has no taxonomy.json (discovery has not run).
    """
    run = Path(run_dir)
    tax_doc = _read_json(run / "taxonomy.json")
    if tax_doc is None:
        raise ValueError(f"{run} has no readable taxonomy.json; run discovery first")
    taxonomy = Taxonomy.from_dict(tax_doc)
    explanations = [Explanation.from_dict(r) for r in _latest(read_jsonl(run / "explanations.jsonl")).values()]
    assignments = [Assignment.from_dict(r) for r in _latest(read_jsonl(run / "assignments.jsonl")).values()]
    keyframes = {eid: Keyframes.from_dict(r) for eid, r in _latest(read_jsonl(run / "keyframes.jsonl")).items()}
    errors = read_jsonl(run / "errors.jsonl")
    evaluation = _read_json(run / "evaluation.json")
    run_config = _run_config(run)
    by_id = {e.episode_id: e for e in explanations}
    examples = _examples(taxonomy, assignments)
    frames = _Frames(run_config)
    plot = frequency_plot(taxonomy, len(assignments))
    decided = _decided(taxonomy, explanations)
    err_counts = _error_counts(errors, taxonomy, explanations)

    md = _markdown(run, taxonomy, explanations, assignments, examples, by_id, decided, err_counts, evaluation)
    page = _html(run, taxonomy, explanations, assignments, examples, by_id, keyframes, frames, plot, decided,
                 err_counts, evaluation, run_config)
    md_path = atomic_write_text(run / "summary.md", md)
    html_path = atomic_write_text(run / "report.html", page)
    return md_path, html_path


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def _eval_rows(evaluation: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    a = evaluation.get("assignment") or {}
    for k in ("nmi", "ari", "purity", "weighted_f1_majority", "weighted_f1_hungarian", "outlier_share"):
        if k in a:
            rows.append((f"assignment {k}", _fmt(a[k])))
    for section in ("alignment_from_assignments", "alignment_embedding", "alignment_llm_judge"):
        s = evaluation.get(section) or {}
        for k in ("cp", "tc", "sas"):
            if k in s:
                rows.append((f"{section.replace('_', ' ')} {k.upper()}", _fmt(s[k])))
    ex = evaluation.get("explanations") or {}
    for k in ("cosine_similarity", "rouge_l", "llm_judge_agreement"):
        if k in ex:
            rows.append((f"explanations {k}", _fmt(ex[k])))
    st = evaluation.get("stability") or {}
    if st.get("mean_ari") is not None:
        rows.append(("stability: ARI between runs", f"{_fmt(st['mean_ari'])} ± {_fmt(st.get('std_ari'))}"))
    return rows


def _markdown(run, taxonomy, explanations, assignments, examples, by_id, decided, err_counts, evaluation) -> str:
    lines = [f"# failtax run: {run.name}", ""]
    lines.append(f"{len(explanations)} explanations, {len(taxonomy.modes)} failure modes "
                 f"(strategy `{taxonomy.strategy}`), {taxonomy.outlier_count} outliers, "
                 f"{len(assignments)} assigned.")
    lines += ["", "## Failure modes", "",
              "| mode | assigned | reported | named by | keywords |", "|---|---|---|---|---|"]
    for m in sorted(taxonomy.modes, key=lambda m: -m.count):
        rep = f"{m.reported_frequency:.1%}" if m.reported_frequency is not None else "–"
        lines.append(f"| {m.name} | {m.count} ({m.frequency:.1%}) | {rep} | {m.named_by} | {', '.join(m.keywords)} |")
    for m in sorted(taxonomy.modes, key=lambda m: -m.count):
        lines += ["", f"### {m.name}", "", m.description, ""]
        for a in examples.get(m.name, [])[:EXAMPLES_PER_MODE]:
            e = by_id.get(a.episode_id)
            lines.append(f"- `{a.episode_id}`: {e.failure_reason if e else '(no explanation)'}")
            if e is not None and e.report:
                lines.append(f"  (read from the report: {clip(' '.join(e.report.split()), 300)})")
    edits = read_run_edits(run)
    if edits:
        lines += ["", "## Edits by a person (edits.json)", ""] + [f"{i}. {e}" for i, e in enumerate(edits, 1)]
    lines += ["", "## What a model decided", ""]
    lines += [f"- **{k}**: {v}" for k, v in decided] or ["- (nothing recorded)"]
    lines += ["", "## Errors and degenerate output", ""]
    lines += [f"- {stage} / {kind}: {n}" for (stage, kind), n in sorted(err_counts.items())] or ["- none"]
    if evaluation:
        lines += ["", "## Evaluation", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in _eval_rows(evaluation)]
    return "\n".join(lines) + "\n"


def _html(run, taxonomy, explanations, assignments, examples, by_id, keyframes, frames, plot, decided,
          err_counts, evaluation, run_config) -> str:
    ordered = sorted(taxonomy.modes, key=lambda m: -m.count)
    modes = [{"row": [m.name, f"{m.count} ({m.frequency:.1%})",
                      f"{m.reported_frequency:.1%}" if m.reported_frequency is not None else "–",
                      m.named_by, ", ".join(m.keywords)]} for m in ordered]
    sections = []
    for m in ordered + ([None] if examples.get(OUTLIER) else []):
        name = m.name if m else OUTLIER
        sections.append({
            "name": name,
            "named_by": m.named_by if m else None,
            "description": m.description if m else None,
            "keywords": ", ".join(m.keywords) if m else "",
            "examples": [{"episode_id": a.episode_id, "method": a.method, "explanation": by_id.get(a.episode_id),
                          "thumbs": frames.thumbs(keyframes.get(a.episode_id))}
                         for a in examples.get(name, [])[:EXAMPLES_PER_MODE]],
        })
    edit_notes = taxonomy.notes.get("edits") or {}
    for section in sections:
        section["edited"] = ((edit_notes.get("modes") or {}).get(section["name"]) or {}).get("changes", [])
    models = (run_config.get("models") or {}) if isinstance(run_config, dict) else {}
    return render_page(
        "failtax", "run_report.html",
        run_name=run.name, n_explanations=len(explanations), strategy=taxonomy.strategy,
        outliers=taxonomy.outlier_count, n_assigned=len(assignments), plot=plot, modes=modes,
        sections=sections, frames_problem=frames.problem, decided=[list(r) for r in decided],
        errors=[[s, k, n] for (s, k), n in sorted(err_counts.items())],
        evaluation=[list(r) for r in _eval_rows(evaluation)] if evaluation else [],
        labels_source=str(evaluation.get("labels_source") or "") if evaluation else "",
        models=", ".join(f"{k}={v}" for k, v in models.items()),
        edits=read_run_edits(run), not_a_failure=[[d.get("name", "?"), d.get("reason") or "–", ", ".join(d.get("episodes") or [])]
                                         for d in edit_notes.get("not_a_failure") or []],
        editor_data=_editor_data(run, taxonomy, assignments, by_id),
    )


def _editor_data(run: Path, taxonomy: Taxonomy, assignments: list[Assignment],
                 by_id: dict[str, Explanation]) -> dict[str, Any]:
    """What the page's taxonomy editor works on: the modes and every assigned episode."""
    def reason(eid: str) -> str:
        e = by_id.get(eid)
        text = " ".join((e.failure_reason if e else "").split())
        return text if len(text) <= EDITOR_REASON_CHARS else text[: EDITOR_REASON_CHARS - 1] + "…"

    return {
        "schema_version": EDITS_SCHEMA_VERSION,
        "run_name": run.name,
        "fingerprint": run_fingerprint(taxonomy, assignments),
        "outlier": OUTLIER,
        "modes": [{"name": m.name, "description": m.description, "named_by": m.named_by} for m in taxonomy.modes],
        "episodes": [[a.episode_id, a.modes, reason(a.episode_id)]
                     for a in sorted(assignments, key=lambda a: a.episode_id)],
    }

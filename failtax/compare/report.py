"""The comparison report: comparison.md and a self-contained comparison.html.

Both are rendered from comparison.json alone, so `failtax compare --report-only`
can rebuild them without touching a model or a run. The HTML goes through the
report kit (common/html.py; template failtax/compare/templates/comparison.html).
"""

from __future__ import annotations

from typing import Any

from common.html import render_page


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _money(x: float | None) -> str:
    if x is None:
        return "—"
    return f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def _cell(text: Any) -> str:
    # Markdown table cells: one line, pipes escaped.
    return " ".join(str(text).split()).replace("|", "\\|")


def summary_rows(comparison: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The per-reasoner table (model, usage, money, quality against ground truth)."""
    header = [
        "reasoner",
        "model",
        "input",
        "episodes",
        "modes",
        "outlier share",
        "calls",
        "prompt tok",
        "completion tok",
        "call latency s (sum)",
        "wall s",
        "parse fails",
        "$ / 1k episodes",
    ]
    has_gt = any(r.get("evaluation") for r in comparison["reasoners"])
    if has_gt:
        header += ["NMI", "ARI", "weighted F1", "SAS", "reason cos"]
    rows = []
    for r in comparison["reasoners"]:
        c = r["cost"]
        row = [
            r["name"],
            r.get("model") or "—",
            r.get("input_mode") or "—",
            _fmt(c["episodes"]),
            _fmt(len(r.get("modes", []))),
            _pct(r.get("outlier_share")),
            _fmt(c["calls"]),
            _fmt(c["prompt_tokens"]),
            _fmt(c["completion_tokens"]),
            _fmt(c["model_time_s"], 1),
            _fmt(c["wall_time_s"], 1),
            _fmt(c["parse_failures"]),
            _money(c["usd_per_1k_episodes"]),
        ]
        if has_gt:
            ev = r.get("evaluation") or {}
            row += [
                _fmt(ev.get("nmi")),
                _fmt(ev.get("ari")),
                _fmt(ev.get("weighted_f1")),
                _fmt(ev.get("sas")),
                _fmt(ev.get("explanation_cosine")),
            ]
        rows.append(row)
    return header, rows


def stage_rows(comparison: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Where each reasoner's calls, tokens and time went: reasoning, discovery, assignment."""
    header = [
        "reasoner",
        "stage",
        "calls",
        "prompt tok",
        "completion tok",
        "call latency s (sum)",
        "wall s",
        "parse fails",
    ]
    rows = []
    for r in comparison["reasoners"]:
        for stage, c in (r["cost"].get("stages") or {}).items():
            rows.append(
                [
                    r["name"],
                    stage,
                    _fmt(c.get("calls", 0)),
                    _fmt(c.get("prompt_tokens", 0)),
                    _fmt(c.get("completion_tokens", 0)),
                    _fmt(float(c.get("model_time_s", 0.0)), 1),
                    _fmt(c.get("wall_s"), 1),
                    _fmt(c.get("parse_failures", 0)),
                ]
            )
    return header, rows


def pair_rows(comparison: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One line per pair of reasoners: how far they agree at each stage."""
    header = [
        "A",
        "B",
        "explanation sim (mean)",
        "identical reasons",
        "modes matched",
        "missed by B",
        "missed by A",
        "SAS (A→B)",
        "ARI",
        "NMI",
        "matched agreement",
    ]
    rows = []
    for p in comparison["pairs"]:
        e, t, a = p["explanations"], p["taxonomies"], p["assignments"]
        rows.append(
            [
                p["a"],
                p["b"],
                _fmt(e.get("mean")),
                _pct(e.get("identical_share")),
                f"{len(t.get('matched', {}))}/{t.get('modes_a', 0)}↔{t.get('modes_b', 0)}",
                _fmt(len(t.get("missed_by_b", []))),
                _fmt(len(t.get("missed_by_a", []))),
                _fmt(t.get("sas")),
                _fmt(a.get("ari")),
                _fmt(a.get("nmi")),
                _pct(a.get("matched_agreement")),
            ]
        )
    return header, rows


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(comparison: dict[str, Any]) -> str:
    """comparison.md: tables first, details per pair after."""
    s, shared = comparison["settings"], comparison["shared"]
    out = [
        "# Reasoner comparison",
        "",
        (
            f"{shared['episodes']} episodes from `{shared['source']}`, key frames selected once "
            f"and shared ({shared.get('keyframe_method') or '—'}). Texts compared with "
            f"{s['embedder']}; modes count as the same at cosine similarity "
            f"≥ {s['match_threshold']}. Money uses the per-token prices in each reasoner's config; "
            "calls and tokens include answers served from the call cache (what the run costs "
            "from scratch)."
        ),
        "",
        "## Reasoners",
        "",
        *[
            f"- **{r['name']}**: {r.get('description') or r.get('model')} (`{r.get('file')}`)"
            for r in comparison["reasoners"]
        ],
        "",
        md_table(*summary_rows(comparison)),
        "",
    ]
    if not any(r.get("evaluation") for r in comparison["reasoners"]):
        out += ["No ground truth was found, so no reasoner is scored against it.", ""]
    out += ["### Cost by stage", "", md_table(*stage_rows(comparison)), ""]
    out += ["## Agreement between reasoners", "", md_table(*pair_rows(comparison)), ""]
    for p in comparison["pairs"]:
        out += _pair_markdown(p)
    notes = comparison.get("notes") or []
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


def _pair_markdown(p: dict[str, Any]) -> list[str]:
    a, b = p["a"], p["b"]
    e, t, asg = p["explanations"], p["taxonomies"], p["assignments"]
    out = [f"## {a} vs {b}", "", "### Explanations", ""]
    out.append(
        f"{e['episodes_compared']} episodes explained by both; failure-reason similarity mean "
        f"{_fmt(e.get('mean'))}, median {_fmt(e.get('median'))}, min {_fmt(e.get('min'))}; "
        f"identical wording in {_pct(e.get('identical_share'))} of episodes."
    )
    if e.get("least_agreeing"):
        out += [
            "",
            "Least agreeing episodes:",
            "",
            md_table(
                ["episode", "similarity", a, b],
                [
                    [x["episode_id"], _fmt(x["similarity"]), x["a"], x["b"]]
                    for x in e["least_agreeing"]
                ],
            ),
        ]
    out += ["", "### Taxonomies", ""]
    out.append(
        f"{t.get('modes_a', 0)} modes ({a}) vs {t.get('modes_b', 0)} ({b}). "
        f"Share of {a}'s modes with a match in {b}'s (cluster precision) "
        f"{_fmt(t.get('cp'))}, soft {_fmt(t.get('cp_soft'))}; share of {b}'s modes covered "
        f"(coverage) {_fmt(t.get('tc'))}, soft {_fmt(t.get('tc_soft'))}; semantic alignment "
        f"score {_fmt(t.get('sas'))}; mean similarity of the one-to-one matching "
        f"{_fmt(t.get('hungarian_mean'))}."
    )
    if t.get("pairs"):
        out += [
            "",
            md_table(
                [f"{a} mode", f"{b} mode", "similarity", "same mode"],
                [[x["a"], x["b"], _fmt(x["similarity"]), _fmt(x["matched"])] for x in t["pairs"]],
            ),
        ]
    for key, who, other in (("missed_by_b", a, b), ("missed_by_a", b, a)):
        if t.get(key):
            items = "; ".join(
                f"`{m['mode']}` ({_pct(m.get('frequency'))} of episodes; "
                f"closest: `{m['closest']}`, {_fmt(m['similarity'])})"
                for m in t[key]
            )
            out += ["", f"Found by {who}, missed by {other}: {items}"]
    out += ["", "### Assignments", ""]
    out.append(
        f"{asg['episodes_compared']} episodes assigned by both; ARI {_fmt(asg.get('ari'))}, "
        f"NMI {_fmt(asg.get('nmi'))}; through the mode matching, "
        f"{_pct(asg.get('matched_agreement'))} of episodes land in matching modes."
    )
    conf = asg.get("confusion") or {}
    if conf.get("rows"):
        header = [f"{a} ↓ / {b} →"] + conf["cols"]
        out += [
            "",
            md_table(
                header,
                [[r] + [str(n) for n in counts] for r, counts in zip(conf["rows"], conf["counts"])],
            ),
        ]
    out.append("")
    return out


# ----------------------------------------------------------------------------- HTML


def render_html(comparison: dict[str, Any]) -> str:
    """comparison.html: the same content as the Markdown, one file, no external assets."""
    return render_page(
        "failtax.compare",
        "comparison.html",
        settings=comparison["settings"],
        shared=comparison["shared"],
        reasoners=comparison["reasoners"],
        summary=summary_rows(comparison),
        stages=stage_rows(comparison),
        agreement=pair_rows(comparison),
        pairs=[_pair_view(p) for p in comparison["pairs"]],
        notes=comparison.get("notes") or [],
    )


def _pair_view(p: dict[str, Any]) -> dict[str, Any]:
    """What the HTML shows of one pair of reasoners: texts and (header, rows) tables."""
    a, b = p["a"], p["b"]
    e, t, asg = p["explanations"], p["taxonomies"], p["assignments"]
    view: dict[str, Any] = {
        "a": a,
        "b": b,
        "explanations_text": (
            f"{e['episodes_compared']} episodes explained by both; similarity mean "
            f"{_fmt(e.get('mean'))}, median {_fmt(e.get('median'))}, min {_fmt(e.get('min'))}; "
            f"identical wording {_pct(e.get('identical_share'))}."
        ),
        "least_agreeing": None,
        "taxonomies_text": (
            f"{t.get('modes_a', 0)} vs {t.get('modes_b', 0)} modes; {_alignment_text(t)}"
        ),
        "mode_pairs": None,
        "missed": [],
        "assignments_text": (
            f"{asg['episodes_compared']} episodes; ARI {_fmt(asg.get('ari'))}, "
            f"NMI {_fmt(asg.get('nmi'))}, agreement through the mode matching "
            f"{_pct(asg.get('matched_agreement'))}."
        ),
        "confusion": None,
    }
    if e.get("least_agreeing"):
        view["least_agreeing"] = (
            ["episode", "similarity", a, b],
            [[x["episode_id"], _fmt(x["similarity"]), x["a"], x["b"]] for x in e["least_agreeing"]],
        )
    if t.get("pairs"):
        verdict = {True: {"text": "same", "class": "ok"}, False: {"text": "different", "class": "miss"}}
        view["mode_pairs"] = (
            [f"{a} mode", f"{b} mode", "similarity", "verdict"],
            [[x["a"], x["b"], _fmt(x["similarity"]), verdict[bool(x["matched"])]] for x in t["pairs"]],
        )
    for key, who, other in (("missed_by_b", a, b), ("missed_by_a", b, a)):
        if t.get(key):
            modes = [
                {"mode": m["mode"], "share": _pct(m.get("frequency")), "closest": m["closest"],
                 "similarity": _fmt(m["similarity"])}
                for m in t[key]
            ]
            view["missed"].append({"who": who, "other": other, "modes": modes})
    conf = asg.get("confusion") or {}
    if conf.get("rows"):
        peak = max([max(r) for r in conf["counts"] if r] + [1])
        rows = [
            [r] + [{"text": n, "class": "heat", "style": f"background:rgba(40,90,200,{_shade(n, peak):.2f})"}
                   for n in counts]
            for r, counts in zip(conf["rows"], conf["counts"])
        ]
        view["confusion"] = ([f"{a} ↓ / {b} →", *conf["cols"]], rows)
    return view


def _alignment_text(t: dict[str, Any]) -> str:
    """The alignment scores of a pair (failtax.metrics.alignment_scores), in words."""
    return (
        f"cluster precision {_fmt(t.get('cp'))} (soft {_fmt(t.get('cp_soft'))}), coverage "
        f"{_fmt(t.get('tc'))} (soft {_fmt(t.get('tc_soft'))}), SAS {_fmt(t.get('sas'))}, "
        f"one-to-one mean similarity {_fmt(t.get('hungarian_mean'))}."
    )


def _shade(count: int, peak: int) -> float:
    """Background opacity of a confusion cell: empty cells stay white."""
    return 0.08 + 0.6 * count / peak if count else 0.0

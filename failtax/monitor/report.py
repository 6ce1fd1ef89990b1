"""Tables (summary.md) and the HTML report (per-episode timelines) of a monitor
evaluation, through the common report kit (common/html.py)."""

from __future__ import annotations

from typing import Any

from common.html import render_page

HEADER = ["monitor", "set", "episodes (fail/ok)", "TPR", "TNR", "FPR", "FNR", "F1",
          "lead mean / median (s)", "model decisions", "decisions/s"]
TIMELINE_EPISODES = 40  # per (set, monitor) in the HTML; all are in decisions.jsonl


def _pct(r: dict[str, Any]) -> str:
    if r.get("value") is None:
        return "n/a"
    lo, hi = r["ci95"]
    return f"{100 * r['value']:.1f} [{100 * lo:.0f}–{100 * hi:.0f}]"


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """One row per (monitor, set)."""
    rows = []
    for name, sets in results["monitors"].items():
        for set_name, m in sets.items():
            lead = m["lead_time_s"]
            rows.append([
                name, set_name, f"{m['episodes']} ({m['failures']}/{m['successes']})",
                _pct(m["tpr"]), _pct(m["tnr"]), _pct(m["fpr"]), _pct(m["fnr"]),
                (f"{100 * m['f1']['value']:.1f} [{100 * m['f1']['ci95'][0]:.0f}–"
                f"{100 * m['f1']['ci95'][1]:.0f}]"),
                f"{_num(lead['mean'])} / {_num(lead['median'])}",
                f"{m['decisions_by_model']}/{m['decisions']}",
                _num(m["throughput"]["decisions_per_s"], "{:.1f}"),
            ])
    return rows


def summary_markdown(results: dict[str, Any], *, title: str) -> str:
    lines = [f"# {title}", "", results.get("note", ""), "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(results)]
    lines += ["", ("Rates in % with 95 % Wilson intervals; F1 with a bootstrap interval over "
              "episodes; lead time = collision time minus alarm time of true alarms."), ""]
    for name, record in (results.get("calibration") or {}).items():
        lines.append(f"- {name}: UNSAFE when P(UNSAFE) ≥ {record['threshold']:.4f}, set on "
                     f"{record['set']} ({record['episodes']} episodes; F1 there "
                     f"{100 * record['f1']:.1f})")
    for name, sets in results["monitors"].items():
        for set_name, m in sets.items():
            causes = ", ".join(f"{c} {_pct(r)}" for c, r in m["detection_by_cause"].items())
            auroc = (m.get("episode_auroc") or {}).get("value")
            lines.append(f"- {name} / {set_name}: detection by cause: {causes or 'n/a'}; "
                         + (f"episode AUROC {auroc:.3f}; " if auroc is not None else "")
                         + f"fallbacks {m['fallbacks'] or 'none'}")
    return "\n".join(lines) + "\n"


def _timeline(run: Any, width: int = 640) -> dict[str, Any]:
    end = max(run.end_t_s, max((d.t_s for d in run.decisions), default=0.0), 1e-6)
    t0 = min((d.t_s for d in run.decisions), default=0.0)
    span = max(end - t0, 1e-6)

    def x(t: float) -> float:
        return round(10 + (width - 20) * (t - t0) / span, 1)

    ticks = [{"x": x(d.t_s), "cls": ("fallback" if d.source.startswith("fallback") else
                                     "unsafe" if d.unsafe else "safe"),
              "tip": f"t={d.t_s:.1f} s {d.verdict}" + (f" ({d.mode})" if d.mode else "")
              + (f": {d.reason}" if d.reason else "")} for d in run.decisions]
    alarm = run.alarm
    return {"episode_id": run.episode_id, "outcome": run.outcome, "cause": run.cause or "",
            "width": width, "ticks": ticks, "alarm_x": x(alarm.t_s) if alarm else None,
            "alarm_text": (f"alarm at {alarm.t_s:.1f} s" + (f", mode {alarm.mode}" if alarm.mode else ""))
            if alarm else "no alarm",
            "end_x": x(end), "failure": run.failure, "end_t_s": run.end_t_s}


def render_report(results: dict[str, Any], runs: dict[tuple[str, str], list[Any]], *,
                  title: str) -> str:
    groups = []
    for (set_name, name), episode_runs in runs.items():
        chosen = episode_runs[:TIMELINE_EPISODES]
        groups.append({"set": set_name, "monitor": name, "shown": len(chosen),
                       "total": len(episode_runs), "timelines": [_timeline(r) for r in chosen]})
    return render_page("failtax.monitor", "monitor_report.html", title=title, header=HEADER,
                       rows=table_rows(results), note=results.get("note", ""),
                       config=results.get("config", {}), groups=groups)

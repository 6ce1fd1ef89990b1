"""Model monitors: a text model reads the latest scene descriptions and answers
{verdict: SAFE|UNSAFE, mode, reason} as structured output.

Three prompt variants on the same model, inputs and schema (failtax/prompts/):
- `taxonomy`: the robot's discovered failure modes are in the prompt, and the
  answer names the mode it sees coming (or "none");
- `nocontext`: the same prompt without the modes (the paper's ablation);
- `llm_ad`: an anomaly-detection prompt with hand-written nominal and anomalous
  examples and no taxonomy (the LLM-AD baseline).

Two ways to read a decision (`monitor.decide`):
- `answer`: the model's structured answer is the decision;
- `probability`: the model answers one word, SAFE or UNSAFE, and the decision is
  UNSAFE when the probability it gave UNSAFE (its token probabilities) reaches
  `unsafe_threshold`. A small model that answers UNSAFE almost always can still rank
  danger this way; the threshold is set on training episodes (`calibrate_threshold`).
  With a taxonomy the model is asked which mode is coming only where the alarm fires.

Every call goes through an `LLMBackend` (cached by content hash, so a rerun makes
no model call). An answer that does not parse or validate becomes a SAFE decision
marked `fallback:<why>`: it can never raise an alarm, and reports count it.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from failtax.answers import answer_schema, monitor_answer
from failtax.monitor.config import MonitorConfig
from failtax.monitor.observe import DecisionPoint, window_text
from failtax.monitor.rules import first_alarm
from failtax.reasoning import load_prompt
from failtax.sources import Episode
from failtax.types import Taxonomy
from serving.protocol import BackendError, LLMBackend
from serving.structured import schema_token_budget

SAFE, UNSAFE = "SAFE", "UNSAFE"

# what the prompt's {answer} asks for, per way of deciding
_ASK_ANSWER = "Give a short reason."
_ASK_ANSWER_MODE = ('Name the matching failure mode exactly as written above, or "none". '
                    "Give a short reason.")
_ASK_WORD = "Answer with one word: SAFE or UNSAFE."
_ASK_MODE = ('An alarm was raised. Which failure mode above is coming? Answer with its name '
             'exactly as written above, or "none".')


@dataclass
class Decision:
    """One monitor decision (a line of decisions.jsonl)."""

    step: int
    t_s: float
    verdict: str  # SAFE or UNSAFE
    mode: str | None = None  # the failure mode named (taxonomy monitors), None otherwise
    reason: str = ""
    source: str = "model"  # model | fallback:<why> | cnn
    p_unsafe: float | None = None  # classifier probability (cnn monitors)
    call_id: str | None = None
    cached: bool = False
    latency_s: float = 0.0  # wall time of this decision's model call (0 when cached)

    @property
    def unsafe(self) -> bool:
        return self.verdict == UNSAFE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decision:
        return cls(**d)


class Monitor(Protocol):
    """Decides SAFE/UNSAFE at an episode's decision points."""

    name: str
    model: str | None  # what decided (model id or checkpoint), for reports

    async def decide_episode(self, episode: Episode, points: list[DecisionPoint]
                             ) -> list[Decision]: ...


def load_taxonomy(path: str | Path) -> Taxonomy:
    """A taxonomy.json, or the taxonomy of a discover run folder."""
    p = Path(path)
    if p.is_dir():
        p = p / "taxonomy.json"
    if not p.is_file():
        raise FileNotFoundError(
            f"no taxonomy at {path}; give monitor.taxonomy_path as a taxonomy.json or the run "
            "folder of `failtax discover`")
    try:
        return Taxonomy.from_dict(json.loads(p.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{p} is not a taxonomy.json ({e})") from None


def modes_text(taxonomy: Taxonomy, max_chars: int) -> str:
    """"1. name: description" lines, descriptions cut to `max_chars`."""
    lines = []
    for i, m in enumerate(taxonomy.modes, 1):
        desc = " ".join(m.description.split())
        desc = desc if len(desc) <= max_chars else desc[: max_chars - 1].rstrip() + "…"
        lines.append(f"{i}. {m.name}: {desc}")
    return "\n".join(lines)


class LLMMonitor:
    """A model monitor of one prompt variant (see module docstring)."""

    def __init__(self, cfg: MonitorConfig, backend: LLMBackend,
                 taxonomy: Taxonomy | None = None) -> None:
        if cfg.variant == "taxonomy" and taxonomy is None:
            raise ValueError("the taxonomy monitor needs monitor.taxonomy_path (a taxonomy.json)")
        self.cfg = cfg
        self.backend = backend
        self.name = cfg.label
        self.model = backend.model_id
        self.taxonomy = taxonomy if cfg.variant == "taxonomy" else None
        self.prompt = load_prompt(cfg.prompts[cfg.variant])
        names = tuple(self.taxonomy.names) if self.taxonomy else None
        self.answer = monitor_answer(names, reason_max_chars=cfg.reason_max_chars,
                                     reason_first=cfg.reason_first)
        self.schema = answer_schema(self.answer)
        self.max_tokens = schema_token_budget(self.schema)
        self._modes = modes_text(self.taxonomy, cfg.mode_description_max_chars) if self.taxonomy else ""
        # deciding by probability with a taxonomy: ask the mode where the alarm fires
        # (off while calibrating, where alarms are provisional)
        self.name_modes = True

    def messages(self, observations: str, period_s: float, ask: str | None = None
                 ) -> list[dict[str, Any]]:
        """The prompt on `observations`; `ask` fills {answer} (default: what this
        monitor's way of deciding asks for)."""
        if ask is None:
            ask = (_ASK_WORD if self.cfg.decide == "probability"
                   else _ASK_ANSWER_MODE if self.taxonomy else _ASK_ANSWER)
        values = {"observations": observations, "modes": self._modes,
                  "period_s": f"{period_s:.1f}", "answer": ask}
        try:
            text = self.prompt.format_map(values)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"monitor prompt {self.cfg.prompts[self.cfg.variant]!r} has an unknown placeholder "
                f"({e}); valid: {', '.join('{' + k + '}' for k in values)}") from None
        return [{"role": "user", "content": text}]

    async def decide(self, observations: str, step: int, t_s: float, period_s: float) -> Decision:
        """One decision on the observation window `observations`."""
        messages = self.messages(observations, period_s)
        by_probability = self.cfg.decide == "probability"
        start = time.perf_counter()
        try:
            if by_probability:
                result = await self.backend.complete_choice(
                    messages, [SAFE, UNSAFE], temperature=self.cfg.temperature, seed=self.cfg.seed)
            else:
                result = await self.backend.complete_json(
                    messages, self.schema, max_tokens=self.max_tokens,
                    temperature=self.cfg.temperature, seed=self.cfg.seed)
        except BackendError as e:
            return Decision(step, t_s, SAFE, reason=str(e)[:200], source="fallback:backend_error")
        latency = 0.0 if result.cached else time.perf_counter() - start
        base = {"call_id": result.call_id, "cached": result.cached, "latency_s": latency}
        if result.parsed is None:
            why = "truncated" if result.finish_reason == "length" else "parse_failure"
            return Decision(step, t_s, SAFE, reason=(result.error or "")[:200],
                            source=f"fallback:{why}", **base)
        if by_probability:
            return self._from_probability(result, step, t_s, base)
        try:
            answer = self.answer.model_validate(result.parsed)
        except ValidationError:
            return Decision(step, t_s, SAFE, reason=json.dumps(result.parsed)[:200],
                            source="fallback:schema_mismatch", **base)
        mode = getattr(answer, "mode", None)
        return Decision(step, t_s, answer.verdict,
                        mode=None if mode in (None, "none") else mode,
                        reason=getattr(answer, "reason", "").strip(), source="model", **base)

    def _from_probability(self, result: Any, step: int, t_s: float, base: dict[str, Any]
                          ) -> Decision:
        p = (result.choice_probs or {}).get(UNSAFE)
        if p is None:
            return Decision(step, t_s, SAFE, reason=(
                f"the backend gave no token probabilities (answer {result.parsed}); "
                "decide: probability needs a vLLM server or the in-process backend"),
                source="fallback:no_probabilities", **base)
        verdict = UNSAFE if p >= self.cfg.unsafe_threshold else SAFE
        return Decision(step, t_s, verdict, reason=f"P(UNSAFE)={p:.2f}", source="model",
                        p_unsafe=p, **base)

    async def name_mode(self, observations: str, period_s: float) -> str | None:
        """The failure mode the model sees coming in `observations` (None: none, or the
        call failed)."""
        names = [*self.taxonomy.names, "none"]
        try:
            result = await self.backend.complete_choice(
                self.messages(observations, period_s, _ASK_MODE), names,
                temperature=self.cfg.temperature, seed=self.cfg.seed)
        except BackendError:
            return None
        return None if result.parsed in (None, "none") else result.parsed

    async def decide_episode(self, episode: Episode, points: list[DecisionPoint]
                             ) -> list[Decision]:
        """Decisions at every point, sent concurrently (a prompt never depends on an
        earlier verdict, so the order of calls does not change any answer). Deciding by
        probability with a taxonomy, the mode is asked where the alarm fires."""
        dt = float((episode.meta or {}).get("dt_s") or 0.1)
        period = dt * self.cfg.decision_every_steps
        windows = [window_text(points, i, self.cfg.window_decisions) for i in range(len(points))]
        decisions = list(await asyncio.gather(*(
            self.decide(windows[i], p.step, p.t_s, period) for i, p in enumerate(points))))
        if self.cfg.decide == "probability" and self.taxonomy is not None and self.name_modes:
            alarm = first_alarm((d.unsafe for d in decisions), self.cfg.k_consecutive)
            if alarm is not None:
                decisions[alarm].mode = await self.name_mode(windows[alarm], period)
        return decisions


# where `evaluate --calibrate` keeps a monitor's calibration, beside its decisions.jsonl
CALIBRATION_FILE = "calibration.json"


def calibrate_threshold(episodes: list[tuple[bool, list[float | None]]], k: int
                        ) -> dict[str, Any]:
    """The UNSAFE threshold that maximises episode F1 under the k-consecutive rule on
    calibration episodes: each is (ends in failure, P(UNSAFE) per decision; None where
    no model decided). Ties go to the higher threshold (fewer alarms). Returns the
    threshold and every candidate's TPR, TNR and F1.

    Example:
        >>> calibrate_threshold([(True, [0.7, 0.8, 0.9]), (False, [0.6, 0.7, 0.6])], k=3)["threshold"]
        0.7
    """
    from failtax.monitor.metrics import f1_score

    values = sorted({p for _, ps in episodes for p in ps if p is not None})
    if not values:
        raise ValueError("no decision with a probability to calibrate on")
    rows = []
    for t in values:
        alarms = [(fail, first_alarm((p is not None and p >= t for p in ps), k) is not None)
                  for fail, ps in episodes]
        tp = sum(f and a for f, a in alarms)
        fp = sum(a and not f for f, a in alarms)
        fn = sum(f and not a for f, a in alarms)
        n_fail = tp + fn
        n_ok = len(alarms) - n_fail
        rows.append({"threshold": t, "f1": f1_score(tp, fp, fn),
                     "tpr": tp / n_fail if n_fail else None,
                     "tnr": (n_ok - fp) / n_ok if n_ok else None})
    best = max(rows, key=lambda r: (r["f1"], r["threshold"]))
    return {"threshold": best["threshold"], "f1": best["f1"], "tpr": best["tpr"],
            "tnr": best["tnr"], "k_consecutive": k, "episodes": len(episodes),
            "candidates": rows}

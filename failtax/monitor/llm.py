"""Model monitors: a text model reads the latest scene descriptions and answers
{verdict: SAFE|UNSAFE, mode, reason} as structured output.

Three prompt variants on the same model, inputs and schema (failtax/prompts/):
- `taxonomy`: the robot's discovered failure modes are in the prompt, and the
  answer names the mode it sees coming (or "none");
- `nocontext`: the same prompt without the modes (the paper's ablation);
- `llm_ad`: an anomaly-detection prompt with hand-written nominal and anomalous
  examples and no taxonomy (the LLM-AD baseline).

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
from failtax.reasoning import load_prompt
from failtax.sources import Episode
from failtax.types import Taxonomy
from serving.protocol import BackendError, LLMBackend
from serving.structured import schema_token_budget

SAFE, UNSAFE = "SAFE", "UNSAFE"


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

    def messages(self, observations: str, period_s: float) -> list[dict[str, Any]]:
        values = {"observations": observations, "modes": self._modes,
                  "period_s": f"{period_s:.1f}"}
        try:
            text = self.prompt.format_map(values)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"monitor prompt {self.cfg.prompts[self.cfg.variant]!r} has an unknown placeholder "
                f"({e}); valid: {', '.join('{' + k + '}' for k in values)}") from None
        return [{"role": "user", "content": text}]

    async def decide(self, observations: str, step: int, t_s: float, period_s: float) -> Decision:
        """One decision on the observation window `observations`."""
        start = time.perf_counter()
        try:
            result = await self.backend.complete_json(
                self.messages(observations, period_s), self.schema, max_tokens=self.max_tokens,
                temperature=self.cfg.temperature, seed=self.cfg.seed)
        except BackendError as e:
            return Decision(step, t_s, SAFE, reason=str(e)[:200], source="fallback:backend_error")
        latency = 0.0 if result.cached else time.perf_counter() - start
        base = {"call_id": result.call_id, "cached": result.cached, "latency_s": latency}
        if result.parsed is None:
            why = "truncated" if result.finish_reason == "length" else "parse_failure"
            return Decision(step, t_s, SAFE, reason=(result.error or "")[:200],
                            source=f"fallback:{why}", **base)
        try:
            answer = self.answer.model_validate(result.parsed)
        except ValidationError:
            return Decision(step, t_s, SAFE, reason=json.dumps(result.parsed)[:200],
                            source="fallback:schema_mismatch", **base)
        mode = getattr(answer, "mode", None)
        return Decision(step, t_s, answer.verdict,
                        mode=None if mode in (None, "none") else mode,
                        reason=getattr(answer, "reason", "").strip(), source="model", **base)

    async def decide_episode(self, episode: Episode, points: list[DecisionPoint]
                             ) -> list[Decision]:
        """Decisions at every point, sent concurrently (a prompt never depends on an
        earlier verdict, so the order of calls does not change any answer)."""
        dt = float((episode.meta or {}).get("dt_s") or 0.1)
        period = dt * self.cfg.decision_every_steps
        return list(await asyncio.gather(*(
            self.decide(window_text(points, i, self.cfg.window_decisions), p.step, p.t_s, period)
            for i, p in enumerate(points))))

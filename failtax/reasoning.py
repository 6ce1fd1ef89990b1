"""Failure reasoning: key frames (or their scene descriptions) in, an explanation out.

Input modes, each named in every explanation it writes:

- ``vision``: a vision-language model gets the kept frames as images.
- ``scene_text``: a text model gets the scene descriptions of failtax.scene.
- ``facts``: no model; code summarises the last frames' scene descriptions
  (failtax.scene.summarise_facts). The floor a model has to beat.
- ``given``: explanations read from a CSV/JSONL (failtax.sources), as written.
- ``report``: the same reports read by a model, which says what was hit or went
  wrong in its own words (failtax.reading; `reasoning.reports`).

Model-backed modes ask for a chain-of-thought JSON object
{reasoning?, trajectory, failure_reason} with a `maxLength` on every string
(small models otherwise run to the token limit); the schema is generated from
the typed answer in failtax.answers, and the answer is validated with it. The
backend parses at the boundary and re-asks once; what still fails is recorded as a typed error and
the episode falls back to `facts`, saying so in `Explanation.degenerate`
("fallback:<why>"). Degenerate answers (empty, repetition, input copied back,
truncated) are flagged; the flags in `fallback_on_degenerate` also trigger the
facts fallback.

Prompt packs: each model mode has one prompt per domain (`DOMAINS`: navigation,
manipulation with the task and the executed plan, driving), picked per episode
by `reasoning.domain` or, under "auto", by the episode's source (LeRobot and
manipulation runs → manipulation, dashcam clips → driving, the rest →
navigation). Navigation uses the configured `*_prompt` file; another domain uses
`<that file>.<domain>.txt` beside it, unless the config names its own prompt file,
which then serves every domain. Prompts may use {task} and {plan}.

`run_stage` is the pipeline's reason stage (keyframes.jsonl → explanations.jsonl).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from common import append_jsonl, read_jsonl
from failtax.answers import answer_schema, explanation_answer
from failtax.config import ReasoningConfig, SceneConfig
from failtax.degenerate import detect_degenerate
from failtax.discovery.common import clip
from failtax.reading import ReportReader, read_reports
from failtax.run_folder import (
    EXPLANATIONS_FILE,
    BackendProvider,
    RunFolder,
    backend_stats,
    latest_by_episode,
    read_explanations,
    read_keyframes,
)
from failtax.scene import SceneDescriber, SceneFrame, summarise_facts
from failtax.sources import (
    DOMAINS,
    Episode,
    EpisodeReadError,
    EpisodeSource,
    ExplanationSource,
    SourceError,
)
from failtax.types import Explanation, Keyframes
from serving.protocol import BackendError, CallResult, LLMBackend
from serving.structured import schema_token_budget

INPUT_MODES = ("vision", "scene_text", "facts", "given")
MODEL_MODES = ("vision", "scene_text")
PROMPTS_DIR = Path(__file__).parent / "prompts"
# Why a model answer was replaced by facts; "backend_error" is retried by a rerun.
RETRYABLE_FALLBACKS = frozenset({"fallback:backend_error"})


@dataclass
class ReasonOutcome:
    """One episode's explanation plus the error records it produced."""

    explanation: Explanation
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def retryable(self) -> bool:
        """True when a rerun should try the model again (the server was unreachable)."""
        return bool(RETRYABLE_FALLBACKS & set(self.explanation.degenerate))


@runtime_checkable
class Reasoner(Protocol):
    """Explains one failure episode."""

    input_mode: str
    model: str | None
    needs_scenes: bool  # whether `explain` uses scene descriptions

    async def explain(
        self, episode: Episode, keyframes: Keyframes, scenes: list[SceneFrame]
    ) -> ReasonOutcome: ...


def load_prompt(name: str) -> str:
    """A prompt file from failtax/prompts/ (or a path to one)."""
    path = Path(name)
    if not path.is_file():
        path = PROMPTS_DIR / name
    if not path.is_file():
        raise ValueError(
            f"prompt file {name!r} not found (looked in {PROMPTS_DIR}); set reasoning.*_prompt"
        )
    return path.read_text(encoding="utf-8")


def domain_prompt_name(prompt_name: str, default_name: str, domain: str) -> str:
    """The prompt file of `domain` for a mode configured with `prompt_name`.

    Navigation, and any prompt file the user named (not the shipped default), are
    used as they are; otherwise "reason_vision.txt" becomes "reason_vision.manipulation.txt".
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; valid: {', '.join(DOMAINS)}")
    if domain == "navigation" or prompt_name != default_name:
        return prompt_name
    return f"{Path(default_name).stem}.{domain}.txt"


def episode_domain(cfg: ReasoningConfig, episode: Episode) -> str:
    """The prompt pack of `episode`: `cfg.domain`, or under "auto" the one its source says."""
    if cfg.domain != "auto":
        return cfg.domain
    domain = getattr(episode, "domain", "navigation")
    return domain if domain in DOMAINS else "navigation"


def _task_text(meta: dict[str, Any]) -> str:
    task = str(meta.get("task") or "").strip()
    return task or "(no task instruction logged)"


def _plan_text(meta: dict[str, Any]) -> str:
    plan = meta.get("plan") or []
    if isinstance(plan, str):
        plan = [plan]
    return "\n".join(f"{i}. {step}" for i, step in enumerate(plan, start=1)) or "(no plan logged)"


def prompt_hash(text: str) -> str:
    """The fingerprint of a prompt recorded in config.yaml."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def explanation_answer_for(cfg: ReasoningConfig) -> type[BaseModel]:
    """The typed answer a model gives under `cfg`; every string is length-capped."""
    return explanation_answer(
        include_reasoning=cfg.include_reasoning,
        reasoning_max_chars=cfg.reasoning_max_chars,
        trajectory_max_chars=cfg.trajectory_max_chars,
        failure_reason_max_chars=cfg.failure_reason_max_chars,
    )


def explanation_schema(cfg: ReasoningConfig) -> dict[str, Any]:
    """JSON schema of a model's answer (generated from `explanation_answer_for`)."""
    return answer_schema(explanation_answer_for(cfg))


class FactsReasoner:
    """No model: the code-written summary of the scene descriptions."""

    input_mode = "facts"
    model = None
    needs_scenes = True

    def __init__(self, scene_cfg: SceneConfig) -> None:
        self.scene_cfg = scene_cfg

    async def explain(
        self, episode: Episode, keyframes: Keyframes, scenes: list[SceneFrame]
    ) -> ReasonOutcome:
        trajectory, reason = summarise_facts(episode, scenes, self.scene_cfg)
        return ReasonOutcome(Explanation(episode.episode_id, trajectory, reason, "facts", None))


class GivenReasoner:
    """Ready-made explanations, looked up by episode id."""

    input_mode = "given"
    model = None
    needs_scenes = False

    def __init__(self, given: dict[str, Explanation]) -> None:
        self.given = given

    async def explain(
        self, episode: Episode, keyframes: Keyframes, scenes: list[SceneFrame]
    ) -> ReasonOutcome:
        if episode.episode_id not in self.given:
            raise KeyError(f"no given explanation for episode {episode.episode_id!r}")
        return ReasonOutcome(self.given[episode.episode_id])


class _ModelReasoner:
    """Shared call/parse/fallback logic of the model-backed modes."""

    input_mode = "scene_text"
    needs_scenes = True

    prompt_field = "scene_text_prompt"  # the ReasoningConfig field naming this mode's prompt

    def __init__(
        self, cfg: ReasoningConfig, scene_cfg: SceneConfig, backend: LLMBackend, prompt_name: str
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        self.model = backend.model_id
        self.prompt_name = prompt_name
        self.prompt = load_prompt(prompt_name)
        self.prompts: dict[str, str] = {"navigation": self.prompt}  # domain -> prompt text
        if cfg.domain != "auto":  # a missing pack fails at the start, not mid-run
            self.prompt_for(cfg.domain)
        self.answer = explanation_answer_for(cfg)
        self.schema = answer_schema(self.answer)
        self.max_tokens = cfg.max_tokens or schema_token_budget(self.schema)
        self.facts = FactsReasoner(scene_cfg)
        self.seed = 0  # the run's seed, sent with every call (make_reasoner sets it)

    def messages(
        self, episode: Episode, keyframes: Keyframes, scenes: list[SceneFrame]
    ) -> list[dict[str, Any]]:
        raise NotImplementedError

    def prompt_for(self, domain: str) -> str:
        """The prompt text of `domain` (its pack file, loaded once)."""
        if domain not in self.prompts:
            default = ReasoningConfig.model_fields[self.prompt_field].default
            self.prompts[domain] = load_prompt(domain_prompt_name(self.prompt_name, default, domain))
        return self.prompts[domain]

    def _fill(
        self, episode: Episode, keyframes: Keyframes, scenes: list[SceneFrame], scene_text: str
    ) -> str:
        meta = episode.meta or {}
        times = [f"{s.t_s:.1f} s" for s in scenes if s.t_s is not None]
        logged = meta.get("frame_times_s") or []
        if not times and len(logged) == episode.num_frames:
            times = [f"{float(logged[i]):.1f} s" for i in keyframes.indices]
        values = {
            "outcome": str(meta.get("outcome") or "failure"),
            "task": _task_text(meta),
            "plan": _plan_text(meta),
            "scene": scene_text,
            "num_frames": len(keyframes.indices),
            "frame_times": "times " + ", ".join(times) if times else "times not logged",
            "trajectory_max_chars": self.cfg.trajectory_max_chars,
            "failure_reason_max_chars": self.cfg.failure_reason_max_chars,
        }
        prompt = self.prompt_for(episode_domain(self.cfg, episode))
        try:
            return prompt.format_map(values)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"prompt for {self.input_mode} has an unknown placeholder or stray brace ({e}); "
                f"valid placeholders: {', '.join('{' + k + '}' for k in values)}; write literal braces as {{{{ }}}}"
            ) from None

    async def explain(
        self, episode: Episode, keyframes: Keyframes, scenes: list[SceneFrame]
    ) -> ReasonOutcome:
        messages = self.messages(episode, keyframes, scenes)
        eid = episode.episode_id
        try:
            result = await self.backend.complete_json(
                messages,
                self.schema,
                max_tokens=self.max_tokens,
                temperature=self.cfg.temperature,
                seed=self.seed,
            )
        except BackendError as e:
            return await self._fallback(episode, keyframes, scenes, "backend_error", str(e), [])
        parsed, why = self._validate(result)
        if parsed is None:
            return await self._fallback(
                episode,
                keyframes,
                scenes,
                why,
                result.error or "no parsed output",
                [result.call_id],
                result,
            )
        trajectory = parsed.trajectory.strip()[: self.cfg.trajectory_max_chars]
        reason = parsed.failure_reason.strip()[: self.cfg.failure_reason_max_chars]
        sources = [_message_text(messages)] + [s.to_text() for s in scenes]
        flags = sorted(
            set(detect_degenerate(reason, sources=sources, finish_reason=result.finish_reason))
            | {f for f in detect_degenerate(trajectory, sources=sources) if f != "copied_input"}
        )
        bad = [f for f in flags if f in self.cfg.fallback_on_degenerate]
        if bad:
            out = await self._fallback(
                episode,
                keyframes,
                scenes,
                "degenerate",
                f"model output flagged {bad}",
                [result.call_id],
                result,
            )
            out.explanation.degenerate = sorted(set(out.explanation.degenerate) | set(flags))
            return out
        return ReasonOutcome(
            Explanation(
                eid,
                trajectory,
                reason,
                self.input_mode,
                result.model or self.model,
                [result.call_id],
                flags,
            )
        )

    def _validate(self, result: CallResult) -> tuple[BaseModel | None, str]:
        """The answer checked against the typed model, or (None, why it is unusable)."""
        parsed = result.parsed
        if parsed is None:
            return None, "truncated" if result.finish_reason == "length" else "parse_failure"
        try:
            return self.answer.model_validate(parsed), ""
        except ValidationError:
            return None, "schema_mismatch"

    async def _fallback(
        self,
        episode: Episode,
        keyframes: Keyframes,
        scenes: list[SceneFrame],
        kind: str,
        message: str,
        call_ids: list[str],
        result: CallResult | None = None,
    ) -> ReasonOutcome:
        out = await self.facts.explain(episode, keyframes, scenes)
        # the facts stand in for the model's answer, so they keep its length caps
        out.explanation.trajectory = clip(out.explanation.trajectory, self.cfg.trajectory_max_chars)
        out.explanation.failure_reason = clip(
            out.explanation.failure_reason, self.cfg.failure_reason_max_chars
        )
        out.explanation.call_ids = call_ids
        out.explanation.degenerate = [f"fallback:{kind}"]
        record = {
            "stage": "reason",
            "episode_id": episode.episode_id,
            "kind": kind,
            "message": f"{message}; fell back to facts",
            "input_mode": self.input_mode,
            "model": self.model,
            "call_ids": call_ids,
        }
        if result is not None:
            record.update(
                attempts=result.attempts, finish_reason=result.finish_reason, text=result.text[:500]
            )
        out.errors.append(record)
        return out


def fit_scene_text(frame_texts: list[str], max_chars: int) -> str:
    """Frame descriptions joined by newlines, dropping the oldest frames (never the
    last, the failure) until the block fits `max_chars` (the model's context is small)."""
    texts = list(frame_texts)
    while len(texts) > 1 and sum(len(t) + 1 for t in texts) > max_chars:
        texts.pop(0)
    text = "\n".join(texts)
    return text[:max_chars] if text else "(no frames)"


def _message_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                p.get("text", "")
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
    return "\n".join(parts)


class SceneTextReasoner(_ModelReasoner):
    """A text model reads the scene descriptions of the kept frames."""

    input_mode = "scene_text"
    needs_scenes = True

    def messages(
        self, episode: Episode, keyframes: Keyframes, scenes: list[SceneFrame]
    ) -> list[dict[str, Any]]:
        scene_text = fit_scene_text([s.to_text() for s in scenes], self.cfg.scene_text_max_chars)
        return [{"role": "user", "content": self._fill(episode, keyframes, scenes, scene_text)}]


class VisionReasoner(_ModelReasoner):
    """A vision-language model sees the kept frames as images."""

    input_mode = "vision"
    prompt_field = "vision_prompt"

    def __init__(
        self, cfg: ReasoningConfig, scene_cfg: SceneConfig, backend: LLMBackend, prompt_name: str
    ) -> None:
        super().__init__(cfg, scene_cfg, backend, prompt_name)
        self.needs_scenes = cfg.vision_scene_text  # facts fallback then has scenes too

    def messages(
        self, episode: Episode, keyframes: Keyframes, scenes: list[SceneFrame]
    ) -> list[dict[str, Any]]:
        scene_text = ""
        if self.cfg.vision_scene_text and scenes:
            texts = [s.to_text() for s in scenes]
            scene_text = "Measured from the robot's depth sensor:\n"
            scene_text += fit_scene_text(texts, self.cfg.scene_text_max_chars) + "\n"
        content: list[dict[str, Any]] = [
            {"type": "text", "text": self._fill(episode, keyframes, scenes, scene_text)}
        ]
        for i in keyframes.indices:
            content.append({"type": "image", "image": episode.frame_png(i)})
        return [{"role": "user", "content": content}]


def make_reasoner(
    cfg: ReasoningConfig,
    scene_cfg: SceneConfig,
    backend: LLMBackend | None = None,
    *,
    seed: int = 0,
    given: dict[str, Explanation] | None = None,
) -> Reasoner:
    """The reasoner for `cfg.input_mode`.

    Raises:
        ValueError: unknown mode (lists the valid ones), or a model mode without a backend.
    """
    mode = cfg.input_mode
    if mode not in INPUT_MODES:
        raise ValueError(f"unknown reasoning input_mode {mode!r}; valid: {', '.join(INPUT_MODES)}")
    if mode == "facts":
        return FactsReasoner(scene_cfg)
    if mode == "given":
        return GivenReasoner(given or {})
    if backend is None:
        raise ValueError(
            f"reasoning.input_mode={mode} needs a model backend (configure backend or use facts)"
        )
    reasoner: _ModelReasoner
    if mode == "scene_text":
        reasoner = SceneTextReasoner(cfg, scene_cfg, backend, cfg.scene_text_prompt)
    else:
        reasoner = VisionReasoner(cfg, scene_cfg, backend, cfg.vision_prompt)
    reasoner.seed = seed
    return reasoner


# --------------------------------------------------------------------------- the stage


@dataclass
class ReasonResult:
    """What the reason stage did (the run summary's `stages.reason`)."""

    new: int  # explanations written in this run
    total: int  # episodes explained in explanations.jsonl
    fallbacks: int | None = None  # model answers replaced by facts (model modes only)
    degenerate: int | None = None  # answers flagged degenerate but kept
    retryable: int = 0  # episodes whose last explanation is a fallback from a failed call
    # simulator-only inputs the descriptions used (SceneConfig.privileged); [] for robot logs
    privileged: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"new": self.new}
        if self.fallbacks is not None:
            out.update(fallbacks=self.fallbacks, degenerate=self.degenerate)
        out["total"] = self.total
        if self.privileged:
            out["privileged_simulator_channels_used"] = self.privileged
        return out


def retryable_explanations(explanations: list[Explanation]) -> list[str]:
    """Episode ids whose explanation fell back to facts because a model call failed."""
    return [e.episode_id for e in explanations if RETRYABLE_FALLBACKS & set(e.degenerate)]


async def run_stage(
    run: RunFolder,
    source: EpisodeSource | ExplanationSource,
    cfg: ReasoningConfig,
    scene_cfg: SceneConfig,
    backend: BackendProvider,
    *,
    seed: int = 0,
    read_reports: bool = False,
) -> ReasonResult:
    """The reason stage: an explanation per episode → explanations.jsonl.

    Resumes: episodes already explained are skipped, except those whose last
    explanation is a fallback from a failed model call (`RETRYABLE_FALLBACKS`),
    which are tried again; model calls run `cfg.concurrency` at a time.

    Args:
        run: the run folder (reads keyframes.jsonl).
        source: the episodes (or ready-made explanations, for input_mode given).
        cfg: the stage's config.
        scene_cfg: scene descriptions (facts, scene_text, and every fallback read them).
        backend: builds the model backend; called only by the model modes.
        seed: the run's seed, sent with every model call.
        read_reports: for a CSV/JSONL of reports, the model reads each one
            (failtax.reading); otherwise the texts are kept as written.
    """
    existing = latest_by_episode(read_jsonl(run.path(EXPLANATIONS_FILE)))
    done = {
        k for k, v in existing.items() if not RETRYABLE_FALLBACKS & set(v.get("degenerate", []))
    }
    if source.kind == "explanations":
        return await _reason_given(run, source, done, cfg, backend if read_reports else None, seed)
    keyframes = read_keyframes(run.dir)
    pending_ids = sorted(set(keyframes) - done)
    run.log_stage(
        "reason",
        "start",
        already_done=len(done),
        pending=len(pending_ids),
        input_mode=cfg.input_mode,
    )
    privileged = scene_cfg.privileged if cfg.input_mode in ("facts", "scene_text") else []
    if not pending_ids:
        result = ReasonResult(new=0, total=len(done), privileged=privileged)
        result.retryable = len(retryable_explanations(read_explanations(run.dir)))
        run.log_stage("reason", "finish", new=0, total=len(done))
        return result
    if cfg.input_mode == "given":
        raise ValueError("reasoning.input_mode=given needs a CSV/JSONL source of explanations")
    model = await backend() if cfg.input_mode in MODEL_MODES else None
    return await _reason_episodes(run, source, cfg, scene_cfg, keyframes, pending_ids, model, seed)


async def _reason_given(
    run: RunFolder,
    source: EpisodeSource | ExplanationSource,
    done: set[str],
    cfg: ReasoningConfig,
    backend: BackendProvider | None,
    seed: int,
) -> ReasonResult:
    """Reports from a CSV/JSONL: kept as written, or read by the model when `backend` is given."""
    mode = "given" if backend is None else "report"
    run.log_stage("reason", "start", input_mode=mode, already_done=len(done))
    pending: list[Explanation] = []
    for item in source.scan():
        if isinstance(item, SourceError):
            run.record_errors([item.to_record()])
        elif item.episode_id not in done:
            pending.append(item)
            done.add(item.episode_id)
    if backend is None or not pending:
        append_jsonl(run.path(EXPLANATIONS_FILE), [e.to_dict() for e in pending])
        run.log_stage("reason", "finish", new=len(pending), total=len(done))
        return ReasonResult(new=len(pending), total=len(done))
    reader = ReportReader(load_prompt(cfg.report_prompt), await backend(), temperature=cfg.temperature, seed=seed)
    new, fallbacks = await read_reports(run, pending, reader, cfg.concurrency)
    result = ReasonResult(
        new=new,
        total=len(done),
        fallbacks=fallbacks,
        retryable=len(retryable_explanations(read_explanations(run.dir))),
    )
    run.log_stage("reason", "finish", **result.summary())
    return result


async def _reason_episodes(
    run: RunFolder,
    source: EpisodeSource | ExplanationSource,
    cfg: ReasoningConfig,
    scene_cfg: SceneConfig,
    keyframes: dict[str, Keyframes],
    pending_ids: list[str],
    backend: LLMBackend | None,
    seed: int,
) -> ReasonResult:
    reasoner = make_reasoner(cfg, scene_cfg, backend, seed=seed)
    describer = SceneDescriber(scene_cfg)
    pending = set(pending_ids)
    episodes = [e for e in source.scan() if isinstance(e, Episode) and e.episode_id in pending]
    missing = pending - {e.episode_id for e in episodes}
    if missing:
        run.record_errors(
            [
                {
                    "stage": "reason",
                    "episode_id": eid,
                    "kind": "episode_gone",
                    "message": "in keyframes.jsonl but no longer readable from the source",
                }
                for eid in sorted(missing)
            ]
        )
    semaphore = asyncio.Semaphore(cfg.concurrency)
    # Model modes fall back to facts on a bad answer, and facts need the scene descriptions.
    with_scenes = reasoner.needs_scenes or cfg.input_mode in MODEL_MODES

    async def one(
        ep: Episode,
    ) -> tuple[Episode, ReasonOutcome | None, EpisodeReadError | None]:
        async with semaphore:
            kf = keyframes[ep.episode_id]
            try:
                scenes = describer.describe(ep, kf) if with_scenes else []
            except EpisodeReadError as e:
                return ep, None, e
            except (ValueError, IndexError, KeyError, TypeError) as e:
                # Odd channel arrays (wrong shapes, unexpected ids) cost this episode only.
                return ep, None, EpisodeReadError(ep.episode_id, "bad_channels", f"scene: {e!r}")
            try:
                return ep, await reasoner.explain(ep, kf, scenes), None
            except EpisodeReadError as e:
                return ep, None, e

    counts = {"new": 0, "fallbacks": 0, "degenerate": 0}

    def keep(result: tuple[Episode, ReasonOutcome | None, EpisodeReadError | None]) -> None:
        ep, outcome, read_error = result
        if read_error is not None:
            run.record_errors(
                [
                    {
                        "stage": "reason",
                        "episode_id": ep.episode_id,
                        "kind": read_error.kind,
                        "message": read_error.message,
                        "path": str(ep.path),
                    }
                ]
            )
            return
        if outcome is None:  # never: `one` returns an outcome or a read error
            return
        if outcome.errors:
            run.record_errors(outcome.errors)
            counts["fallbacks"] += 1
        if any(not f.startswith("fallback:") for f in outcome.explanation.degenerate):
            counts["degenerate"] += 1
        append_jsonl(run.path(EXPLANATIONS_FILE), outcome.explanation.to_dict())
        counts["new"] += 1

    await run.each_done((one(ep) for ep in episodes), keep, desc=f"reason ({cfg.input_mode})", unit="ep")
    explanations = read_explanations(run.dir)
    result = ReasonResult(
        new=counts["new"],
        total=len(explanations),
        fallbacks=counts["fallbacks"],
        degenerate=counts["degenerate"],
        retryable=len(retryable_explanations(explanations)),
        privileged=scene_cfg.privileged if cfg.input_mode in ("facts", "scene_text") else [],
    )
    run.log_stage("reason", "finish", **result.summary(), **backend_stats(backend))
    return result


__all__ = [
    "INPUT_MODES",
    "MODEL_MODES",
    "RETRYABLE_FALLBACKS",
    "FactsReasoner",
    "GivenReasoner",
    "ReasonOutcome",
    "ReasonResult",
    "Reasoner",
    "SceneTextReasoner",
    "VisionReasoner",
    "domain_prompt_name",
    "episode_domain",
    "explanation_answer_for",
    "explanation_schema",
    "load_prompt",
    "make_reasoner",
    "prompt_hash",
    "retryable_explanations",
    "run_stage",
]

"""Typed configuration of the runtime monitor (failtax.monitor).

One `MonitorConfig` holds which monitor runs (`kind`), how often it decides, the
temporal alarm rule, the prompt variant of a model monitor, the frame classifier
of a learned one, and the scene descriptions it reads. YAML presets live in
configs/monitor/ (`resolve_preset(name, "monitor")`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from common import StrictModel, load_yaml
from failtax.config import SceneConfig
from serving.config import BackendConfig

# Prompt variants of a model monitor: with the taxonomy, the same without it (NoContext),
# and an anomaly-detection prompt with hand-written nominal/anomalous examples (LLM-AD).
PROMPT_VARIANTS = ("taxonomy", "nocontext", "llm_ad")
MONITOR_KINDS = ("llm", "cnn")


class CNNConfig(StrictModel):
    """The frame classifier of the supervised baseline and the distilled monitor."""

    # a frame is UNSAFE for the supervised baseline when a collision follows within this time
    horizon_s: float = Field(2.0, gt=0)
    # input size the frames are resized to (square, pixels)
    image_px: int = Field(64, ge=16)
    # convolution channels of the three blocks
    channels: list[int] = Field(default_factory=lambda: [16, 32, 64])
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    # an UNSAFE probability at or above this is UNSAFE
    threshold: float = Field(0.5, gt=0, lt=1)
    # torch threads for training and inference (the decisions/s figure is per this many)
    threads: int = Field(1, ge=1)
    seed: int = 0


class MonitorConfig(StrictModel):
    """A runtime monitor and how it is evaluated."""

    # llm: a model reads scene descriptions; cnn: a frame classifier (checkpoint)
    kind: Literal["llm", "cnn"] = "llm"
    # llm: taxonomy | nocontext | llm_ad (see PROMPT_VARIANTS)
    variant: Literal["taxonomy", "nocontext", "llm_ad"] = "taxonomy"
    # a name for result folders and tables; None: the variant (llm) or "cnn"
    name: str | None = None
    # taxonomy.json of a discover run (variant taxonomy; a run folder works too)
    taxonomy_path: str | None = None
    # cnn: the checkpoint `failtax monitor train` wrote
    checkpoint_path: str | None = None
    # alarm after this many consecutive UNSAFE decisions
    k_consecutive: int = Field(3, ge=1)
    # decide every this many control steps (only at steps with a logged frame); with the
    # simulator's dt 0.1 s and frames every 5 steps, 5 = one decision per 0.5 s
    decision_every_steps: int = Field(5, ge=1)
    # monitor only the last horizon_s seconds of each episode (failures: before the
    # collision; successes: before the end); None = the whole episode
    horizon_s: float | None = Field(None, gt=0)
    # scene descriptions of this many latest decision steps go into one prompt
    window_decisions: int = Field(3, ge=1)
    # llm: how a decision is read from the model. answer: its structured answer
    # {verdict, mode, reason}. probability: how probable UNSAFE was as its one-word answer
    # (token probabilities), UNSAFE at or above `unsafe_threshold`; the mode is asked only
    # where the alarm fires. A small model that answers UNSAFE nearly always can still rank
    # danger; `failtax monitor evaluate --calibrate` sets the threshold on training episodes.
    decide: Literal["answer", "probability"] = "answer"
    # decide: probability — P(UNSAFE) at or above this is UNSAFE
    unsafe_threshold: float = Field(0.5, ge=0, le=1)
    # the short reason a model gives with each decision (0: no reason field)
    reason_max_chars: int = Field(60, ge=0)
    # the reason before the verdict (a short chain of thought) instead of after it
    reason_first: bool = False
    # prompt files (failtax/prompts/ or a path), per variant
    prompts: dict[str, str] = Field(default_factory=lambda: {
        v: f"monitor_{v}.txt" for v in PROMPT_VARIANTS})
    # a mode description longer than this is cut in the prompt (context is small)
    mode_description_max_chars: int = Field(160, ge=20)
    temperature: float = 0.0
    seed: int = 0
    # episode outcomes evaluated: failures (positives) and successes (negatives)
    failure_outcomes: list[str] = Field(default_factory=lambda: ["collision"])
    success_outcomes: list[str] = Field(default_factory=lambda: ["success"])
    # stop after this many episodes per folder (0 = all), taken alternately from
    # failures and successes in name order so a small run keeps both outcomes
    max_episodes: int = Field(0, ge=0)
    scene: SceneConfig = Field(default_factory=SceneConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    cnn: CNNConfig = Field(default_factory=CNNConfig)

    @property
    def label(self) -> str:
        """The monitor's name in tables and folders."""
        if self.name:
            return self.name
        return self.variant if self.kind == "llm" else "cnn"

    @model_validator(mode="after")
    def _check(self) -> MonitorConfig:
        missing = [v for v in PROMPT_VARIANTS if v not in self.prompts]
        if missing:
            raise ValueError(f"monitor.prompts lacks {missing}; give a prompt file per variant")
        overlap = set(self.failure_outcomes) & set(self.success_outcomes)
        if overlap:
            raise ValueError(f"outcomes {sorted(overlap)} are both failure and success; pick one")
        return self


def load_monitor_config(path: str | None = None, overrides: dict[str, object] | None = None
                        ) -> MonitorConfig:
    """A monitor YAML or shipped preset name (configs/monitor/) with dotted-key overrides."""
    return load_yaml(MonitorConfig, path, overrides, kind="monitor")

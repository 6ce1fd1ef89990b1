"""Reasoner configs and the settings of a comparison.

A reasoner is what changes between the runs being compared: the model
backend (with its per-token prices and API-key variable), the reasoning
settings (input mode, prompt, sampling), and optionally discovery/assignment
settings and the seed. A reasoner YAML holds exactly those sections, with the
keys of a pipeline config (configs/pipeline/*.yaml); everything else (source,
key-frame selection, scene descriptions, cache) comes from the shared base
pipeline config, so every reasoner sees the same key frames.

    # configs/reasoners/hosted_openai.yaml
    name: gpt-4o-mini
    backend:
      kind: openai
      base_url: https://api.openai.com/v1
      model: gpt-4o-mini
      api_key_env: OPENAI_API_KEY
      price_prompt_usd_per_1m_tokens: 0.15
      price_completion_usd_per_1m_tokens: 0.60
    reasoning:
      input_mode: scene_text
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from common import StrictModel, load_yaml, resolve_preset
from failtax.config import PipelineConfig
from failtax.embedding import EmbeddingConfig

# pipeline-config sections a reasoner may set; the rest is shared by all reasoners
REASONER_SECTIONS = ("backend", "reasoning", "discovery", "assignment")
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ReasonerConfig(StrictModel):
    """One reasoner of a comparison (configs/reasoners/*.yaml)."""

    # label in reports and the sub-run folder name; default: the YAML file's name
    name: str = ""
    # one line shown in the report
    description: str = ""
    # serving BackendConfig keys (kind, base_url, model, api_key_env, price_*, ...)
    backend: dict[str, Any] = Field(default_factory=dict)
    # pipeline ReasoningConfig keys (input_mode, scene_text_prompt, temperature, ...)
    reasoning: dict[str, Any] = Field(default_factory=dict)
    # pipeline DiscoveryConfig keys; empty = the base config's discovery
    discovery: dict[str, Any] = Field(default_factory=dict)
    # pipeline AssignmentConfig keys; empty = the base config's assignment
    assignment: dict[str, Any] = Field(default_factory=dict)
    # seed of this reasoner's model calls; None = the base config's seed
    seed: int | None = None

    @model_validator(mode="after")
    def _check(self) -> ReasonerConfig:
        if self.name and not _NAME_OK.match(self.name):
            raise ValueError(
                f"reasoner name {self.name!r} becomes a folder name: "
                "use letters, digits, '.', '_' or '-'"
            )
        return self

    def overrides(self) -> dict[str, Any]:
        """The pipeline-config sections this reasoner sets."""
        out: dict[str, Any] = {
            k: copy.deepcopy(getattr(self, k)) for k in REASONER_SECTIONS if getattr(self, k)
        }
        if self.seed is not None:
            out["seed"] = self.seed
        return out


def load_reasoner(path: str | Path) -> ReasonerConfig:
    """Read a reasoner YAML (a path, or a shipped preset's name or repository path such
    as `embedded` or `configs/reasoners/embedded.yaml`); the name defaults to the file's stem.

    Raises:
        ValueError: unknown keys or a bad name, naming the file.
    """
    path = resolve_preset(path, "reasoners")
    cfg = load_yaml(ReasonerConfig, path)
    if not cfg.name:
        cfg.name = path.stem
    _resolve_prompt_paths(cfg, path.parent)
    return cfg


# prompt-file keys per section; a relative path that names a file next to the reasoner YAML
# is made absolute, so a reasoner can ship its own prompt beside it
_PROMPT_KEYS = {
    "reasoning": ("scene_text_prompt", "vision_prompt"),
    "discovery": ("seed_prompt", "rephrase_prompt", "aggregate_prompt", "name_prompt"),
    "assignment": ("prompt",),
}


def _resolve_prompt_paths(cfg: ReasonerConfig, folder: Path) -> None:
    for section, keys in _PROMPT_KEYS.items():
        values = getattr(cfg, section)
        for key in keys:
            value = values.get(key)
            if isinstance(value, str) and not Path(value).is_absolute():
                candidate = folder / value
                if candidate.is_file():
                    values[key] = str(candidate.resolve())


def merge_config(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, nested mappings key by key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_pipeline_config(
    base_cfg: PipelineConfig, reasoner: ReasonerConfig, *, source: str = ""
) -> PipelineConfig:
    """The full pipeline config one reasoner runs with.

    Args:
        base_cfg: the shared `PipelineConfig`.
        reasoner: the reasoner's overrides.
        source: the reasoner's file, named in errors.

    Raises:
        ValueError: the merged config is invalid (names the reasoner file and the key).
    """
    data = merge_config(base_cfg.model_dump(mode="json"), reasoner.overrides())
    try:
        return type(base_cfg).model_validate(data)
    except ValueError as e:
        where = source or reasoner.name
        raise ValueError(
            f"reasoner {where}: its settings do not make a valid pipeline config:\n{e}"
        ) from None


def missing_api_keys(configs: dict[str, Any]) -> list[tuple[str, str]]:
    """(reasoner, variable) for every reasoner whose `backend.api_key_env` is unset or empty."""
    missing = []
    for name, cfg in configs.items():
        var = getattr(cfg.backend, "api_key_env", None)
        if var and not os.environ.get(var):
            missing.append((name, var))
    return missing


class CompareConfig(StrictModel):
    """Settings of the comparison itself (the CLI options set them)."""

    # two modes are the same when the cosine similarity of their texts reaches this
    match_threshold: float = 0.6
    # least-agreeing episodes listed per pair of reasoners
    least_agreeing_episodes: int = 5
    # text embedder for explanations and modes (the pipeline's; MiniLM by default)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)

    @model_validator(mode="after")
    def _check(self) -> CompareConfig:
        if not -1.0 <= self.match_threshold <= 1.0:
            raise ValueError("match_threshold is a cosine similarity: set it within [-1, 1]")
        if self.least_agreeing_episodes < 0:
            raise ValueError("least_agreeing_episodes must be >= 0")
        return self

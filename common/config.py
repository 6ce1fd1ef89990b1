"""Typed configs: pydantic models with defaults; YAML files hold values only.

Every component defines a `*Config(StrictModel)`; unknown keys are errors, so a
typo in a YAML file fails loudly instead of silently using a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config: unknown keys rejected, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def load_yaml(model: type[T], path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Load `path` (may be None for all defaults) into `model`, then apply
    dotted-key `overrides` such as {"reasoning.max_frames": 6}.

    Raises ValueError naming the file and the offending keys on bad input.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ValueError(f"config file {p} does not exist")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{p}: top level must be a mapping of keys to values")
        data = loaded
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return model.model_validate(data)
    except ValidationError as e:
        where = f" in {path}" if path else ""
        raise ValueError(f"invalid {model.__name__}{where}:\n{e}") from None


def dump_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML (what a run folder records)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

"""Typed configs: pydantic models with defaults; YAML files hold values only.

Every component defines a `*Config(StrictModel)`; unknown keys are errors, so a
typo in a YAML file fails loudly instead of silently using a default. The
helpers here are the only place that

* finds a config file: `resolve_preset` maps a preset name (or the path a
  preset has in the repository, `configs/<kind>/<name>.yaml`) to the YAML file
  shipped in the `configs` package, so an installed package finds its presets;
* applies dotted-key overrides: `apply_overrides`, used by `load_yaml`;
* parses command-line overrides: `parse_sets` and the `set_option` decorator
  turn repeated `--set KEY=VALUE` into {dotted key: YAML-typed value}.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound=BaseModel)

# The package that ships the presets: configs/<kind>/<name>.yaml
PRESETS_PACKAGE = "configs"


class StrictModel(BaseModel):
    """Base for every config: unknown keys rejected, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# ---------------------------------------------------------------------- presets
def presets_root() -> Path:
    """The folder of the shipped presets (the `configs` package, wherever it is installed)."""
    return Path(str(files(PRESETS_PACKAGE)))


def preset_names(kind: str) -> list[str]:
    """Names of the shipped presets of `kind` (a folder of configs/, e.g. "loop")."""
    return sorted(p.stem for p in (presets_root() / kind).glob("*.yaml"))


def resolve_preset(name_or_path: str | os.PathLike, kind: str | None = None) -> Path:
    """The YAML file a config argument names.

    Tried in order: an existing file (absolute or relative to the working
    directory); a shipped preset written as its path in the repository,
    `configs/<kind>/<name>.yaml`; a bare preset name of `kind`.

    Example:
        >>> resolve_preset("quick", "loop").name
        'quick.yaml'
        >>> resolve_preset("configs/sim/nav.yaml").parent.name  # from any directory
        'sim'

    Raises:
        ValueError: nothing matches; the message lists the valid preset names.
    """
    p = Path(name_or_path)
    if p.is_file():
        return p
    root = presets_root()
    parts = p.parts
    if not p.is_absolute() and len(parts) > 1 and parts[0] == PRESETS_PACKAGE:
        shipped = root.joinpath(*parts[1:])
        if shipped.is_file():
            return shipped
        kind = kind or (parts[1] if len(parts) > 2 else None)
    elif kind is not None and len(parts) == 1 and p.suffix not in (".yaml", ".yml"):
        shipped = root / kind / f"{p.name}.yaml"
        if shipped.is_file():
            return shipped
    if kind is not None and (root / kind).is_dir():
        valid = (f"valid: {', '.join(preset_names(kind))} (configs/{kind}/) "
                 "or a path to a YAML file")
    else:
        kinds = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("_"))
        valid = f"give a YAML file or a preset, configs/<{'|'.join(kinds)}>/<name>.yaml"
    if len(parts) == 1 and p.suffix not in (".yaml", ".yml"):
        what = f"{kind} preset" if kind else "preset"
        raise ValueError(f"unknown {what} {p.name!r}; {valid}")
    raise ValueError(f"config file {str(name_or_path)!r} does not exist; {valid}")


# ---------------------------------------------------------------------- overrides
def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of `data` with dotted-key `overrides` set, e.g. {"train.epochs": 4}.

    Missing sections are created (validation then names unknown keys); a value
    replaces the whole node at its key, so {"sim.overrides": {}} empties a mapping.

    Raises:
        ValueError: a key runs through a value that is not a section.
    """
    out = copy.deepcopy(dict(data))
    for dotted, value in (overrides or {}).items():
        node = out
        *parents, leaf = dotted.split(".")
        for i, key in enumerate(parents):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                where = ".".join(parents[: i + 1])
                # bad input, so a ValueError like every other config error
                raise ValueError(f"override {dotted!r}: {where} is a value ({node!r}), "  # noqa: TRY004
                                 f"not a section; set {where} itself")
        node[leaf] = copy.deepcopy(value)
    return out


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """Repeated `KEY=VALUE` strings into {dotted key: value}, values read as YAML.

    "3" is an int, "0.5" a float, "true" a bool, "[a, b]" a list, "{x.y: 1}" a
    mapping, "" None; anything else stays a string. Later items win.

    Example:
        >>> parse_sets(["train.epochs=4", "arms=[uniform]", "name=office b"])
        {'train.epochs': 4, 'arms': ['uniform'], 'name': 'office b'}

    Raises:
        click.BadParameter: an item without `=` or key, or a value that is not YAML
            (inside a click command this prints as a usage error).
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            hint = f"--set {key or 'section.key'}=VALUE"
            raise click.BadParameter(f"{item!r}: write --set dotted.key=value, e.g. {hint}")
        try:
            out[key] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise click.BadParameter(f"{item!r}: the value is not valid YAML ({problem}); "
                                     f"quote it, e.g. --set '{key}=\"{text}\"'") from None
    return out


def set_option(help: str, name: str = "overrides") -> Callable:
    """The `--set KEY=VALUE` click option (repeatable); the command receives a dict.

    Example:
        >>> @click.command()
        ... @set_option("Dotted config override, e.g. --set train.epochs=4.")
        ... def train(overrides): ...
    """
    return click.option("--set", name, multiple=True, metavar="KEY=VALUE", help=help,
                        callback=lambda ctx, param, value: parse_sets(value))


# ---------------------------------------------------------------------- YAML files
def load_yaml(model: type[T], path: str | os.PathLike | None = None,
              overrides: Mapping[str, Any] | None = None, kind: str | None = None,
              record_key: str | None = None) -> T:
    """Load `path` (may be None for all defaults) into `model`, then apply
    dotted-key `overrides` such as {"reasoning.max_frames": 6}.

    `path` may also name a shipped preset by its repository path
    (`configs/pipeline/default.yaml`), found from any working directory, or by
    its bare name when `kind` names the preset folder (`quick` with kind `pipeline`).
    With `record_key`, a file that records a run (`schema_version` beside that key, as a
    run folder's config.yaml does) is read from that key: a run can be repeated from
    its own record.

    Raises ValueError naming the file and the offending keys on bad input.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = resolve_preset(path, kind)
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{p}: top level must be a mapping of keys to values")
        data = loaded
        if record_key and "schema_version" in data and isinstance(data.get(record_key), dict):
            data = data[record_key]
    data = apply_overrides(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        where = f" in {path}" if path else ""
        raise ValueError(f"invalid {model.__name__}{where}:\n{e}") from None


def dump_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML (what a run folder records)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

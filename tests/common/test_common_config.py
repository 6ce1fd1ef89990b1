"""common.config: `--set` parsing, dotted overrides, preset lookup, shipped presets."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from common import (
    StrictModel,
    apply_overrides,
    load_yaml,
    parse_sets,
    preset_names,
    resolve_preset,
    set_option,
)

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------- --set
def test_parse_sets_reads_values_as_yaml():
    got = parse_sets([
        "train.epochs=4", "lr=1.0e-3", "rate=0.5", "flag=true", "arms=[a, b]",
        "nav.sim.overrides={camera.fov_deg: 90}", "checkpoint=", "name=office b",
        " spaced.key =x", "expr=a=b", "quoted='3'",
    ])
    assert got == {
        "train.epochs": 4, "lr": 1e-3, "rate": 0.5, "flag": True, "arms": ["a", "b"],
        "nav.sim.overrides": {"camera.fov_deg": 90}, "checkpoint": None, "name": "office b",
        "spaced.key": "x", "expr": "a=b", "quoted": "3",
    }
    assert type(got["train.epochs"]) is int and type(got["lr"]) is float
    assert parse_sets(["a=1", "a=2"]) == {"a": 2}  # the last one wins
    assert parse_sets([]) == {}


@pytest.mark.parametrize(("item", "message"), [
    ("train.epochs", "dotted.key=value, e.g. --set train.epochs=VALUE"),
    ("=4", "dotted.key=value"),
    ("train..epochs=4", "dotted.key=value"),
    ("arms=[a, b", "not valid YAML"),
    ("x={a: 1", "not valid YAML"),
])
def test_parse_sets_rejects_bad_items_clearly(item, message):
    with pytest.raises(click.BadParameter, match=message.replace(".", r"\.").replace("[", r"\[")):
        parse_sets([item])


def test_set_option_hands_the_command_a_dict():
    @click.command()
    @set_option("Override.")
    def cmd(overrides):
        click.echo(repr(overrides))

    ok = CliRunner().invoke(cmd, ["--set", "a.b=2", "--set", "c=[1, 2]"])
    assert ok.exit_code == 0 and ok.output.strip() == "{'a.b': 2, 'c': [1, 2]}"
    bad = CliRunner().invoke(cmd, ["--set", "a.b"])
    assert bad.exit_code == 2 and "Invalid value for '--set'" in bad.output
    assert "dotted.key=value" in bad.output
    assert "KEY=VALUE" in CliRunner().invoke(cmd, ["--help"]).output


@pytest.mark.parametrize(("args", "message"), [
    (["close-loop", "quick", "--set", "budget_samples"], "dotted.key=value"),
    (["close-loop", "quick", "--set", "arms=[uniform"], "not valid YAML"),
    (["close-loop", "quick", "--set", "budget_samples.x=3"], "not a section"),
    (["close-loop", "nope"], "valid: full, newsite, quick, site"),
    (["nav", "collect", "--out", "x", "--set", "collect.seed"], "dotted.key=value"),
    (["nav", "collect", "--out", "x", "--config", "nope"], "valid: default, tiny"),
    (["sim", "map", "--out", "m.png", "--set", "camera"], "dotted.key=value"),
    (["sim", "map", "--out", "m.png", "--config", "nope"], "valid: default, nav"),
    (["discover", ".", "--run-dir", "r", "--set", "reasoning"], "dotted.key=value"),
    (["compare", ".", "--run-dir", "r", "--reasoner", "pyproject.toml", "--set", "seed"],
     "dotted.key=value"),
])
def test_every_command_parses_set_the_same_way(args, message, tmp_path, monkeypatch):
    from loop.cli import main

    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and message in result.output, result.output


# ---------------------------------------------------------------------- overrides
def test_apply_overrides_sets_dotted_keys_on_a_copy():
    data = {"train": {"epochs": 8, "seed": 0}, "sim": {"overrides": {"a": 1}}}
    out = apply_overrides(data, {"train.epochs": 4, "new.section.key": "x",
                                 "sim.overrides": {}, "top": [1]})
    assert out == {"train": {"epochs": 4, "seed": 0}, "sim": {"overrides": {}},
                   "new": {"section": {"key": "x"}}, "top": [1]}
    assert data == {"train": {"epochs": 8, "seed": 0}, "sim": {"overrides": {"a": 1}}}
    assert apply_overrides(data, None) == data
    with pytest.raises(ValueError, match="train.epochs is a value"):
        apply_overrides(data, {"train.epochs.x": 1})


class _Inner(StrictModel):
    size_m: float = 1.0


class _Outer(StrictModel):
    inner: _Inner = _Inner()
    name: str = "a"


def test_load_yaml_applies_overrides_and_names_bad_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("inner:\n  size_m: 2.0\n")
    assert load_yaml(_Outer, f, {"name": "b"}) == _Outer(inner=_Inner(size_m=2.0), name="b")
    assert load_yaml(_Outer, None, {"inner.size_m": 3}).inner.size_m == 3.0
    with pytest.raises(ValueError, match="size_mm"):
        load_yaml(_Outer, f, {"inner.size_mm": 3})
    with pytest.raises(ValueError, match="does not exist"):
        load_yaml(_Outer, tmp_path / "missing.yaml")


# ---------------------------------------------------------------------- presets
def test_resolve_preset_by_name_repository_path_or_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository: presets come from the package
    quick = resolve_preset("quick", "loop")
    assert quick.name == "quick.yaml" and quick.parent.name == "loop"
    assert resolve_preset("configs/loop/quick.yaml") == quick
    assert resolve_preset("configs/sim/nav.yaml", "sim") == resolve_preset("nav", "sim")
    assert {"quick", "full"} <= set(preset_names("loop"))
    mine = tmp_path / "quick"
    mine.write_text("budget_samples: 5\n")
    assert resolve_preset("quick", "loop").resolve() == mine  # an existing file wins
    assert resolve_preset(str(mine)) == mine
    with pytest.raises(ValueError, match=r"unknown loop preset 'nope'; valid: full, newsite, quick, site"):
        resolve_preset("nope", "loop")
    with pytest.raises(ValueError, match=r"'configs/sim/nope.yaml' does not exist; valid: "
                                         r"default, nav"):
        resolve_preset("configs/sim/nope.yaml")
    with pytest.raises(ValueError, match="does not exist"):
        resolve_preset("elsewhere/x.yaml", "loop")


@pytest.mark.slow
def test_a_built_wheel_ships_the_presets(tmp_path):
    """Build the wheel from a copy of the tree, unpack it (a pure-Python install) and
    load every kind of preset from a directory that is not the repository."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    src = tmp_path / "src"
    for name in files:
        if name.split("/")[0] in ("tests", "docs", "benchmarks"):
            continue
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((REPO / name).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(src)], check=True,
                   capture_output=True)
    wheel, = (tmp_path / "dist").glob("failtax-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in ("loop", "nav", "sim", "pipeline", "reasoners", "serving"):
        shipped = {Path(n).stem for n in names if Path(n).parent == Path("configs", kind)}
        assert shipped == set(preset_names(kind)), kind
    assert "configs/reasoners/prompts/reason_scene_text_terse.txt" in names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = textwrap.dedent("""
        import common, loop.config, nav_policy.config, sim.config
        from common import resolve_preset
        from failtax.config import load_config
        for module in (common, loop.config, nav_policy.config):
            assert module.__file__.startswith(SITE), module.__file__
        cfg = loop.config.load_loop_config("full")
        assert cfg.preset == "full" and cfg.nav.sim.camera.fov_deg == 90
        assert nav_policy.config.load_nav_config("default").sim.episode.time_limit_s > 0
        assert sim.config.load_sim_config("configs/sim/office_b.yaml").world.family == "office_b"
        assert load_config("configs/pipeline/quick.yaml") is not None
        assert str(resolve_preset("embedded", "serving")).startswith(SITE)
        print("ok")
    """).replace("SITE", repr(str(site)))
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]

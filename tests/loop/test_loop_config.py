"""The loop config: presets, `--set` semantics, the sim config resolved once."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import nav_policy.collect as collect_module
import sim.config
from common import dump_yaml, load_yaml
from loop.config import LoopConfig, load_loop_config
from loop.run import nav_config, run_loop
from sim.config import SimConfig


@pytest.fixture
def sim_reads(monkeypatch):
    """Counts the sim YAML loads (every SimConfig built from a file or overrides)."""
    calls = []
    real = sim.config.load_yaml

    def counting(model, path=None, overrides=None):
        calls.append(path)
        return real(model, path, overrides)

    monkeypatch.setattr(sim.config, "load_yaml", counting)
    return calls


def test_the_loop_reads_the_sim_config_once(sim_reads):
    cfg = load_loop_config("quick", {"nav.sim.overrides": {"camera.fov_deg": 70}})
    assert len(sim_reads) == 1
    assert isinstance(cfg.nav.sim, SimConfig) and cfg.nav.sim.camera.fov_deg == 70
    for overrides in ({"collect.arm": "uniform", "collect.seed": 3},
                      {"evaluate.family": "office_b", "evaluate.num_rollouts": 2},
                      {"train.epochs": 1}):
        ncfg = nav_config(cfg, **overrides)
        assert ncfg.sim == cfg.nav.sim
    LoopConfig.model_validate(cfg.model_dump(mode="json"))
    assert len(sim_reads) == 1


def test_the_written_loop_config_holds_the_sim_and_compares_equal_on_resume(
        tmp_path, monkeypatch):
    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(collect_module, "collect", stop)
    cfg = load_loop_config("full", {"base.budget_samples": 10})
    out = tmp_path / "loop"
    with pytest.raises(Stop):
        run_loop(cfg, out, progress=False)
    written = (out / "loop_config.yaml").read_text()
    assert yaml.safe_load(written)["nav"]["sim"]["camera"]["fov_deg"] == 90
    assert load_yaml(LoopConfig, out / "loop_config.yaml") == cfg
    resumed = load_loop_config("full", {"base.budget_samples": 10})
    with pytest.raises(Stop):
        run_loop(resumed, out, progress=False)
    assert (out / "loop_config.yaml").read_text() == written == dump_yaml(cfg)
    # the written file is itself a loop config: resuming from it changes nothing
    assert load_loop_config(out / "loop_config.yaml") == cfg


def test_presets_keep_their_sim_values_and_set_replaces_overrides():
    full = load_loop_config("full")
    quick = load_loop_config("configs/loop/quick.yaml")
    assert full.nav.sim.camera.fov_deg == 90 and quick.preset == "quick"
    nav = sim.config.load_sim_config("nav")
    assert quick.nav.sim.world == nav.world and quick.nav.sim.robot == nav.robot
    # docs/results/*-60deg: `--set "nav.sim.overrides={}"` gets the sim YAML's 60 degrees back
    assert load_loop_config("full", {"nav.sim.overrides": {}}).nav.sim.camera == nav.camera
    with pytest.raises(ValueError, match="sim.overrides"):
        load_loop_config("full", {"nav.sim.camera.fov_deg": 70})


def test_the_umbrella_command_stays_light():
    """`failtax --help` imports neither numpy nor the config helpers."""
    probe = "import sys, loop.cli; print(sorted({'numpy', 'common'} & set(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert res.stdout.strip() == "[]"


def test_ablation_and_new_site_presets():
    from loop.config import load_loop_config

    full, quick, newsite = (load_loop_config(n) for n in ("full", "quick", "newsite"))
    ablation = {"targeted_semantic", "targeted_collision", "targeted_shuffled", "uniform"}
    assert ablation <= set(full.arms) and full.replicates >= 3
    assert ablation == set(quick.arms)  # the new-site arms are the newsite preset's
    assert set(newsite.arms) == {"site_semantic", "site_uniform"} and newsite.replicates >= 3
    assert newsite.eval.ood_rollouts >= 200
    for cfg in (full, quick, newsite):
        # the taxonomy's own text, against how kinds look to the sensors
        assert cfg.regions.semantic_source == "mode" and cfg.regions.kind_text == "sensor"
        assert cfg.eval.camera_blind and cfg.nav.evaluate.batch_size > 1


def test_site_arms_need_a_held_out_set_and_one_cycle():
    import pytest

    from loop.config import LoopConfig

    with pytest.raises(ValueError, match="ood_rollouts"):
        LoopConfig.model_validate({"arms": ["site_semantic"], "eval": {"ood_rollouts": 0}})
    with pytest.raises(ValueError, match="cycles: 1"):
        LoopConfig.model_validate({"arms": ["site_uniform"], "cycles": 2})

"""No pipeline reader opens ground_truth.json (only evaluation code may).

Every way a reader could open a file (builtins/io open, Path.open, os.open) is
patched to fail loudly on that name while the sources, downsampling, scene
descriptions and reasoners process episodes that hold one.
"""

from __future__ import annotations

import asyncio
import builtins
import io
import json
import os
import pathlib

import pytest

from failtax.config import DownsampleConfig, ReasoningConfig, SceneConfig, SourceConfig
from failtax.downsample import Downsampler
from failtax.reasoning import make_reasoner
from failtax.scene import SceneDescriber
from failtax.sources import Episode, make_source

HIDDEN = "ground_truth.json"


@pytest.fixture
def forbid_ground_truth(monkeypatch):
    opened: list[str] = []

    def check(file) -> None:
        if isinstance(file, (str, bytes, os.PathLike)) and HIDDEN in os.fsdecode(file):
            opened.append(os.fsdecode(file))
            raise AssertionError(f"a pipeline reader opened {file}")

    def guard(real):
        def wrapper(file, *args, **kwargs):
            check(file)
            return real(file, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(builtins, "open", guard(builtins.open))
    monkeypatch.setattr(io, "open", guard(io.open))
    monkeypatch.setattr(os, "open", guard(os.open))
    real_path_open = pathlib.Path.open

    def path_open(self, *args, **kwargs):
        check(self)
        return real_path_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", path_open)
    return opened


def test_the_guard_itself_catches_every_open(tmp_path, forbid_ground_truth):
    path = tmp_path / HIDDEN
    attempts = (
        lambda: builtins.open(path),  # noqa: SIM115
        lambda: io.open(path),  # noqa: SIM115, UP020
        lambda: path.read_text(),
        lambda: os.open(path, os.O_RDONLY),
    )
    for attempt in attempts:
        with pytest.raises(AssertionError):
            attempt()
    assert len(forbid_ground_truth) == 4


def test_readers_never_open_ground_truth(tiny_episodes, forbid_ground_truth, stub_backend_factory):
    assert all((p / HIDDEN).exists() for p in tiny_episodes.iterdir())
    answer = json.dumps(
        {"reasoning": "r", "trajectory": "Drove ahead.", "failure_reason": "Hit the object ahead."}
    )
    backend = stub_backend_factory(lambda *a: answer)
    episodes = [
        e
        for e in make_source(SourceConfig(path=str(tiny_episodes))).scan()
        if isinstance(e, Episode)
    ]
    assert len(episodes) == 6
    for embedder_cfg in (DownsampleConfig(), DownsampleConfig(method="fixed_rate")):
        sampler = Downsampler(embedder_cfg)
        for ep in episodes:
            kf = sampler.keyframes(ep)
            for scene_cfg in (SceneConfig(), SceneConfig(class_names=False)):
                scenes = SceneDescriber(scene_cfg).describe(ep, kf)
                for mode in ("facts", "scene_text", "vision"):
                    reasoner = make_reasoner(ReasoningConfig(input_mode=mode), scene_cfg, backend)
                    asyncio.run(reasoner.explain(ep, kf, scenes))
    assert forbid_ground_truth == []


def test_pipeline_run_never_opens_ground_truth(tmp_path, tiny_episodes, forbid_ground_truth):
    from failtax.config import load_config
    from failtax.pipeline import run_pipeline

    for class_names in (True, False):
        cfg = load_config(
            None, {"stages": ["downsample", "reason"], "scene.class_names": class_names}
        )
        summary = run_pipeline(
            cfg, tmp_path / f"run-{class_names}", episodes=tiny_episodes, progress=False
        )
        assert summary["stages"]["reason"]["total"] == 6
    assert forbid_ground_truth == []

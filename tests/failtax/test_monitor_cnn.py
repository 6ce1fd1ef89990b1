"""Frame-classifier monitors: supervised labels (collision within H s), distillation
from a model monitor's decisions, checkpoint round trip, decisions."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from common import append_jsonl
from failtax.monitor.cnn import (
    CNNMonitor,
    distilled_frames,
    supervised_frames,
    teacher_threshold,
    train_cnn,
)
from failtax.monitor.config import CNNConfig, MonitorConfig
from failtax.monitor.evaluate import select_episodes
from failtax.monitor.observe import decision_points

pytest.importorskip("torch")


@pytest.fixture
def episodes(tmp_path, episode_factory):
    root = tmp_path / "episodes"
    root.mkdir()
    for i in range(2):
        episode_factory(root, f"fail-{i}", hazard="pole", n_steps=14, seed=i)
        episode_factory(root, f"ok-{i}", hazard="plain_wall", n_steps=14, seed=5 + i, outcome="success")
    return root


def _cfg(**cnn):
    return MonitorConfig(kind="cnn", decision_every_steps=2,
                         cnn=CNNConfig(horizon_s=1.0, image_px=32, epochs=2, channels=[4, 8, 8], **cnn))


def test_supervised_labels_mark_frames_within_the_horizon(episodes):
    cfg = _cfg()
    eps, _ = select_episodes(episodes, cfg)
    frames = supervised_frames(eps, cfg)
    # per episode: steps 0, 2, ..., 12 (7 frames); failures collide at 2.6 s, so the
    # frames at t >= 1.6 s (steps 8, 10, 12) are UNSAFE: 3 per failure, 0 per success
    assert frames.images.shape == (28, 3, 32, 32)
    assert frames.unsafe.sum() == 6
    first = frames.unsafe[:7] if eps[0].meta["outcome"] == "collision" else frames.unsafe[7:14]
    assert first.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_train_save_load_and_decide(tmp_path, episodes):
    cfg = _cfg()
    eps, _ = select_episodes(episodes, cfg)
    stats = train_cnn(supervised_frames(eps, cfg), cfg.cnn, tmp_path / "m.pt", kind="supervised",
                      progress=False)
    assert stats["samples"] == 28 and stats["positives"] == 6 and np.isfinite(stats["final_loss"])
    mon = CNNMonitor(cfg.model_copy(update={"checkpoint_path": str(tmp_path / "m.pt")}))
    ep = eps[0]
    decisions = asyncio.run(mon.decide_episode(ep, decision_points(ep, cfg)))
    assert len(decisions) == 7 and all(d.source == "cnn" and 0 <= d.p_unsafe <= 1 for d in decisions)
    online = mon.decide_frame(ep.load_frame(0), 0, 0.0)  # a raw camera image, resized
    assert online.p_unsafe == pytest.approx(decisions[0].p_unsafe, abs=1e-4)


def test_distilled_monitor_learns_the_teachers_modes(tmp_path, episodes):
    cfg = _cfg()
    eps, _ = select_episodes(episodes, cfg)
    teacher = tmp_path / "decisions.jsonl"
    for ep in eps:
        pts = decision_points(ep, cfg)
        append_jsonl(teacher, {"episode_id": ep.episode_id, "decisions": [
            {"step": p.step, "verdict": "UNSAFE" if p.step >= 8 else "SAFE",
             "mode": "Thin pole" if p.step >= 8 else None,
             "source": "model" if p.step != 0 else "fallback:parse_failure"} for p in pts]})
    frames = distilled_frames(eps, cfg, teacher)
    assert frames.modes == ["none", "Thin pole"]
    assert len(frames.unsafe) == 4 * 6  # fallbacks (step 0) are not labels
    assert frames.unsafe.sum() == 4 * 3 and (frames.mode == 1).sum() == 12
    train_cnn(frames, cfg.cnn, tmp_path / "d.pt", kind="distilled", progress=False)
    mon = CNNMonitor(cfg.model_copy(update={"checkpoint_path": str(tmp_path / "d.pt"),
                                            "cnn": cfg.cnn.model_copy(update={"threshold": 0.01})}))
    d = asyncio.run(mon.decide_episode(eps[0], decision_points(eps[0], cfg)))
    assert {x.mode for x in d if x.unsafe} <= {"Thin pole", None}
    assert json.loads(json.dumps([x.to_dict() for x in d]))  # JSON-clean


def test_a_probability_teacher_labels_at_its_calibrated_threshold(tmp_path, episodes):
    cfg = _cfg()
    eps, _ = select_episodes(episodes, cfg)
    teacher = tmp_path / "train" / "taxonomy" / "decisions.jsonl"
    # a calibration run records SAFE everywhere (the pre-calibration threshold, 0.5)
    for ep in eps:
        append_jsonl(teacher, {"episode_id": ep.episode_id, "decisions": [
            {"step": p.step, "verdict": "SAFE", "mode": None, "source": "model",
             "p_unsafe": 0.3 if p.step >= 8 else 0.1} for p in decision_points(ep, cfg)]})
    assert teacher_threshold(teacher) is None
    assert distilled_frames(eps, cfg, teacher).unsafe.sum() == 0  # verdicts as recorded
    (teacher.parent / "calibration.json").write_text(json.dumps({"threshold": 0.25}))
    assert teacher_threshold(teacher) == 0.25
    frames = distilled_frames(eps, cfg, teacher, teacher_threshold(teacher))
    assert len(frames.unsafe) == 4 * 7 and frames.unsafe.sum() == 4 * 3  # the steps >= 8


def test_distillation_without_matching_teacher_is_a_clear_error(tmp_path, episodes):
    cfg = _cfg()
    eps, _ = select_episodes(episodes, cfg)
    (tmp_path / "t.jsonl").write_text("")
    with pytest.raises(ValueError, match="teacher monitor"):
        distilled_frames(eps, cfg, tmp_path / "t.jsonl")


def test_missing_checkpoint_names_the_fix():
    with pytest.raises(FileNotFoundError, match="failtax monitor train"):
        CNNMonitor(MonitorConfig(kind="cnn", checkpoint_path="nope.pt"))


def test_the_classifier_learns_a_separable_cue(tmp_path):
    """Frames whose lower half is dark (an obstacle close ahead) are UNSAFE: the
    network must separate them, not collapse to a constant probability."""
    from failtax.monitor.cnn import FrameSet

    rng = np.random.default_rng(0)
    images = rng.uniform(0.4, 0.9, size=(240, 3, 32, 32)).astype(np.float32)
    unsafe = np.arange(240) % 4 == 0
    images[unsafe, :, 16:, :] *= 0.3
    frames = FrameSet(images, unsafe.astype(np.float32), np.full(240, -1), [])
    cnn = CNNConfig(image_px=32, epochs=4, channels=[4, 8, 8])
    train_cnn(frames, cnn, tmp_path / "s.pt", kind="supervised", progress=False)
    mon = CNNMonitor(MonitorConfig(kind="cnn", checkpoint_path=str(tmp_path / "s.pt"), cnn=cnn))
    p, _ = mon.predict(images)
    assert p[unsafe].min() > p[~unsafe].max()


def test_a_checkpoint_of_another_network_is_a_clear_error(tmp_path):
    import torch

    from failtax.monitor.cnn import _net

    cfg = CNNConfig(image_px=32, channels=[4, 8, 8])
    net = _net(cfg, 0)
    state = {k: v for k, v in net.state_dict().items() if "running" not in k}  # an older layout
    meta = {"kind": "supervised", "modes": [], "cnn": cfg.model_dump(mode="json")}
    torch.save({"state_dict": state, "meta": json.dumps(meta)}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="retrain"):
        CNNMonitor(MonitorConfig(kind="cnn", checkpoint_path=str(tmp_path / "old.pt")))

"""Key-frame selection: the paper's change-point rule, the baseline, and the embedders."""

from __future__ import annotations

import numpy as np
import pytest

from failtax.config import DownsampleConfig, SourceConfig
from failtax.downsample import (
    DescriptorEmbedder,
    Downsampler,
    make_frame_embedder,
    select_change_points,
    select_fixed_rate,
)
from failtax.sources import make_source


def unit(*rows):
    a = np.array(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_change_points_keep_frames_distinct_from_last_kept():
    # frames 0-2 alike (A), 3-4 alike (B), 5 the failure (C), 6 after (C)
    a, b, c = [1, 0, 0], [0, 1, 0], [0, 0, 1]
    emb = unit(a, a, a, b, b, c, c)
    assert select_change_points(emb, 5, 0, threshold=0.5, max_frames=10) == [2, 4, 5]
    # within the window only: the window starts at frame 3 (lo=3)
    assert select_change_points(emb[3:], 5, 3, threshold=0.5, max_frames=10) == [4, 5]


def test_change_points_respect_the_cap_and_keep_the_failure():
    rng = np.random.default_rng(0)
    emb = unit(*rng.normal(size=(30, 8)))  # every frame differs
    chosen = select_change_points(emb, 20, 0, threshold=0.99, max_frames=5)
    assert len(chosen) == 5 and 20 in chosen
    # nearest in selection order, both directions: 18, 19, 21, 22 plus the failure
    assert chosen == [18, 19, 20, 21, 22]


def test_fixed_rate_spans_window_and_includes_failure():
    idx = select_fixed_rate(100, 90, before=40, after=5, max_frames=6)
    assert len(idx) == 6 and 90 in idx and idx[0] == 50 and idx[-1] <= 95


def test_descriptor_is_unit_norm_and_sees_change():
    rng = np.random.default_rng(1)
    flat = np.full((48, 48, 3), 120, np.uint8)
    noisy = np.clip(flat + rng.normal(0, 3, flat.shape), 0, 255).astype(np.uint8)
    obstacle = noisy.copy()
    obstacle[10:40, 12:36] = (200, 40, 40)
    e = DescriptorEmbedder().embed([flat, noisy, obstacle])
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > 0.9 > e[1] @ e[2]


def test_downsampler_records_embedder_and_pads_motion(tiny_episodes):
    ep = next(make_source(SourceConfig(path=str(tiny_episodes))).scan())
    kf = Downsampler(DownsampleConfig(min_frames=3)).keyframes(ep)
    assert kf.method == "fallback-descriptor" and kf.embedder.startswith("descriptor-v1")
    assert ep.failure_index in kf.indices and 3 <= len(kf.indices) <= 8
    base = Downsampler(DownsampleConfig(method="fixed_rate", max_frames=4)).keyframes(ep)
    assert base.method == "fixed-rate" and len(base.indices) == 4 and base.embedder is None


def test_unknown_embedder_and_missing_checkpoint_are_clear():
    with pytest.raises(ValueError, match="valid: auto, clip, open_clip, descriptor"):
        make_frame_embedder(DownsampleConfig(embedder="resnet"))
    with pytest.raises(ValueError, match="clip_checkpoint_path"):
        make_frame_embedder(DownsampleConfig(embedder="clip"))


def test_open_clip_failure_names_the_fix(tmp_path):
    pytest.importorskip("torch")
    cfg = DownsampleConfig(embedder="open_clip", open_clip_weights_path=str(tmp_path / "w.bin"))
    try:
        import open_clip  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or torchvision's operator error
        with pytest.raises(RuntimeError, match="transformers checkpoint"):
            make_frame_embedder(cfg)
    else:
        pytest.skip("open_clip imports here; its path needs real weights")


def test_clip_path_with_tiny_random_checkpoint(tmp_path, tiny_episodes):
    torch = pytest.importorskip("torch")
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 64,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(tmp_path / "tiny-clip")
    cfg = DownsampleConfig(
        clip_checkpoint_path=str(tmp_path / "tiny-clip"), similarity_threshold=0.999
    )
    embedder = make_frame_embedder(cfg)
    assert embedder.method == "clip"
    ep = next(make_source(SourceConfig(path=str(tiny_episodes))).scan())
    emb = embedder.embed([ep.load_frame(i) for i in range(ep.num_frames)])
    assert emb.shape == (ep.num_frames, 8)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    kf = Downsampler(cfg, embedder).keyframes(ep)
    assert (
        kf.method == "clip" and kf.embedder.startswith("clip:") and ep.failure_index in kf.indices
    )

